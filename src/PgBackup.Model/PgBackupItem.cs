namespace PgBackup;

public enum BackupKind { Dump, Globals, Base }

public enum VerificationState { Unverified, Verified, Failed }

/// <summary>
/// What every backup in a repository has, whatever made it: where it is, whose it is, when, how big, and whether a
/// test has proven it. Get-PgBackup, Remove-PgBackup and Test-PgBackup take any backup through this type.
/// </summary>
public abstract class PgBackupItem
{
    public string Id { get; set; } = "";
    public BackupKind Kind { get; set; }
    public string Server { get; set; } = "";
    public int Port { get; set; }
    /// <summary>The pgbackup.json server profile used for the backup (-Server prod); restores default to it.</summary>
    public string? ServerProfile { get; set; }
    /// <summary>The database that was dumped; empty for globals dumps and base backups (which hold the whole cluster).</summary>
    public string Database { get; set; } = "";
    /// <summary>The dump file, or the folder of a Directory-format dump or of a base backup.</summary>
    public string Path { get; set; } = "";
    public string MetadataPath { get; set; } = "";
    public string? Repository { get; set; }
    public long SizeBytes { get; set; }
    /// <summary>True when its files are encrypted (it is in an encrypted repository): reading it takes the repository's key. Its size and checksums are of the encrypted bytes.</summary>
    public bool Encrypted { get; set; }
    public DateTimeOffset StartTime { get; set; }
    public DateTimeOffset EndTime { get; set; }
    public TimeSpan Duration { get; set; }
    public string ServerVersion { get; set; } = "";
    public string ToolVersion { get; set; } = "";
    public VerificationState VerificationState { get; set; }
    public DateTimeOffset? LastVerified { get; set; }

    public override string ToString() => Path;
}
