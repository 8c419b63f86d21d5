namespace PgBackup;

/// <summary>
/// A logical replication from a source database to a target that PgBackup set up (Start-PgLogicalMigration): its
/// publication and slot on the source, its subscription on the target, all under one name PgBackup owns. It pipes into
/// Complete-PgLogicalMigration (the cutover), Stop-PgLogicalMigration (abandon and clean up) and Get-PgReplicationStatus.
/// </summary>
public sealed class LogicalMigration
{
    /// <summary>The name of the publication, the slot and the subscription (pgbackup_migration_...).</summary>
    public string Name { get; set; } = "";
    /// <summary>The source server, host:port.</summary>
    public string Source { get; set; } = "";
    /// <summary>The target server, host:port.</summary>
    public string Target { get; set; } = "";
    public string Database { get; set; } = "";
    public string TargetDatabase { get; set; } = "";
    public int SourceMajor { get; set; }
    public int TargetMajor { get; set; }
    /// <summary>The replicated tables, schema-qualified.</summary>
    public string[] Tables { get; set; } = [];
    /// <summary>Each table's initial copy as the subscription reports it.</summary>
    public LogicalTableSync[] TableStates { get; set; } = [];
    /// <summary>Whether every table has finished its initial copy and follows the stream (all ready).</summary>
    public bool Synchronized { get; set; }
    /// <summary>Whether the target database was created by the set-up.</summary>
    public bool CreatedTargetDatabase { get; set; }
    /// <summary>What logical replication does not carry here, as said when it was set up.</summary>
    public string[] NotCarried { get; set; } = [];
    public TimeSpan Duration { get; set; }

    public override string ToString() => $"{Name}: {Source}/{Database} -> {Target}/{TargetDatabase} ({Tables.Length} tables, {(Synchronized ? "synchronized" : "copying")})";
}

/// <summary>One table of a logical replication and where its initial copy stands (pg_subscription_rel).</summary>
public sealed class LogicalTableSync
{
    public string Table { get; set; } = "";
    /// <summary>Init, Copying, Copied, Synchronized or Ready (following the stream).</summary>
    public string State { get; set; } = "";
    /// <summary>The source position the table's copy was synchronized at, once it is.</summary>
    public Lsn? Lsn { get; set; }

    public override string ToString() => $"{Table}: {State}";
}

/// <summary>
/// A logical replication as a server sees it: on the source, a logical slot and the WAL sender that feeds it; on the
/// target, a subscription and its tables' sync states. PgBackup's own (pgbackup_migration_...) are marked Owned.
/// </summary>
public sealed class LogicalReplicationLink
{
    public string Server { get; set; } = "";
    public int Port { get; set; }
    /// <summary>Publisher (this server holds the slot) or Subscriber (it holds the subscription).</summary>
    public string Side { get; set; } = "";
    public string Name { get; set; } = "";
    public string Database { get; set; } = "";
    public bool Owned { get; set; }
    /// <summary>Publisher: whether a consumer is connected to the slot. Subscriber: whether the subscription is enabled.</summary>
    public bool Active { get; set; }
    /// <summary>Subscriber: streaming, when its apply worker runs; stopped otherwise. Publisher: the WAL sender's state, or inactive.</summary>
    public string State { get; set; } = "";
    public Lsn? CurrentLsn { get; set; }
    /// <summary>Publisher: what the subscriber confirmed (confirmed_flush_lsn). Subscriber: the last position it received.</summary>
    public Lsn? ConfirmedLsn { get; set; }
    /// <summary>Publisher: the source's current WAL position minus the confirmed one.</summary>
    public long? LagBytes { get; set; }
    /// <summary>Publisher: how long the subscriber takes to confirm (the WAL sender's replay lag).</summary>
    public TimeSpan? Lag { get; set; }
    /// <summary>Publisher: the WAL the slot keeps from being recycled.</summary>
    public long? RetainedWalBytes { get; set; }
    /// <summary>Subscriber: its tables' sync states.</summary>
    public LogicalTableSync[] Tables { get; set; } = [];
    public DateTimeOffset? LastMessageTime { get; set; }

    public override string ToString() => $"{Server}:{Port} {Side} {Name} ({State}{(LagBytes is { } lag ? $", lag {lag} bytes" : "")})";
}

/// <summary>What a cutover (Complete-PgLogicalMigration) did and proved.</summary>
public sealed class LogicalCutover
{
    public string Name { get; set; } = "";
    public string Source { get; set; } = "";
    public string Target { get; set; } = "";
    public string Database { get; set; } = "";
    public string TargetDatabase { get; set; } = "";
    /// <summary>Whether the source database was made read-only (default_transaction_read_only, sessions ended).</summary>
    public bool SourceReadOnly { get; set; }
    /// <summary>The source's WAL position once its writes stopped; the target confirmed everything up to it.</summary>
    public Lsn FinalLsn { get; set; }
    public TableVerification[] Tables { get; set; } = [];
    public SequenceCopy[] Sequences { get; set; } = [];
    /// <summary>Whether every table has the same row count (and, with -VerifyData, the same checksum) on both sides.</summary>
    public bool Verified { get; set; }
    public bool DataCompared { get; set; }
    /// <summary>From writes stopped on the source to the target ready to take them (sequences set, subscription gone).</summary>
    public TimeSpan WriteDowntime { get; set; }
    public TimeSpan Duration { get; set; }

    public override string ToString() => $"{Name}: {Source}/{Database} -> {Target}/{TargetDatabase}, {(Verified ? "verified" : "NOT verified")}, write downtime {WriteDowntime.TotalSeconds:0.00}s";
}

/// <summary>One table compared between source and target at the cutover.</summary>
public sealed class TableVerification
{
    public string Table { get; set; } = "";
    public long SourceRows { get; set; }
    public long TargetRows { get; set; }
    /// <summary>An order-independent checksum of every row's text, with -VerifyData.</summary>
    public string? SourceChecksum { get; set; }
    public string? TargetChecksum { get; set; }
    public bool Match { get; set; }

    public override string ToString() => $"{Table}: {SourceRows} / {TargetRows} rows{(Match ? "" : " MISMATCH")}";
}

/// <summary>One sequence set on the target to the source's value at the cutover.</summary>
public sealed class SequenceCopy
{
    public string Sequence { get; set; } = "";
    /// <summary>The source's last value; null when the sequence was never used there (the target's is left as it is).</summary>
    public long? SourceValue { get; set; }
    public long? TargetValue { get; set; }

    public override string ToString() => $"{Sequence}: {SourceValue?.ToString() ?? "unused"}";
}
