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
    /// An encrypted Tar backup as a restore reads it without a decrypted copy: its files where they are (in a folder
    /// repository) or downloaded as stored (from blob storage, into &lt;spool&gt;/backup), its manifest decrypted into
    /// &lt;spool&gt;/manifest, and a function that reads a tar file's plaintext, authenticating it as it is read.
    /// </summary>
    public static async Task<(BaseBackup Backup, Func<string, Stream, Stream> OpenArchive)> EncryptedTarAsync(BaseBackup backup, RepositoryAddress? blobRepository,
        RepositoryEncryption encryption, string spool, CancellationToken ct)
    {
        var folder = backup.Path;
        string name;
        if (blobRepository != null)
        {
            var store = BlobStore.Open(blobRepository);
            folder = Path.Combine(spool, "backup");
            await BlobCatalog.DownloadTreeAsync(store, backup, folder, ct).ConfigureAwait(false);
            name = RepositoryEncryption.NameIn(blobRepository, BlobCatalog.KeyOf(store, backup));
        }
        else name = RepositoryEncryption.NameIn(RepositoryEncryption.RootOf(backup, null)!, backup.Path);
        var manifest = Path.Combine(spool, "manifest", "backup_manifest");
        Directory.CreateDirectory(Path.GetDirectoryName(manifest)!);
        await encryption.DecryptTreeAsync(Path.Combine(folder, "backup_manifest"), manifest, name + "/backup_manifest", backup.Path.TrimEnd('/') + "/backup_manifest", ct).ConfigureAwait(false);
        var copy = BackupMetadata.Copy(backup);
        copy.Path = folder;
        copy.ManifestPath = manifest;
        copy.Repository = null;
        copy.ArchiveChecksums = null;
        return (copy, (path, file) => encryption.Decrypt(file, name + "/" + Path.GetFileName(path), backup.Path.TrimEnd('/') + "/" + Path.GetFileName(path)));
    }

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
