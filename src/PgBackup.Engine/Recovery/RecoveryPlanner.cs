using System.Globalization;
using PgBackup.Engine.Tools;
using PgBackup.Engine.Wal;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Instance;

namespace PgBackup.Engine.Recovery;

public sealed record RecoveryPlanRequest
{
    /// <summary>The base backups to choose from, of one cluster; with <see cref="BackupChosen"/> exactly the one to use.</summary>
    public required IReadOnlyList<BaseBackup> Candidates { get; init; }
    public bool BackupChosen { get; init; }
    public required RecoveryTarget Target { get; init; }
    /// <summary>The repository whose wal/&lt;system identifier&gt; folder holds the archived WAL; null when there is none.</summary>
    public string? Repository { get; init; }
    public string? ToolPath { get; init; }
}

/// <summary>
/// A recovery that the catalog and the archive say can succeed: which backup, which timeline, and how far the archived WAL
/// reaches without a gap.
/// </summary>
public sealed record RecoveryPlan(BaseBackup Backup, RecoveryTarget Target, uint Timeline, IReadOnlyList<WalTimelineSpan> Lineage, string? ArchiveFolder,
    Lsn NewestReachable, Lsn ExpectedEnd, WalStopRecord? TargetRecord)
{
    public long BytesToReplay => Math.Max(0, ExpectedEnd - Backup.StartLsn);

    /// <summary>The timeline whose WAL holds <paramref name="lsn"/> on the way to the target.</summary>
    public uint TimelineAt(Lsn lsn) => WalInventory.TimelineAt(Lineage, lsn.Value / (ulong)Backup.WalSegmentSize, Backup.WalSegmentSize);
}

/// <summary>
/// Validates a recovery target against a base backup and the archived WAL before anything is restored, and picks the newest
/// backup that can reach it. Each way to fail has its own error, naming the newest point that can be reached instead.
/// </summary>
public static class RecoveryPlanner
{
    public static async Task<RecoveryPlan> PlanAsync(RecoveryPlanRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var candidates = request.Candidates.OrderByDescending(b => b.StopLsn).ThenByDescending(b => b.StartTime).ToList();
        if (candidates.Count == 0)
            throw new PgBackupException("NoBaseBackup", ErrorKind.ObjectNotFound, "There is no base backup to recover from.", request.Repository,
                "Take one with Start-PgBaseBackup, or check -Repository and -Server (Get-PgBackup -Kind Base lists what the repository holds).");
        var target = request.Target;
        WalStopRecord? record = null;
        if (target.Kind is RecoveryTargetKind.Xid or RecoveryTargetKind.Name)
            record = await FindTargetRecordAsync(candidates[^1], request, reporter, ct).ConfigureAwait(false);

        PgBackupException? tooLate = null;
        foreach (var backup in candidates)
        {
            try { return await EvaluateAsync(backup, request, record, reporter, ct).ConfigureAwait(false); }
            catch (PgBackupException ex) when (ex.ErrorId == "PgBackup.TargetBeforeBackupEnd" && !request.BackupChosen)
            {
                reporter.Verbose($"Base backup {backup.Id} cannot reach {target}: {ex.Message}");
                tooLate = ex;
            }
        }
        throw tooLate!;
    }

    private static async Task<RecoveryPlan> EvaluateAsync(BaseBackup backup, RecoveryPlanRequest request, WalStopRecord? record, IOperationReporter reporter, CancellationToken ct)
    {
        BackupFiles.EnsureRestorable(backup);
        var target = request.Target;
        var segmentSize = backup.WalSegmentSize;
        var folder = ArchiveFolderOf(backup, request.Repository);
        var inventory = folder != null ? WalInventory.Read(folder, segmentSize, reporter.Warning) : null;
        if (inventory == null && !(target.Kind == RecoveryTargetKind.Immediate && backup.WalIncluded))
            throw new PgBackupException("NoWalArchive", ErrorKind.ObjectNotFound,
                $"There is no archived WAL for the cluster {backup.SystemIdentifier} in {(request.Repository ?? backup.Repository ?? "the repository")}, so backup {backup.Id} can only be restored to its own end.",
                request.Repository ?? backup.Repository, "Restore with -Immediate, or give the -Repository that Enable-PgWalArchiving archives into.");

        var (timeline, lineage) = ResolveTimeline(backup, target.Timeline, inventory);
        var positions = inventory?.PositionsOnLineage(lineage) ?? [];
        var startPos = WalSegmentName.Parse(backup.StartSegment).Number(segmentSize);
        var stopPos = backup.StopLsn.Value / (ulong)segmentSize;
        if (!backup.WalIncluded)
            for (var p = startPos; p <= stopPos; p++)
                if (!positions.Contains(p))
                    throw Missing(backup, lineage, p, "the backup has no WAL of its own and cannot become consistent without it", backup.StopLsn, null);

        var pos = backup.WalIncluded ? stopPos : startPos;
        var archivedFromBackup = positions.Contains(pos);
        while (positions.Contains(pos)) pos++;
        var newest = archivedFromBackup ? new Lsn(pos * (ulong)segmentSize) : backup.StopLsn;
        var hole = positions.Count > 0 && positions.Max > pos ? pos : (ulong?)null;
        var scanner = folder == null ? null : new WalRecordScanner(new ToolLocator(request.ToolPath).Find("pg_waldump", null, MajorOf(backup), reporter), folder, lineage, reporter);
        var scanFrom = backup.StopLsn;

        async Task<PgBackupException> Unreachable(string what)
        {
            var last = scanner == null ? null : await scanner.NewestTransactionEndAsync(scanFrom, newest, segmentSize, ct).ConfigureAwait(false);
            return hole is { } h
                ? Missing(backup, lineage, h, $"{what} lies beyond it", newest, last)
                : new PgBackupException("TargetBeyondArchive", ErrorKind.InvalidArgument,
                    $"{Capital(what)} is beyond the newest archived WAL: {NewestPoint(newest, last)}.", target,
                    $"Choose a target up to {NewestPointShort(newest, last)}, restore with -Latest, or wait until the server has archived the WAL you need (SELECT pg_switch_wal() archives the current segment).");
        }

        var expectedEnd = newest;
        switch (target.Kind)
        {
            case RecoveryTargetKind.Immediate:
                expectedEnd = backup.StopLsn;
                break;
            case RecoveryTargetKind.Latest:
                if (hole != null) throw await Unreachable("the end of the archive").ConfigureAwait(false);
                break;
            case RecoveryTargetKind.Lsn:
                if (target.Lsn!.Value < backup.StopLsn)
                    throw BeforeBackupEnd(backup, $"LSN {target.Lsn}", $"LSN {backup.StopLsn}");
                if (target.Lsn.Value >= newest) throw await Unreachable($"LSN {target.Lsn}").ConfigureAwait(false);
                expectedEnd = target.Lsn.Value;
                break;
            case RecoveryTargetKind.Time:
                var stopTime = StopTime(backup);
                if (target.Time!.Value < stopTime)
                    throw BeforeBackupEnd(backup, $"{target.Time.Value.UtcDateTime:yyyy-MM-dd HH:mm:ss.ffffff} UTC", $"{stopTime.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC");
                // Recovery stops at the first commit after the target; without one it runs off the end of the archive and fails.
                var last = scanner == null ? null : await scanner.NewestTransactionEndAsync(scanFrom, newest, segmentSize, ct).ConfigureAwait(false);
                if (last?.Time is not { } lastTime || (target.Inclusive ? target.Time.Value >= lastTime : target.Time.Value > lastTime))
                    throw await Unreachable($"the time {target.Time.Value.UtcDateTime:yyyy-MM-dd HH:mm:ss.ffffff} UTC").ConfigureAwait(false);
                break;
            default:
                var what = target.Kind == RecoveryTargetKind.Xid ? $"transaction {target.Xid}" : $"the restore point '{target.Name}'";
                if (record == null || record.Lsn >= newest) throw await Unreachable(what).ConfigureAwait(false);
                if (record.Lsn < backup.StopLsn) throw BeforeBackupEnd(backup, $"{what} (LSN {record.Lsn})", $"LSN {backup.StopLsn}");
                expectedEnd = record.Lsn;
                break;
        }
        reporter.Verbose($"Recovery plan: base backup {backup.Id} ({backup.StopLsn} on timeline {backup.Timeline}), timeline {timeline}, archived WAL reaches {newest}.");
        return new RecoveryPlan(backup, target, timeline, lineage, folder, newest, expectedEnd, record);
    }

    /// <summary>
    /// The timeline to replay along: "latest" (the default, as in PostgreSQL) is the newest timeline in the archive that
    /// branched off after the backup's end; "current" is the backup's own; a number must be one of those.
    /// </summary>
    private static (uint, IReadOnlyList<WalTimelineSpan>) ResolveTimeline(BaseBackup backup, string? requested, WalInventory? inventory)
    {
        IReadOnlyList<WalTimelineSpan>? LineageIfDescends(uint timeline)
        {
            if (timeline == backup.Timeline) return [new(timeline, Lsn.Zero, null)];
            if (inventory == null || timeline < backup.Timeline || !inventory.HasFile(WalInventory.HistoryFileName(timeline))) return null;
            var lineage = inventory.Lineage(timeline, null);
            var span = lineage.FirstOrDefault(s => s.Timeline == backup.Timeline);
            return span != null && (span.End is not { } end || backup.StopLsn <= end) ? lineage : null;
        }

        var text = string.IsNullOrWhiteSpace(requested) ? "latest" : requested.Trim().ToLowerInvariant();
        if (text == "current") return (backup.Timeline, LineageIfDescends(backup.Timeline)!);
        if (text == "latest")
        {
            foreach (var timeline in (inventory?.Timelines ?? []).Where(t => t > backup.Timeline).OrderDescending())
                if (LineageIfDescends(timeline) is { } lineage) return (timeline, lineage);
            return (backup.Timeline, LineageIfDescends(backup.Timeline)!);
        }
        if (!uint.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var number) || number == 0)
            throw new PgBackupException("InvalidTimeline", ErrorKind.InvalidArgument, $"'{requested}' is not a timeline: give a number, 'latest' or 'current'.", requested,
                "Get-PgWalArchive lists the timelines the archive holds.");
        if (number != backup.Timeline && (inventory == null || !inventory.HasFile(WalInventory.HistoryFileName(number))))
            throw new PgBackupException("TimelineNotInArchive", ErrorKind.ObjectNotFound,
                $"The archive has no history file for timeline {number} ({WalInventory.HistoryFileName(number)}), so recovery cannot follow it.", number,
                $"Choose a timeline the archive holds (Get-PgWalArchive lists them; the backup is on timeline {backup.Timeline}).");
        return (number, LineageIfDescends(number) ?? throw new PgBackupException("TimelineNotReachable", ErrorKind.InvalidArgument,
            $"Timeline {number} did not branch off timeline {backup.Timeline} after backup {backup.Id} ended (LSN {backup.StopLsn}), so that backup cannot reach it.", number,
            "Recover from a base backup taken before the timeline branched off, or on that timeline."));
    }

    private static async Task<WalStopRecord?> FindTargetRecordAsync(BaseBackup oldest, RecoveryPlanRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var folder = ArchiveFolderOf(oldest, request.Repository);
        if (folder == null) return null;
        var inventory = WalInventory.Read(folder, oldest.WalSegmentSize, reporter.Warning);
        var (_, lineage) = ResolveTimeline(oldest, request.Target.Timeline, inventory);
        var end = inventory.PositionsOnLineage(lineage) is { Count: > 0 } p ? new Lsn((p.Max + 1) * (ulong)oldest.WalSegmentSize) : oldest.StopLsn;
        var first = inventory.PositionsOnLineage(lineage).FirstOrDefault(x => x * (ulong)oldest.WalSegmentSize + (ulong)oldest.WalSegmentSize > oldest.StartLsn.Value);
        var from = new Lsn(Math.Max(oldest.StartLsn.Value, first * (ulong)oldest.WalSegmentSize));
        reporter.Progress("Planning the recovery", $"Looking for {request.Target} in the archived WAL", -1);
        var scanner = new WalRecordScanner(new ToolLocator(request.ToolPath).Find("pg_waldump", null, MajorOf(oldest), reporter), folder, lineage, reporter);
        var found = await scanner.FindAsync(from, end, request.Target.Xid, request.Target.Name, ct).ConfigureAwait(false);
        reporter.ProgressCompleted("Planning the recovery");
        return found;
    }

    /// <summary>
    /// When pg_basebackup finished: it writes backup_manifest last, so the manifest's time is the backup's end. The
    /// recorded end (after verification) bounds it, for repositories copied without their file times.
    /// </summary>
    public static DateTimeOffset StopTime(BaseBackup backup)
    {
        var manifest = string.IsNullOrEmpty(backup.ManifestPath) ? Path.Combine(backup.Path, "backup_manifest") : backup.ManifestPath;
        var written = File.Exists(manifest) ? new DateTimeOffset(File.GetLastWriteTimeUtc(manifest), TimeSpan.Zero) : backup.EndTime;
        return backup.EndTime > backup.StartTime && written > backup.EndTime ? backup.EndTime : written;
    }

    private static string? ArchiveFolderOf(BaseBackup backup, string? repository)
    {
        var repo = repository ?? backup.Repository;
        if (string.IsNullOrEmpty(repo) || string.IsNullOrEmpty(backup.SystemIdentifier)) return null;
        var folder = RepositoryLayout.ArchiveFolder(repo, backup.SystemIdentifier);
        return Directory.Exists(folder) ? folder : null;
    }

    private static PgBackupException BeforeBackupEnd(BaseBackup backup, string what, string earliest) =>
        new("TargetBeforeBackupEnd", ErrorKind.InvalidArgument,
            $"The target {what} is before base backup {backup.Id} became consistent; the earliest point it can reach is {earliest}.", backup.Id,
            "Recover from an older base backup (pipe it in, or give -BackupId), or choose a later target.");

    private static PgBackupException Missing(BaseBackup backup, IReadOnlyList<WalTimelineSpan> lineage, ulong position, string consequence, Lsn newest, WalStopRecord? last)
    {
        var segment = WalSegmentName.FromNumber(WalInventory.TimelineAt(lineage, position, backup.WalSegmentSize), position, backup.WalSegmentSize);
        return new PgBackupException("WalSegmentMissing", ErrorKind.ObjectNotFound,
            $"The WAL segment {segment} is missing from the archive and {consequence}; recovery from backup {backup.Id} can reach {NewestPoint(newest, last)}.", segment.ToString(),
            $"Restore {segment} into the archive if a copy exists (Get-PgWalArchive lists the gaps), or recover to a point before it ({NewestPointShort(newest, last)}).");
    }

    private static string NewestPoint(Lsn newest, WalStopRecord? last) =>
        last?.Time is { } time ? $"LSN {newest}, with the last commit at {time.UtcDateTime:yyyy-MM-dd HH:mm:ss.ffffff} UTC (LSN {last.Lsn})" : $"LSN {newest}";

    private static string NewestPointShort(Lsn newest, WalStopRecord? last) =>
        // Not a -TargetTime at the last commit: a time target stops only at a commit after it, and there is none.
        last != null ? $"-TargetLsn {last.Lsn} (just after the last commit)" : $"-TargetLsn {newest}";

    private static string Capital(string text) => text.Length == 0 ? text : char.ToUpperInvariant(text[0]) + text[1..];

    private static int? MajorOf(BaseBackup backup) => InstanceControl.MajorOf(backup.ServerVersion);
}
