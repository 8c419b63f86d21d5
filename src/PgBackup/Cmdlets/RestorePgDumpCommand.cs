using System.Management.Automation;
using PgBackup.Engine.Configuration;
using PgBackup.Engine;
using PgBackup.Engine.Logical;

namespace PgBackup.Commands;

[Cmdlet(VerbsData.Restore, "PgDump", DefaultParameterSetName = InputObjectSet, SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(RestoreResult))]
public sealed class RestorePgDumpCommand : PgCmdlet
{
    private const string InputObjectSet = "InputObject";
    private const string PathSet = "Path";

    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ParameterSetName = InputObjectSet)]
    public DumpBackup? InputObject { get; set; }

    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true, ParameterSetName = PathSet)]
    [Alias("FullName")]
    [ValidateNotNullOrEmpty]
    public string? Path { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Server { get; set; }

    [Parameter]
    [ValidateRange(1, 65535)]
    public int? Port { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? Credential { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? TargetDatabase { get; set; }

    [Parameter]
    public SwitchParameter Create { get; set; }

    [Parameter]
    public SwitchParameter Clean { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
    public SwitchParameter NoOwner { get; set; }

    [Parameter]
    public SwitchParameter DataOnly { get; set; }

    /// <summary>For a dump in Azure Blob Storage: the repository (URL with a SAS token, or profile) whose credentials read it.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    [Parameter]
    [ValidateRange(1, 256)]
    public int? Jobs { get; set; }

    /// <summary>The passphrase of an encrypted repository.</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    /// <summary>A certificate, with its private key, that reads an encrypted repository.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public object[]? Certificate { get; set; }

    private (DumpBackup, bool, Engine.Repository.RepositoryAddress?) LoadDump(string path, PgBackupSettings settings) =>
        LoadBackup(path, Repository, settings) switch
        {
            (DumpBackup dump, var hasMetadata, var repository) => (dump, hasMetadata, repository),
            var (other, _, _) => throw new PgBackupException("NotADump", ErrorKind.InvalidArgument, $"'{other.Path}' is a base backup, not a dump.", other.Path,
                "Restore base backups with Restore-PgPointInTime; Restore-PgDump takes pg_dump output."),
        };

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Jobs", nameof(Jobs))));
        try
        {
            var (source, hasMetadata, repository) = InputObject != null
                ? (InputObject, !string.IsNullOrEmpty(InputObject.Sha256), BlobRepositoryOf(InputObject.Path, InputObject.Repository, Repository, settings))
                : LoadDump(Path!, settings);
            var database = TargetDatabase ?? (source.Kind == BackupKind.Globals ? "postgres" : source.Database);
            if (string.IsNullOrEmpty(database))
                throw new PgBackupException("TargetDatabaseRequired", ErrorKind.InvalidArgument,
                    $"'{source.Path}' does not say which database it came from, so there is no default target.", source.Path,
                    "Pass -TargetDatabase with the database to restore into.");
            // The dump's own server is the default target, as a restore "back where it came from" is the common case.
            var server = Server ?? source.ServerProfile ?? (string.IsNullOrEmpty(source.Server) ? null : source.Server);
            var port = Port ?? (Server == null && source.ServerProfile == null && source.Port > 0 ? source.Port : null);
            var target = ResolveServer(settings, server, port, database, Credential);
            var request = new RestoreRequest
            {
                Target = target,
                Source = source,
                HasMetadata = hasMetadata,
                Create = Create,
                Clean = Clean,
                Force = Force,
                NoOwner = NoOwner,
                DataOnly = DataOnly,
                Jobs = Jobs ?? (source.Format is DumpFormat.Custom or DumpFormat.Directory ? settings.Jobs : 1),
                ToolPath = settings.ToolPath,
                Repository = repository,
                Keys = ResolveKeys(settings, Passphrase, Certificate),
            };
            var plan = RunEngine((reporter, ct) => RestoreService.PlanAsync(request, reporter, ct));
            var destructive = plan.Action is RestoreAction.RecreateDatabase or RestoreAction.CleanExisting or RestoreAction.OverExisting or RestoreAction.DataIntoExisting;
            if (destructive ? !ShouldProcessHighImpact(plan.TargetDescription, plan.ActionDescription) : !ShouldProcess(plan.TargetDescription, plan.ActionDescription)) return;
            WriteObject(RunEngine((reporter, ct) => RestoreService.ExecuteAsync(plan, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
