using PgBackup.Engine.Connection;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Instance;

/// <summary>A restart of a server on this machine so that settings written with ALTER SYSTEM take effect; only when the user asked for it.</summary>
public static class ServerRestart
{
    private static bool IsRoot => !OperatingSystem.IsWindows() && Environment.IsPrivilegedProcess;

    /// <summary>
    /// pg_ctl restart as the data directory's owner. False (with a warning saying what to restart) when PgBackup may not
    /// or should not restart this server itself.
    /// </summary>
    public static async Task<bool> RestartAsync(ConnectionTarget target, string dataDirectory, string pending, string meanwhile, string? owner, string? toolPath,
        int major, IOperationReporter reporter, CancellationToken ct)
    {
        bool Refuse(string why)
        {
            reporter.Warning($"{target.Display} was not restarted: {why}. Restart it yourself so that {pending} take effect; {meanwhile}.");
            return false;
        }
        if (OperatingSystem.IsWindows()) return Refuse("on Windows the server runs as a service; restart that service");
        if (!target.ServesFromHere(dataDirectory)) return Refuse($"its data directory {dataDirectory} is not on this machine");
        if (owner == null) return Refuse($"the owner of {dataDirectory} could not be found");
        var asOwner = IsRoot && owner != "root";
        if (!asOwner && owner != Environment.UserName) return Refuse($"it runs as '{owner}' and this account ('{Environment.UserName}') cannot restart it");
        var postmaster = InstanceControl.ReadPostmaster(dataDirectory)?.Pid;
        if (postmaster != null && InstanceControl.SystemdUnit(postmaster.Value) is { } unit)
            return Refuse($"systemd runs it as {unit}; run 'systemctl restart {unit}'");

        var pgCtl = new ToolLocator(toolPath).Find("pg_ctl", major, major, reporter);
        if (pgCtl.Major != major) return Refuse($"no pg_ctl of version {major} was found (only {pgCtl})");
        var arguments = new List<string> { "restart", "-D", dataDirectory, "-m", "fast", "-w", "-t", "300" };
        // Without -l the restarted server would write its log into pg_ctl's output, which nobody reads after we return.
        arguments.AddRange(["-l", ServerLogFile(postmaster) ?? Path.Combine(dataDirectory, "pgbackup-restart.log")]);

        reporter.Milestone($"Restarting {target.Display} (pg_ctl restart -m fast) so that {pending} take effect.");
        var result = await ToolRunner.RunAsUserAsync(pgCtl, asOwner ? owner : null, arguments, new Dictionary<string, string?> { ["PGDATA"] = null }, reporter.Verbose, ct, reporter).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new PgBackupException("RestartFailed", ErrorKind.ToolFailed,
                $"pg_ctl restart of {target.Display} failed (exit code {result.ExitCode}):{Environment.NewLine}{result.ErrorSummary()}", dataDirectory,
                "Look at the server log, fix what it names, and start the server (pg_ctl start -D <data directory>); the settings are already written.");
        reporter.Milestone($"{target.Display} restarted in {result.Duration.TotalSeconds:0.0}s.");
        return true;
    }

    /// <summary>The file the running server writes its log to (its stderr), on Linux.</summary>
    private static string? ServerLogFile(int? postmaster)
    {
        if (postmaster == null || !OperatingSystem.IsLinux()) return null;
        try
        {
            var target = File.ResolveLinkTarget($"/proc/{postmaster}/fd/2", returnFinalTarget: false)?.FullName;
            return target != null && File.Exists(target) ? target : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return null; }
    }
}
