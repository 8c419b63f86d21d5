namespace PgBackup;

public enum BaseBackupFormat { Plain, Tar }

public enum WalMethod { Stream, Fetch, None }

public enum CheckpointMode { Fast, Spread }

/// <summary>One physical backup of a whole cluster: the output of one pg_basebackup run, with its manifest.</summary>
public sealed class BaseBackup : PgBackupItem
{
    public BaseBackup() => Kind = BackupKind.Base;

    public string SystemIdentifier { get; set; } = "";
    /// <summary>The role that took the backup; a test restore connects as it.</summary>
    public string User { get; set; } = "";
    public string Label { get; set; } = "";
    public BaseBackupFormat Format { get; set; }
    public WalMethod WalMethod { get; set; }
    /// <summary>True when the WAL needed to make the backup consistent is inside it (WalMethod Stream or Fetch).</summary>
    public bool WalIncluded { get; set; }
    public uint Timeline { get; set; }
    public Lsn StartLsn { get; set; }
    public Lsn StopLsn { get; set; }
    /// <summary>The first WAL segment the backup needs; retention keeps archived WAL from here on.</summary>
    public string StartSegment { get; set; } = "";
    public string StopSegment { get; set; } = "";
    public long WalSegmentSize { get; set; } = WalSegmentName.DefaultSegmentSize;
    /// <summary>The pg_basebackup --compress value, such as "client-gzip:5" or "server-lz4"; null when uncompressed.</summary>
    public string? Compression { get; set; }
    public string ManifestPath { get; set; } = "";
    /// <summary>
    /// For a Tar backup, the SHA-256 of each tar file as written, by file name: the manifest covers the files inside the
    /// archives, not their headers, padding or compressed framing, nor the WAL in pg_wal.tar.
    /// </summary>
    public Dictionary<string, string>? ArchiveChecksums { get; set; }
    /// <summary>True when the backup was taken from a standby.</summary>
    public bool FromStandby { get; set; }
}
