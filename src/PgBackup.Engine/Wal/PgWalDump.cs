using System.Globalization;
using System.Text.RegularExpressions;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Wal;

/// <summary>One WAL record as pg_waldump prints it.</summary>
internal readonly record struct WalDumpRecord(Lsn Lsn, long Length, ulong Xid, string Description)
{
    public Lsn End => Lsn + Length;
}

/// <summary>Runs pg_waldump and hands each record it prints to the caller, which may stop the run early.</summary>
internal static class PgWalDump
{
    // rmgr: Transaction len (rec/tot): 66/ 66, tx: 721, lsn: 0/014FA0A8, prev 0/014FA020, desc: COMMIT 2026-11-25 18:51:46.935562 UTC; ...
    private static readonly Regex RecordLine = new(@"len \(rec/tot\):\s*\d+/\s*(?<tot>\d+), tx:\s*(?<xid>\d+), lsn: (?<lsn>[0-9A-F]+/[0-9A-F]+), prev [^,]+, desc: (?<desc>.*)$", RegexOptions.Compiled);

    /// <param name="onRecord">Returns true to stop reading.</param>
    /// <returns>False when pg_waldump ended with an error, which is how it reports the end of the readable WAL.</returns>
    public static async Task<bool> RunAsync(PgTool pgWaldump, IEnumerable<string> arguments, Func<WalDumpRecord, bool> onRecord, IOperationReporter reporter, CancellationToken ct)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var done = false;
        void OnLine(string line)
        {
            if (done || RecordLine.Match(line) is not { Success: true } m) return;
            var record = new WalDumpRecord(Lsn.Parse(m.Groups["lsn"].Value), long.Parse(m.Groups["tot"].Value, CultureInfo.InvariantCulture),
                ulong.Parse(m.Groups["xid"].Value, CultureInfo.InvariantCulture), m.Groups["desc"].Value);
            if (onRecord(record)) { done = true; stop.Cancel(); }
        }
        try
        {
            // TZ=UTC: pg_waldump prints commit times in its own process's time zone.
            var result = await ToolRunner.RunAsync(pgWaldump, arguments, new Dictionary<string, string?> { ["TZ"] = "UTC" }, null, stop.Token, reporter: reporter, onOutputLine: OnLine).ConfigureAwait(false);
            if (!result.Succeeded) reporter.Verbose($"pg_waldump stopped at the end of the readable WAL: {result.ErrorSummary(2)}");
            return result.Succeeded;
        }
        catch (OperationCanceledException) when (done && !ct.IsCancellationRequested) { return true; }
    }
}
