using System.Management.Automation;
using PgBackup.Engine.Configuration;
using PgBackup.Engine;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Wal;
using PgBackup.Engine.Connection;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Remove, "PgBackup", DefaultParameterSetName = InputObjectSet, SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(DumpBackup), typeof(BaseBackup))]
public sealed class RemovePgBackupCommand : PgCmdlet
{
    private const string InputObjectSet = "InputObject";
    private const string RetentionSet = "Retention";

    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ParameterSetName = InputObjectSet)]
    public PgBackupItem[]? InputObject { get; set; }

    [Parameter(Position = 0, ParameterSetName = RetentionSet)]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    [Parameter(ParameterSetName = RetentionSet)]
    [ValidateRange(1, int.MaxValue)]
    public int? KeepLast { get; set; }

    [Parameter(ParameterSetName = RetentionSet)]
    public TimeSpan? OlderThan { get; set; }

    [Parameter(ParameterSetName = RetentionSet)]
    [ValidateNotNullOrEmpty]
    public string? Server { get; set; }

    [Parameter(ParameterSetName = RetentionSet)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[]? Database { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    private readonly List<PgBackupItem> _requested = [];

    protected override void ProcessRecord()
    {
        if (InputObject != null) _requested.AddRange(InputObject);
    }

    protected override void EndProcessing()
    {
        try
        {
            IReadOnlyList<RetentionDecision> decisions;
            var settings = LoadSettings(BoundSettings(("Repository", nameof(Repository))));
            if (ParameterSetName == RetentionSet)
            {
                if (KeepLast == null && OlderThan == null)
                    throw new PgBackupException("NoRetentionRule", ErrorKind.InvalidArgument, "Neither -KeepLast nor -OlderThan was given, so nothing would be chosen for removal.", null,
                        "Pass -KeepLast N (keep the newest N backups of each database), -OlderThan (a TimeSpan such as 30.00:00:00), or both.");
                // PowerShell turns a bare number into ticks (-OlderThan 30 is 3 microseconds), which would select everything.
                if (OlderThan is { } age && age < TimeSpan.FromSeconds(1))
                    throw new PgBackupException("InvalidOlderThan", ErrorKind.InvalidArgument, $"-OlderThan {age} is less than a second; a bare number is read as ticks.", age,
                        "Pass a TimeSpan such as 30.00:00:00 (thirty days) or ([TimeSpan]::FromDays(30)).");
                var repository = RequireRepositoryAddress(settings);
                var filter = WithServer(new CatalogFilter(DatabaseMatches: DatabaseFilter()), Server, settings);
                var all = RunEngine((reporter, ct) => BackupCatalog.ListAsync(repository, filter, reporter.Warning, null, ct));
                decisions = BackupCatalog.PlanRetention(all, KeepLast, OlderThan, DateTimeOffset.UtcNow, Force);
            }
            else
            {
                decisions = BackupCatalog.PlanRemoval(_requested, b => SiblingsOf(b, settings), Force);
            }

            foreach (var decision in decisions)
            {
                var backup = decision.Backup;
                if (!decision.Remove)
                {
                    var refusal = new PgBackupException("LastValidBackup", ErrorKind.InvalidOperation,
                        $"'{backup.Path}' was kept: {decision.Reason}.", backup, "Pass -Force to remove the last valid backup of a database as well.");
                    if (ParameterSetName == RetentionSet) WriteWarning(refusal.Message);
                    else WriteEngineError(refusal);
                    continue;
                }
                var blob = BlobRepositoryOf(backup.Path, backup.Repository, ParameterSetName == RetentionSet ? Repository : null, settings);
                if ((blob ?? (backup.Repository != null ? Engine.Repository.RepositoryAddress.ForFolder(backup.Repository) : null)) is { } home) _repositories.TryAdd(home.Display, home);
                if (!ShouldProcess(backup.Path, $"Remove backup ({decision.Reason})")) continue;
                try
                {
                    RunEngine(async (_, ct) => { await BackupCatalog.DeleteAsync(blob, backup, ct).ConfigureAwait(false); return true; });
                    WriteVerbose($"Removed {backup.Path} ({decision.Reason}).");
                    if (PassThru) WriteObject(backup);
                }
                catch (PgBackupException ex) { WriteEngineError(ex); }
            }
            PruneWal();
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }

    /// <summary>Archived WAL older than the oldest kept base backup of its cluster is of no use to any backup any more.</summary>
    private void PruneWal()
    {
        foreach (var repository in _repositories.Values)
        {
            var kept = RunEngine((_, ct) => BackupCatalog.ListAsync(repository, new CatalogFilter(Kind: BackupKind.Base), null, null, ct)).OfType<BaseBackup>().ToList();
            foreach (var plan in WalRetention.Plan(repository, kept))
            {
                if (!ShouldProcess(plan.ArchiveFolder, $"Remove {plan.Files.Count} archived WAL files ({plan.Bytes} bytes) before {plan.KeepFrom}, which no kept base backup needs")) continue;
                RunEngine((_, ct) => Task.Run(() => { WalRetention.Execute(plan); return true; }, ct));
                WriteVerbose($"Removed {plan.Files.Count} archived WAL files before {plan.KeepFrom} from {plan.ArchiveFolder}.");
            }
            // Pruning never makes a gap, but one that is already there breaks the kept backups' roll-forward: say so.
            foreach (var gap in WalArchiveInspector.GapsAfterOldestKept(repository, kept, WriteWarning))
                WriteWarning($"The WAL archive {gap.Folder} misses {gap.Gap.MissingCount} segment(s) from {gap.Gap.From} to {gap.Gap.To}: backups older than that point cannot be rolled forward past it. Check Get-PgWalArchive and the server's archiver.");
        }
    }

    private readonly Dictionary<string, Engine.Repository.RepositoryAddress> _repositories = new(StringComparer.Ordinal);

    private IEnumerable<PgBackupItem> SiblingsOf(PgBackupItem backup, PgBackupSettings settings)
    {
        if (BlobRepositoryOf(backup.Path, backup.Repository, null, settings) is { } blob)
            return RunEngine((_, ct) => BackupCatalog.ListAsync(blob, null, null, null, ct));
        var folder = backup.Repository ?? System.IO.Path.GetDirectoryName(backup.Path);
        return folder != null && Directory.Exists(folder) ? BackupCatalog.List(folder, null, null) : [];
    }

    private Func<string, bool>? DatabaseFilter()
    {
        if (Database == null) return null;
        var patterns = Database.Select(d => new WildcardPattern(d, WildcardOptions.None)).ToList();
        return name => patterns.Any(p => p.IsMatch(name));
    }
}
