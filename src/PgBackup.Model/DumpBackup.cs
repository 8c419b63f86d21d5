namespace PgBackup;

public enum DumpFormat { Plain, Custom, Directory, Tar }

/// <summary>One logical backup: the output of one pg_dump (or pg_dumpall --globals-only) run.</summary>
public sealed class DumpBackup : PgBackupItem
{
    public DumpFormat Format { get; set; }
    public string Sha256 { get; set; } = "";
    /// <summary>For a Directory-format dump, the SHA-256 of each of its files by relative path, so a damaged one is named.</summary>
    public Dictionary<string, string>? FileChecksums { get; set; }
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
}
