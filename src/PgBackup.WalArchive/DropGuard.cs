using System.Text;

namespace PgBackup.WalArchive;

/// <summary>
/// The optional guard against a full pg_wal (pgBackRest's archive-push-queue-max): when a push fails while more than the
/// limit of completed segments waits in pg_wal (the .ready files of pg_wal/archive_status), the segment is reported to
/// PostgreSQL as archived without being archived, so the server can recycle it instead of filling its disk and stopping.
/// That gives up point-in-time recovery across the dropped span, so every dropped segment is recorded, with the time and
/// why, in &lt;data directory&gt;/pgbackup_dropped_wal.log (Get-PgWalArchive reports it), and the server log gets a warning.
/// A segment the archive holds with other content is never dropped: that is two servers, or a damaged copy.
/// </summary>
internal static class DropGuard
{
    public const string Option = "--drop-backlog-above";
    public const string LogName = "pgbackup_dropped_wal.log";

    public static int Apply(string source, long limitBytes, int pushResult, Func<int, string, int> error)
    {
        if (pushResult is 0 or 2 or 4) return pushResult; // pushed, a usage error, or a conflict
        var full = Path.GetFullPath(source);
        var walFolder = Path.GetDirectoryName(full)!;
        var status = Path.Combine(walFolder, "archive_status");
        long segment;
        int ready;
        try
        {
            segment = new FileInfo(full).Length;
            ready = Directory.Exists(status) ? Directory.EnumerateFiles(status, "*.ready").Count() : 0;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return pushResult; }
        var backlog = ready * segment;
        if (backlog <= limitBytes) return pushResult;

        var name = Path.GetFileName(full);
        var log = Path.Combine(Path.GetDirectoryName(walFolder)!, LogName);
        try
        {
            using var output = new FileStream(log, FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
            output.Write(Encoding.UTF8.GetBytes($"{name} {DateTimeOffset.UtcNow:yyyy-MM-dd'T'HH:mm:ss'Z'} backlog {backlog} bytes above {limitBytes}\n"));
            output.Flush(flushToDisk: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Unrecorded, a dropped segment would be a silent hole: keep it instead.
            return error(pushResult, $"could not record the drop of {name} in {log} ({ex.Message}); keeping it in pg_wal");
        }
        Console.Error.WriteLine($"pgbackup-wal: WARNING: {name} was NOT archived and is dropped: {ready} segments ({backlog} bytes) wait in pg_wal, more than the limit of {limitBytes} bytes; point-in-time recovery cannot pass it (recorded in {LogName})");
        return 0;
    }
}
