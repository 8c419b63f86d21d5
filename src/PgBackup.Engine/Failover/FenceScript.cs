using System.Text.RegularExpressions;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Failover;

/// <summary>
/// The operator's program that stops or cuts off an old primary PgBackup cannot reach itself (a remote host, a dead
/// machine): run by the shell, with PGBACKUP_OLD_PRIMARY and PGBACKUP_NEW_PRIMARY set; exit code 0 means done. What it
/// prints may name the old primary's final WAL position (pg_controldata's "Latest checkpoint location", or an LSN alone
/// on a line), which lets a switchover prove that nothing was lost.
/// </summary>
public static class FenceScript
{
    public sealed record Outcome(Lsn? FinalCheckpoint, string Output);

    public static async Task<Outcome> RunAsync(string script, ConnectionTarget? oldPrimary, ConnectionTarget newPrimary, string? oldDataDirectory, IOperationReporter reporter, CancellationToken ct)
    {
        var result = await ToolRunner.RunAsync(new PgTool("fence", OperatingSystem.IsWindows() ? "cmd.exe" : "/bin/sh", "", 0),
            OperatingSystem.IsWindows() ? ["/c", script] : ["-c", script], new Dictionary<string, string?>
            {
                ["PGBACKUP_OLD_PRIMARY"] = oldPrimary?.Display,
                ["PGBACKUP_NEW_PRIMARY"] = newPrimary.Display,
                ["PGBACKUP_OLD_DATA_DIRECTORY"] = oldDataDirectory,
            }, reporter.Verbose, ct, captureOutput: true, reporter: reporter).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new PgBackupException("FenceFailed", ErrorKind.ToolFailed, $"The fence script failed (exit code {result.ExitCode}): {result.ErrorSummary()}. Nothing was promoted.", script,
                "Fence the old primary another way (stop it, power it off, block its port) and run the command again.");
        return new Outcome(FinalCheckpointIn(result.StandardOutput), result.StandardOutput);
    }

    /// <summary>pg_controldata's "Database cluster state" in what the script printed, or null when it printed none.</summary>
    public static string? ClusterStateIn(string output) =>
        Regex.Match(output, @"Database cluster state:\s+(.+)") is { Success: true } m ? m.Groups[1].Value.Trim() : null;

    public static Lsn? FinalCheckpointIn(string output)
    {
        var control = Regex.Match(output, @"Latest checkpoint location:\s+([0-9A-Fa-f]+/[0-9A-Fa-f]+)");
        if (control.Success) return Lsn.Parse(control.Groups[1].Value);
        var alone = Regex.Matches(output, @"^\s*([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})\s*$", RegexOptions.Multiline);
        return alone.Count > 0 ? Lsn.Parse(alone[^1].Groups[1].Value) : null;
    }
}
