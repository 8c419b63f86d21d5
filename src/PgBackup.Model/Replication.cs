namespace PgBackup;

/// <summary>One standby streaming from a server, as that server sees it (pg_stat_replication).</summary>
public sealed class ReplicationLink
{
    /// <summary>The sending server (a primary, or a standby that cascades).</summary>
    public string Server { get; set; } = "";
    public int Port { get; set; }
    public string Role { get; set; } = "";
    public string ApplicationName { get; set; } = "";
    /// <summary>The standby's address as the sender sees it; empty for a Unix-socket connection.</summary>
    public string ClientAddress { get; set; } = "";
    public int? ClientPort { get; set; }
    public int Pid { get; set; }
    public string State { get; set; } = "";
    public string SyncState { get; set; } = "";
    public string? SlotName { get; set; }
    public Lsn CurrentLsn { get; set; }
    public Lsn? SentLsn { get; set; }
    public Lsn? WriteLsn { get; set; }
    public Lsn? FlushLsn { get; set; }
    public Lsn? ReplayLsn { get; set; }
    public long? SentLagBytes { get; set; }
    public long? WriteLagBytes { get; set; }
    public long? FlushLagBytes { get; set; }
    public long? ReplayLagBytes { get; set; }
    public TimeSpan? WriteLag { get; set; }
    public TimeSpan? FlushLag { get; set; }
    public TimeSpan? ReplayLag { get; set; }
    public DateTimeOffset? BackendStart { get; set; }
    public DateTimeOffset? ReplyTime { get; set; }

    public override string ToString() => $"{Server}:{Port} -> {ApplicationName} ({State}, replay lag {ReplayLagBytes} bytes)";
}

/// <summary>A standby as it sees itself (pg_stat_wal_receiver and the replay functions).</summary>
public sealed class StandbyStatus
{
    public string Server { get; set; } = "";
    public int Port { get; set; }
    public string Role { get; set; } = "Standby";
    public string SystemIdentifier { get; set; } = "";
    /// <summary>streaming, starting, waiting, stopping...; empty when no WAL receiver runs (restoring from the archive only).</summary>
    public string ReceiverStatus { get; set; } = "";
    public string UpstreamHost { get; set; } = "";
    public int? UpstreamPort { get; set; }
    public string? SlotName { get; set; }
    public uint? ReceivedTimeline { get; set; }
    public Lsn? ReceivedLsn { get; set; }
    public Lsn? ReplayedLsn { get; set; }
    /// <summary>WAL received but not yet replayed.</summary>
    public long? ReplayLagBytes { get; set; }
    /// <summary>The commit time of the last replayed transaction.</summary>
    public DateTimeOffset? LastReplayedCommitTime { get; set; }
    /// <summary>How far replay is behind: now minus the last replayed commit time, or zero when everything received is replayed.</summary>
    public TimeSpan? ReplayDelay { get; set; }
    public bool ReplayPaused { get; set; }
    public DateTimeOffset? LastMessageReceiptTime { get; set; }

    public override string ToString() => $"{Server}:{Port} standby of {UpstreamHost}:{UpstreamPort} ({ReceiverStatus})";
}

/// <summary>A replication slot and the WAL it holds back (pg_replication_slots).</summary>
public sealed class ReplicationSlot
{
    public string Server { get; set; } = "";
    public int Port { get; set; }
    public string SlotName { get; set; } = "";
    public string SlotType { get; set; } = "";
    public bool Active { get; set; }
    public int? ActivePid { get; set; }
    public Lsn? RestartLsn { get; set; }
    public Lsn? ConfirmedFlushLsn { get; set; }
    /// <summary>WAL the slot keeps on the server: current LSN minus restart LSN.</summary>
    public long? RetainedBytes { get; set; }
    /// <summary>reserved, extended, unreserved or lost.</summary>
    public string? WalStatus { get; set; }
    public long? SafeWalSize { get; set; }

    public override string ToString() => $"{SlotName} ({(Active ? "active" : "inactive")}, {RetainedBytes} bytes retained)";
}

/// <summary>Test-PgReplication's verdict for one server: pass or fail, with every reason.</summary>
public sealed class ReplicationTestResult
{
    public string Server { get; set; } = "";
    public int Port { get; set; }
    public string Role { get; set; } = "";
    public bool Success { get; set; }
    public int StandbysChecked { get; set; }
    public long? MaxLagBytes { get; set; }
    public TimeSpan? MaxReplayLag { get; set; }
    public string[] Failures { get; set; } = [];

    public override string ToString() => $"{Server}:{Port}: {(Success ? "passed" : "failed: " + string.Join("; ", Failures))}";
}

public enum SynchronousMode { First, Any }

/// <summary>What Set-PgSynchronousStandby left in force on a primary, and how each standby now replicates.</summary>
public sealed class SynchronousReplicationResult
{
    public string Server { get; set; } = "";
    public int Port { get; set; }
    /// <summary>synchronous_standby_names now in force; empty when replication is asynchronous.</summary>
    public string SynchronousStandbyNames { get; set; } = "";
    public string SynchronousCommit { get; set; } = "";
    /// <summary>True when -Force applied names that were not all connected: commits may wait until they are.</summary>
    public bool Forced { get; set; }
    public ReplicationLink[] Standbys { get; set; } = [];

    public override string ToString() => $"{Server}:{Port} synchronous_standby_names='{SynchronousStandbyNames}'";
}

/// <summary>One step of a switchover and how long it took.</summary>
public sealed class SwitchoverStep
{
    public string Name { get; set; } = "";
    public TimeSpan Duration { get; set; }
    public override string ToString() => $"{Name} ({Duration.TotalSeconds:0.00}s)";
}

/// <summary>What Switch-PgPrimary did: who is primary now, what was proven, and how long writes were unavailable.</summary>
public sealed class SwitchoverResult
{
    public string OldPrimary { get; set; } = "";
    public string NewPrimary { get; set; } = "";
    /// <summary>The old primary's shutdown checkpoint: the last WAL it wrote, which the new primary replayed before promotion.</summary>
    public Lsn FinalLsn { get; set; }
    /// <summary>
    /// Zero for a switchover: promotion waited until the candidate had replayed past <see cref="FinalLsn"/>. Null after a
    /// failover, where the unreachable primary's last position is not known.
    /// </summary>
    public long? BytesLost { get; set; }
    /// <summary>After a failover: how far each other candidate was behind the promoted one, by name.</summary>
    public string[] CandidatesBehind { get; set; } = [];
    /// <summary>After a failover: the standbys now following the new primary.</summary>
    public string[] Repointed { get; set; } = [];
    public bool Failover { get; set; }
    public uint NewTimeline { get; set; }
    /// <summary>From stopping the old primary to the new primary accepting writes.</summary>
    public TimeSpan WriteUnavailable { get; set; }
    /// <summary>True when the old primary streams from the new one as a standby.</summary>
    public bool OldPrimaryRejoined { get; set; }
    public SwitchoverStep[] Steps { get; set; } = [];
    /// <summary>What -RouteScript did to move the clients to the new primary; null when no route script was given.</summary>
    public RouteScriptRun? Routing { get; set; }
    /// <summary>What happened to each PgBouncer given with -PgBouncer.</summary>
    public PoolerSwitch[] Poolers { get; set; } = [];

    public override string ToString() => $"{OldPrimary} -> {NewPrimary} (timeline {NewTimeline}, writes unavailable {WriteUnavailable.TotalSeconds:0.00}s)";
}

/// <summary>What a switchover did to one PgBouncer in front of the primary.</summary>
public sealed class PoolerSwitch
{
    /// <summary>The pooler's admin console, host:port.</summary>
    public string Pooler { get; set; } = "";
    /// <summary>Its databases that pointed at the old primary: paused, moved and resumed.</summary>
    public string[] Databases { get; set; } = [];
    /// <summary>The pgbouncer.ini rewritten; null when the route script points a remote pooler elsewhere.</summary>
    public string? ConfigPath { get; set; }
    /// <summary>The server those databases point at now, as far as PgBackup moved them.</summary>
    public string PointsTo { get; set; } = "";
    public bool Resumed { get; set; }
    /// <summary>How long its clients waited: from the pause to the resume.</summary>
    public TimeSpan ClientsWaited { get; set; }
    /// <summary>What went wrong with the pooler, if anything (also given as a warning).</summary>
    public string? Problem { get; set; }

    public override string ToString() => $"{Pooler}: {string.Join(", ", Databases)} -> {PointsTo}, {(Resumed ? "resumed" : "NOT resumed")} after {ClientsWaited.TotalSeconds:0.00}s";
}

/// <summary>One run of a switchover's route script: whether it moved the clients, and what it printed.</summary>
public sealed class RouteScriptRun
{
    public string Script { get; set; } = "";
    public bool Succeeded { get; set; }
    /// <summary>Null when it was stopped for taking longer than its timeout.</summary>
    public int? ExitCode { get; set; }
    public bool TimedOut { get; set; }
    /// <summary>What it wrote to its standard output and error, in order.</summary>
    public string Output { get; set; } = "";
    public TimeSpan Duration { get; set; }

    public override string ToString() => Succeeded ? $"route script succeeded ({Duration.TotalSeconds:0.00}s)" : TimedOut ? "route script timed out" : $"route script failed (exit code {ExitCode})";
}

/// <summary>A cluster run by Patroni, as its REST API describes it: who leads, who follows, and how far behind.</summary>
public sealed class PatroniCluster
{
    /// <summary>The REST API it was read from.</summary>
    public string RestUrl { get; set; } = "";
    /// <summary>Patroni's scope: the cluster's name in the consensus store.</summary>
    public string Scope { get; set; } = "";
    /// <summary>The member holding the leader key; null while there is none (a failover under way).</summary>
    public string? Leader { get; set; }
    public uint? Timeline { get; set; }
    /// <summary>True while Patroni's automatic failover is paused (maintenance mode).</summary>
    public bool Paused { get; set; }
    public PatroniMember[] Members { get; set; } = [];
    /// <summary>The timeline switches Patroni recorded: timeline, LSN, reason, time, new leader.</summary>
    public string[] History { get; set; } = [];

    public override string ToString() => $"{Scope}: leader {Leader ?? "(none)"} on timeline {Timeline}, {Members.Length} members{(Paused ? ", paused" : "")}";
}

/// <summary>One member of a Patroni cluster.</summary>
public sealed class PatroniMember
{
    public string Name { get; set; } = "";
    /// <summary>leader, replica, sync_standby, standby_leader...</summary>
    public string Role { get; set; } = "";
    /// <summary>running, streaming, starting, stopped...</summary>
    public string State { get; set; } = "";
    public string Host { get; set; } = "";
    public int Port { get; set; }
    /// <summary>host:port, as -Server takes it.</summary>
    public string Server => $"{Host}:{Port}";
    public uint? Timeline { get; set; }
    /// <summary>Bytes behind the leader; null when Patroni does not know (a member that is starting).</summary>
    public long? LagBytes { get; set; }
    public string ApiUrl { get; set; } = "";

    public override string ToString() => $"{Name} ({Role}, {State}) {Server}";
}
