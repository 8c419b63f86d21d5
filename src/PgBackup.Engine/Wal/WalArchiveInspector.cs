using System.Globalization;
using System.Security.Cryptography;
using Npgsql;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Wal;

/// <summary>
/// Get-PgWalArchive: what a cluster's WAL archive (&lt;Repository&gt;/wal/&lt;system identifier&gt;) holds per timeline, which
/// segments recovery would miss, and, with a server, how far the archive is behind the WAL the server has written.
/// </summary>
public static class WalArchiveInspector
{
    /// <summary>
    /// Reads an archive folder alone: one status per timeline that has files in it. Gaps are checked from
    /// <paramref name="requiredFrom"/> (the start segment of the oldest kept base backup; when null, the oldest archived
    /// segment) to the newest archived segment, following the timeline history.
    /// </summary>
    public static IReadOnlyList<WalArchiveStatus> Inspect(string archiveFolder, WalSegmentName? requiredFrom, long segmentSize, bool verifyChecksums,
        Action<string>? warn, CancellationToken cancellationToken = default) =>
        Inspect(new FolderWalArchiveStore(archiveFolder), requiredFrom, segmentSize, verifyChecksums, warn, cancellationToken);

    public static IReadOnlyList<WalArchiveStatus> Inspect(IWalArchiveStore archive, WalSegmentName? requiredFrom, long segmentSize, bool verifyChecksums,
        Action<string>? warn, CancellationToken cancellationToken = default)
    {
        var inventory = WalInventory.Read(archive, segmentSize, warn);
        return Describe(inventory, requiredFrom, verifyChecksums, currentTimeline: null, warn, progress: null, cancellationToken);
    }

    /// <summary>Inspects the archive of the cluster <paramref name="target"/> belongs to, and adds the server's live archiver state to its current timeline.</summary>
    public static async Task<IReadOnlyList<WalArchiveStatus>> InspectServerAsync(ConnectionTarget target, RepositoryAddress repository, WalSegmentName? requiredFrom,
        bool verifyChecksums, IOperationReporter reporter, CancellationToken ct)
    {
        var activity = $"Inspecting the WAL archive of {target.Display}";
        reporter.Progress(activity, "Reading the archiver state", 0);
        ServerWalState server;
        WalInventory inventory;
        LiveArchiveState live;
        WalBacklog backlog;
        try
        {
            await using var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
            server = await ReadServerStateAsync(connection, ct).ConfigureAwait(false);

            var archive = RepositoryLayout.ArchiveStore(repository, server.SystemIdentifier);
            backlog = await ReadBacklogAsync(connection, target, reporter, ct).ConfigureAwait(false);
            try
            {
                // Listed after the server was asked, so whatever it reports as archived is already in the listing.
                if (!await Task.Run(() => archive.Exists, ct).ConfigureAwait(false))
                    throw new PgBackupException("WalArchiveNotFound", ErrorKind.ObjectNotFound,
                        $"The repository {repository} holds no WAL archive for {target.Display} (system identifier {server.SystemIdentifier}): {archive.Location} does not exist.", archive.Location,
                        $"Check -Repository, or set up archiving into it: Enable-PgWalArchiving -Server {target.Host}{(target.Port != 5432 ? $" -Port {target.Port}" : "")} -Repository {repository}");
                inventory = WalInventory.Read(archive, server.SegmentSize, reporter.Warning);
            }
            catch (PgBackupException ex) when (ex.ErrorId is "PgBackup.StorageUnavailable" or "PgBackup.StorageFailed" or "PgBackup.StorageAccessDenied")
            {
                // When the repository is out of reach the backlog grows, which is exactly when monitoring needs to see it.
                reporter.Warning($"The WAL archive {archive.Location} cannot be read now, so only the server's side (archiver, backlog) is reported: {ex.Message}");
                reporter.ProgressCompleted(activity);
                return [ServerSide(new WalArchiveStatus { ArchiveFolder = archive.Location, Timeline = server.Timeline, ArchiveError = ex.Message }, target, server, null, backlog, reporter)];
            }
            live = LiveState(inventory, server);
            if (live.UnarchivedBytes > 0)
                live = live with { StatusFileTimes = await ReadStatusFileTimesAsync(connection, live, reporter, ct).ConfigureAwait(false) };
        }
        catch (NpgsqlException ex) when (!ct.IsCancellationRequested)
        {
            throw ServerSession.Translate(ex, target);
        }

        WarnAboutArchiver(server, inventory, target, reporter);
        var statuses = await Task.Run(() => Describe(inventory, requiredFrom, verifyChecksums, server.Timeline, reporter.Warning,
            (status, percent) => reporter.Progress(activity, status, percent), ct), ct).ConfigureAwait(false);
        foreach (var status in statuses)
        {
            status.Server = target.Host;
            status.Port = target.Port;
            status.SystemIdentifier = server.SystemIdentifier;
        }
        var current = ServerSide(statuses.Single(s => s.Timeline == server.Timeline), target, server, live, backlog, reporter);
        reporter.ProgressCompleted(activity);
        reporter.Milestone($"WAL archive of {target.Display} on timeline {server.Timeline}: {current.SegmentCount} segments up to {current.LastSegment ?? "none"}, " +
            $"{statuses.Sum(s => s.Gaps.Sum(g => g.MissingCount))} missing, {current.UnarchivedBytes?.ToString(CultureInfo.InvariantCulture) ?? "unknown"} bytes not archived" +
            (current.RecoveryPointObjective is { } rpo ? $", recovery point objective {rpo.TotalSeconds:0}s" : ""));
        return statuses;
    }

    /// <summary>Gaps in each cluster's archive from the start of its oldest kept base backup on, following timeline history.</summary>
    public static IEnumerable<(string Folder, WalGap Gap)> GapsAfterOldestKept(RepositoryAddress repository, IEnumerable<BaseBackup> keptBaseBackups, Action<string>? warn)
    {
        foreach (var cluster in keptBaseBackups.Where(b => !string.IsNullOrEmpty(b.SystemIdentifier) && !string.IsNullOrEmpty(b.StartSegment)).GroupBy(b => b.SystemIdentifier))
        {
            var archive = RepositoryLayout.ArchiveStore(repository, cluster.Key);
            if (!archive.Exists) continue;
            var oldest = cluster.OrderBy(b => b.StartLsn).First();
            var statuses = Inspect(archive, WalSegmentName.Parse(oldest.StartSegment), oldest.WalSegmentSize, verifyChecksums: false, warn);
            foreach (var gap in statuses.SelectMany(s => s.Gaps).DistinctBy(g => (g.From, g.To)))
                yield return (archive.Location, gap);
        }
    }

    public static bool IsSegmentArchived(string archiveFolder, WalSegmentName segment) => File.Exists(Path.Combine(archiveFolder, segment.ToString()));

    /// <summary>
    /// The segments that replaying from <paramref name="from"/> to <paramref name="to"/> needs and the archive lacks. The path
    /// follows the history of <paramref name="to"/>'s timeline: the parent's segments before each switch point, the child's from it.
    /// </summary>
    public static IReadOnlyList<WalSegmentName> MissingSegments(string archiveFolder, WalSegmentName from, WalSegmentName to, long segmentSize)
    {
        var inventory = WalInventory.Read(Path.GetFullPath(archiveFolder), segmentSize, warn: null);
        var lineage = inventory.Lineage(to.Timeline, warn: null);
        if (!WalInventory.IsOnLineage(lineage, from, segmentSize))
        {
            var history = inventory.Files.Any(f => f.Kind == WalFileKind.TimelineHistory && f.Timeline == to.Timeline) || to.Timeline == 1
                ? $"Its history ({WalInventory.HistoryFileName(to.Timeline)}) does not lead through {from}."
                : $"The archive has no {WalInventory.HistoryFileName(to.Timeline)} to follow.";
            throw new PgBackupException("WalTimelineNotInHistory", ErrorKind.InvalidArgument,
                $"Recovery cannot get from {from} to timeline {to.Timeline}. {history}", from,
                "Start from a base backup taken on timeline " + to.Timeline + " or on one of its ancestors before it branched off.");
        }
        return inventory.MissingRuns(lineage, from.Number(segmentSize), to.Number(segmentSize))
            .SelectMany(run => Enumerable.Range(0, (int)run.Count).Select(i => WalSegmentName.FromNumber(run.From.Timeline, run.From.Number(segmentSize) + (ulong)i, segmentSize)))
            .ToList();
    }

    /// <summary>
    /// How long ago the oldest WAL that is not in the archive was written, by the server's clock.
    /// <list type="bullet">
    /// <item>Unknown (null) when the archive holds no segment on the current timeline's history, or the position is unknown.</item>
    /// <item>Zero when the write position is not past the end of the newest archived segment (L).</item>
    /// <item>Otherwise the oldest unarchived WAL is the start of the segment after L, written the moment L was completed.
    /// That moment is the modification time (whole seconds) of L's status file in pg_wal/archive_status (PostgreSQL creates
    /// "L.ready" when it completes L and renames it, keeping the time, to "L.done" once archived). The file is removed at the next
    /// checkpoint; then, when the segment after L is the current one, pg_stat_archiver's last_archived_time (the archiver
    /// copies a completed segment within seconds, unless it was failing); else the completion time of the first unarchived
    /// segment (its own status file) and finally last_archived_time, both later than the truth, so the RPO is then a lower bound.</item>
    /// </list>
    /// </summary>
    internal static TimeSpan? RecoveryPointObjective(LiveArchiveState live, DateTimeOffset? lastArchivedTime, DateTimeOffset now)
    {
        if (live.UnarchivedBytes is not { } bytes || live.LastArchived is not { } archived) return null;
        if (bytes <= 0) return TimeSpan.Zero;
        DateTimeOffset? StatusTime(WalSegmentName? segment) =>
            segment is { } s && live.StatusFileTimes is { } times && (times.TryGetValue(s + ".done", out var t) || times.TryGetValue(s + ".ready", out t)) ? t : null;
        var oldestUnarchivedWrite = StatusTime(archived)
            ?? (live.FirstUnarchived == live.CurrentSegment ? lastArchivedTime : null)
            ?? StatusTime(live.FirstUnarchived)
            ?? lastArchivedTime;
        return oldestUnarchivedWrite is { } since ? (now - since < TimeSpan.Zero ? TimeSpan.Zero : now - since) : null;
    }

    /// <summary>The server's live state on the status of its current timeline; <paramref name="live"/> is null when the archive could not be read.</summary>
    private static WalArchiveStatus ServerSide(WalArchiveStatus current, ConnectionTarget target, ServerWalState server, LiveArchiveState? live, WalBacklog backlog,
        IOperationReporter reporter)
    {
        current.Server = target.Host;
        current.Port = target.Port;
        current.SystemIdentifier = server.SystemIdentifier;
        current.InRecovery = server.InRecovery;
        current.ArchivedCount = server.ArchivedCount;
        current.LastArchivedWal = server.LastArchivedWal;
        current.LastArchivedTime = server.LastArchivedTime;
        current.FailedCount = server.FailedCount;
        current.LastFailedWal = server.LastFailedWal;
        current.LastFailedTime = server.LastFailedTime;
        current.CurrentLsn = server.CurrentLsn;
        current.CurrentSegment = live?.CurrentSegment?.ToString();
        current.UnarchivedBytes = live?.UnarchivedBytes;
        current.RecoveryPointObjective = live == null ? null : RecoveryPointObjective(live, server.LastArchivedTime, server.Now);
        current.ReadySegments = backlog.ReadySegments;
        current.OldestReadySegment = backlog.OldestReadySegment;
        current.OldestReadyAge = backlog.OldestReadyAge;
        current.PgWalBytes = backlog.PgWalBytes;
        current.PgWalDiskFreeBytes = backlog.DiskFreeBytes;
        current.PgWalDiskBytes = backlog.DiskBytes;
        current.DroppedSegments = backlog.Dropped;
        if (backlog.Dropped is { Length: > 0 } gone)
            reporter.Warning($"{gone.Length} WAL segment(s) of {target.Display} were dropped unarchived by the guard against a full pg_wal ({gone[0]}{(gone.Length > 1 ? $" to {gone[^1]}" : "")}): point-in-time recovery cannot pass them. Take a new base backup; delete pgbackup_dropped_wal.log in the data directory once you have.");
        return current;
    }

    /// <summary>Where the archive stands against the server's write position, on the server's current timeline.</summary>
    internal sealed record LiveArchiveState(WalSegmentName? LastArchived, WalSegmentName? FirstUnarchived, WalSegmentName? CurrentSegment, long? UnarchivedBytes,
        IReadOnlyDictionary<string, DateTimeOffset>? StatusFileTimes = null);

    private sealed record ServerWalState(string SystemIdentifier, long SegmentSize, bool InRecovery, string ArchiveMode, uint Timeline, Lsn? CurrentLsn,
        long ArchivedCount, string? LastArchivedWal, DateTimeOffset? LastArchivedTime, long FailedCount, string? LastFailedWal, DateTimeOffset? LastFailedTime,
        DateTimeOffset Now);

    private static List<WalArchiveStatus> Describe(WalInventory inventory, WalSegmentName? requiredFrom, bool verifyChecksums, uint? currentTimeline,
        Action<string>? warn, Action<string, int>? progress, CancellationToken ct)
    {
        var checksumFailures = verifyChecksums ? VerifyChecksums(inventory, warn, progress, ct) : null;
        var timelines = inventory.Timelines.ToList();
        if (currentTimeline is { } t && !timelines.Contains(t)) timelines.Add(t);
        return timelines.Order().Select(timeline => Describe(inventory, timeline, requiredFrom, checksumFailures, warn)).ToList();
    }

    private static WalArchiveStatus Describe(WalInventory inventory, uint timeline, WalSegmentName? requiredFrom, IReadOnlySet<string>? checksumFailures, Action<string>? warn)
    {
        var files = inventory.Files.Where(f => f.Timeline == timeline).ToList();
        var segments = files.Where(f => f.Kind == WalFileKind.Segment).Select(f => f.Segment!.Value).Order().ToList();
        var lineage = inventory.Lineage(timeline, warn);
        var ancestry = lineage.Select(s => s.Timeline).ToHashSet();
        string[] Names(WalFileKind kind) => files.Where(f => f.Kind == kind).Select(f => f.Name).ToArray();
        return new WalArchiveStatus
        {
            SystemIdentifier = SystemIdentifierOf(inventory.Folder),
            ArchiveFolder = inventory.Folder,
            Timeline = timeline,
            FirstSegment = segments.Count > 0 ? segments[0].ToString() : null,
            LastSegment = segments.Count > 0 ? segments[^1].ToString() : null,
            SegmentCount = segments.Count,
            SizeBytes = files.Sum(f => f.SizeBytes),
            HistoryFiles = inventory.Files.Where(f => f.Kind == WalFileKind.TimelineHistory && ancestry.Contains(f.Timeline)).Select(f => f.Name).ToArray(),
            BackupHistoryFiles = Names(WalFileKind.BackupHistory),
            PartialSegments = Names(WalFileKind.PartialSegment),
            Gaps = FindGaps(inventory, lineage, requiredFrom),
            ChecksumFailures = checksumFailures == null ? null : files.Where(f => checksumFailures.Contains(f.Name)).Select(f => f.Name).ToArray(),
        };
    }

    private static WalGap[] FindGaps(WalInventory inventory, IReadOnlyList<WalTimelineSpan> lineage, WalSegmentName? requiredFrom)
    {
        var positions = inventory.PositionsOnLineage(lineage);
        if (positions.Count == 0) return [];
        // A required start on another branch (a base backup taken after this timeline was left behind) says nothing about it.
        var from = requiredFrom is { } r && WalInventory.IsOnLineage(lineage, r, inventory.SegmentSize) ? r.Number(inventory.SegmentSize) : positions.Min;
        return inventory.MissingRuns(lineage, from, positions.Max)
            .Select(run => new WalGap { From = run.From.ToString(), To = run.To.ToString(), MissingCount = (int)Math.Min(run.Count, int.MaxValue) })
            .ToArray();
    }

    private static HashSet<string> VerifyChecksums(WalInventory inventory, Action<string>? warn, Action<string, int>? progress, CancellationToken ct)
    {
        var failures = new HashSet<string>(StringComparer.Ordinal);
        var total = Math.Max(1, inventory.Files.Sum(f => f.SizeBytes));
        long done = 0;
        foreach (var file in inventory.Files)
        {
            ct.ThrowIfCancellationRequested();
            progress?.Invoke($"Verifying {file.Name}", (int)(done * 100 / total));
            if (inventory.Store.ChecksumProblem(file.Name, requireChecksum: true) is { } problem)
            {
                failures.Add(file.Name);
                warn?.Invoke(problem);
            }
            done += file.SizeBytes;
        }
        return failures;
    }

    /// <returns>Null when the file matches its .sha256 sidecar (or has none and <paramref name="requireSidecar"/> is false), else the problem.</returns>
    internal static string? ChecksumProblem(string path, bool requireSidecar) => FolderWalArchiveStore.ChecksumProblemOf(path, requireSidecar);

    private static LiveArchiveState LiveState(WalInventory inventory, ServerWalState server)
    {
        var size = inventory.SegmentSize;
        var lineage = inventory.Lineage(server.Timeline, warn: null);
        var positions = inventory.PositionsOnLineage(lineage);
        WalSegmentName? At(ulong number) => WalSegmentName.FromNumber(WalInventory.TimelineAt(lineage, number, size), number, size);
        var lastArchived = positions.Count > 0 ? At(positions.Max) : null;
        var firstUnarchived = positions.Count > 0 ? At(positions.Max + 1) : null;
        var current = server.CurrentLsn is { } lsn ? WalSegmentName.FromLsn(server.Timeline, lsn, size) : (WalSegmentName?)null;
        long? unarchived = server.CurrentLsn is { } position && lastArchived is { } last
            ? Math.Max(0, position - last.StartLsn(size) - size)
            : null;
        return new LiveArchiveState(lastArchived, firstUnarchived, current, unarchived);
    }

    private static async Task<ServerWalState> ReadServerStateAsync(NpgsqlConnection connection, CancellationToken ct)
    {
        // The timeline: on a primary from the name of the segment being written (hex); pg_walfile_name() refuses to run
        // during recovery, so a standby's comes from its last restartpoint (decimal).
        const string sql = """
            select (select system_identifier::text from pg_control_system()),
                   pg_size_bytes(current_setting('wal_segment_size')),
                   pg_is_in_recovery(),
                   current_setting('archive_mode'),
                   case when pg_is_in_recovery() then (select timeline_id from pg_control_checkpoint())::text
                        else left(pg_walfile_name(pg_current_wal_lsn()), 8) end,
                   (case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end)::text,
                   a.archived_count, a.last_archived_wal, a.last_archived_time, a.failed_count, a.last_failed_wal, a.last_failed_time,
                   clock_timestamp()
            from pg_stat_archiver a
            """;
        await using var cmd = new NpgsqlCommand(sql, connection);
        await using var reader = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await reader.ReadAsync(ct).ConfigureAwait(false);
        DateTimeOffset? Time(int i) => reader.IsDBNull(i) ? null : reader.GetFieldValue<DateTimeOffset>(i);
        string? Text(int i) => reader.IsDBNull(i) ? null : reader.GetString(i);
        var inRecovery = reader.GetBoolean(2);
        return new ServerWalState(
            SystemIdentifier: reader.GetString(0),
            SegmentSize: reader.GetInt64(1),
            InRecovery: inRecovery,
            ArchiveMode: reader.GetString(3),
            Timeline: uint.Parse(reader.GetString(4), inRecovery ? NumberStyles.None : NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture),
            CurrentLsn: Text(5) is { } lsn ? Lsn.Parse(lsn) : null,
            ArchivedCount: reader.GetInt64(6),
            LastArchivedWal: Text(7),
            LastArchivedTime: Time(8),
            FailedCount: reader.GetInt64(9),
            LastFailedWal: Text(10),
            LastFailedTime: Time(11),
            Now: reader.GetFieldValue<DateTimeOffset>(12));
    }

    private sealed record WalBacklog(int? ReadySegments, string? OldestReadySegment, TimeSpan? OldestReadyAge, long? PgWalBytes, long? DiskFreeBytes, long? DiskBytes,
        string[]? Dropped);

    /// <summary>
    /// What waits in pg_wal for the archiver: the .ready files of pg_wal/archive_status, the size of pg_wal, and, when the
    /// data directory is on this machine, the free space of the file system pg_wal is on (following a symbolic link, as
    /// initdb --waldir makes).
    /// </summary>
    private static async Task<WalBacklog> ReadBacklogAsync(NpgsqlConnection connection, ConnectionTarget target, IOperationReporter reporter, CancellationToken ct)
    {
        int? ready = null;
        string? oldest = null;
        TimeSpan? age = null;
        long? walBytes = null;
        try
        {
            await using var cmd = new NpgsqlCommand(
                "select r.ready, r.oldest, r.waited, (select coalesce(sum(size), 0)::bigint from pg_ls_waldir()) " +
                "from (select count(*)::int as ready, min(name) as oldest, clock_timestamp() - min(modification) as waited " +
                "      from pg_ls_archive_statusdir() where name like '%.ready') r", connection);
            await using var reader = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            await reader.ReadAsync(ct).ConfigureAwait(false);
            ready = reader.GetInt32(0);
            oldest = reader.IsDBNull(1) ? null : reader.GetString(1)[..^".ready".Length];
            // Clocks of server and file system can disagree by a little; a wait is never negative.
            age = reader.IsDBNull(2) ? null : TimeSpan.FromTicks(Math.Max(0, reader.GetTimeSpan(2).Ticks));
            walBytes = reader.GetInt64(3);
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.InsufficientPrivilege or PostgresErrorCodes.UndefinedFunction)
        {
            reporter.Verbose($"Cannot list pg_wal ({ex.MessageText}); the backlog needs pg_monitor or a superuser.");
        }

        long? free = null, total = null;
        string? dataDirectory = null;
        try { dataDirectory = await ServerSession.ScalarAsync<string>(connection, "select current_setting('data_directory')", ct).ConfigureAwait(false); }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.InsufficientPrivilege) { reporter.Verbose($"Cannot read data_directory ({ex.MessageText})."); }
        if (dataDirectory != null && target.ServesFromHere(dataDirectory))
        {
            try
            {
                var walFolder = Path.Combine(dataDirectory, "pg_wal");
                var real = Directory.ResolveLinkTarget(walFolder, returnFinalTarget: true)?.FullName ?? walFolder;
                var drive = new DriveInfo(real);
                (free, total) = (drive.AvailableFreeSpace, drive.TotalSize);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException)
            {
                reporter.Verbose($"Cannot read the free space of the disk of {dataDirectory}/pg_wal: {ex.Message}");
            }
        }
        // What the guard dropped: the first word of each line of pgbackup_dropped_wal.log (written by pgbackup-wal push).
        string[]? dropped = null;
        try
        {
            var log = await ServerSession.ScalarAsync<string>(connection, "select pg_read_file('pgbackup_dropped_wal.log', 0, 10485760, true)", ct).ConfigureAwait(false);
            dropped = (log ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[0]).Where(n => n.Length >= 24).Distinct().ToArray();
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.InsufficientPrivilege or PostgresErrorCodes.UndefinedFunction)
        {
            reporter.Verbose($"Cannot read pgbackup_dropped_wal.log ({ex.MessageText}); pg_read_server_files or a superuser may.");
        }
        return new WalBacklog(ready, oldest, age, walBytes, free, total, dropped);
    }

    /// <summary>Modification times of the archive status files of the last archived and the first unarchived segment; null when the role may not list them (pg_monitor or superuser needed).</summary>
    private static async Task<IReadOnlyDictionary<string, DateTimeOffset>?> ReadStatusFileTimesAsync(NpgsqlConnection connection, LiveArchiveState live,
        IOperationReporter reporter, CancellationToken ct)
    {
        var names = new[] { live.LastArchived, live.FirstUnarchived }.OfType<WalSegmentName>()
            .SelectMany(s => new[] { s + ".ready", s + ".done" }).ToArray();
        await using var cmd = new NpgsqlCommand("select name, modification from pg_ls_archive_statusdir() where name = any($1)", connection);
        cmd.Parameters.Add(new NpgsqlParameter { Value = names });
        try
        {
            var times = new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal);
            await using var reader = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            while (await reader.ReadAsync(ct).ConfigureAwait(false)) times[reader.GetString(0)] = reader.GetFieldValue<DateTimeOffset>(1);
            return times;
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.InsufficientPrivilege or PostgresErrorCodes.UndefinedFunction)
        {
            reporter.Verbose($"Cannot read pg_wal/archive_status ({ex.MessageText}); the recovery point objective is estimated from pg_stat_archiver alone.");
            return null;
        }
    }

    private static void WarnAboutArchiver(ServerWalState server, WalInventory inventory, ConnectionTarget target, IOperationReporter reporter)
    {
        if (server.ArchiveMode == "off")
            reporter.Warning($"archive_mode is off on {target.Display}: the server archives no WAL, so the archive falls further behind with every write.");
        else if (server.FailedCount > 0 && server.LastFailedTime > (server.LastArchivedTime ?? DateTimeOffset.MinValue))
            reporter.Warning($"Archiving on {target.Display} is failing: {server.LastFailedWal} failed at {server.LastFailedTime:u} ({server.FailedCount} failures so far). The server log names the reason.");
        if (server.LastArchivedWal is { } last && !inventory.HasFile(last))
            reporter.Warning($"{target.Display} reports {last} as archived last, but {inventory.Folder} does not hold it: archive_command may write into another repository, or the file was removed.");
    }

    private static string SystemIdentifierOf(string folder)
    {
        var name = Path.GetFileName(Path.TrimEndingDirectorySeparator(folder));
        return name.Length > 0 && name.All(char.IsAsciiDigit) ? name : "";
    }
}
