using System.Collections.Concurrent;
using System.Text;

namespace PgBackup.Engine.Repository.Blob;

/// <summary>
/// The catalog of a blob repository: every backup whose metadata blob is there and whose data is there too. A backup's
/// Path is its URL (without any SAS token) and its Repository the address as the user gave it, so it pipes into
/// Restore-PgDump, Test-PgBackup and Remove-PgBackup.
/// </summary>
public static class BlobCatalog
{
    public static async Task<IReadOnlyList<PgBackupItem>> ListAsync(BlobStore store, Action<string>? warn, Action<string>? verbose, CancellationToken ct)
    {
        var address = store.Address;
        var entries = await store.ListAsync(address.Prefix, ct).ConfigureAwait(false);
        var keys = entries.Select(e => e.Key).ToHashSet(StringComparer.Ordinal);
        foreach (var leftover in await BlobBackupWriter.FindAsync(store, address.Prefix, ct).ConfigureAwait(false))
        {
            if (leftover.InProgress) verbose?.Invoke($"'{leftover.Path}' is being written ({leftover.Owner}); it is listed once it is finished.");
            else warn?.Invoke($"'{leftover.Path}' is not a backup: an operation that was interrupted left it ({leftover.Owner}). The next backup into its folder removes it.");
        }
        var found = new ConcurrentBag<PgBackupItem>();
        var metadataKeys = entries.Where(e => e.Key.EndsWith(BackupMetadata.Suffix, StringComparison.Ordinal)).Select(e => e.Key).ToList();
        await Parallel.ForEachAsync(metadataKeys, new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct }, async (metadataKey, token) =>
        {
            var backup = await ReadAsync(store, metadataKey, warn, token).ConfigureAwait(false);
            if (backup == null) return;
            var dataKey = metadataKey[..^BackupMetadata.Suffix.Length];
            if (!keys.Contains(dataKey) && !keys.Any(k => k.StartsWith(dataKey + "/", StringComparison.Ordinal)))
            {
                warn?.Invoke($"The metadata '{address.UrlOf(metadataKey)}' names '{backup.Path}', which is missing; that backup is not listed.");
                return;
            }
            found.Add(backup);
        }).ConfigureAwait(false);
        return [.. found];
    }

    public static async Task<PgBackupItem?> ReadAsync(BlobStore store, string metadataKey, Action<string>? warn, CancellationToken ct)
    {
        var bytes = await store.ReadSmallAsync(metadataKey, ct).ConfigureAwait(false);
        if (bytes == null) return null;
        PgBackupItem? backup;
        try { backup = BackupMetadata.Parse(Encoding.UTF8.GetString(bytes)); }
        catch (System.Text.Json.JsonException ex)
        {
            warn?.Invoke($"Skipped '{store.Address.UrlOf(metadataKey)}': it is not a readable PgBackup metadata blob ({ex.Message}).");
            return null;
        }
        if (backup == null || string.IsNullOrEmpty(backup.Path)) return null;
        var folder = metadataKey[..(metadataKey.LastIndexOf('/') + 1)];
        backup.Path = store.Address.UrlOf(folder + backup.Path);
        backup.MetadataPath = store.Address.UrlOf(metadataKey);
        backup.Repository = store.Address.Display;
        return backup;
    }

    /// <summary>Deletes the metadata first, so a backup that is half deleted is never listed as valid.</summary>
    public static async Task DeleteAsync(BlobStore store, PgBackupItem backup, CancellationToken ct)
    {
        var key = KeyOf(store, backup);
        await store.DeleteAsync(key + BackupMetadata.Suffix, ct).ConfigureAwait(false);
        await store.DeleteTreeAsync(key, ct).ConfigureAwait(false);
    }

    public static async Task RecordVerificationAsync(BlobStore store, PgBackupItem backup, bool passed, DateTimeOffset when, CancellationToken ct)
    {
        backup.VerificationState = passed ? VerificationState.Verified : VerificationState.Failed;
        backup.LastVerified = when;
        var key = KeyOf(store, backup);
        if (await store.ExistsAsync(key + BackupMetadata.Suffix, ct).ConfigureAwait(false))
            await store.WriteSmallAsync(key + BackupMetadata.Suffix, BackupMetadata.Serialize(backup, key[(key.LastIndexOf('/') + 1)..]), ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Null when the dump's blobs hold the bytes its metadata recorded; otherwise the first damaged one (for a
    /// Directory dump the file that is changed, missing or added), as <see cref="BackupChecksum.CheckAsync"/> does for a folder.
    /// </summary>
    public static async Task<DumpDamage?> CheckDumpAsync(BlobStore store, DumpBackup dump, CancellationToken ct)
    {
        var key = KeyOf(store, dump);
        if (dump.Format != DumpFormat.Directory)
        {
            var actual = await HashAsync(store, key, ct).ConfigureAwait(false);
            return actual == null ? new DumpDamage(dump.Path, $"'{dump.Path}' is missing", "")
                : BackupChecksum.FirstDamage(dump, actual, null, name => name, _ => null);
        }
        var files = new ConcurrentDictionary<string, string>(StringComparer.Ordinal);
        var blobs = await store.ListAsync(key + "/", ct).ConfigureAwait(false);
        await Parallel.ForEachAsync(blobs, new ParallelOptions { MaxDegreeOfParallelism = 4, CancellationToken = ct }, async (entry, token) =>
        {
            if (await HashAsync(store, entry.Key, token).ConfigureAwait(false) is { } sha) files[entry.Key[(key.Length + 1)..]] = sha;
        }).ConfigureAwait(false);
        return BackupChecksum.FirstDamage(dump, BackupChecksum.Combine(files), files, name => store.Address.UrlOf(key + "/" + name), _ => null);
    }

    private static async Task<string?> HashAsync(BlobStore store, string key, CancellationToken ct)
    {
        try
        {
            var download = await store.Blob(key).DownloadStreamingAsync(cancellationToken: ct).ConfigureAwait(false);
            await using var content = download.Value.Content;
            return Convert.ToHexString(await System.Security.Cryptography.SHA256.HashDataAsync(content, ct).ConfigureAwait(false)).ToLowerInvariant();
        }
        catch (Azure.RequestFailedException ex) when (ex.Status == 404) { return null; }
        catch (Exception ex) when (BlobStore.IsStorageFailure(ex)) { throw store.Failure(ex, $"read '{key}' from"); }
    }

    /// <summary>Downloads every blob under a backup's key into <paramref name="folder"/> (kept relative paths), several at once.</summary>
    public static async Task DownloadTreeAsync(BlobStore store, PgBackupItem backup, string folder, CancellationToken ct)
    {
        var key = KeyOf(store, backup);
        var blobs = await store.ListAsync(key + "/", ct).ConfigureAwait(false);
        if (blobs.Count == 0)
            throw new PgBackupException("BackupNotFound", ErrorKind.ObjectNotFound, $"The backup '{backup.Path}' has no blobs in the repository '{store.Address.Display}'.", backup.Path,
                "List the backups that exist with Get-PgBackup; a blob deleted behind PgBackup's back cannot be read.");
        Directory.CreateDirectory(folder);
        await Parallel.ForEachAsync(blobs, new ParallelOptions { MaxDegreeOfParallelism = 4, CancellationToken = ct }, async (entry, token) =>
        {
            var path = Path.Combine(folder, entry.Key[(key.Length + 1)..].Replace('/', Path.DirectorySeparatorChar));
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            await store.Call(() => store.Blob(entry.Key).DownloadToAsync(path, token), $"download '{entry.Key}' from").ConfigureAwait(false);
        }).ConfigureAwait(false);
    }

    /// <summary>The key of a backup of this repository from its URL.</summary>
    public static string KeyOf(BlobStore store, PgBackupItem backup) =>
        store.Address.KeyOf(backup.Path) ?? throw new PgBackupException("BackupNotInRepository", ErrorKind.InvalidArgument,
            $"'{backup.Path}' is not in the repository '{store.Address.Display}'.", backup.Path,
            "Pass the repository the backup was listed from (-Repository), or pipe the backup from Get-PgBackup of that repository.");
}
