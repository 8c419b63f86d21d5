namespace PgBackup;

/// <summary>What Restore-PgDump did: which dump went into which database.</summary>
public sealed class RestoreResult
{
    public string SourcePath { get; set; } = "";
    public DumpFormat Format { get; set; }
    public BackupKind Kind { get; set; }
    public string Server { get; set; } = "";
    public int Port { get; set; }
    /// <summary>The database restored into (named Database so the result pipes into Invoke-PgDump).</summary>
    public string Database { get; set; } = "";
    public bool DatabaseCreated { get; set; }
    public bool Cleaned { get; set; }
    public int Jobs { get; set; }
    public bool ChecksumVerified { get; set; }
    public DateTimeOffset StartTime { get; set; }
    public DateTimeOffset EndTime { get; set; }
    public TimeSpan Duration { get; set; }
    public string ToolVersion { get; set; } = "";
    /// <summary>Errors the restore tool reported and ignored (only globals restores continue past errors).</summary>
    public string[] Warnings { get; set; } = [];

    public override string ToString() => $"{SourcePath} -> {Server}:{Port}/{Database}";
}
