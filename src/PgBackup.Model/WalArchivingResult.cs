namespace PgBackup;

/// <summary>
/// What Enable-PgWalArchiving or Disable-PgWalArchiving left on a server: its archiving settings, what still waits for a
/// restart, and whether a WAL segment was seen arriving in the archive.
/// </summary>
public sealed class WalArchivingResult
{
    public string Server { get; set; } = "";
    public int Port { get; set; }
    /// <summary>The archive folder (&lt;repository&gt;/wal/&lt;system identifier&gt;); empty when archiving was disabled.</summary>
    public string Repository { get; set; } = "";
    /// <summary>The server's system identifier, which names the archive folder.</summary>
    public string SystemIdentifier { get; set; } = "";
    /// <summary>archive_mode in effect now (off, on, always); a pending change shows in <see cref="PendingRestart"/>.</summary>
    public string ArchiveMode { get; set; } = "";
    /// <summary>wal_level in effect now (minimal, replica, logical).</summary>
    public string WalLevel { get; set; } = "";
    /// <summary>archive_command in effect now.</summary>
    public string ArchiveCommand { get; set; } = "";
    /// <summary>archive_timeout in effect now; null when it is 0 (no forced segment switch).</summary>
    public TimeSpan? ArchiveTimeout { get; set; }
    /// <summary>How many segments a background pusher archives at once ahead of the server (-ArchiveParallel); 1 when none are pushed ahead.</summary>
    public int ArchiveParallel { get; set; } = 1;
    /// <summary>Segments are stored compressed (-CompressWal).</summary>
    public bool CompressWal { get; set; }
    /// <summary>Settings that were changed but take effect only after the server restarts.</summary>
    public string[] PendingRestart { get; set; } = [];
    public bool Restarted { get; set; }
    /// <summary>True when a segment switched for the check arrived in the archive.</summary>
    public bool Verified { get; set; }
    public string? VerifiedSegment { get; set; }
    /// <summary>From the segment switch to its arrival in the archive.</summary>
    public TimeSpan? VerifyDuration { get; set; }

    public override string ToString() => $"{Server}:{Port} archive_mode={ArchiveMode} -> {Repository}";
}
