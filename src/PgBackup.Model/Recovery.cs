using System.Globalization;

namespace PgBackup;

public enum RecoveryTargetKind { Time, Lsn, Xid, Name, Immediate, Latest }

/// <summary>What the server does when it reaches the target (recovery_target_action).</summary>
public enum RecoveryTargetAction { Promote, Pause, Shutdown }

/// <summary>
/// Where point-in-time recovery stops: one of a time, an LSN, a transaction id, a named restore point, the end of the
/// base backup (Immediate) or the end of the archived WAL (Latest). <see cref="Inclusive"/> false is "stop just before".
/// </summary>
public sealed class RecoveryTarget
{
    public RecoveryTargetKind Kind { get; set; }
    public DateTimeOffset? Time { get; set; }
    public Lsn? Lsn { get; set; }
    public ulong? Xid { get; set; }
    public string? Name { get; set; }
    public bool Inclusive { get; set; } = true;
    /// <summary>The timeline to follow: null or "latest" for the newest one in the archive, "current" for the backup's, or a number.</summary>
    public string? Timeline { get; set; }
    public RecoveryTargetAction Action { get; set; } = RecoveryTargetAction.Promote;

    public static RecoveryTarget AtTime(DateTimeOffset time, bool inclusive = true) => new() { Kind = RecoveryTargetKind.Time, Time = time, Inclusive = inclusive };
    public static RecoveryTarget AtLsn(Lsn lsn, bool inclusive = true) => new() { Kind = RecoveryTargetKind.Lsn, Lsn = lsn, Inclusive = inclusive };
    public static RecoveryTarget AtXid(ulong xid, bool inclusive = true) => new() { Kind = RecoveryTargetKind.Xid, Xid = xid, Inclusive = inclusive };
    public static RecoveryTarget AtName(string name) => new() { Kind = RecoveryTargetKind.Name, Name = name };
    public static RecoveryTarget EndOfBackup() => new() { Kind = RecoveryTargetKind.Immediate };
    public static RecoveryTarget EndOfArchive() => new() { Kind = RecoveryTargetKind.Latest };

    public override string ToString()
    {
        var point = Kind switch
        {
            RecoveryTargetKind.Time => "time " + Time?.ToString("yyyy-MM-dd HH:mm:ss.ffffffzzz", CultureInfo.InvariantCulture),
            RecoveryTargetKind.Lsn => "LSN " + Lsn,
            RecoveryTargetKind.Xid => "xid " + Xid?.ToString(CultureInfo.InvariantCulture),
            RecoveryTargetKind.Name => $"restore point '{Name}'",
            RecoveryTargetKind.Immediate => "end of the base backup",
            _ => "end of the archived WAL",
        };
        var exclusive = !Inclusive && Kind is RecoveryTargetKind.Time or RecoveryTargetKind.Lsn or RecoveryTargetKind.Xid ? " (exclusive)" : "";
        return point + exclusive;
    }
}

/// <summary>
/// A cluster recovered from a base backup to a point in time: where it runs, what was asked, what was reached, and how
/// long it took. Server and Port bind by property name, so it pipes into Invoke-PgDump.
/// </summary>
public sealed class RecoveryResult
{
    public string DataDirectory { get; set; } = "";
    /// <summary>The host the recovered instance listens on (localhost unless -ListenAddress said otherwise).</summary>
    public string Server { get; set; } = "";
    public int Port { get; set; }
    /// <summary>libpq connection string of the recovered instance (no password: use .pgpass or -Credential, as for the source).</summary>
    public string ConnectionString { get; set; } = "";
    public string LogFile { get; set; } = "";
    public string BackupId { get; set; } = "";
    public string BackupPath { get; set; } = "";
    public string SourceServer { get; set; } = "";
    public string SystemIdentifier { get; set; } = "";
    public RecoveryTarget Target { get; set; } = new();
    /// <summary>The last WAL position replayed.</summary>
    public Lsn? ReachedLsn { get; set; }
    /// <summary>The commit time of the last transaction replayed; null when recovery replayed no commit.</summary>
    public DateTimeOffset? ReachedTime { get; set; }
    /// <summary>The timeline the instance is on now (a new one after promotion).</summary>
    public uint Timeline { get; set; }
    public bool Promoted { get; set; }
    /// <summary>Running (promoted or paused at the target) or Stopped (TargetAction Shutdown).</summary>
    public string State { get; set; } = "";
    /// <summary>True when the instance archives into the original repository (-ContinueArchiving).</summary>
    public bool Archiving { get; set; }
    public long WalReplayedBytes { get; set; }
    public TimeSpan RestoreDuration { get; set; }
    public TimeSpan ReplayDuration { get; set; }
    public TimeSpan TotalDuration { get; set; }
    public DateTimeOffset StartTime { get; set; }
    public DateTimeOffset EndTime { get; set; }

    public override string ToString() => $"{DataDirectory} ({Server}:{Port}) at {ReachedLsn}";
}

public enum InstanceState { Stopped, Running }

/// <summary>pg_ctl stop modes: Smart waits for clients to disconnect, Fast ends their sessions, Immediate aborts (crash recovery at the next start).</summary>
public enum StopMode { Smart, Fast, Immediate }

/// <summary>A local PostgreSQL data directory and the server running from it, as its postmaster.pid describes it.</summary>
public sealed class PgInstance
{
    public string DataDirectory { get; set; } = "";
    public InstanceState State { get; set; }
    /// <summary>The host to connect to: the listen address, or the socket folder when the instance listens on no TCP address.</summary>
    public string Server { get; set; } = "";
    public int Port { get; set; }
    public int? ProcessId { get; set; }
    public string SocketDirectory { get; set; } = "";
    public string ListenAddresses { get; set; } = "";
    /// <summary>The PostgreSQL major version of the data directory (PG_VERSION).</summary>
    public string Version { get; set; } = "";
    public string Owner { get; set; } = "";
    public DateTimeOffset? StartTime { get; set; }
    /// <summary>The file pg_ctl writes the server's log into when PgBackup started it.</summary>
    public string LogFile { get; set; } = "";

    public override string ToString() => $"{DataDirectory} ({State}, port {Port})";
}

/// <summary>One check of a recovery drill: what was checked, whether it passed, and what was seen.</summary>
public sealed class DrillCheck
{
    public string Name { get; set; } = "";
    public bool Passed { get; set; }
    public string Detail { get; set; } = "";
    public string? SourceValue { get; set; }
    public string? RecoveredValue { get; set; }

    public override string ToString() => $"{(Passed ? "PASS" : "FAIL")} {Name}: {Detail}";
}

/// <summary>
/// The evidence of one recovery drill: which backup was recovered to which point, the recovery time and recovery point
/// measured against their objectives, and every check made on the recovered instance.
/// </summary>
public sealed class DrillReport
{
    public string Server { get; set; } = "";
    public int Port { get; set; }
    public string SystemIdentifier { get; set; } = "";
    public string Repository { get; set; } = "";
    public string BackupId { get; set; } = "";
    public string BackupPath { get; set; } = "";
    public DateTimeOffset? BackupTime { get; set; }
    public Lsn? RecoveredLsn { get; set; }
    public DateTimeOffset? RecoveredTime { get; set; }
    /// <summary>The newest commit on the source when the drill began (exact with track_commit_timestamp, otherwise the drill's start).</summary>
    public DateTimeOffset? SourceNewestCommit { get; set; }
    public Lsn? SourceLsn { get; set; }
    /// <summary>Start of the restore to the recovered instance accepting reads and writes.</summary>
    public TimeSpan? Rto { get; set; }
    public TimeSpan? RtoObjective { get; set; }
    public bool? RtoMet { get; set; }
    /// <summary>Newest commit on the source minus newest commit recovered.</summary>
    public TimeSpan? Rpo { get; set; }
    public long? RpoBytes { get; set; }
    public TimeSpan? RpoObjective { get; set; }
    public bool? RpoMet { get; set; }
    /// <summary>How the RPO was measured: "exact" (commit timestamps on the source) or "upper bound".</summary>
    public string RpoMethod { get; set; } = "";
    public DrillCheck[] Checks { get; set; } = [];
    public bool Passed { get; set; }
    public string[] Failures { get; set; } = [];
    public DateTimeOffset StartTime { get; set; }
    public DateTimeOffset EndTime { get; set; }
    public TimeSpan Duration { get; set; }
    /// <summary>Where the instance was recovered; it is removed after the drill unless -Keep.</summary>
    public string DataDirectory { get; set; } = "";
    public int RecoveredPort { get; set; }
    public bool Kept { get; set; }
    public string? ReportPath { get; set; }

    public override string ToString() => $"Drill of {Server}:{Port}: {(Passed ? "passed" : "FAILED")} (RTO {Rto}, RPO {Rpo})";
}
