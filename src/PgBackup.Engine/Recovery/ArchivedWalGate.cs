using System.Collections.Concurrent;
using PgBackup.Engine.Wal;
using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Recovery;

/// <summary>
/// Checks every archived file a recovery may read against its SHA-256 sidecar, in replay order, and lets the server fetch
/// a file only once it is checked. On Unix the check runs alongside the copy of the base backup and the replay (the
/// restore_command waits for each file's marker); cmd.exe cannot wait like that, so on Windows it finishes first.
/// Either way no file reaches PostgreSQL unchecked, without starting .NET once per segment.
/// </summary>
public sealed class ArchivedWalGate : IDisposable
{
    private readonly string _markers;
    private readonly ConcurrentQueue<string> _problems = new();
    private readonly CancellationTokenSource _stop;

    private ArchivedWalGate(string markers, CancellationTokenSource stop)
    {
        _markers = markers;
        _stop = stop;
    }

    /// <summary>The restore_command that fetches through this gate (a plain cp when there is nothing to check).</summary>
    public string RestoreCommand { get; private init; } = "";
    /// <summary>True when the server may start only after <see cref="Completion"/> (Windows).</summary>
    public bool CheckBeforeStart { get; private init; }
    public Task Completion { get; private set; } = Task.CompletedTask;
    public IReadOnlyCollection<string> Problems => _problems;

    public static ArchivedWalGate Start(RecoveryPlan plan, WalArchiveTool tool, IOperationReporter reporter, CancellationToken ct)
    {
        var markers = Path.Combine(Path.GetTempPath(), "pgbackup-walcheck-" + Guid.NewGuid().ToString("N")[..10]);
        var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        if (plan.ArchiveFolder == null)
            // Nothing archived: recovery uses the backup's own WAL only.
            return new ArchivedWalGate(markers, stop) { RestoreCommand = OperatingSystem.IsWindows() ? "cmd /c exit 1" : "/bin/false" };

        var gated = tool.ServerOs == ServerOs.Unix;
        if (gated)
        {
            Directory.CreateDirectory(markers);
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(markers, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
                UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        }
        var gate = new ArchivedWalGate(markers, stop)
        {
            RestoreCommand = gated ? tool.GatedCopyRestoreCommand(plan.ArchiveFolder, markers) : tool.CopyRestoreCommand(plan.ArchiveFolder),
            CheckBeforeStart = !gated,
        };
        var files = FilesToCheck(plan);
        reporter.Verbose($"Checking {files.Count} archived WAL files against their SHA-256 sidecars{(gated ? " while the recovery runs" : "")}.");
        var folder = plan.ArchiveFolder;
        gate.Completion = Task.Run(() => gate.Check(folder, files, gated, stop.Token), stop.Token);
        return gate;
    }

    /// <summary>
    /// The timeline history files, then the segments from the backup's WAL to the one holding the target (for a time
    /// target, whose place is not known, every reachable one), in the order replay reads them.
    /// </summary>
    private static List<string> FilesToCheck(RecoveryPlan plan)
    {
        var backup = plan.Backup;
        var size = (ulong)backup.WalSegmentSize;
        var first = backup.WalIncluded ? backup.StopLsn.Value / size : WalSegmentName.Parse(backup.StartSegment).Number(backup.WalSegmentSize);
        var last = Math.Min(plan.ExpectedEnd.Value / size, plan.NewestReachable.Value == 0 ? 0 : (plan.NewestReachable.Value - 1) / size);
        var files = plan.Lineage.Where(s => s.Timeline > 1).Select(s => WalInventory.HistoryFileName(s.Timeline)).ToList();
        for (var position = first; position <= last; position++)
            files.Add(WalSegmentName.FromNumber(plan.TimelineAt(new Lsn(position * size)), position, backup.WalSegmentSize).ToString());
        return files;
    }

    private void Check(string archiveFolder, List<string> files, bool markEach, CancellationToken ct)
    {
        try
        {
            foreach (var file in files)
            {
                ct.ThrowIfCancellationRequested();
                var path = Path.Combine(archiveFolder, file);
                var problem = File.Exists(path) ? WalArchiveInspector.ChecksumProblem(path, requireSidecar: false) : null;
                if (problem != null) _problems.Enqueue(problem);
                if (markEach) File.WriteAllBytes(Path.Combine(_markers, file + (problem == null ? ".ok" : ".bad")), []);
            }
        }
        finally
        {
            // Files the list does not hold (later segments, history probes) are then fetched as they are, or found missing.
            if (markEach && Directory.Exists(_markers)) File.WriteAllBytes(Path.Combine(_markers, "done"), []);
        }
    }

    public PgBackupException Damaged(string archiveFolder) => Damaged(_problems, archiveFolder);

    /// <summary>PgBackup.WalSegmentDamaged for the first few of <paramref name="problems"/>.</summary>
    public static PgBackupException Damaged(IEnumerable<string> problems, string archiveFolder) => new("WalSegmentDamaged", ErrorKind.InvalidData,
        $"The WAL archive holds damaged files that this recovery needs, so nothing was recovered: {string.Join(" ", problems.Order(StringComparer.Ordinal).Take(3))}", archiveFolder,
        "Restore the damaged segments from another copy of the archive, or recover to a point before the first of them (Get-PgWalArchive -Verify lists them).");

    public void Dispose()
    {
        _stop.Cancel();
        try { Completion.Wait(TimeSpan.FromSeconds(30)); } catch (AggregateException) { }
        _stop.Dispose();
        try { if (Directory.Exists(_markers)) Directory.Delete(_markers, recursive: true); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { }
    }
}
