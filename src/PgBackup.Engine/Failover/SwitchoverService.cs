using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Npgsql;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Patroni;
using PgBackup.Engine.Replication;
using PgBackup.Engine.Routing;
using PgBackup.Engine.Tools;
using PgBackup.Engine.Instance;

namespace PgBackup.Engine.Failover;

public sealed record SwitchoverRequest
{
    public required ConnectionTarget Primary { get; init; }
    public required ConnectionTarget Candidate { get; init; }
    /// <summary>The most replay lag the candidate may have before the switchover starts.</summary>
    public long MaxLagBytes { get; init; } = 16 * 1024 * 1024;
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(60);
    public string? ToolPath { get; init; }
    /// <summary>Stops a primary PgBackup cannot stop itself (another host): it must shut it down cleanly, see <see cref="FenceScript"/>.</summary>
    public string? FenceScript { get; init; }
    /// <summary>Other standbys of the old primary, pointed at the new one after the promotion.</summary>
    public IReadOnlyList<ConnectionTarget> OtherStandbys { get; init; } = [];
    /// <summary>Moves the clients to the new primary once it is promoted, see <see cref="Routing.RouteScript"/>.</summary>
    public string? RouteScript { get; init; }
    public TimeSpan RouteTimeout { get; init; } = Routing.RouteScript.DefaultTimeout;
    /// <summary>PgBouncers in front of the primary: paused before it stops, moved to the new one and resumed.</summary>
    public IReadOnlyList<PgBouncerRequest> PgBouncers { get; init; } = [];
}

/// <summary>What a switchover will do, worked out and checked without changing anything (what -WhatIf shows).</summary>
public sealed record SwitchoverPlan(SwitchoverRequest Request, string PrimaryDataDirectory, string? PrimaryOwner, int ServerMajor, uint Timeline, long LagBytes)
{
    /// <summary>The old primary is stopped by the fence script, not by PgBackup, and stays stopped.</summary>
    public bool Fenced => Request.FenceScript != null;

    /// <summary>The PgBouncers to move, checked (each has databases pointing at the old primary).</summary>
    public IReadOnlyList<PgBouncerPooler> Poolers { get; init; } = [];

    public IReadOnlyList<string> Steps =>
    [
        .. Poolers.Select(p => $"Pause {string.Join(", ", p.Databases)} in the PgBouncer at {p.Display} (running transactions finish, new queries wait; at most {Request.Timeout})"),
        Fenced
            ? $"Stop writes: run the fence script, which must shut {Request.Primary.Display} down cleanly (and may print its final checkpoint LSN)"
            : $"Stop writes: shut down {Request.Primary.Display} (pg_ctl stop -m fast), which sends its last WAL to the standbys",
        $"Prove {Request.Candidate.Display} replayed the old primary's final WAL (nothing acknowledged is lost)",
        $"Promote {Request.Candidate.Display} to primary (a new timeline)",
        .. Request.RouteScript != null ? new[] { $"Move the clients to {Request.Candidate.Display}: run the route script (stopped after {Request.RouteTimeout})" } : [],
        .. Poolers.Select(p => p.HasConfig
            ? $"Point {string.Join(", ", p.Databases)} of the PgBouncer at {p.Display} at {Request.Candidate.Display} (pgbouncer.ini, RELOAD) and resume them"
            : $"Resume {string.Join(", ", p.Databases)} in the PgBouncer at {p.Display} (the route script points them at {Request.Candidate.Display})"),
        .. Fenced
            ? new[] { $"Leave {Request.Primary.Display} stopped: make it a standby of {Request.Candidate.Display} on its host (Join-PgStandby)" }
            : [$"Restart {Request.Primary.Display} as a standby of {Request.Candidate.Display} (standby.signal, primary_conninfo)", $"Check that {Request.Primary.Display} streams from {Request.Candidate.Display}"],
        .. Request.OtherStandbys.Select(o => $"Point {o.Display} at {Request.Candidate.Display} and check that it streams"),
    ];
}

/// <summary>
/// A planned switchover of a primary whose data directory is on this machine: the old primary is shut down cleanly,
/// the candidate is promoted only after it has provably replayed everything the old primary wrote, and the old primary
/// then follows the new one. The candidate is never promoted while the old primary can still accept writes. Every wait
/// is bounded by the request's timeout, so a server that hangs ends the switchover with an error; when that happens
/// before the promotion and PgBackup stopped the old primary itself, it starts it again as the primary.
/// </summary>
public static class SwitchoverService
{
    public static async Task<SwitchoverPlan> PlanAsync(SwitchoverRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var primary = request.Primary;
        var candidate = request.Candidate;
        await using var p = await ServerSession.OpenAsync(primary, ct).ConfigureAwait(false);
        await using var c = await ServerSession.OpenAsync(candidate, ct).ConfigureAwait(false);
        try
        {
            if (await PatroniClient.ManagesAsync(p, null, ct).ConfigureAwait(false) || await PatroniClient.ManagesAsync(c, null, ct).ConfigureAwait(false))
                throw PatroniClient.Refusal(primary.Display, "switch it over", PatroniClient.SwitchoverWay);
            var info = await ServerSession.GetInfoAsync(p, ct).ConfigureAwait(false);
            if (await ServerSession.ScalarAsync<bool>(p, "select pg_is_in_recovery()", ct).ConfigureAwait(false))
                throw Refuse("NotAPrimary", $"{primary.Display} is a standby, not a primary.", primary.Display, "Give the current primary as -Primary (Get-PgReplicationStatus shows each role).");
            if (!await ServerSession.ScalarAsync<bool>(c, "select pg_is_in_recovery()", ct).ConfigureAwait(false))
                throw Refuse("CandidateNotStandby", $"{candidate.Display} is not a standby: it already accepts writes. Two primaries must never run side by side.", candidate.Display,
                    "Check which server is the primary before switching; fence the other one.");
            var idP = await ServerSession.SystemIdentifierAsync(p, ct).ConfigureAwait(false);
            var idC = await ServerSession.SystemIdentifierAsync(c, ct).ConfigureAwait(false);
            if (idP != idC)
                throw Refuse("DifferentCluster", $"{candidate.Display} belongs to another cluster (system identifier {idC}, the primary's is {idP}).", candidate.Display,
                    "Choose a standby that was made from this primary (New-PgStandby).");

            var primaryPort = primary.Port;
            var receiver = await ServerSession.ScalarAsync<string>(c,
                "select coalesce((select status || ' ' || coalesce(sender_port::text, '') from pg_stat_wal_receiver), '')", ct).ConfigureAwait(false) ?? "";
            if (receiver != $"streaming {primaryPort}")
                throw Refuse("CandidateNotStreaming", $"{candidate.Display} does not stream from {primary.Display} (its WAL receiver: '{receiver}').", candidate.Display,
                    "Switch over only to a standby that streams directly from this primary; check primary_conninfo and Get-PgReplicationStatus.");
            var timeline = await ServerSession.TimelineAsync(p, ct).ConfigureAwait(false);
            var received = await ServerSession.ScalarAsync<int>(c, "select received_tli from pg_stat_wal_receiver", ct).ConfigureAwait(false);
            if (received != timeline)
                throw Refuse("TimelineMismatch", $"{candidate.Display} receives timeline {received}, the primary is on timeline {timeline}.", candidate.Display,
                    "Let the standby catch up to the primary's timeline (recovery_target_timeline = 'latest') before switching.");

            var current = Lsn.Parse(await ServerSession.ScalarAsync<string>(p, "select pg_current_wal_lsn()::text", ct).ConfigureAwait(false) ?? "0/0");
            var replayed = Lsn.Parse(await ServerSession.ScalarAsync<string>(c, "select pg_last_wal_replay_lsn()::text", ct).ConfigureAwait(false) ?? "0/0");
            var lag = Math.Max(0, current - replayed);
            if (lag > request.MaxLagBytes)
                throw Refuse("CandidateLagging", $"{candidate.Display} is {lag} bytes behind {primary.Display} (at most {request.MaxLagBytes} allowed): writes would be unavailable while it catches up.", candidate.Display,
                    "Wait until the standby catches up (Wait-PgReplication), or raise -MaxLagBytes.");

            var dataDirectory = await ServerSession.ScalarAsync<string>(p, "show data_directory", ct).ConfigureAwait(false) ?? "";
            if (request.FenceScript == null && !primary.ServesFromHere(dataDirectory))
                throw Refuse("PrimaryNotLocal", $"The data directory of {primary.Display} ({dataDirectory}) is not on this machine, so PgBackup cannot stop it and make it a standby.", primary.Display,
                    "Pass -FenceScript with a command that shuts it down cleanly on its host (for example over ssh: pg_ctl stop -m fast, then pg_controldata to print its final checkpoint), or run Switch-PgPrimary on the primary's host.");
            foreach (var other in request.OtherStandbys)
            {
                await using var o = await ServerSession.OpenAsync(other, ct).ConfigureAwait(false);
                if (!await ServerSession.ScalarAsync<bool>(o, "select pg_is_in_recovery()", ct).ConfigureAwait(false))
                    throw Refuse("StandbyNotStandby", $"{other.Display}, given to follow the new primary, is not a standby: it accepts writes.", other.Display,
                        "Give only standbys of this primary to -Standby; a second primary must be fenced, not repointed.");
                var idO = await ServerSession.SystemIdentifierAsync(o, ct).ConfigureAwait(false);
                if (idO != idP)
                    throw Refuse("DifferentCluster", $"{other.Display} belongs to another cluster (system identifier {idO}, the primary's is {idP}).", other.Display,
                        "Give only standbys of this primary to -Standby.");
            }
            var owner = request.FenceScript == null && Environment.IsPrivilegedProcess && !OperatingSystem.IsWindows()
                ? await DataDirectoryOwner.FindAsync(dataDirectory, ct).ConfigureAwait(false) ?? InstanceControl.DefaultServiceUser
                : null;
            reporter.Verbose($"Switchover plan: {primary.Display} (timeline {timeline}, {dataDirectory}) -> {candidate.Display}, lag {lag} bytes.");
            var poolers = new List<PgBouncerPooler>();
            foreach (var pgBouncer in request.PgBouncers)
                poolers.Add(await PgBouncerPooler.CheckAsync(pgBouncer, primary, request.ToolPath, reporter, ct).ConfigureAwait(false));
            return new SwitchoverPlan(request, dataDirectory, owner == "root" ? null : owner, info.Major, (uint)timeline, lag) { Poolers = poolers };
        }
        catch (NpgsqlException ex) when (!ct.IsCancellationRequested) { throw ServerSession.Translate(ex, primary); }
    }

    /// <summary>
    /// Switches over, with the plan's PgBouncers paused first and resumed toward the new primary after the promotion. When
    /// the switchover fails midway, every paused pooler is resumed toward whichever server is the primary then.
    /// </summary>
    public static async Task<SwitchoverResult> ExecuteAsync(SwitchoverPlan plan, IOperationReporter reporter, CancellationToken ct)
    {
        var poolers = new PoolerMove(plan.Poolers, reporter);
        try { return await SwitchAsync(plan, poolers, reporter, ct).ConfigureAwait(false); }
        catch
        {
            await poolers.RecoverAsync(() => FailoverService.FirstPrimaryAsync([plan.Request.Candidate, plan.Request.Primary])).ConfigureAwait(false);
            throw;
        }
    }

    private static async Task<SwitchoverResult> SwitchAsync(SwitchoverPlan plan, PoolerMove poolers, IOperationReporter reporter, CancellationToken ct)
    {
        var request = plan.Request;
        var locator = new ToolLocator(request.ToolPath);
        // A fenced primary is stopped by the operator's script; the server programs are needed only for a local one.
        var pgCtl = plan.Fenced ? null : locator.Find("pg_ctl", plan.ServerMajor, plan.ServerMajor, reporter);
        var controlData = plan.Fenced ? null : locator.Find("pg_controldata", plan.ServerMajor, plan.ServerMajor, reporter);
        var log = new StepLog(reporter, $"Switching over from {request.Primary.Display} to {request.Candidate.Display}");

        var writesStopped = TimeSpan.Zero;
        Lsn final = default;
        var proven = true;
        var stoppedHere = false;
        var promotionRequested = false;
        uint timeline = 0;
        if (!plan.Fenced) await CheckpointAsync(request.Primary, reporter, ct).ConfigureAwait(false);
        if (!poolers.IsEmpty)
            await log.RunAsync($"Pausing the {poolers.Noun} in front of {request.Primary.Display}", 5, () => poolers.PauseAsync(request.Timeout, ct)).ConfigureAwait(false);
        try
        {
            if (plan.Fenced)
                await log.RunAsync($"Stopping writes on {request.Primary.Display} with the fence script", 10, async () =>
                {
                    writesStopped = log.Elapsed;
                    var outcome = await FenceScript.RunAsync(request.FenceScript!, request.Primary, request.Candidate, plan.PrimaryDataDirectory, reporter, ct).ConfigureAwait(false);
                    if (await FailoverService.AnswersAsync(request.Primary, ct).ConfigureAwait(false))
                        throw new PgBackupException("PrimaryStillRunning", ErrorKind.InvalidOperation,
                            $"The fence script exited 0, but {request.Primary.Display} still accepts connections. Nothing was promoted.", request.FenceScript,
                            "Make the fence script shut the primary down cleanly (pg_ctl stop -m fast) and wait until it has stopped.");
                    // Control data taken before the shutdown finished, or after a crash, holds an older checkpoint: proving against it would prove nothing.
                    if (FenceScript.ClusterStateIn(outcome.Output) is { } state && state != "shut down")
                        throw new PgBackupException("PrimaryNotCleanlyStopped", ErrorKind.InvalidOperation,
                            $"The fence script printed control data with the cluster state '{state}', not 'shut down', so the old primary's last WAL position is not known. Nothing was promoted.", request.FenceScript,
                            "Make the fence script stop the primary cleanly (pg_ctl stop -m fast -w) before it runs pg_controldata, then start the old primary again and retry.");
                    if (outcome.FinalCheckpoint is { } checkpoint) final = checkpoint;
                    else
                    {
                        proven = false;
                        reporter.Warning($"The fence script did not print the old primary's final checkpoint (pg_controldata's \"Latest checkpoint location\"), so zero loss cannot be proven: " +
                                         $"{request.Candidate.Display} is promoted once it has replayed everything it received before {request.Primary.Display} went away.");
                    }
                }).ConfigureAwait(false);
            else
                await log.RunAsync($"Stopping {request.Primary.Display}", 10, async () =>
                {
                    writesStopped = log.Elapsed;
                    var stop = await ToolRunner.RunAsUserAsync(pgCtl!, plan.PrimaryOwner, ["stop", "-D", plan.PrimaryDataDirectory, "-m", "fast", "-w", "-t", ((int)request.Timeout.TotalSeconds).ToString(CultureInfo.InvariantCulture)],
                        new Dictionary<string, string?> { ["PGDATA"] = null }, reporter.Verbose, ct, reporter).ConfigureAwait(false);
                    if (!stop.Succeeded)
                        throw new PgBackupException("PrimaryStopFailed", ErrorKind.OperationTimeout,
                            $"{request.Primary.Display} did not shut down within {request.Timeout}: {stop.ErrorSummary()}. Nothing was promoted; {request.Candidate.Display} is still its standby.", request.Primary.Display,
                            $"Look at the primary's log and its host (a server that hangs cannot shut down). It was asked for a fast shutdown, which it completes if it recovers: then start it again (Start-PgInstance -DataDirectory {plan.PrimaryDataDirectory}) and retry.");
                    var control = await ToolRunner.RunAsync(controlData!, [plan.PrimaryDataDirectory], new Dictionary<string, string?> { ["PGDATA"] = null }, null, ct, captureOutput: true).ConfigureAwait(false);
                    var state = Regex.Match(control.StandardOutput, @"Database cluster state:\s+(.+)").Groups[1].Value.Trim();
                    var checkpoint = Regex.Match(control.StandardOutput, @"Latest checkpoint location:\s+([0-9A-F]+/[0-9A-F]+)").Groups[1].Value;
                    if (state != "shut down" || !Lsn.TryParse(checkpoint, out final))
                        throw new PgBackupException("PrimaryNotCleanlyStopped", ErrorKind.InvalidOperation, $"{request.Primary.Display} is not cleanly shut down (state '{state}'), so its last WAL position is not known. Nothing was promoted.",
                            plan.PrimaryDataDirectory, "Start the old primary again (pg_ctl start) and retry the switchover.");
                    stoppedHere = true;
                }).ConfigureAwait(false);

            var restart = plan.Fenced ? "start the old primary again on its host" : $"start the old primary again (pg_ctl start -D {plan.PrimaryDataDirectory})";
            await log.RunAsync(proven ? $"Waiting until {request.Candidate.Display} replayed {final}" : $"Waiting until {request.Candidate.Display} replayed all it received", 35, async () =>
            {
                var deadline = DateTime.UtcNow + request.Timeout;
                // A candidate that hangs does not answer at all: the timeout cancels the connection or the query that waits for it.
                using var patience = CancellationTokenSource.CreateLinkedTokenSource(ct);
                // A little after the deadline, so a candidate that answers but has not replayed enough is reported as such.
                patience.CancelAfter(request.Timeout + TimeSpan.FromSeconds(5));
                Lsn replayed = default;
                try
                {
                    await using var c = await ServerSession.OpenAsync(request.Candidate, patience.Token).ConfigureAwait(false);
                    while (true)
                    {
                        replayed = Lsn.Parse(await ServerSession.ScalarAsync<string>(c, "select pg_last_wal_replay_lsn()::text", patience.Token).ConfigureAwait(false) ?? "0/0");
                        // The shutdown checkpoint record starts at `final`; replaying it moves the replay position past it.
                        if (proven && replayed > final) break;
                        if (!proven)
                        {
                            // Without the final position: the sender has gone (it sends everything before a clean shutdown ends) and all received is replayed.
                            var receiver = await ServerSession.ScalarAsync<string>(c, "select coalesce((select status from pg_stat_wal_receiver), 'stopped')", patience.Token).ConfigureAwait(false);
                            var received = Lsn.Parse(await ServerSession.ScalarAsync<string>(c, "select coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text", patience.Token).ConfigureAwait(false) ?? "0/0");
                            if (receiver != "streaming" && replayed >= received) { final = received; break; }
                        }
                        if (DateTime.UtcNow > deadline)
                            throw new PgBackupException("CandidateMissingWal", ErrorKind.OperationTimeout,
                                $"{request.Candidate.Display} replayed only {replayed}, not the old primary's final WAL{(proven ? " " + final : "")}; promoting it would lose committed work, so it was not promoted. {request.Primary.Display} is stopped.",
                                request.Candidate.Display, $"To restore service, {restart}; then find out why the standby did not receive the last WAL.");
                        await Task.Delay(50, patience.Token).ConfigureAwait(false);
                    }
                }
                catch (Exception ex) when (patience.IsCancellationRequested && !ct.IsCancellationRequested && ex is OperationCanceledException or NpgsqlException or PgBackupException { ErrorId: not "PgBackup.CandidateMissingWal" })
                {
                    throw new PgBackupException("CandidateMissingWal", ErrorKind.OperationTimeout,
                        $"{request.Candidate.Display} did not answer within {request.Timeout} (last seen replaying {replayed}), so it cannot be shown to hold the old primary's final WAL{(proven ? " " + final : "")}; it was not promoted. {request.Primary.Display} is stopped.",
                        request.Candidate.Display, $"To restore service, {restart}; then find out why the standby hangs (its log, its host).", ex);
                }
            }).ConfigureAwait(false);

            await log.RunAsync($"Promoting {request.Candidate.Display}", 60, async () =>
            {
                await using var c = await ServerSession.OpenAsync(request.Candidate, ct).ConfigureAwait(false);
                promotionRequested = true;
                if (!await ServerSession.ScalarAsync<bool>(c, "select pg_promote(true, 60)", ct).ConfigureAwait(false))
                    throw new PgBackupException("PromoteFailed", ErrorKind.ToolFailed, $"{request.Candidate.Display} did not finish promotion within 60 s.", request.Candidate.Display,
                        "Look at the candidate's log; the old primary is stopped and can be started again if needed.");
                timeline = await ServerSession.TimelineAsync(c, ct).ConfigureAwait(false);
            }).ConfigureAwait(false);
        }
        catch (PgBackupException ex) when (stoppedHere && !promotionRequested)
        {
            throw await RestartOldPrimaryAsync(plan, pgCtl!, ex, reporter).ConfigureAwait(false);
        }
        var unavailable = log.Elapsed - writesStopped;

        RouteScriptRun? routing = null;
        if (request.RouteScript != null)
            await log.RunAsync($"Moving the clients to {request.Candidate.Display} with the route script", 70, async () =>
            {
                routing = await RouteScript.RunAsync(request.RouteScript, request.Primary, request.Candidate, request.RouteTimeout, reporter, ct).ConfigureAwait(false);
            }).ConfigureAwait(false);
        PoolerSwitch[] moved = [];
        if (!poolers.IsEmpty)
            await log.RunAsync($"Resuming the {poolers.Noun} toward {request.Candidate.Display}", 75, async () => moved = await poolers.ResumeAsync(request.Candidate, ct).ConfigureAwait(false)).ConfigureAwait(false);

        var rejoined = false;
        if (!plan.Fenced)
        {
            await log.RunAsync($"Restarting {request.Primary.Display} as a standby of {request.Candidate.Display}", 80, async () =>
            {
                File.WriteAllText(Path.Combine(plan.PrimaryDataDirectory, "standby.signal"), "");
                var c = request.Candidate;
                var conninfo = await StandbyPassFile.ConnInfoAsync(plan.PrimaryDataDirectory, plan.PrimaryOwner ?? Environment.UserName, c, ApplicationName(request.Primary), ct).ConfigureAwait(false);
                StandbyPassFile.SetPrimaryConnInfo(plan.PrimaryDataDirectory, $"Added by Switch-PgPrimary: this server now follows {c.Display}", conninfo, "recovery_target_timeline = 'latest'\n");
                if (plan.PrimaryOwner != null)
                    await DataDirectoryOwner.GiveToAsync(Path.Combine(plan.PrimaryDataDirectory, "standby.signal"), plan.PrimaryOwner + ":", recursive: false, ct).ConfigureAwait(false);
                var start = await ToolRunner.RunAsUserAsync(pgCtl!, plan.PrimaryOwner, ["start", "-D", plan.PrimaryDataDirectory, "-l", Path.Combine(plan.PrimaryDataDirectory, "pgbackup-switchover.log"), "-w", "-t", "120"],
                    new Dictionary<string, string?> { ["PGDATA"] = null }, reporter.Verbose, ct, reporter).ConfigureAwait(false);
                if (!start.Succeeded) reporter.Warning($"{request.Primary.Display} did not start as a standby: {start.ErrorSummary()}. {request.Candidate.Display} is the primary; rejoin the old one with pg_rewind.");
            }).ConfigureAwait(false);

            await log.RunAsync($"Checking that {request.Primary.Display} streams from {request.Candidate.Display}", 90, async () =>
            {
                var deadline = DateTime.UtcNow + request.Timeout;
                while (DateTime.UtcNow < deadline && !rejoined)
                {
                    try
                    {
                        var snapshot = await ReplicationMonitor.ReadAsync(request.Primary, false, ct).ConfigureAwait(false);
                        rejoined = snapshot.Standby is { ReceiverStatus: "streaming" } s && s.UpstreamPort == request.Candidate.Port;
                    }
                    catch (PgBackupException) { }
                    if (!rejoined) await Task.Delay(200, ct).ConfigureAwait(false);
                }
                if (!rejoined) reporter.Warning($"{request.Primary.Display} does not stream from {request.Candidate.Display} yet; check its log ({Path.Combine(plan.PrimaryDataDirectory, "pgbackup-switchover.log")}).");
            }).ConfigureAwait(false);
        }
        else reporter.Warning($"{request.Primary.Display} stays stopped: make it a standby of {request.Candidate.Display} on its host (Join-PgStandby) before it is started again.");

        var repointed = new List<string>();
        foreach (var other in request.OtherStandbys)
            await log.RunAsync($"Pointing {other.Display} at {request.Candidate.Display}", 95, async () =>
            {
                if (await StandbyRepointer.RepointAsync(other, request.Candidate, request.Timeout, reporter, ct).ConfigureAwait(false)) repointed.Add(other.Display);
            }).ConfigureAwait(false);

        log.Completed();
        reporter.Milestone($"{request.Candidate.Display} is the primary on timeline {timeline}; writes were unavailable for {unavailable.TotalSeconds:0.00}s.");
        return new SwitchoverResult
        {
            OldPrimary = request.Primary.Display, NewPrimary = request.Candidate.Display, FinalLsn = final, BytesLost = proven ? 0 : null, NewTimeline = timeline,
            WriteUnavailable = unavailable, OldPrimaryRejoined = rejoined, Steps = log.Steps, Repointed = [.. repointed], Routing = routing, Poolers = moved,
        };
    }

    /// <summary>
    /// The switchover failed after PgBackup shut the old primary down and before it asked the candidate to promote: no
    /// server accepts writes. The old primary is the only one that can, and nothing else has been promoted, so it is
    /// started again as it was. The error says what happened and what is running now.
    /// </summary>
    private static async Task<PgBackupException> RestartOldPrimaryAsync(SwitchoverPlan plan, PgTool pgCtl, PgBackupException failure, IOperationReporter reporter)
    {
        var primary = plan.Request.Primary;
        reporter.Milestone($"Starting {primary.Display} again as the primary: the switchover failed before anything was promoted.");
        var start = await ToolRunner.RunAsUserAsync(pgCtl, plan.PrimaryOwner,
            ["start", "-D", plan.PrimaryDataDirectory, "-l", Path.Combine(plan.PrimaryDataDirectory, "pgbackup-switchover.log"), "-w", "-t", ((int)Math.Max(60, plan.Request.Timeout.TotalSeconds)).ToString(CultureInfo.InvariantCulture)],
            new Dictionary<string, string?> { ["PGDATA"] = null }, reporter.Verbose, CancellationToken.None, reporter).ConfigureAwait(false);
        return start.Succeeded
            ? new PgBackupException(failure.ErrorId, failure.Kind, failure.Message.Replace($" {primary.Display} is stopped.", "") + $" {primary.Display} was started again as the primary, so the roles are as they were.",
                failure.Target, "Find out why the switchover could not finish (the message above names the server), then switch over again.", failure)
            : new PgBackupException(failure.ErrorId, failure.Kind, failure.Message + $" Starting {primary.Display} again failed as well: {start.ErrorSummary()}", failure.Target,
                $"Start the old primary by hand (pg_ctl start -D {plan.PrimaryDataDirectory}) and read its log; nothing was promoted.", failure);
    }

    /// <summary>
    /// A checkpoint while the primary still takes writes, so that the one its shutdown must write (while no client can
    /// write) has little left to flush. A login that may not run CHECKPOINT only makes the shutdown slower.
    /// </summary>
    internal static async Task CheckpointAsync(ConnectionTarget primary, IOperationReporter reporter, CancellationToken ct)
    {
        try
        {
            await using var connection = await ServerSession.OpenAsync(primary, ct).ConfigureAwait(false);
            await ServerSession.ExecuteAsync(connection, "checkpoint", primary, ct).ConfigureAwait(false);
        }
        catch (PgBackupException ex) { reporter.Verbose($"CHECKPOINT on {primary.Display} before the switchover failed ({ex.Message}); its shutdown checkpoint will take longer."); }
    }

    private static PgBackupException Refuse(string id, string message, object target, string action) =>
        new(id, ErrorKind.InvalidOperation, message + " Nothing was changed.", target, action);

    private static string ApplicationName(ConnectionTarget t) => $"pgbackup_{t.Port}";
}
