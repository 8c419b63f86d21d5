using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Blob;

namespace PgBackup.Engine.Recovery;

/// <summary>
/// Base backups that live in blob storage are restored, tested and recovered from a local copy: the recovery code reads
/// files (it checks each against the manifest as it copies it), so the backup's blobs are downloaded into a spool folder
/// first, which the caller removes afterwards.
/// </summary>
public static class BlobBaseBackups
{
    /// <summary>A spool folder for one download, under the temporary folder.</summary>
    public static string NewSpool() => Path.Combine(Path.GetTempPath(), "pgbackup-spool-" + Guid.NewGuid().ToString("N"));

    /// <summary>A copy of a base backup in blob storage, in <paramref name="folder"/>, described by a copy of its metadata that points there.</summary>
    public static async Task<BaseBackup> DownloadAsync(RepositoryAddress repository, BaseBackup backup, string folder, CancellationToken ct)
    {
        await BlobCatalog.DownloadTreeAsync(BlobStore.Open(repository), backup, folder, ct).ConfigureAwait(false);
        var copy = BackupMetadata.Copy(backup);
        copy.Path = folder;
        copy.ManifestPath = Path.Combine(folder, "backup_manifest");
        copy.Repository = null;
        return copy;
    }
}
