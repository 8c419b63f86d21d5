using System.Globalization;
using System.Text.RegularExpressions;
using PgBackup.Engine.Tools;
using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Wal;

/// <summary>A WAL record that can end point-in-time recovery: a transaction's commit or abort, or a named restore point.</summary>
public sealed record WalStopRecord(Lsn Lsn, uint Timeline, ulong Xid, string Kind, DateTimeOffset? Time, string? RestorePointName);

/// <summary>
/// Finds commits, aborts and restore points in archived WAL with pg_waldump, following a timeline's ancestry, so a recovery
/// target can be checked against the archive before anything is restored.
/// </summary>
public sealed class WalRecordScanner(PgTool pgWaldump, string archiveFolder, IReadOnlyList<WalTimelineSpan> lineage, IOperationReporter reporter)
{
    private static readonly Regex TransactionEnd = new(@"^(?<kind>COMMIT|ABORT|COMMIT_PREPARED|ABORT_PREPARED)\b[^0-9]*(?:\d+: )?(?<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)", RegexOptions.Compiled);
    private static readonly Regex RestorePoint = new(@"^RESTORE_POINT (?<name>.*)$", RegexOptions.Compiled);

    /// <summary>The newest commit or abort between the two positions (scanning back from the end), or null when there is none.</summary>
    public async Task<WalStopRecord?> NewestTransactionEndAsync(Lsn from, Lsn to, long segmentSize, CancellationToken ct)
    {
        if (to <= from) return null;
        // Most archives have a commit in their last segment; only an idle stretch needs the whole range.
        var near = to - from > segmentSize ? to + (-segmentSize) : from;
        WalStopRecord? newest = null;
        await ScanAsync(near, to, "Transaction", r => { newest = r; return false; }, ct).ConfigureAwait(false);
        if (newest == null && near > from)
            await ScanAsync(from, near, "Transaction", r => { newest = r; return false; }, ct).ConfigureAwait(false);
        return newest;
    }

    /// <summary>The first commit or abort of <paramref name="xid"/>, or the first restore point named <paramref name="name"/>.</summary>
    public async Task<WalStopRecord?> FindAsync(Lsn from, Lsn to, ulong? xid, string? name, CancellationToken ct)
    {
        WalStopRecord? found = null;
        await ScanAsync(from, to, xid != null ? "Transaction" : "XLOG", r =>
        {
            if ((xid != null && r.Time != null && r.Xid == (xid.Value & 0xFFFFFFFF)) || (name != null && r.RestorePointName == name)) found = r;
            return found != null;
        }, ct).ConfigureAwait(false);
        return found;
    }

    /// <param name="onRecord">Returns true to stop scanning.</param>
    private async Task ScanAsync(Lsn from, Lsn to, string resourceManager, Func<WalStopRecord, bool> onRecord, CancellationToken ct)
    {
        foreach (var span in lineage)
        {
            var start = span.Begin > from ? span.Begin : from;
            var end = span.End is { } e && e < to ? e : to;
            if (start >= end) continue;
            var done = false;
            await PgWalDump.RunAsync(pgWaldump,
                ["--path=" + archiveFolder, "--timeline=" + span.Timeline.ToString(CultureInfo.InvariantCulture), "--start=" + start, "--end=" + end, "--rmgr=" + resourceManager],
                r => done = Parse(r, span.Timeline) is { } record && onRecord(record), reporter, ct).ConfigureAwait(false);
            if (done) return;
        }
    }

    private static WalStopRecord? Parse(WalDumpRecord r, uint timeline)
    {
        if (TransactionEnd.Match(r.Description) is { Success: true } t)
        {
            var time = DateTime.ParseExact(t.Groups["time"].Value, ["yyyy-MM-dd HH:mm:ss.FFFFFF", "yyyy-MM-dd HH:mm:ss"], CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal);
            return new WalStopRecord(r.Lsn, timeline, r.Xid, t.Groups["kind"].Value, new DateTimeOffset(time, TimeSpan.Zero), null);
        }
        if (RestorePoint.Match(r.Description) is { Success: true } p)
            return new WalStopRecord(r.Lsn, timeline, r.Xid, "RESTORE_POINT", null, p.Groups["name"].Value);
        return null;
    }
}
