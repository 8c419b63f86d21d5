namespace PgBackup.Engine.Repository.Blob;

/// <summary>
/// The write-then-commit protocol of one backup in a blob repository, as <see cref="PartialBackup"/> is for a folder:
/// the writer holds the "&lt;key&gt;.partial" lock while it uploads the backup's blobs (a single-file dump's blocks stay
/// uncommitted until its checksum is known; a Directory dump's files are blobs under "&lt;key&gt;/"), and only the
/// metadata blob, written last, makes it a backup. What a dead writer left is removed by the next writer into the same
/// folder and named by Get-PgBackup until then.
/// </summary>
public sealed class BlobBackupWriter : IAsyncDisposable
{
    internal static readonly TimeSpan CleanupTimeout = TimeSpan.FromSeconds(10);

    private readonly BlobWriteLock _lock;
    private bool _committed;

    private BlobBackupWriter(BlobStore store, string key, BlobWriteLock held)
    {
        Store = store;
        Key = key;
        _lock = held;
    }

    public BlobStore Store { get; }
    /// <summary>The backup's key inside the container (prefix included).</summary>
    public string Key { get; }
    public string Url => Store.Address.UrlOf(Key);

    public static async Task<BlobBackupWriter> BeginAsync(BlobStore store, string key, string purpose, IOperationReporter reporter, CancellationToken ct)
    {
        await store.EnsureContainerAsync(ct).ConfigureAwait(false);
        await RemoveAbandonedAsync(store, key[..(key.LastIndexOf('/') + 1)], reporter, ct).ConfigureAwait(false);
        var held = await BlobWriteLock.TryAcquireAsync(store, key, purpose, ct).ConfigureAwait(false)
            ?? throw new PgBackupException("BackupInProgress", ErrorKind.ResourceBusy,
                $"'{store.Address.UrlOf(key)}' is being written by another operation ({await BlobWriteLock.OwnerAsync(store, key, ct).ConfigureAwait(false)}).", store.Address.UrlOf(key),
                "Wait until that operation has finished, then run this one again.");
        try
        {
            if (await store.ExistsAsync(key + BackupMetadata.Suffix, ct).ConfigureAwait(false))
                throw new PgBackupException("TargetExists", ErrorKind.ResourceExists, $"'{store.Address.UrlOf(key)}' already exists.", store.Address.UrlOf(key),
                    "Run the command again: the next backup gets a new name.");
            await store.DeleteTreeAsync(key, ct).ConfigureAwait(false); // left under this very name by a writer that died
        }
        catch
        {
            await held.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        return new BlobBackupWriter(store, key, held);
    }

    /// <summary>Writes the metadata that makes the uploaded blobs a backup, then releases the lock.</summary>
    public async Task CommitAsync(PgBackupItem backup, CancellationToken ct)
    {
        var name = Key[(Key.LastIndexOf('/') + 1)..];
        await Store.WriteSmallAsync(Key + BackupMetadata.Suffix, BackupMetadata.Serialize(backup, name), ct).ConfigureAwait(false);
        backup.MetadataPath = Store.Address.UrlOf(Key + BackupMetadata.Suffix);
        _committed = true;
        await _lock.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Without a commit, removes what was uploaded (staged blocks included); always ends the lock.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_committed)
        {
            // Bounded: when the storage has gone away, the error that says so matters more than a cleanup the next writer does anyway.
            using var limit = new CancellationTokenSource(CleanupTimeout);
            try { await Store.DeleteTreeAsync(Key, limit.Token).ConfigureAwait(false); }
            catch (Exception ex) when (ex is PgBackupException or OperationCanceledException) { System.Diagnostics.Debug.WriteLine(ex); }
        }
        await _lock.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Partial backups under <paramref name="folderPrefix"/>: in progress (lease held) or abandoned, with who wrote them.</summary>
    public static async Task<IReadOnlyList<PartialBackup.Leftover>> FindAsync(BlobStore store, string folderPrefix, CancellationToken ct)
    {
        var found = new List<PartialBackup.Leftover>();
        foreach (var marker in (await store.ListAsync(folderPrefix, ct).ConfigureAwait(false)).Where(e => e.Key.EndsWith(BlobWriteLock.Suffix, StringComparison.Ordinal)))
        {
            var key = marker.Key[..^BlobWriteLock.Suffix.Length];
            found.Add(new PartialBackup.Leftover(store.Address.UrlOf(key), marker.Leased, await BlobWriteLock.OwnerAsync(store, key, ct).ConfigureAwait(false)));
        }
        return found;
    }

    /// <summary>Removes, in one folder, what writers that died left: their blobs, staged blocks and markers.</summary>
    public static async Task RemoveAbandonedAsync(BlobStore store, string folderPrefix, IOperationReporter reporter, CancellationToken ct)
    {
        var entries = await store.ListAsync(folderPrefix, ct).ConfigureAwait(false);
        foreach (var marker in entries.Where(e => e.Key.EndsWith(BlobWriteLock.Suffix, StringComparison.Ordinal) && !e.Leased && !e.Key[folderPrefix.Length..].Contains('/')))
        {
            var key = marker.Key[..^BlobWriteLock.Suffix.Length];
            var owner = await BlobWriteLock.OwnerAsync(store, key, ct).ConfigureAwait(false);
            if (entries.Any(e => e.Key == key + BackupMetadata.Suffix))
            {
                // Committed just before the writer died: the backup is whole, only its marker is left.
                await store.DeleteAsync(marker.Key, ct).ConfigureAwait(false);
                continue;
            }
            await store.DeleteTreeAsync(key, ct).ConfigureAwait(false);
            await store.DeleteAsync(marker.Key, ct).ConfigureAwait(false);
            reporter.Milestone($"Removed '{store.Address.UrlOf(key)}', which an interrupted operation left ({owner}).");
        }
    }
}
