using System.Text;
using Azure;
using Azure.Storage.Blobs.Models;
using Azure.Storage.Blobs.Specialized;

namespace PgBackup.Engine.Repository.Blob;

/// <summary>
/// The blob form of a partial backup's lock file: a small "&lt;key&gt;.partial" blob that says who writes the backup,
/// under a 60-second lease renewed every 15 seconds while the writer lives. A writer that dies stops renewing, the lease
/// expires, and the next writer into the same folder knows what it left is abandoned (pgBackRest's lock files, in
/// storage that has no file locks).
/// </summary>
public sealed class BlobWriteLock : IAsyncDisposable
{
    public const string Suffix = ".partial";
    private static readonly TimeSpan LeaseDuration = TimeSpan.FromSeconds(60);

    private readonly BlobStore _store;
    private readonly BlobLeaseClient _lease;
    private readonly Timer _renewal;
    private bool _released;

    private BlobWriteLock(BlobStore store, string key, BlobLeaseClient lease)
    {
        _store = store;
        Key = key;
        _lease = lease;
        _renewal = new Timer(_ => Renew(), null, TimeSpan.FromSeconds(15), TimeSpan.FromSeconds(15));
    }

    /// <summary>The backup's key (without the suffix).</summary>
    public string Key { get; }
    public string LeaseId => _lease.LeaseId;

    /// <returns>The lock, or null when a living writer holds it.</returns>
    public static async Task<BlobWriteLock?> TryAcquireAsync(BlobStore store, string key, string purpose, CancellationToken ct)
    {
        var marker = store.Blob(key + Suffix);
        var note = Encoding.UTF8.GetBytes($"{purpose}, process {Environment.ProcessId} on {Environment.MachineName}, since {DateTimeOffset.UtcNow:u}");
        var created = true;
        try
        {
            await marker.UploadAsync(new BinaryData(note), new BlobUploadOptions { Conditions = new BlobRequestConditions { IfNoneMatch = ETag.All } }, ct).ConfigureAwait(false);
        }
        catch (RequestFailedException ex) when (ex.Status == 409) { created = false; } // there already: taken below if its lease has expired
        catch (Exception ex) when (BlobStore.IsStorageFailure(ex)) { throw store.Failure(ex, $"lock '{key}' in"); }
        var lease = marker.GetBlobLeaseClient();
        try { await lease.AcquireAsync(LeaseDuration, cancellationToken: ct).ConfigureAwait(false); }
        catch (RequestFailedException ex) when (ex.Status == 409) { return null; }
        catch (Exception ex) when (BlobStore.IsStorageFailure(ex)) { throw store.Failure(ex, $"lock '{key}' in"); }
        if (!created) await store.WriteSmallAsync(key + Suffix, note, ct, lease.LeaseId).ConfigureAwait(false); // the dead writer's note, replaced
        return new BlobWriteLock(store, key, lease);
    }

    /// <summary>Who holds (or held) the lock of <paramref name="key"/>, from its note.</summary>
    public static async Task<string> OwnerAsync(BlobStore store, string key, CancellationToken ct) =>
        await store.ReadSmallAsync(key + Suffix, ct).ConfigureAwait(false) is { Length: > 0 } note ? Encoding.UTF8.GetString(note) : "no record of who wrote it";

    private void Renew()
    {
        try { _lease.Renew(); }
        catch (Exception ex) when (BlobStore.IsStorageFailure(ex)) { System.Diagnostics.Debug.WriteLine(ex); } // the upload itself then fails too
    }

    /// <summary>Removes the marker, which ends the lease: done after the commit, or after the partial was cleaned up.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_released) return;
        _released = true;
        await _renewal.DisposeAsync().ConfigureAwait(false);
        using var limit = new CancellationTokenSource(BlobBackupWriter.CleanupTimeout);
        try { await _store.DeleteAsync(Key + Suffix, limit.Token, _lease.LeaseId).ConfigureAwait(false); }
        catch (Exception ex) when (ex is PgBackupException or OperationCanceledException) { System.Diagnostics.Debug.WriteLine(ex); } // an expired marker is cleaned by the next writer
    }
}
