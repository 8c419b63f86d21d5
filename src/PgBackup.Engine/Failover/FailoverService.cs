using System.Diagnostics;
using Npgsql;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Patroni;
using PgBackup.Engine.Replication;
using PgBackup.Engine.Routing;
using PgBackup.Engine.Tools;
using PgBackup.Engine.Wal;

namespace PgBackup.Engine.Failover;

public sealed record FailoverRequest
{
    /// <summary>The failed primary, when known: failover is refused while it still answers as a primary.</summary>
    public ConnectionTarget? OldPrimary { get; init; }
    public required IReadOnlyList<ConnectionTarget> Candidates { get; init; }
    /// <summary>A program that fences the old primary (cuts it off, powers it down); exit code 0 means fenced.</summary>
    public string? FenceScript { get; init; }
    /// <summary>The operator states that the old primary is fenced.</summary>
    public bool Force { get; init; }
    /// <summary>The old primary's data directory, when it is on this machine: the end of its WAL gives the data the failover loses.</summary>
    public string? OldPrimaryDataDirectory { get; init; }
    public string? ToolPath { get; init; }
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>Moves the clients to the new primary once it is promoted, see <see cref="Routing.RouteScript"/>.</summary>
    public string? RouteScript { get; init; }
    public TimeSpan RouteTimeout { get; init; } = Routing.RouteScript.DefaultTimeout;
    /// <summary>PgBouncers in front of the failed primary: paused while the failover runs, then moved to the new primary and resumed.</summary>
    public IReadOnlyList<PgBouncerRequest> PgBouncers { get; init; } = [];
}

/// <summary>
/// Failover for an unreachable primary: every candidate first replays all it received, the most advanced one is
/// promoted only once the old primary is fenced, and the others are repointed to it.
/// </summary>
public static class FailoverService
{
    private sealed record Candidate(ConnectionTarget Target, string SystemIdentifier, Lsn Received);

    public static async Task<SwitchoverResult> FailoverAsync(FailoverRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        if (request.OldPrimary is { } old && await AnswersAsPrimaryAsync(old, ct).ConfigureAwait(false))
            throw new PgBackupException("PrimaryReachable", ErrorKind.InvalidOperation,
                $"{old.Display} still answers as a primary; promoting a standby now would make two primaries. Nothing was changed.", old.Display,
                "Use a planned switchover (Switch-PgPrimary without -Failover), or stop and fence the old primary first.");
        if (request.PgBouncers.Count > 0 && request.OldPrimary == null)
            throw new PgBackupException("PgBouncerNeedsPrimary", ErrorKind.InvalidArgument,
                "-PgBouncer moves the pooler's databases that point at the failed primary, so the failed primary must be named. Nothing was changed.", request.PgBouncers[0].Admin.Display,
                "Add -Primary with the failed primary's address (as the pooler lists it in SHOW DATABASES).");
        foreach (var target in request.Candidates)
            await PatroniClient.RefuseIfManagedAsync(target, "promote it", PatroniClient.FailoverWay, ct).ConfigureAwait(false);
        var poolers = new List<PgBouncerPooler>();
        foreach (var pgBouncer in request.PgBouncers)
            poolers.Add(await PgBouncerPooler.CheckAsync(pgBouncer, request.OldPrimary!, request.ToolPath, reporter, ct).ConfigureAwait(false));
        var move = new PoolerMove(poolers, reporter);
        try { return await FailOverAsync(request, move, reporter, ct).ConfigureAwait(false); }
        catch
        {
            await move.RecoverAsync(() => FirstPrimaryAsync([.. request.Candidates, .. request.OldPrimary is { } o ? new[] { o } : []])).ConfigureAwait(false);
            throw;
        }
    }

    private static async Task<SwitchoverResult> FailOverAsync(FailoverRequest request, PoolerMove poolers, IOperationReporter reporter, CancellationToken ct)
    {
        var log = new StepLog(reporter);
        var started = log.Elapsed;
        if (!poolers.IsEmpty)
        {
            // The clients fail against the dead primary now; paused, they wait for the new one instead.
            await poolers.PauseAsync(request.Timeout, ct).ConfigureAwait(false);
            log.Record($"Paused the {poolers.Noun} in front of {request.OldPrimary!.Display}", started);
        }

        started = log.Elapsed;
        var candidates = new List<Candidate>();
        foreach (var target in request.Candidates)
            candidates.Add(await CatchUpAsync(target, request.Timeout, reporter, ct).ConfigureAwait(false));
        if (candidates.Select(c => c.SystemIdentifier).Distinct().Count() > 1)
            throw new PgBackupException("DifferentCluster", ErrorKind.InvalidOperation, "The candidates belong to different clusters (system identifiers differ). Nothing was changed.",
                string.Join(", ", candidates.Select(c => c.Target.Display)), "Give only standbys of the failed primary.");
        var chosen = candidates.OrderByDescending(c => c.Received).First();
        log.Record($"All candidates replayed what they received; {chosen.Target.Display} is the most advanced at {chosen.Received}", started);
        var behind = candidates.Where(c => c != chosen).Select(c => $"{c.Target.Display}: {chosen.Received - c.Received} bytes behind").ToArray();

        started = log.Elapsed;
        if (request.FenceScript != null)
        {
            await FenceScript.RunAsync(request.FenceScript, request.OldPrimary, chosen.Target, request.OldPrimaryDataDirectory, reporter, ct).ConfigureAwait(false);
            log.Record("Fenced the old primary with the fence script", started);
        }
        else if (!request.Force)
            throw new PgBackupException("NotFenced", ErrorKind.InvalidOperation,
                $"Nothing fences the old primary{(request.OldPrimary != null ? " " + request.OldPrimary.Display : "")}: if it comes back, two primaries would accept writes. Nothing was promoted.", request.OldPrimary?.Display,
                "Pass -FenceScript (a command that cuts the old primary off and exits 0), or, once you have fenced it yourself, -Force.");
        else log.Record("The operator confirmed the old primary is fenced (-Force)", started);

        started = log.Elapsed;
        uint timeline;
        await using (var connection = await ServerSession.OpenAsync(chosen.Target, ct).ConfigureAwait(false))
        {
            if (!await ServerSession.ScalarAsync<bool>(connection, "select pg_promote(true, 60)", ct).ConfigureAwait(false))
                throw new PgBackupException("PromoteFailed", ErrorKind.ToolFailed, $"{chosen.Target.Display} did not finish promotion within 60 s.", chosen.Target.Display, "Look at its server log.");
            timeline = await ServerSession.TimelineAsync(connection, ct).ConfigureAwait(false);
        }
        var promotedAfter = log.Elapsed;
        log.Record($"Promoted {chosen.Target.Display} (timeline {timeline})", started);
        reporter.Milestone($"{chosen.Target.Display} is the primary on timeline {timeline}.");

        RouteScriptRun? routing = null;
        if (request.RouteScript != null)
        {
            started = log.Elapsed;
            routing = await RouteScript.RunAsync(request.RouteScript, request.OldPrimary, chosen.Target, request.RouteTimeout, reporter, ct).ConfigureAwait(false);
            log.Record($"Moved the clients to {chosen.Target.Display} with the route script{(routing.Succeeded ? "" : " (it failed)")}", started);
        }

        // The clients go on before the loss is measured and the other standbys follow: neither needs them to wait.
        PoolerSwitch[] moved = [];
        if (!poolers.IsEmpty)
        {
            started = log.Elapsed;
            moved = await poolers.ResumeAsync(chosen.Target, ct).ConfigureAwait(false);
            log.Record($"Resumed the {poolers.Noun} toward {chosen.Target.Display}", started);
        }

        long? lost = null;
        if (request.OldPrimaryDataDirectory is { } oldData)
        {
            started = log.Elapsed;
            if (await WalEnd.FindAsync(oldData, request.ToolPath, reporter, ct).ConfigureAwait(false) is { } oldEnd)
            {
                lost = Math.Max(0, oldEnd - chosen.Received);
                log.Record($"The old primary's WAL ends at {oldEnd}: {lost} bytes of it are not on {chosen.Target.Display}", started);
                if (lost > 0) reporter.Warning($"{lost} bytes of WAL the old primary wrote ({chosen.Received} to {oldEnd}) never reached {chosen.Target.Display}: the transactions in them are lost (pg_rewind discards them when the old primary rejoins).");
            }
            else reporter.Warning($"The end of the WAL in {oldData} could not be read, so the data lost is not known.");
        }

        var repointed = new List<string>();
        foreach (var other in candidates.Where(c => c != chosen))
        {
            started = log.Elapsed;
            if (await StandbyRepointer.RepointAsync(other.Target, chosen.Target, request.Timeout, reporter, ct).ConfigureAwait(false)) repointed.Add(other.Target.Display);
            log.Record($"Repointed {other.Target.Display} to {chosen.Target.Display}", started);
        }

        return new SwitchoverResult
        {
            OldPrimary = request.OldPrimary?.Display ?? "", NewPrimary = chosen.Target.Display, FinalLsn = chosen.Received, BytesLost = lost, NewTimeline = timeline,
            WriteUnavailable = promotedAfter, OldPrimaryRejoined = false, Steps = log.Steps, Failover = true, CandidatesBehind = behind, Repointed = [.. repointed],
            Routing = routing, Poolers = moved,
        };
    }

    /// <summary>
    /// Whether a server process still answers at its address, in any role: a refused login, "too many connections" or
    /// "shutting down" all mean it runs. Only an address nobody listens on (ServerUnreachable) means it has stopped.
    /// </summary>
    internal static async Task<bool> AnswersAsync(ConnectionTarget server, CancellationToken ct)
    {
        try
        {
            await using var connection = await ServerSession.OpenAsync(server with { ConnectTimeoutSeconds = 3 }, ct).ConfigureAwait(false);
            return true;
        }
        catch (PgBackupException ex) { return ex.ErrorId != "PgBackup.ServerUnreachable"; }
    }

    private static async Task<bool> AnswersAsPrimaryAsync(ConnectionTarget server, CancellationToken ct)
    {
        try
        {
            await using var connection = await ServerSession.OpenAsync(server with { ConnectTimeoutSeconds = 3 }, ct).ConfigureAwait(false);
            return !await ServerSession.ScalarAsync<bool>(connection, "select pg_is_in_recovery()", ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is PgBackupException or NpgsqlException && !ct.IsCancellationRequested) { return false; }
    }

    /// <summary>The first of <paramref name="servers"/> that accepts writes now (for poolers to be resumed toward after a failure); null when none does.</summary>
    internal static async Task<ConnectionTarget?> FirstPrimaryAsync(IEnumerable<ConnectionTarget> servers)
    {
        using var patience = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        foreach (var server in servers)
            if (await AnswersAsPrimaryAsync(server, patience.Token).ConfigureAwait(false)) return server;
        return null;
    }

    /// <summary>Waits until the standby replayed everything it received: promoting earlier would throw that WAL away.</summary>
    private static async Task<Candidate> CatchUpAsync(ConnectionTarget target, TimeSpan timeout, IOperationReporter reporter, CancellationToken ct)
    {
        await using var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
        try
        {
            if (!await ServerSession.ScalarAsync<bool>(connection, "select pg_is_in_recovery()", ct).ConfigureAwait(false))
                throw new PgBackupException("CandidateNotStandby", ErrorKind.InvalidOperation, $"{target.Display} already accepts writes: it is not a standby. Nothing was changed.", target.Display,
                    "A primary exists already: check every server's role with Get-PgReplicationStatus before failing over.");
            var system = await ServerSession.SystemIdentifierAsync(connection, ct).ConfigureAwait(false);
            if (await ServerSession.ScalarAsync<bool>(connection, "select pg_get_wal_replay_pause_state() <> 'not paused'", ct).ConfigureAwait(false))
            {
                reporter.Warning($"WAL replay was paused on {target.Display}; resuming it so that it replays everything it received.");
                await ServerSession.ScalarAsync<string>(connection, "select pg_wal_replay_resume()::text", ct).ConfigureAwait(false);
            }
            var deadline = DateTime.UtcNow + timeout;
            while (true)
            {
                var received = Lsn.Parse(await ServerSession.ScalarAsync<string>(connection, "select coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text", ct).ConfigureAwait(false) ?? "0/0");
                var replayed = Lsn.Parse(await ServerSession.ScalarAsync<string>(connection, "select pg_last_wal_replay_lsn()::text", ct).ConfigureAwait(false) ?? "0/0");
                if (replayed >= received) return new Candidate(target, system, replayed);
                if (DateTime.UtcNow > deadline)
                    throw new PgBackupException("CandidateMissingWal", ErrorKind.OperationTimeout, $"{target.Display} did not replay what it received ({replayed} of {received}) within {timeout}. Nothing was promoted.",
                        target.Display, "Look at the standby's log (a conflict with a long query delays replay), or wait longer with -Timeout.");
                await Task.Delay(100, ct).ConfigureAwait(false);
            }
        }
        catch (NpgsqlException ex) when (!ct.IsCancellationRequested) { throw ServerSession.Translate(ex, target); }
    }
}
