using System.Text.RegularExpressions;
using Azure;
using Azure.Core;
using Azure.Identity;
using Azure.Storage;
using Azure.Storage.Blobs;
using Azure.Storage.Blobs.Models;
using Azure.Storage.Blobs.Specialized;

namespace PgBackup.Engine.Repository.Blob;

/// <summary>One blob of a listing: its key inside the container, size, time and lease state.</summary>
public sealed record BlobEntry(string Key, long Size, DateTimeOffset? LastModified, bool Leased);

/// <summary>
/// A container (and prefix) of Azure Blob Storage as a repository backend. Credentials in the Azure SDK's usual order:
/// a SAS token (the URL's query, the profile, AZURE_STORAGE_SAS_TOKEN), a connection string (the profile,
/// AZURE_STORAGE_CONNECTION_STRING), an account key (the profile, AZURE_STORAGE_KEY), else Microsoft Entra ID through
/// DefaultAzureCredential, where AZURE_CLIENT_ID (or the profile's ManagedIdentityClientId) picks one user-assigned
/// managed identity. Retries are the SDK's. Errors name the repository, never a secret.
/// </summary>
public sealed class BlobStore
{
    public const string SasVariable = "AZURE_STORAGE_SAS_TOKEN";
    public const string ConnectionStringVariable = "AZURE_STORAGE_CONNECTION_STRING";
    public const string AccountKeyVariable = "AZURE_STORAGE_KEY";
    public const string ClientIdVariable = "AZURE_CLIENT_ID";

    private static readonly Regex SecretInText = new(@"(sig|AccountKey|SharedAccessSignature)=[^&;\s""']+", RegexOptions.Compiled | RegexOptions.IgnoreCase);

    private BlobStore(RepositoryAddress address, BlobContainerClient container, string credentialKind)
    {
        Address = address;
        Container = container;
        CredentialKind = credentialKind;
    }

    public RepositoryAddress Address { get; }
    public BlobContainerClient Container { get; }
    /// <summary>Which credential was chosen ("SAS token", "account key"...), for verbose output.</summary>
    public string CredentialKind { get; }

    public static BlobStore Open(RepositoryAddress address)
    {
        if (!address.IsBlob) throw new ArgumentException("Not a blob repository.", nameof(address));
        var options = new BlobClientOptions();
        options.Retry.MaxRetries = 3;
        options.Retry.NetworkTimeout = TimeSpan.FromSeconds(100);
        var s = address.Secrets;
        var container = Uri.EscapeDataString(address.Container);
        var containerUri = new Uri(address.ServiceUri!.AbsoluteUri.TrimEnd('/') + "/" + container);
        var sas = s.SasToken ?? Env(SasVariable);
        if (sas != null)
            return new BlobStore(address, new BlobContainerClient(containerUri, new AzureSasCredential(sas.TrimStart('?')), options), "SAS token");
        var connectionString = s.ConnectionString ?? Env(ConnectionStringVariable);
        if (connectionString != null)
        {
            var service = new BlobServiceClient(connectionString, options);
            if (!string.Equals(service.AccountName, address.Account, StringComparison.OrdinalIgnoreCase))
                throw new PgBackupException("StorageAccountMismatch", ErrorKind.InvalidArgument,
                    $"The connection string is for the storage account '{service.AccountName}', but the repository '{address.Display}' is in '{address.Account}'.", address.Display,
                    $"Use the connection string of '{address.Account}' ({ConnectionStringVariable} or the profile's ConnectionString), or another credential.");
            return new BlobStore(address, new BlobContainerClient(containerUri, SharedKeyOf(connectionString) ?? throw MissingKey(address), options), "connection string");
        }
        var key = s.AccountKey ?? Env(AccountKeyVariable);
        if (key != null)
            return new BlobStore(address, new BlobContainerClient(containerUri, new StorageSharedKeyCredential(address.Account, key), options), "account key");
        if (containerUri.Scheme != Uri.UriSchemeHttps)
            throw new PgBackupException("CredentialRequired", ErrorKind.AuthenticationFailed,
                $"No SAS token, connection string or account key was given for '{address.Display}', and Microsoft Entra ID sign-in works only over HTTPS.", address.Display,
                $"Give a credential for this endpoint: a SAS token in the URL or in {SasVariable}, a connection string in {ConnectionStringVariable}, or the account key in {AccountKeyVariable} (for Azurite, its well-known development key).");
        var clientId = s.ManagedIdentityClientId ?? Env(ClientIdVariable);
        TokenCredential token = new DefaultAzureCredential(new DefaultAzureCredentialOptions { ManagedIdentityClientId = clientId, ExcludeInteractiveBrowserCredential = true });
        return new BlobStore(address, new BlobContainerClient(containerUri, token, options), clientId == null ? "Microsoft Entra ID" : $"Microsoft Entra ID (managed identity {clientId})");
    }

    /// <summary>
    /// The credential pgbackup-wal uses as the database server's OS user: a SAS token, or the account name and key (from the
    /// connection string or the account key). Microsoft Entra ID is for this process only: the tool does not sign in.
    /// </summary>
    public static WalStorageCredentials WalCredentials(RepositoryAddress address)
    {
        var s = address.Secrets;
        if ((s.SasToken ?? Env(SasVariable)) is { } sas) return new WalStorageCredentials(sas.TrimStart('?'), null, null);
        if ((s.ConnectionString ?? Env(ConnectionStringVariable)) is { } connectionString)
        {
            var key = SharedKeyOf(connectionString) ?? throw MissingKey(address);
            return new WalStorageCredentials(null, key.AccountName, ConnectionStringPart(connectionString, "AccountKey"));
        }
        if ((s.AccountKey ?? Env(AccountKeyVariable)) is { } accountKey) return new WalStorageCredentials(null, address.Account, accountKey);
        throw new PgBackupException("CredentialRequired", ErrorKind.AuthenticationFailed,
            $"WAL archiving into '{address.Display}' needs a SAS token or the account key, which pgbackup-wal reads as the database server's OS user; none was given.", address.Display,
            $"Give a SAS token (in the URL, the profile's SasToken or {SasVariable}) that allows read, add, create, write, list and delete on the container, or the account key ({AccountKeyVariable}, or a connection string in {ConnectionStringVariable}). PgBackup stores it in a file only the server's OS user can read.");
    }

    private static string? ConnectionStringPart(string connectionString, string name) =>
        connectionString.Split(';', StringSplitOptions.RemoveEmptyEntries).Select(p => p.Split('=', 2))
            .Where(p => p.Length == 2 && p[0].Trim().Equals(name, StringComparison.OrdinalIgnoreCase)).Select(p => p[1].Trim()).FirstOrDefault();

    public BlockBlobClient Block(string key) => Container.GetBlockBlobClient(key);
    public BlobClient Blob(string key) => Container.GetBlobClient(key);

    /// <summary>Creates the container if it is not there yet (a new repository), once per write.</summary>
    public async Task EnsureContainerAsync(CancellationToken ct) =>
        await Call(() => Container.CreateIfNotExistsAsync(cancellationToken: ct), "create the container").ConfigureAwait(false);

    /// <param name="includeUncommitted">Also blobs that so far have only staged blocks (an upload that was never committed).</param>
    public async Task<List<BlobEntry>> ListAsync(string prefix, CancellationToken ct, bool includeUncommitted = false)
    {
        var entries = new List<BlobEntry>();
        try
        {
            var states = includeUncommitted ? BlobStates.Uncommitted : BlobStates.None;
            await foreach (var item in Container.GetBlobsAsync(traits: BlobTraits.None, states: states, prefix: prefix, cancellationToken: ct).ConfigureAwait(false))
                entries.Add(new BlobEntry(item.Name, item.Properties.ContentLength ?? 0, item.Properties.LastModified, item.Properties.LeaseState == LeaseState.Leased));
        }
        catch (RequestFailedException ex) when (ex.Status == 404 && ex.ErrorCode == "ContainerNotFound")
        {
            throw new PgBackupException("RepositoryNotFound", ErrorKind.ObjectNotFound, $"The container of the repository '{Address.Display}' does not exist.", Address.Display,
                "Check the URL given to -Repository (or the Repository setting); a container is created by the first backup written into it.", ex);
        }
        catch (Exception ex) when (IsStorageFailure(ex)) { throw Failure(ex, "list"); }
        return entries;
    }

    public async Task<byte[]?> ReadSmallAsync(string key, CancellationToken ct)
    {
        try
        {
            var result = await Blob(key).DownloadContentAsync(ct).ConfigureAwait(false);
            return result.Value.Content.ToArray();
        }
        catch (RequestFailedException ex) when (ex.Status == 404) { return null; }
        catch (Exception ex) when (IsStorageFailure(ex)) { throw Failure(ex, $"read '{key}' from"); }
    }

    /// <summary>Writes a small blob whole (metadata, a lock note) in one request, which is atomic: readers see all of it or the old one.</summary>
    public async Task WriteSmallAsync(string key, byte[] content, CancellationToken ct, string? leaseId = null)
    {
        var options = new BlobUploadOptions { Conditions = leaseId == null ? null : new BlobRequestConditions { LeaseId = leaseId } };
        await Call(() => Blob(key).UploadAsync(new BinaryData(content), options, ct), $"write '{key}' into").ConfigureAwait(false);
    }

    public async Task<bool> ExistsAsync(string key, CancellationToken ct) =>
        await Call(async () => (await Blob(key).ExistsAsync(ct).ConfigureAwait(false)).Value, $"look for '{key}' in").ConfigureAwait(false);

    /// <returns>Whether a committed blob was there to delete.</returns>
    public async Task<bool> DeleteAsync(string key, CancellationToken ct, string? leaseId = null)
    {
        var conditions = leaseId == null ? null : new BlobRequestConditions { LeaseId = leaseId };
        return (await Call(() => Blob(key).DeleteIfExistsAsync(DeleteSnapshotsOption.IncludeSnapshots, conditions, ct), $"delete '{key}' from").ConfigureAwait(false)).Value;
    }

    /// <summary>Deletes a blob and every blob under "key/" (a Directory-format dump is one blob per file).</summary>
    public async Task DeleteTreeAsync(string key, CancellationToken ct)
    {
        var under = await ListAsync(key.TrimEnd('/') + "/", ct, includeUncommitted: true).ConfigureAwait(false);
        await Parallel.ForEachAsync(under.Select(e => e.Key).Append(key), new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct }, async (blob, token) =>
        {
            // Deleting a blob drops its staged blocks with it; one that was never committed can only be discarded.
            if (!await DeleteAsync(blob, token).ConfigureAwait(false)) await DiscardUncommittedAsync(blob, token).ConfigureAwait(false);
        }).ConfigureAwait(false);
    }

    /// <summary>
    /// Drops blocks an interrupted upload staged under <paramref name="key"/> but never committed: they are invisible,
    /// but the service keeps them (and bills them) for a week. A committed blob there keeps its content.
    /// </summary>
    public async Task DiscardUncommittedAsync(string key, CancellationToken ct)
    {
        var block = Block(key);
        BlockList list;
        try { list = (await block.GetBlockListAsync(BlockListTypes.All, cancellationToken: ct).ConfigureAwait(false)).Value; }
        catch (RequestFailedException ex) when (ex.Status == 404) { return; }
        catch (Exception ex) when (IsStorageFailure(ex)) { throw Failure(ex, $"read the blocks of '{key}' in"); }
        if (!list.UncommittedBlocks.Any()) return;
        if (list.CommittedBlocks.Any())
        {
            var properties = (await Call(() => block.GetPropertiesAsync(cancellationToken: ct), $"read '{key}' in").ConfigureAwait(false)).Value;
            await Call(() => block.CommitBlockListAsync(list.CommittedBlocks.Select(b => b.Name), new CommitBlockListOptions
            {
                Metadata = properties.Metadata,
                HttpHeaders = new BlobHttpHeaders { ContentType = properties.ContentType, ContentHash = properties.ContentHash },
            }, ct), $"clean '{key}' in").ConfigureAwait(false);
        }
        else
        {
            // Putting an empty blob discards the uncommitted blocks; deleting it leaves nothing behind.
            await Call(() => block.UploadAsync(new MemoryStream(), new BlobUploadOptions(), ct), $"clean '{key}' in").ConfigureAwait(false);
            await DeleteAsync(key, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Runs one storage call, turning what the service or the network says into a PgBackup error.</summary>
    public async Task<T> Call<T>(Func<Task<T>> call, string doing)
    {
        try { return await call().ConfigureAwait(false); }
        catch (Exception ex) when (IsStorageFailure(ex)) { throw Failure(ex, doing); }
    }

    public static bool IsStorageFailure(Exception ex) =>
        ex is RequestFailedException or AuthenticationFailedException or CredentialUnavailableException or HttpRequestException or AggregateException { InnerException: RequestFailedException or HttpRequestException };

    /// <summary>A storage failure as a PgBackup error: access denied, unreachable, or another refusal, with the service's error code.</summary>
    public PgBackupException Failure(Exception ex, string doing)
    {
        if (ex is AggregateException { InnerException: { } inner }) ex = inner;
        var detail = Scrub(ex is RequestFailedException r ? $"{r.Status} {r.ErrorCode}" : ex.Message.Split('\n')[0]);
        return ex switch
        {
            AuthenticationFailedException or CredentialUnavailableException =>
                new PgBackupException("StorageAccessDenied", ErrorKind.PermissionDenied,
                    $"PgBackup could not sign in to Azure Storage to {doing} the repository '{Address.Display}' with {CredentialKind} ({detail}).", Address.Display,
                    $"Give a credential: a SAS token in the URL or {SasVariable}, a connection string in {ConnectionStringVariable}, the account key in {AccountKeyVariable}, or a Microsoft Entra ID sign-in that DefaultAzureCredential finds (a managed identity, with {ClientIdVariable} naming a user-assigned one; environment variables of a service principal; Azure CLI or PowerShell sign-in) with the role 'Storage Blob Data Contributor' on the container.", ex),
            RequestFailedException { Status: 401 or 403 } =>
                new PgBackupException("StorageAccessDenied", ErrorKind.PermissionDenied,
                    $"Azure Storage refused to let PgBackup {doing} the repository '{Address.Display}' with the {CredentialKind} ({detail}).", Address.Display,
                    $"Check the credential: a SAS token that has not expired and allows read, write, list and delete; the account key ({AccountKeyVariable}); the connection string ({ConnectionStringVariable}); or for Microsoft Entra ID the role 'Storage Blob Data Contributor' on the container ({ClientIdVariable} picks the managed identity).", ex),
            RequestFailedException { Status: 404 } =>
                new PgBackupException("BackupNotFound", ErrorKind.ObjectNotFound, $"PgBackup could not {doing} the repository '{Address.Display}': it is not there ({detail}).", Address.Display,
                    "List what the repository holds with Get-PgBackup; something may have deleted the blob behind PgBackup's back.", ex),
            RequestFailedException { Status: 0 } or HttpRequestException =>
                new PgBackupException("StorageUnavailable", ErrorKind.ConnectionFailed, $"PgBackup could not {doing} the repository '{Address.Display}': the storage endpoint {Address.ServiceUri?.GetLeftPart(UriPartial.Authority)} did not answer ({detail}).", Address.Display,
                    "Check the network path to the storage account (DNS, firewall, private endpoint) and run the command again; nothing half-written is ever listed.", ex),
            _ => new PgBackupException("StorageFailed", ErrorKind.WriteFailed, $"Azure Storage refused to let PgBackup {doing} the repository '{Address.Display}' ({detail}).", Address.Display,
                "Read the service's error code above; run the command again once the cause is fixed.", ex),
        };
    }

    /// <summary>Removes anything that looks like a signature or a key from a message before it is shown.</summary>
    public static string Scrub(string text) => SecretInText.Replace(text, m => m.Groups[1].Value + "=REDACTED");

    private static StorageSharedKeyCredential? SharedKeyOf(string connectionString)
    {
        var parts = connectionString.Split(';', StringSplitOptions.RemoveEmptyEntries)
            .Select(p => p.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0].Trim(), p => p[1].Trim(), StringComparer.OrdinalIgnoreCase);
        return parts.TryGetValue("AccountName", out var name) && parts.TryGetValue("AccountKey", out var key) ? new StorageSharedKeyCredential(name, key) : null;
    }

    private static PgBackupException MissingKey(RepositoryAddress address) =>
        new("StorageAccessDenied", ErrorKind.PermissionDenied, $"The connection string for '{address.Display}' holds no AccountName and AccountKey.", address.Display,
            $"Give a connection string with AccountName and AccountKey, or a SAS token ({SasVariable}) instead.");

    private static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;
}
