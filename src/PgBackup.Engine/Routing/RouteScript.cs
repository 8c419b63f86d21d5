using System.Diagnostics;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Routing;

/// <summary>
/// The operator's program that moves the clients to a new primary once it is promoted (a virtual IP, a DNS record,
/// HAProxy, a cloud load balancer): run by the shell with the old and the new primary in its environment
/// (PGBACKUP_OLD_PRIMARY, PGBACKUP_NEW_PRIMARY, and each one's _HOST and _PORT), and stopped when it takes longer than
/// its timeout. The primary has moved by then, so its failure does not undo anything: it is reported, with what the
/// script printed, in the switchover's result.
/// </summary>
public static class RouteScript
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    /// <summary>The error to report when the route script of <paramref name="result"/> failed; null when it succeeded or there was none.</summary>
    public static PgBackupException? FailureOf(SwitchoverResult result) => result.Routing is { Succeeded: false } routing
        ? new PgBackupException("RouteScriptFailed", ErrorKind.ToolFailed,
            $"{result.NewPrimary} is the primary now, but the route script {(routing.TimedOut ? "did not finish in time and was stopped" : $"failed (exit code {routing.ExitCode})")}, so clients may still be sent to {(result.OldPrimary.Length > 0 ? result.OldPrimary : "the old primary")}. It printed:{Environment.NewLine}{routing.Output}",
            routing.Script, $"Move the clients to {result.NewPrimary} yourself, or fix the route script and run it with PGBACKUP_NEW_PRIMARY={result.NewPrimary}; the switchover itself is done and needs no repeat.")
        : null;

    public static async Task<RouteScriptRun> RunAsync(string script, ConnectionTarget? oldPrimary, ConnectionTarget newPrimary, TimeSpan timeout, IOperationReporter reporter, CancellationToken ct)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
        limit.CancelAfter(timeout);
        var clock = Stopwatch.StartNew();
        var environment = new Dictionary<string, string?>
        {
            ["PGBACKUP_OLD_PRIMARY"] = oldPrimary?.Display, ["PGBACKUP_OLD_PRIMARY_HOST"] = oldPrimary?.Host,
            ["PGBACKUP_OLD_PRIMARY_PORT"] = oldPrimary?.Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["PGBACKUP_NEW_PRIMARY"] = newPrimary.Display, ["PGBACKUP_NEW_PRIMARY_HOST"] = newPrimary.Host,
            ["PGBACKUP_NEW_PRIMARY_PORT"] = newPrimary.Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
        };
        var printed = new System.Collections.Concurrent.ConcurrentQueue<string>();
        try
        {
            var result = await ToolRunner.RunAsync(new PgTool("route script", OperatingSystem.IsWindows() ? "cmd.exe" : "/bin/sh", "", 0),
                OperatingSystem.IsWindows() ? ["/c", script] : ["-c", script], environment,
                line => { printed.Enqueue(line); reporter.Verbose("route script: " + line); }, limit.Token, reporter: reporter,
                onOutputLine: line => { printed.Enqueue(line); reporter.Verbose("route script: " + line); }).ConfigureAwait(false);
            return new RouteScriptRun { Script = script, Succeeded = result.Succeeded, ExitCode = result.ExitCode, Output = string.Join(Environment.NewLine, printed), Duration = clock.Elapsed };
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            return new RouteScriptRun
            {
                Script = script, Succeeded = false, TimedOut = true, Duration = clock.Elapsed,
                Output = string.Join(Environment.NewLine, printed.Append($"(stopped: it did not finish within {timeout})")),
            };
        }
    }
}
