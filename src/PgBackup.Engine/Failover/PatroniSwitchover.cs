using System.Diagnostics;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Patroni;
using PgBackup.Engine.Replication;
using PgBackup.Engine.Routing;

namespace PgBackup.Engine.Failover;

public sealed record PatroniSwitchoverRequest
{
    public required PatroniEndpoint Patroni { get; init; }
    /// <summary>The leader to hand over from (a member's name or host:port); null for a failover.</summary>
    public string? Leader { get; init; }
    /// <summary>The member to promote, by name or host:port.</summary>
    public required string Candidate { get; init; }
    public bool Failover { get; init; }
    /// <summary>Schedules the switchover in Patroni instead of running it now.</summary>
    public DateTimeOffset? At { get; init; }
    /// <summary>The login for the members' PostgreSQL (host and port come from Patroni): to check who streams from whom, and for the poolers.</summary>
    public required ConnectionTarget Database { get; init; }
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(60);
    public string? RouteScript { get; init; }
    public TimeSpan RouteTimeout { get; init; } = Engine.Routing.RouteScript.DefaultTimeout;
    public IReadOnlyList<PgBouncerRequest> PgBouncers { get; init; } = [];
    public string? ToolPath { get; init; }
}

/// <summary>A switchover or failover of a Patroni cluster, worked out and checked against Patroni's view (what -WhatIf shows).</summary>
public sealed record PatroniSwitchoverPlan(PatroniSwitchoverRequest Request, PatroniCluster Cluster, PatroniMember? Leader, PatroniMember Candidate)
{
    public IReadOnlyList<PgBouncerPooler> Poolers { get; init; } = [];

    public IReadOnlyList<string> Steps =>
    [
        .. Poolers.Select(p => $"Pause {string.Join(", ", p.Databases)} in the PgBouncer at {p.Display}"),
        Request.At is { } at
            ? $"Ask Patroni ({Cluster.RestUrl}) to switch over from {Leader!.Name} to {Candidate.Name} at {at:u}"
            : Request.Failover
                ? $"Ask Patroni ({Cluster.RestUrl}) to fail over to {Candidate.Name} ({Candidate.Server})"
                : $"Ask Patroni ({Cluster.RestUrl}) to switch over from {Leader!.Name} ({Leader.Server}) to {Candidate.Name} ({Candidate.Server})",
        .. Request.At == null ? new[] { $"Wait until Patroni reports {Candidate.Name} as the leader and it takes writes" } : [],
        .. Request.RouteScript != null ? new[] { $"Move the clients to {Candidate.Server}: run the route script" } : [],
        .. Poolers.Select(p => $"Point {string.Join(", ", p.Databases)} of the PgBouncer at {p.Display} at {Candidate.Server} and resume them"),
        .. Request.At == null && Leader != null ? new[] { $"Wait until {Leader.Name} streams from {Candidate.Name}" } : [],
    ];
}

/// <summary>
/// Switchover and failover of a cluster that Patroni runs, through Patroni's REST API: Patroni moves its leader key and
/// demotes and promotes the members itself; PgBackup checks the request against Patroni's view first, waits until Patroni
/// reports the new leader and the old one streaming from it, and moves the clients (route script, PgBouncer) as it does
/// for a switchover of its own.
/// </summary>
public static class PatroniSwitchover
{
    public static async Task<PatroniSwitchoverPlan> PlanAsync(PatroniSwitchoverRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        using var patroni = new PatroniClient(request.Patroni);
        var cluster = await patroni.GetClusterAsync(ct).ConfigureAwait(false);
        var candidate = Member(cluster, request.Candidate);
        if (candidate.Role is "leader" or "master" or "standby_leader")
            throw new PgBackupException("CandidateNotStandby", ErrorKind.InvalidOperation, $"{candidate.Name} ({candidate.Server}) already leads the Patroni cluster {cluster.Scope}. Nothing was changed.", request.Candidate,
                "Give a replica as -Candidate (Get-PgReplicationStatus -Patroni lists the members).");
        PatroniMember? leader = null;
        if (!request.Failover)
        {
            leader = Member(cluster, request.Leader ?? cluster.Leader ?? "");
            if (leader.Name != cluster.Leader)
                throw new PgBackupException("NotAPrimary", ErrorKind.InvalidOperation, $"{leader.Name} ({leader.Server}) is not the leader of {cluster.Scope}; {cluster.Leader ?? "no member"} is. Nothing was changed.", request.Leader,
                    "Give the leader as -Primary, or use -Failover when the cluster has none.");
        }
        if (request.At != null && (request.RouteScript != null || request.PgBouncers.Count > 0))
            throw new PgBackupException("ScheduledWithClients", ErrorKind.InvalidArgument, "A scheduled switchover happens later, without PgBackup, so it cannot move the clients with it. Nothing was changed.", request.At,
                "Leave out -RouteScript and -PgBouncer with -At, or run the switchover at its time without -At.");
        var poolers = new List<PgBouncerPooler>();
        if (leader != null)
            foreach (var pgBouncer in request.PgBouncers)
                poolers.Add(await PgBouncerPooler.CheckAsync(pgBouncer, Target(request, leader), request.ToolPath, reporter, ct).ConfigureAwait(false));
        return new PatroniSwitchoverPlan(request, cluster, leader, candidate) { Poolers = poolers };
    }

    public static async Task<SwitchoverResult> ExecuteAsync(PatroniSwitchoverPlan plan, IOperationReporter reporter, CancellationToken ct)
    {
        var request = plan.Request;
        var log = new StepLog(reporter);
        using var patroni = new PatroniClient(request.Patroni);
        var candidate = plan.Candidate;
        var poolers = new PoolerMove(plan.Poolers, reporter);
        try
        {
            // Patroni demotes the leader with a shutdown checkpoint; one taken now leaves it little to write while the clients wait.
            if (plan.Leader is { } leader && request.At == null) await SwitchoverService.CheckpointAsync(Target(request, leader), reporter, ct).ConfigureAwait(false);
            if (!poolers.IsEmpty)
                await log.RunAsync($"Pausing the {poolers.Noun} in front of {plan.Leader!.Server}", 5, () => poolers.PauseAsync(request.Timeout, ct)).ConfigureAwait(false);

            var asked = log.Elapsed;
            string answer = "";
            await log.RunAsync(request.Failover ? $"Asking Patroni to fail over to {candidate.Name}" : $"Asking Patroni to switch over from {plan.Leader!.Name} to {candidate.Name}", 20, async () =>
            {
                answer = request.Failover
                    ? await patroni.FailoverAsync(candidate.Name, ct).ConfigureAwait(false)
                    : await patroni.SwitchoverAsync(plan.Leader!.Name, candidate.Name, request.At, ct).ConfigureAwait(false);
            }).ConfigureAwait(false);
            reporter.Verbose($"Patroni: {answer}");
            if (request.At != null)
                return Result(plan, log, null, TimeSpan.Zero, false, null, []);

            PatroniCluster now = plan.Cluster;
            var unavailable = TimeSpan.Zero;
            await log.RunAsync($"Waiting until Patroni reports {candidate.Name} as the leader", 40, async () =>
            {
                var deadline = DateTime.UtcNow + request.Timeout;
                while (true)
                {
                    now = await patroni.GetClusterAsync(ct).ConfigureAwait(false);
                    // Patroni names the leader as it promotes it; the clients are let through once it takes writes.
                    if (now.Leader == candidate.Name && now.Members.Any(m => m.Name == candidate.Name && m.State is "running" or "streaming")
                        && await FailoverService.FirstPrimaryAsync([Target(request, candidate)]).ConfigureAwait(false) != null) break;
                    if (DateTime.UtcNow > deadline)
                        throw new PgBackupException("PatroniSwitchoverTimeout", ErrorKind.OperationTimeout,
                            $"Patroni accepted the {(request.Failover ? "failover" : "switchover")}, but does not report {candidate.Name} as the leader after {request.Timeout} (leader: {now.Leader ?? "none"}).", request.Patroni.Url.ToString(),
                            "Look at Patroni's view (patronictl list, Get-PgReplicationStatus -Patroni) and its logs; it may still finish.");
                    await Task.Delay(100, ct).ConfigureAwait(false);
                }
                unavailable = log.Elapsed - asked;
            }).ConfigureAwait(false);

            RouteScriptRun? routing = null;
            if (request.RouteScript != null)
                await log.RunAsync($"Moving the clients to {candidate.Server} with the route script", 50, async () =>
                {
                    routing = await RouteScript.RunAsync(request.RouteScript, plan.Leader == null ? null : Target(request, plan.Leader), Target(request, candidate), request.RouteTimeout, reporter, ct).ConfigureAwait(false);
                }).ConfigureAwait(false);
            PoolerSwitch[] moved = [];
            if (!poolers.IsEmpty)
                await log.RunAsync($"Resuming the {poolers.Noun} toward {candidate.Server}", 60, async () => moved = await poolers.ResumeAsync(Target(request, candidate), ct).ConfigureAwait(false)).ConfigureAwait(false);
            var rejoined = false;
            if (plan.Leader is { } old)
                await log.RunAsync($"Waiting until {old.Name} streams from {candidate.Name}", 80, async () =>
                {
                    var deadline = DateTime.UtcNow + request.Timeout;
                    while (!rejoined && DateTime.UtcNow < deadline)
                    {
                        try
                        {
                            var snapshot = await ReplicationMonitor.ReadAsync(Target(request, old), false, ct).ConfigureAwait(false);
                            rejoined = snapshot.Standby is { ReceiverStatus: "streaming" } s && s.UpstreamPort == candidate.Port;
                        }
                        catch (PgBackupException) { }
                        if (!rejoined) await Task.Delay(250, ct).ConfigureAwait(false);
                    }
                    if (!rejoined) reporter.Warning($"Patroni made {candidate.Name} the leader, but {old.Name} does not stream from it after {request.Timeout}; Patroni may still be rejoining it (patronictl list).");
                }).ConfigureAwait(false);

            // Patroni's view of the timeline follows a loop later; the new leader's WAL says it now.
            uint? timeline = now.Timeline;
            try
            {
                await using var connection = await ServerSession.OpenAsync(Target(request, candidate), ct).ConfigureAwait(false);
                timeline = await ServerSession.TimelineAsync(connection, ct).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is PgBackupException or Npgsql.NpgsqlException) { reporter.Verbose($"The timeline of {candidate.Server} could not be read: {ex.Message}"); }
            reporter.Milestone($"Patroni made {candidate.Name} ({candidate.Server}) the leader of {now.Scope} on timeline {timeline}.");
            return Result(plan, log, timeline, unavailable, rejoined, routing, moved);
        }
        catch
        {
            // Whoever leads now, as Patroni sees it, is where the clients go.
            await poolers.RecoverAsync(async () =>
                (await patroni.GetClusterAsync(CancellationToken.None).ConfigureAwait(false)) is { Leader: { } name } now ? Target(request, now.Members.First(m => m.Name == name)) : null).ConfigureAwait(false);
            throw;
        }
    }

    private static SwitchoverResult Result(PatroniSwitchoverPlan plan, StepLog log, uint? timeline, TimeSpan unavailable, bool rejoined, RouteScriptRun? routing, PoolerSwitch[] moved) => new()
    {
        OldPrimary = plan.Leader?.Server ?? plan.Cluster.Members.FirstOrDefault(m => m.Name == plan.Cluster.Leader)?.Server ?? "",
        NewPrimary = plan.Candidate.Server,
        // Patroni decides what is safe to promote; PgBackup has not proven the loss itself.
        BytesLost = null,
        NewTimeline = timeline ?? 0,
        WriteUnavailable = unavailable,
        OldPrimaryRejoined = rejoined,
        Failover = plan.Request.Failover,
        Steps = log.Steps,
        Routing = routing,
        Poolers = moved,
    };

    /// <summary>A member's PostgreSQL, with the request's login.</summary>
    private static ConnectionTarget Target(PatroniSwitchoverRequest request, PatroniMember member) => request.Database with { Host = member.Host, Port = member.Port };

    /// <summary>A member by name, or by host:port as Patroni lists it.</summary>
    private static PatroniMember Member(PatroniCluster cluster, string nameOrServer) =>
        cluster.Members.FirstOrDefault(m => m.Name == nameOrServer) ?? cluster.Members.FirstOrDefault(m => m.Server == nameOrServer)
        ?? throw new PgBackupException("NotAPatroniMember", ErrorKind.ObjectNotFound,
            $"'{nameOrServer}' is not a member of the Patroni cluster {cluster.Scope} (members: {string.Join(", ", cluster.Members.Select(m => $"{m.Name} {m.Server}"))}). Nothing was changed.", nameOrServer,
            "Give a member by its Patroni name or as host:port, as Get-PgReplicationStatus -Patroni lists them.");
}
