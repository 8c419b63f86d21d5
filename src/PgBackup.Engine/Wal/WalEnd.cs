using System.Globalization;
using System.Text.RegularExpressions;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Wal;

/// <summary>Where the valid WAL in a stopped or crashed server's pg_wal ends: the end of its last readable record.</summary>
public static class WalEnd
{
    // rmgr: Heap len (rec/tot): 54/ 54, tx: 735, lsn: 0/0300A1B8, prev ...
    private static readonly Regex Record = new(@"len \(rec/tot\):\s*\d+/\s*(?<tot>\d+), tx:\s*\d+, lsn: (?<lsn>[0-9A-F]+/[0-9A-F]+)", RegexOptions.Compiled);

    /// <summary>
    /// Reads from the last checkpoint (pg_controldata) to the end of the readable WAL. Segment names alone cannot say
    /// where the WAL ends: PostgreSQL renames old segments to future names for reuse, and those hold stale records.
    /// </summary>
    /// <returns>The end of the last record, or null when the WAL cannot be read.</returns>
    public static async Task<Lsn?> FindAsync(string dataDirectory, string? toolPath, IOperationReporter reporter, CancellationToken ct)
    {
        var walFolder = Path.Combine(dataDirectory, "pg_wal");
        var versionFile = Path.Combine(dataDirectory, "PG_VERSION");
        if (!Directory.Exists(walFolder) || !File.Exists(versionFile)) return null;
        var version = File.ReadAllText(versionFile).Trim();
        var control = await Recovery.InstanceControl.ReadControlDataAsync(dataDirectory, version, toolPath, reporter, ct).ConfigureAwait(false);
        if (!control.TryGetValue("Latest checkpoint location", out var checkpointText) || !Lsn.TryParse(checkpointText, out var checkpoint) ||
            !control.TryGetValue("Latest checkpoint's TimeLineID", out var timeline))
            return null;
        var major = Recovery.InstanceControl.MajorOf(version);
        var tool = new ToolLocator(toolPath).Find("pg_waldump", major, major, reporter);
        Lsn? end = null;
        await ToolRunner.RunAsync(tool, ["--path=" + walFolder, "--timeline=" + timeline, "--start=" + checkpoint],
            new Dictionary<string, string?>(), null, ct, onOutputLine: line =>
            {
                if (Record.Match(line) is not { Success: true } m) return;
                var recordEnd = Lsn.Parse(m.Groups["lsn"].Value) + long.Parse(m.Groups["tot"].Value, CultureInfo.InvariantCulture);
                if (end == null || recordEnd > end) end = recordEnd;
            }).ConfigureAwait(false);
        return end;
    }
}
