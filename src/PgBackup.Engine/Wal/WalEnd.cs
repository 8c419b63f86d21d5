using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Wal;

/// <summary>Where the valid WAL in a stopped or crashed server's pg_wal ends: the end of its last readable record.</summary>
public static class WalEnd
{
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
        var control = await Instance.InstanceControl.ReadControlDataAsync(dataDirectory, version, toolPath, reporter, ct).ConfigureAwait(false);
        if (!control.TryGetValue("Latest checkpoint location", out var checkpointText) || !Lsn.TryParse(checkpointText, out var checkpoint) ||
            !control.TryGetValue("Latest checkpoint's TimeLineID", out var timeline))
            return null;
        var major = Instance.InstanceControl.MajorOf(version);
        var tool = new ToolLocator(toolPath).Find("pg_waldump", major, major, reporter);
        Lsn? end = null;
        await PgWalDump.RunAsync(tool, ["--path=" + walFolder, "--timeline=" + timeline, "--start=" + checkpoint],
            r => { if (end == null || r.End > end) end = r.End; return false; }, reporter, ct).ConfigureAwait(false);
        return end;
    }
}
