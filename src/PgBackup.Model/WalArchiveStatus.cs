namespace PgBackup;

/// <summary>A run of consecutive WAL segments of one timeline that recovery needs and the archive does not hold.</summary>
public sealed class WalGap
{
    public string From { get; set; } = "";
    public string To { get; set; } = "";
    public int MissingCount { get; set; }

    public override string ToString() => MissingCount == 1 ? From : $"{From}..{To} ({MissingCount} segments)";
}

/// <summary>
/// What a WAL archive holds for one timeline of one cluster. On the object of the server's current timeline, also the
/// server's archiver state (pg_stat_archiver) and how much written WAL is not archived yet.
/// </summary>
public sealed class WalArchiveStatus
{
    /// <summary>The server inspected; null when only the archive folder was read.</summary>
    public string? Server { get; set; }
    public int? Port { get; set; }
    public string SystemIdentifier { get; set; } = "";
    public string ArchiveFolder { get; set; } = "";
    public uint Timeline { get; set; }
    /// <summary>
    /// Why the archive could not be read (a storage endpoint that does not answer, a credential refused); the archive's
    /// side (segments, gaps, checksums) is then unknown and left empty, and only the server's side is reported. Null normally.
    /// </summary>
    public string? ArchiveError { get; set; }

    /// <summary>The oldest and newest complete segment of this timeline in the archive; null when it holds none (yet).</summary>
    public string? FirstSegment { get; set; }
    public string? LastSegment { get; set; }
    public int SegmentCount { get; set; }
    /// <summary>Bytes of this timeline's files in the archive: segments, partial segments, backup history and timeline history files (not the .sha256 sidecars).</summary>
    public long SizeBytes { get; set; }
    /// <summary>The timeline history files of this timeline and its ancestors that the archive holds (00000002.history...).</summary>
    public string[] HistoryFiles { get; set; } = [];
    /// <summary>Backup history files (000000010000000000000002.00000028.backup), one per base backup started on this timeline.</summary>
    public string[] BackupHistoryFiles { get; set; } = [];
    /// <summary>Incomplete last segments of this timeline (*.partial), archived when a standby was promoted; recovery does not use them.</summary>
    public string[] PartialSegments { get; set; } = [];
    /// <summary>
    /// Segments that recovery from the required start (the oldest kept base backup, else the oldest archived segment) up to
    /// this timeline's newest archived segment needs and the archive lacks. The check follows the timeline history, so a
    /// segment missing from a parent timeline before the switch shows on the child's object too.
    /// </summary>
    public WalGap[] Gaps { get; set; } = [];
    /// <summary>Files whose SHA-256 does not match their .sha256 sidecar, or that have none; null when checksums were not verified.</summary>
    public string[]? ChecksumFailures { get; set; }

    // The server's live state; set only on the object of the server's current timeline.
    public bool? InRecovery { get; set; }
    public long? ArchivedCount { get; set; }
    public string? LastArchivedWal { get; set; }
    public DateTimeOffset? LastArchivedTime { get; set; }
    public long? FailedCount { get; set; }
    public string? LastFailedWal { get; set; }
    public DateTimeOffset? LastFailedTime { get; set; }
    /// <summary>The WAL write position (pg_current_wal_lsn), or on a standby the replay position.</summary>
    public Lsn? CurrentLsn { get; set; }
    /// <summary>The segment <see cref="CurrentLsn"/> lies in: where the next WAL is written.</summary>
    public string? CurrentSegment { get; set; }
    /// <summary>Bytes of WAL written but not in the archive: CurrentLsn minus the end of the newest archived segment on this timeline's history.</summary>
    public long? UnarchivedBytes { get; set; }
    /// <summary>
    /// How long ago the oldest WAL that is not in the archive was written (by the server's clock): committed work newer than
    /// this would be lost with the server. Zero when everything written is archived. See WalArchiveInspector for the estimate.
    /// </summary>
    public TimeSpan? RecoveryPointObjective { get; set; }

    // The backlog: what waits in the server's pg_wal for archive_command. Null when this role may not list pg_wal
    // (pg_monitor or a superuser may), or, for the disk, when the data directory is not on this machine.
    /// <summary>Segments PostgreSQL has completed and not archived yet (.ready files in pg_wal/archive_status).</summary>
    public int? ReadySegments { get; set; }
    /// <summary>The oldest of them, which the archiver works on next.</summary>
    public string? OldestReadySegment { get; set; }
    /// <summary>How long the oldest ready segment has waited, by the server's clock.</summary>
    public TimeSpan? OldestReadyAge { get; set; }
    /// <summary>The size of pg_wal: every WAL file the server keeps, archived or not.</summary>
    public long? PgWalBytes { get; set; }
    /// <summary>Free and total bytes of the file system pg_wal is on; when it fills, the server stops.</summary>
    public long? PgWalDiskFreeBytes { get; set; }
    public long? PgWalDiskBytes { get; set; }
    /// <summary>
    /// Segments the guard (Enable-PgWalArchiving -DropBacklogAbove) acknowledged without archiving them, as recorded in
    /// the data directory's pgbackup_dropped_wal.log: recovery cannot pass them. Null when the log cannot be read.
    /// </summary>
    public string[]? DroppedSegments { get; set; }

    public override string ToString() => $"{SystemIdentifier} timeline {Timeline}";
}
