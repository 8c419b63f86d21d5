using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Repository.Encryption;

namespace PgBackup.Engine.Recovery;

/// <summary>
/// Base backups that live in blob storage, or are encrypted, are restored, tested and recovered from a local plain copy:
/// the recovery code reads files (it checks each against the manifest as it copies it), so the backup's blobs are
/// downloaded, and an encrypted backup decrypted (every chunk authenticated), into a spool folder first, which the
/// caller removes afterwards.
/// </summary>
public static class BlobBaseBackups
{
    /// <summary>A spool folder for one download, under the temporary folder.</summary>
    public static string NewSpool() => Path.Combine(Path.GetTempPath(), "pgbackup-spool-" + Guid.NewGuid().ToString("N"));

    /// <summary>A copy of a base backup in blob storage, in <paramref name="folder"/>, described by a copy of its metadata that points there.</summary>
    public static Task<BaseBackup> DownloadAsync(RepositoryAddress repository, BaseBackup backup, string folder, CancellationToken ct) =>
        LocalCopyAsync(backup, repository, null, folder, ct);

    /// <summary>
    /// A plain local copy of a base backup in <paramref name="folder"/>: downloaded from <paramref name="blobRepository"/>
    /// when it lives there, decrypted with <paramref name="encryption"/> when its repository is encrypted.
    /// </summary>
    public static async Task<BaseBackup> LocalCopyAsync(BaseBackup backup, RepositoryAddress? blobRepository, RepositoryEncryption? encryption, string folder, CancellationToken ct)
    {
        var source = backup.Path;
        string? downloaded = null;
        try
        {
            if (blobRepository != null)
            {
                var store = BlobStore.Open(blobRepository);
                downloaded = encryption == null ? folder : folder + ".encrypted";
                await BlobCatalog.DownloadTreeAsync(store, backup, downloaded, ct).ConfigureAwait(false);
                source = downloaded;
            }
            if (encryption != null)
            {
                var name = blobRepository != null
                    ? RepositoryEncryption.NameIn(blobRepository, BlobCatalog.KeyOf(BlobStore.Open(blobRepository), backup))
                    : RepositoryEncryption.NameIn(RepositoryEncryption.RootOf(backup, null)!, backup.Path);
                await encryption.DecryptTreeAsync(source, folder, name, backup.Path, ct).ConfigureAwait(false);
            }
        }
        finally { if (downloaded != null && downloaded != folder) PartialBackup.DeletePath(downloaded); }
        var copy = BackupMetadata.Copy(backup);
        // Decrypting authenticated every byte; the recorded checksums are of the encrypted files.
        if (encryption != null) copy.ArchiveChecksums = null;
        copy.Path = folder;
        copy.ManifestPath = Path.Combine(folder, "backup_manifest");
        copy.Repository = null;
        return copy;
    }
}
