using System.Globalization;
using System.Text.RegularExpressions;
using PgBackup.Engine.Instance;

namespace PgBackup.Engine.Recovery;

/// <summary>
/// What the recovered instance's server log says about how its recovery ended: the point reached, and why it stopped
/// short of the target, in the words of the lines that matter.
/// </summary>
internal static class RecoveryLog
{
    public static PgBackupException StoppedShort(RecoveryResult result)
    {
        var log = Read(result.LogFile);
        ReadReached(result);
        var relevant = string.Join(Environment.NewLine, log.Split('\n').Where(l => Regex.IsMatch(l, "FATAL|PANIC|ERROR|DAMAGED|pgbackup-wal|redo done|recovery stopping|last completed transaction|could not|invalid")).TakeLast(12));
        var reached = $"the last WAL replayed was {(result.ReachedLsn?.ToString() ?? "unknown")}" + (result.ReachedTime is { } t ? $", the last commit at {t.UtcDateTime:yyyy-MM-dd HH:mm:ss.ffffff} UTC" : "");
        if (log.Contains("before consistent recovery point", StringComparison.Ordinal))
            return new PgBackupException("TargetBeforeBackupEnd", ErrorKind.InvalidArgument,
                $"The target {result.Target} is before the base backup became consistent; the server stopped.{Environment.NewLine}{relevant}", result.BackupId,
                "Recover from an older base backup, or choose a later target. Nothing was left behind.");
        if (log.Contains("recovery ended before configured recovery target was reached", StringComparison.Ordinal))
            return new PgBackupException("TargetNotReached", ErrorKind.ObjectNotFound,
                $"Recovery ran out of archived WAL before reaching {result.Target}: {reached}.{Environment.NewLine}{relevant}", result.Target,
                "Choose a target up to the point reached, or -Latest; or make sure the WAL up to the target is archived. Nothing was left behind.");
        return new PgBackupException("RecoveryFailed", ErrorKind.ToolFailed,
            $"The recovered instance stopped before reaching {result.Target} ({reached}):{Environment.NewLine}{(relevant.Length > 0 ? relevant : InstanceControl.LogTail(result.LogFile))}", result.DataDirectory,
            "Read the server log lines above (a damaged or missing WAL segment, a missing extension library, too little memory) and fix what they name. Nothing was left behind.");
    }

    public static void ReadReached(RecoveryResult result)
    {
        var log = Read(result.LogFile);
        if (Regex.Matches(log, @"redo done at ([0-9A-F]+/[0-9A-F]+)") is { Count: > 0 } redo && Lsn.TryParse(redo[^1].Groups[1].Value, out var lsn)) result.ReachedLsn = lsn;
        else if (Regex.Matches(log, @"recovery stopping (?:before|after) .*?(?:location|LSN) ""?([0-9A-F]+/[0-9A-F]+)") is { Count: > 0 } stop && Lsn.TryParse(stop[^1].Groups[1].Value, out var at)) result.ReachedLsn = at;
        if (Regex.Matches(log, @"last completed transaction was at log time (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d(?::?\d\d)?)") is { Count: > 0 } last)
            result.ReachedTime = ParseLogTime(last[^1].Groups[1].Value, last[^1].Groups[2].Value);
        else if (Regex.Matches(log, @"recovery stopping after (?:commit|abort) of transaction \d+, time (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d(?::?\d\d)?)") is { Count: > 0 } after)
            result.ReachedTime = ParseLogTime(after[^1].Groups[1].Value, after[^1].Groups[2].Value);
    }

    private static DateTimeOffset ParseLogTime(string local, string offset)
    {
        var normalised = offset.Length == 3 ? offset + ":00" : offset.Contains(':') ? offset : offset[..3] + ":" + offset[3..];
        return DateTimeOffset.ParseExact(local + normalised, ["yyyy-MM-dd HH:mm:ss.FFFFFFzzz", "yyyy-MM-dd HH:mm:sszzz"], CultureInfo.InvariantCulture, DateTimeStyles.None).ToUniversalTime();
    }

    public static string Read(string logFile)
    {
        try
        {
            using var stream = new FileStream(logFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return ""; }
    }
}
