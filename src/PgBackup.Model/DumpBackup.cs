namespace PgBackup;

public enum DumpFormat { Plain, Custom, Directory, Tar }

public enum BackupKind { Dump, Globals }

public enum VerificationState { Unverified, Verified, Failed }

/// <summary>One logical backup: the output of one pg_dump (or pg_dumpall --globals-only) run.</summary>
public sealed class DumpBackup
{
    public string Id { get; set; } = "";
    public BackupKind Kind { get; set; }
    public string Server { get; set; } = "";
    public int Port { get; set; }
    /// <summary>The pgbackup.json server profile used for the dump (-Server prod); restores default to it.</summary>
    public string? ServerProfile { get; set; }
    /// <summary>The database that was dumped; empty for a globals dump.</summary>
    public string Database { get; set; } = "";
    public DumpFormat Format { get; set; }
    /// <summary>The dump file, or the folder of a Directory-format dump.</summary>
    public string Path { get; set; } = "";
    public string MetadataPath { get; set; } = "";
    public string? Repository { get; set; }
    public long SizeBytes { get; set; }
    public DateTimeOffset StartTime { get; set; }
    public DateTimeOffset EndTime { get; set; }
    public TimeSpan Duration { get; set; }
    public string ServerVersion { get; set; } = "";
    public string ToolVersion { get; set; } = "";
    public string Sha256 { get; set; } = "";
    /// <summary>The gzip level given to pg_dump; null when pg_dump chose (Custom and Directory dumps are compressed by default).</summary>
    public int? Compression { get; set; }
    public int Jobs { get; set; }
    public string Encoding { get; set; } = "";
    /// <summary>Tables whose data the dump holds; Test-PgBackup compares a test restore with it.</summary>
    public int TableCount { get; set; }
    public string[] Schemas { get; set; } = [];
    public string[] ExcludeSchemas { get; set; } = [];
    public string[] Tables { get; set; } = [];
    public string[] ExcludeTables { get; set; } = [];
    public VerificationState VerificationState { get; set; }
    public DateTimeOffset? LastVerified { get; set; }

    public override string ToString() => Path;
}
