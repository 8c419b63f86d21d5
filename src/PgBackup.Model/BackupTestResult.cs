namespace PgBackup;

/// <summary>The outcome of Test-PgBackup: checksum and, with -Restore, a real restore into a throwaway database.</summary>
public sealed class BackupTestResult
{
    public string Path { get; set; } = "";
    public BackupKind Kind { get; set; }
    public string SourceServer { get; set; } = "";
    public string Database { get; set; } = "";
    /// <summary>The dump format (Plain, Custom, Directory, Tar) or, for a base backup, Plain or Tar.</summary>
    public string Format { get; set; } = "";
    public bool Success { get; set; }
    public bool ChecksumValid { get; set; }
    public string ExpectedSha256 { get; set; } = "";
    public string ActualSha256 { get; set; } = "";
    public bool RestoreTested { get; set; }
    public string? RestoreServer { get; set; }
    public int? RestorePort { get; set; }
    public string? TestDatabase { get; set; }
    public int? TablesExpected { get; set; }
    public int? TablesRestored { get; set; }
    public TimeSpan? RestoreDuration { get; set; }
    public TimeSpan Duration { get; set; }
    public DateTimeOffset TestedAt { get; set; }
    public string[] Failures { get; set; } = [];

    public override string ToString() => $"{Path}: {(Success ? "passed" : "failed")}";
}
