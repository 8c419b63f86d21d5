using System.Globalization;
using System.Text.RegularExpressions;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Wal;

/// <summary>A WAL record that can end point-in-time recovery: a transaction's commit or abort, or a named restore point.</summary>
public sealed record WalStopRecord(Lsn Lsn, uint Timeline, ulong Xid, string Kind, DateTimeOffset? Time, string? RestorePointName);

/// <summary>
/// Finds commits, aborts and restore points in archived WAL with pg_waldump, following a timeline's ancestry, so a recovery
/// target can be checked against the archive before anything is restored.
/// </summary>
public sealed class WalRecordScanner(PgTool pgWaldump, string archiveFolder, IReadOnlyList<WalTimelineSpan> lineage, IOperationReporter reporter)
{
    // rmgr: Transaction len (rec/tot): 66/66, tx: 721, lsn: 0/014FA0A8, prev 0/014FA020, desc: COMMIT 2026-11-25 18:51:46.935562 UTC; ...
    private static readonly Regex RecordLine = new(@"tx:\s*(?<xid>\d+), lsn: (?<lsn>[0-9A-F]+/[0-9A-F]+), prev [^,]+, desc: (?<desc>.*)$", RegexOptions.Compiled);
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
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var done = false;
            void OnLine(string line)
            {
                if (done || RecordLine.Match(line) is not { Success: true } m) return;
                var record = Parse(m, span.Timeline);
                if (record != null && onRecord(record)) { done = true; stop.Cancel(); }
            }
            try
            {
                // TZ=UTC: pg_waldump prints commit times in its own process's time zone.
                var result = await ToolRunner.RunAsync(pgWaldump,
                    ["--path=" + archiveFolder, "--timeline=" + span.Timeline.ToString(CultureInfo.InvariantCulture), "--start=" + start, "--end=" + end, "--rmgr=" + resourceManager],
                    new Dictionary<string, string?> { ["TZ"] = "UTC" }, null, stop.Token, reporter: reporter, onOutputLine: OnLine).ConfigureAwait(false);
                if (!result.Succeeded) reporter.Verbose($"pg_waldump stopped at the end of the readable WAL: {result.ErrorSummary(2)}");
            }
            catch (OperationCanceledException) when (done && !ct.IsCancellationRequested) { }
            if (done) return;
        }
    }

    private static WalStopRecord? Parse(Match m, uint timeline)
    {
        var desc = m.Groups["desc"].Value;
        var lsn = Lsn.Parse(m.Groups["lsn"].Value);
        var xid = ulong.Parse(m.Groups["xid"].Value, CultureInfo.InvariantCulture);
        if (TransactionEnd.Match(desc) is { Success: true } t)
        {
            var time = DateTime.ParseExact(t.Groups["time"].Value, ["yyyy-MM-dd HH:mm:ss.FFFFFF", "yyyy-MM-dd HH:mm:ss"], CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal);
            return new WalStopRecord(lsn, timeline, xid, t.Groups["kind"].Value, new DateTimeOffset(time, TimeSpan.Zero), null);
        }
        if (RestorePoint.Match(desc) is { Success: true } r)
            return new WalStopRecord(lsn, timeline, xid, "RESTORE_POINT", null, r.Groups["name"].Value);
        return null;
    }
}
