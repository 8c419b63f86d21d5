using Azure.Storage.Blobs.Models;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Repository.Encryption;

namespace PgBackup.Engine.Logical;

/// <summary>
/// Restores a dump that lives in blob storage. Custom, Tar and Plain dumps stream from the blob into pg_restore or psql
/// through a <see cref="ChecksumGateStream"/>, so nothing is committed unless the bytes are the ones recorded; a
/// Directory dump (and a Custom dump restored with several jobs, which pg_restore must be able to seek in) is downloaded
/// into a temporary folder, checked, restored and removed.
/// </summary>
internal static class BlobRestores
{
    public static async Task CheckExistsAsync(RepositoryAddress repository, DumpBackup source, CancellationToken ct)
    {
        var store = BlobStore.Open(repository);
        var key = BlobCatalog.KeyOf(store, source);
        var there = source.Format == DumpFormat.Directory
            ? (await store.ListAsync(key + "/", ct).ConfigureAwait(false)).Count > 0
            : await store.ExistsAsync(key, ct).ConfigureAwait(false);
        if (!there)
            throw new PgBackupException("BackupNotFound", ErrorKind.ObjectNotFound, $"The dump '{source.Path}' does not exist in the repository '{repository.Display}'.", source.Path,
                "List the backups that exist with Get-PgBackup; a blob deleted behind PgBackup's back cannot be restored.");
    }

    public static async Task<RestoreResult> ExecuteAsync(RestorePlan plan, RepositoryAddress repository, string activity, IOperationReporter reporter, CancellationToken ct)
    {
        var start = DateTimeOffset.UtcNow;
        var request = plan.Request;
        var source = request.Source;
        var store = BlobStore.Open(repository);
        var key = BlobCatalog.KeyOf(store, source);
        if (source.Format == DumpFormat.Directory || request.Jobs > 1)
        {
            var temp = Path.Combine(Path.GetTempPath(), "pgbackup-restore-" + Guid.NewGuid().ToString("N"));
            try
            {
                var local = Path.Combine(temp, source.Id.Length > 0 ? source.Id : "dump");
                reporter.Progress(activity, "Downloading the dump", 0);
                await DownloadAsync(store, key, source, local, checksums: plan.Encryption == null, ct).ConfigureAwait(false);
                if (plan.Encryption is { } encryption)
                {
                    var decrypted = await RestoreService.RestoreDecryptedCopyAsync(plan, encryption, local, RepositoryEncryption.NameIn(repository, key), activity, start, reporter, ct).ConfigureAwait(false);
                    decrypted.ChecksumVerified = true;
                    return decrypted;
                }
                var copy = LocalCopy(source, local);
                var localPlan = plan with { Request = request with { Source = copy, Repository = null } };
                var result = await RestoreService.ExecuteAsync(localPlan, activity, start, null, reporter, ct).ConfigureAwait(false);
                result.SourcePath = source.Path;
                return result;
            }
            finally { PartialBackup.DeletePath(temp); }
        }

        if (string.IsNullOrEmpty(source.Sha256))
            throw new PgBackupException("NoChecksum", ErrorKind.InvalidData, $"The dump '{source.Path}' has no recorded SHA-256, so it cannot be checked while it streams.", source.Path,
                "Restore dumps that Get-PgBackup lists from this repository.");
        var streamed = await RestoreService.ExecuteAsync(plan, activity, start, async (gated, token) =>
        {
            var download = await store.Call(() => store.Blob(key).DownloadStreamingAsync(new BlobDownloadOptions(), token), $"read '{key}' from").ConfigureAwait(false);
            var content = download.Value.Content;
            var checkedContent = gated ? new ChecksumGateStream(content, source.Sha256, actual => RestoreService.ChecksumMismatch(source,
                new DumpDamage(source.Path, $"'{source.Path}' has SHA-256 {actual}, recorded {source.Sha256}", actual))) : content;
            return plan.Encryption is { } encryption ? encryption.Decrypt(checkedContent, RepositoryEncryption.NameIn(repository, key), source.Path) : checkedContent;
        }, reporter, ct).ConfigureAwait(false);
        streamed.ChecksumVerified = true;
        return streamed;
    }

    /// <summary>Downloads a dump (a blob, or for a Directory dump every blob under it) and checks it against its metadata.</summary>
    /// <param name="checksums">False for an encrypted dump, whose decryption authenticates every chunk instead.</param>
    private static async Task DownloadAsync(BlobStore store, string key, DumpBackup source, string local, bool checksums, CancellationToken ct)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(local)!);
        if (source.Format == DumpFormat.Directory) await BlobCatalog.DownloadTreeAsync(store, source, local, ct).ConfigureAwait(false);
        else await store.Call(() => store.Blob(key).DownloadToAsync(local, ct), $"download '{key}' from").ConfigureAwait(false);
        if (checksums && await BackupChecksum.CheckAsync(LocalCopy(source, local), ct).ConfigureAwait(false) is { } damage)
            throw RestoreService.ChecksumMismatch(source, damage with { File = damage.File.Replace(local, source.Path, StringComparison.Ordinal), Problem = damage.Problem.Replace(local, source.Path, StringComparison.Ordinal) });
    }

    private static DumpBackup LocalCopy(DumpBackup source, string path)
    {
        var copy = BackupMetadata.Copy(source);
        copy.Path = path;
        return copy;
    }
}
