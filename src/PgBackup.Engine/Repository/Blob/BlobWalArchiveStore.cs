using System.Security.Cryptography;
using Azure;
using Azure.Storage.Blobs.Models;

namespace PgBackup.Engine.Repository.Blob;

/// <summary>
/// One cluster's WAL archive in a blob repository: &lt;prefix&gt;wal/&lt;system identifier&gt;/&lt;file&gt;, one block blob per
/// file as pgbackup-wal writes it, with its SHA-256 in the metadata "sha256". Synchronous calls, because the inventory
/// and inspection above it are; callers run them off the pipeline thread.
/// </summary>
public sealed class BlobWalArchiveStore : IWalArchiveStore
{
    public const string ChecksumMetadata = "sha256";

    private readonly BlobStore _store;
    private readonly string _key;
    private IReadOnlyList<WalStoreEntry>? _listing;
    private Dictionary<string, string?>? _checksums;
    private Dictionary<string, string>? _lineages;

    public BlobWalArchiveStore(RepositoryAddress repository, string systemIdentifier)
    {
        _store = BlobStore.Open(repository);
        _key = KeyOf(repository, systemIdentifier);
        Location = UrlOf(repository, systemIdentifier);
    }

    /// <summary>The archive's key prefix inside the container (no trailing '/').</summary>
    public static string KeyOf(RepositoryAddress repository, string systemIdentifier) => repository.Prefix + RepositoryLayout.ArchiveKey(systemIdentifier);

    /// <summary>The archive's URL without a query: what archive_command and restore_command name.</summary>
    public static string UrlOf(RepositoryAddress repository, string systemIdentifier) => repository.UrlOf(KeyOf(repository, systemIdentifier));

    public string Location { get; }

    public bool Exists => List().Count > 0;

    public IReadOnlyList<WalStoreEntry> List()
    {
        if (_listing != null) return _listing;
        var entries = new List<WalStoreEntry>();
        var checksums = new Dictionary<string, string?>(StringComparer.Ordinal);
        var lineages = new Dictionary<string, string>(StringComparer.Ordinal);
        Call(() =>
        {
            foreach (var item in _store.Container.GetBlobs(BlobTraits.Metadata, BlobStates.None, _key + "/", CancellationToken.None))
            {
                var name = item.Name[(_key.Length + 1)..];
                // The probe of pgbackup-wal check, and anything in a sub-folder, is not WAL.
                if (name.StartsWith('.') || name.Contains('/')) continue;
                var checksum = item.Metadata != null && item.Metadata.TryGetValue(ChecksumMetadata, out var c) ? c : null;
                checksums[name] = checksum;
                if (item.Metadata != null && item.Metadata.TryGetValue("lineage", out var lineage)) lineages[name] = lineage;
                entries.Add(new WalStoreEntry(name, item.Properties.ContentLength ?? 0, checksum != null));
            }
            return 0;
        }, "list the WAL archive in");
        _checksums = checksums;
        _lineages = lineages;
        return _listing = entries;
    }

    public string? ReadText(string name)
    {
        List();
        if (_lineages!.TryGetValue(name, out var lineage)) return FolderWalArchiveStore.HistoryFromLineage(lineage);
        try
        {
            var content = _store.Blob(_key + "/" + name).DownloadContent().Value.Content;
            return Encryption.EncryptedContent.LooksEncrypted(content.ToMemory().Span) ? null : content.ToString();
        }
        catch (RequestFailedException ex) when (ex.Status == 404) { return null; }
        catch (Exception ex) when (BlobStore.IsStorageFailure(ex)) { throw _store.Failure(ex, $"read '{name}' from"); }
    }

    public string? ChecksumProblem(string name, bool requireChecksum)
    {
        List();
        var recorded = _checksums!.GetValueOrDefault(name);
        if (recorded == null) return requireChecksum ? $"{Location}/{name} has no recorded SHA-256, so its content cannot be verified." : null;
        try
        {
            using var stream = _store.Blob(_key + "/" + name).OpenRead();
            var actual = Convert.ToHexString(SHA256.HashData(stream)).ToLowerInvariant();
            return string.Equals(recorded, actual, StringComparison.OrdinalIgnoreCase) ? null
                : $"{Location}/{name} does not match its checksum: SHA-256 {actual}, recorded '{recorded}'.";
        }
        catch (RequestFailedException ex) when (ex.Status == 404) { return $"{Location}/{name} is gone from the archive."; }
        catch (Exception ex) when (BlobStore.IsStorageFailure(ex)) { throw _store.Failure(ex, $"read '{name}' from"); }
    }

    public Stream OpenRead(string name) => Call(() => _store.Blob(_key + "/" + name).OpenRead(), $"read '{name}' from");

    /// <summary>In order, a few at a time: an interrupted prune leaves only files that were to go anyway.</summary>
    public void Delete(IEnumerable<string> names)
    {
        foreach (var chunk in names.Chunk(8))
            Parallel.ForEach(chunk, name => Call(() => _store.Blob(_key + "/" + name).DeleteIfExists().Value, $"delete '{name}' from"));
        _listing = null;
    }

    /// <summary>
    /// Copies files into <paramref name="folder"/> as a folder archive holds them, each with a .sha256 sidecar of the
    /// checksum recorded in the blob (not of what arrived), so a damaged blob is caught by the same checks as a damaged file.
    /// </summary>
    public async Task DownloadAsync(IReadOnlyCollection<string> names, string folder, Action<int>? progress, CancellationToken ct)
    {
        List();
        Directory.CreateDirectory(folder);
        var done = 0;
        await Parallel.ForEachAsync(names, new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct }, async (name, token) =>
        {
            var path = Path.Combine(folder, name);
            await _store.Call(() => _store.Blob(_key + "/" + name).DownloadToAsync(path, token), $"download '{name}' from").ConfigureAwait(false);
            if (_checksums!.GetValueOrDefault(name) is { } recorded)
                await FolderWalArchiveStore.WriteSidecarAsync(path, recorded, token).ConfigureAwait(false);
            progress?.Invoke(Interlocked.Increment(ref done));
        }).ConfigureAwait(false);
    }

    private T Call<T>(Func<T> call, string doing)
    {
        try { return call(); }
        catch (RequestFailedException ex) when (ex.Status == 404 && ex.ErrorCode == "ContainerNotFound")
        {
            throw new PgBackupException("RepositoryNotFound", ErrorKind.ObjectNotFound, $"The container of the repository '{_store.Address.Display}' does not exist.", _store.Address.Display,
                "Check the URL given to -Repository (or the Repository setting); New-PgRepository creates a container.", ex);
        }
        catch (Exception ex) when (BlobStore.IsStorageFailure(ex)) { throw _store.Failure(ex, doing); }
    }
}
