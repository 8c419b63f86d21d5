using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Recovery;
using PgBackup.Engine.Wal;
using PgBackup.Engine.Instance;

namespace PgBackup.Commands;

[Cmdlet(VerbsData.Restore, "PgPointInTime", DefaultParameterSetName = InputObjectSet, SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(RecoveryResult))]
public sealed class RestorePgPointInTimeCommand : PgCmdlet
{
    private const string InputObjectSet = "InputObject";
    private const string BackupIdSet = "BackupId";
    private const string ServerSet = "Server";

    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ParameterSetName = InputObjectSet)]
    public BaseBackup? InputObject { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = BackupIdSet)]
    [ValidateNotNullOrEmpty]
    public string? BackupId { get; set; }

    /// <summary>The source cluster whose newest suitable base backup is recovered (not the recovered instance's address).</summary>
    [Parameter(Mandatory = true, ParameterSetName = ServerSet)]
    [ValidateNotNullOrEmpty]
    public string? Server { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    [Parameter]
    public DateTimeOffset? TargetTime { get; set; }

    [Parameter]
    public Lsn? TargetLsn { get; set; }

    [Parameter]
    public ulong? TargetXid { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? TargetName { get; set; }

    [Parameter]
    public SwitchParameter Immediate { get; set; }

    [Parameter]
    public SwitchParameter Latest { get; set; }

    [Parameter]
    public SwitchParameter Exclusive { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? TargetTimeline { get; set; }

    [Parameter]
    public RecoveryTargetAction TargetAction { get; set; } = RecoveryTargetAction.Promote;

    [Parameter(Mandatory = true)]
    [ValidateNotNullOrEmpty]
    public string? DataDirectory { get; set; }

    /// <summary>The port of the recovered instance; a free one when not given. Never bound from the pipeline: a backup's Port is its source's.</summary>
    [Parameter]
    [ValidateRange(1, 65535)]
    public int? Port { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string ListenAddress { get; set; } = "localhost";

    [Parameter]
    public SwitchParameter ContinueArchiving { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? Credential { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>The passphrase of an encrypted repository.</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    /// <summary>A certificate, with its private key, that reads an encrypted repository.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public object[]? Certificate { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Repository", nameof(Repository))));
        try
        {
            var target = RecoveryChoices.Target(new RecoveryTargetChoice(TargetTime, TargetLsn, TargetXid, TargetName, Immediate, Latest, Exclusive, TargetTimeline, TargetAction));
            // A piped backup knows its repository (a folder, or blob storage); the WAL comes from -Repository, that one, or the configured one.
            var backupRepository = InputObject == null ? null : BlobRepositoryOf(InputObject.Path, InputObject.Repository, null, settings);
            Engine.Repository.RepositoryAddress Parse(string r) => Engine.Repository.RepositoryAddress.Parse(r, settings, GetUnresolvedProviderPathFromPSPath);
            var walRepository = Repository != null ? Parse(Repository)
                : backupRepository ?? ((InputObject != null ? InputObject.Repository : settings.Repository) is { } r ? Parse(r) : null);
            if (InputObject == null && walRepository == null) RequireRepositoryAddress(settings);
            var filter = InputObject == null && BackupId == null ? WithServer(new CatalogFilter(), Server, settings) : null;
            var directory = GetUnresolvedProviderPathFromPSPath(DataDirectory!);
            var port = Port ?? InstanceControl.FreePort();
            PointInTimeRecovery.CheckDestination(directory, port, Force);
            var keys = ResolveKeys(settings, Passphrase, Certificate);
            (_source, var plan) = RunEngine((reporter, ct) =>
                RecoverySource.PlanAsync(InputObject, backupRepository, walRepository, BackupId, filter, Server, target, settings.ToolPath, keys, reporter, ct));
            var backup = plan.Backup;
            var action = $"Restore base backup {backup.Id} and recover it to {target} on port {port}";
            var replaces = Directory.Exists(directory) && Directory.EnumerateFileSystemEntries(directory).Any();
            // High impact: it writes a whole cluster and starts a server that promotes itself (runbooks pass -Confirm:$false).
            if (!ShouldProcess(directory, replaces ? action + ", deleting what the folder holds now" : action)) return;

            var user = string.IsNullOrEmpty(backup.User) ? LocalInstance.DefaultServiceUser : backup.User;
            var connection = ResolveServer(settings, $"host={InstanceControl.ConnectHost(ListenAddress, "")} port={port} dbname=postgres user={user}", null, null, Credential);
            var request = new PointInTimeRequest
            {
                Plan = plan,
                DataDirectory = directory,
                Port = port,
                Connection = connection,
                WalTool = WalArchiveTool.InModuleFolder(ModuleFolder),
                OpenArchive = _source.OpenArchive,
                ListenAddresses = ListenAddress,
                Force = Force,
                ContinueArchiving = ContinueArchiving,
                ToolPath = settings.ToolPath,
            };
            var result = RunEngine((reporter, ct) => PointInTimeRecovery.RunAsync(request, reporter, ct));
            if (_source.Spool != null)
            {
                result.BackupPath = _source.BackupPath!;
                if (TargetAction != RecoveryTargetAction.Promote)
                    WriteWarning("The backup and WAL downloaded from blob storage are removed now: the instance stopped at the target cannot replay further when resumed. To go further, recover again with a later target.");
            }
            WriteObject(result);
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
        finally
        {
            _source?.Dispose();
            _source = null;
        }
    }

    private RecoverySource? _source;
}
