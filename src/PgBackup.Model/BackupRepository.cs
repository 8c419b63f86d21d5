namespace PgBackup;

/// <summary>Where a repository lives: a folder, or a container (and prefix) in Azure Blob Storage.</summary>
public enum RepositoryKind { Folder, AzureBlob }

/// <summary>
/// A repository as New-PgRepository and Get-PgRepository show it: where it is, its format, and what it holds.
/// </summary>
public sealed class BackupRepository
{
    public RepositoryKind Kind { get; set; }
    /// <summary>The folder, the container URL (without a query), or the profile name it was given as.</summary>
    public string Location { get; set; } = "";
    /// <summary>The format version of its marker (pgbackup-repository.json); null for a repository written before markers existed.</summary>
    public int? FormatVersion { get; set; }
    /// <summary>When the marker was written.</summary>
    public DateTimeOffset? Created { get; set; }
    /// <summary>True when New-PgRepository wrote the marker now (a new repository, or an older one it adopted).</summary>
    public bool MarkerWritten { get; set; }
    /// <summary>New-PgRepository: writing, listing, reading and deleting a test file or blob all worked.</summary>
    public bool AccessVerified { get; set; }
    /// <summary>True when everything written into it is encrypted (New-PgRepository -Encrypt).</summary>
    public bool Encrypted { get; set; }
    /// <summary>The id of its encryption key (the first 16 bytes of the SHA-256 of the public key, in hex); null when not encrypted.</summary>
    public string? EncryptionKeyId { get; set; }
    /// <summary>Who can read it: "Passphrase" and "Certificate CN=... (thumbprint)" entries; empty when not encrypted.</summary>
    public string[] Recipients { get; set; } = [];
    /// <summary>Everything in the repository: backups, metadata, archived WAL.</summary>
    public long SizeBytes { get; set; }
    public int DumpCount { get; set; }
    public int GlobalsCount { get; set; }
    public int BaseBackupCount { get; set; }
    public DateTimeOffset? OldestBackup { get; set; }
    public DateTimeOffset? NewestBackup { get; set; }
    /// <summary>The system identifiers of the clusters whose WAL is archived here.</summary>
    public string[] WalArchives { get; set; } = [];
    /// <summary>Archived WAL files (segments, history and backup history files) of all clusters.</summary>
    public int WalFileCount { get; set; }
    public long WalBytes { get; set; }

    public override string ToString() => Location;
}
