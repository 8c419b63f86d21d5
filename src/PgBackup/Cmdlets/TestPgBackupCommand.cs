using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Logical;

namespace PgBackup.Commands;

[Cmdlet(VerbsDiagnostic.Test, "PgBackup", DefaultParameterSetName = InputObjectSet, SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(BackupTestResult), typeof(bool))]
public sealed class TestPgBackupCommand : PgCmdlet
{
    private const string InputObjectSet = "InputObject";
    private const string PathSet = "Path";

    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ParameterSetName = InputObjectSet)]
    public PgBackupItem? InputObject { get; set; }

    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true, ParameterSetName = PathSet)]
    [Alias("FullName")]
    [ValidateNotNullOrEmpty]
    public string? Path { get; set; }

    [Parameter]
    public SwitchParameter Restore { get; set; }

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
    [ValidateRange(1, 256)]
    public int? Jobs { get; set; }

    [Parameter]
    public SwitchParameter Quiet { get; set; }

    /// <summary>For a backup in Azure Blob Storage: the repository (URL with a SAS token, or profile) whose credentials read it.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    /// <summary>The passphrase of an encrypted repository (for -Restore).</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    /// <summary>A certificate, with its private key, that reads an encrypted repository (for -Restore).</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public object[]? Certificate { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Jobs", nameof(Jobs))));
        try
        {
            var (backup, hasMetadata, repository) = InputObject != null
                ? (InputObject, InputObject is BaseBackup || !string.IsNullOrEmpty(((DumpBackup)InputObject).Sha256), BlobRepositoryOf(InputObject.Path, InputObject.Repository, Repository, settings))
                : LoadBackup(Path!, Repository, settings);
            var request = new BackupTestRequest { Backup = backup, HasMetadata = hasMetadata, Jobs = Jobs ?? settings.Jobs, ToolPath = settings.ToolPath, Repository = repository,
                Keys = Restore ? ResolveKeys(settings, Passphrase, Certificate) : Engine.Repository.Encryption.RepositoryKeys.None };
            if (!Restore && !ShouldProcess(backup.Path, "Verify the checksums and record the result in the backup's metadata")) return;
            if (Restore && backup is BaseBackup)
            {
                if (!ShouldProcess(backup.Path, "Start the base backup as a throwaway local instance, query it and remove it")) return;
                request = request with { StartInstance = true };
            }
            else if (Restore)
            {
                var server = Server ?? backup.ServerProfile ?? (string.IsNullOrEmpty(backup.Server) ? null : backup.Server);
                var port = Port ?? (Server == null && backup.ServerProfile == null && backup.Port > 0 ? backup.Port : null);
                var target = ResolveServer(settings, server, port, null, Credential);
                if (!ShouldProcess(target.Display, $"Test-restore {backup.Path} into a throwaway database and drop it")) return;
                request = request with { RestoreTarget = target };
            }
            var result = RunEngine((reporter, ct) => backup is BaseBackup
                ? Engine.Recovery.BaseBackupTester.TestAsync(request, reporter, ct)
                : Engine.Logical.DumpTester.TestAsync(request, reporter, ct));
            if (Quiet) WriteObject(result.Success);
            else WriteObject(result);
        }
        catch (PgBackupException ex)
        {
            if (Quiet) { WriteVerbose(ex.Message); WriteObject(false); }
            else WriteEngineError(ex);
        }
    }
}
