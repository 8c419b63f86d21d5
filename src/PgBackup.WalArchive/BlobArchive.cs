using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using PgBackup.Engine.Repository.Blob;

namespace PgBackup.WalArchive;

/// <summary>
/// A WAL archive in Azure Blob Storage, spoken to over the Blob REST API with the BCL alone (the Azure SDK would double
/// the tool's start-up, which is most of its cost per segment). The location is the archive's URL without a query,
/// https://account.blob.core.windows.net/container[/prefix]/wal/&lt;system identifier&gt; or its path-style form; each file
/// is one block blob written whole in one request (atomic: readers see all of it or nothing) with its SHA-256 in the
/// metadata "sha256" and Content-MD5 checked by the service on arrival.
/// </summary>
internal sealed class BlobArchive : IDisposable
{
    private const string ApiVersion = "2021-12-02";
    private const string ChecksumHeader = "x-ms-meta-sha256";
    /// <summary>
    /// A small retry loop of our own, because the tool stays BCL only: the statuses and network failures the Azure SDK's
    /// policy retries, with backoff. Each attempt is bounded (<see cref="AttemptTimeout"/>, and a body that stalls for that
    /// long), so PostgreSQL hears back within about three and a half minutes at worst.
    /// </summary>
    private static readonly TimeSpan[] Backoff = [TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(4), TimeSpan.FromSeconds(8)];

    private static readonly TimeSpan AttemptTimeout = TimeSpan.FromSeconds(30);
    private readonly string _location;
    private readonly WalStorageCredentials _credentials;
    private readonly HttpClient _http;

    public BlobArchive(string location, string credentialsFile)
    {
        if (!Uri.TryCreate(location, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https") || uri.Query.Length > 0)
            throw new ArgumentException($"'{Program.WithoutQuery(location)}' is not the URL of a blob WAL archive (http(s), without a query: the credential belongs in the credentials file)");
        _location = location.TrimEnd('/');
        string text;
        try { text = File.ReadAllText(credentialsFile); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"cannot read the credentials file '{credentialsFile}' ({ex.Message}); Enable-PgWalArchiving writes it for the server's OS user");
        }
        try { _credentials = WalStorageCredentials.Parse(text); }
        catch (Exception ex) when (ex is FormatException or System.Text.Json.JsonException)
        {
            throw new IOException($"the credentials file '{credentialsFile}' is not usable: {ex.Message}");
        }
        _http = new HttpClient(new SocketsHttpHandler { AutomaticDecompression = DecompressionMethods.None, ConnectTimeout = TimeSpan.FromSeconds(15) })
        {
            Timeout = AttemptTimeout,
        };
    }

    public void Dispose() => _http.Dispose();

    /// <summary>Ok once the segment is committed with its checksum; Ok for the same content again; an error for different content.</summary>
    public int Push(string source, string name, Func<int, string, int> error)
    {
        var length = new FileInfo(source).Length;
        var (sha256, md5) = Hash(source);
        if (PutIfAbsent(name, () => new StreamContent(new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan)), length, md5,
            (ChecksumHeader, sha256))) return 0;

        // PostgreSQL may archive a segment again after a crash between archiving and recording it. A blob stored
        // compressed (or encrypted) is compared by the SHA-256 of its plaintext.
        using var head = Head(name);
        if (head.Headers.TryGetValues(PlainChecksumHeader, out var plainValues))
            return plainValues.FirstOrDefault() == sha256 ? 0
                : error(4, $"{name} is already archived in {_location} with different content (plaintext sha256 {plainValues.FirstOrDefault()}, new {sha256}); refusing to overwrite");
        var archived = head.Headers.TryGetValues(ChecksumHeader, out var values) ? values.FirstOrDefault() : null;
        if (archived == null || head.Content.Headers.ContentLength != length) archived = HashRemote(name);
        return archived == sha256 ? 0
            : error(4, $"{name} is already archived in {_location} with different content (sha256 {archived}, new {sha256}); refusing to overwrite");
    }

    private const string PlainChecksumHeader = "x-ms-meta-plainsha256";
    private const string LineageHeader = "x-ms-meta-lineage";

    /// <summary>
    /// Push into an encrypted archive, or compressed: the segment is transformed in memory (one segment, so Content-MD5
    /// and the length are known before the request), stored with the SHA-256 of the stored bytes and of the plaintext, by
    /// which a repeated push of the same segment is recognised.
    /// </summary>
    public int PushTransformed(string source, string name, WalEncryption? encryption, bool compress, Func<int, string, int> error)
    {
        using var buffer = new MemoryStream();
        var (plain, sha256) = Program.Transform(source, buffer, encryption, compress);
        var bytes = buffer.GetBuffer();
        var length = (int)buffer.Length;
        var md5 = MD5.HashData(bytes.AsSpan(0, length));
        var lineage = encryption != null ? WalEncryption.LineageOf(source) : null;
        (string, string)[] metadata = lineage == null
            ? [(ChecksumHeader, sha256), (PlainChecksumHeader, plain)]
            : [(ChecksumHeader, sha256), (PlainChecksumHeader, plain), (LineageHeader, lineage.Length == 0 ? "none" : lineage)];
        if (PutIfAbsent(name, () => new ByteArrayContent(bytes, 0, length), length, md5, metadata)) return 0;
        using var head = Head(name);
        var archived = head.Headers.TryGetValues(PlainChecksumHeader, out var values) ? values.FirstOrDefault() : null;
        // A blob stored as it is (before compression was turned on) holds the plaintext's SHA-256 as its own.
        if (archived == null && !head.Headers.Contains(LineageHeader) && head.Headers.TryGetValues(ChecksumHeader, out var stored) && encryption == null)
            archived = stored.FirstOrDefault();
        return archived == plain ? 0
            : error(4, archived == null
                ? $"{name} is already archived in {_location} without a record of its plaintext's SHA-256, so it cannot be compared; refusing to overwrite"
                : $"{name} is already archived in {_location} with different content (plaintext sha256 {archived}, new {plain}); refusing to overwrite");
    }

    /// <summary>
    /// Put Blob with the SHA-256 (and other values) in its metadata and Content-MD5 checked by the service, only where no
    /// blob of that name is: of two pushes at once exactly one writes, the other compares.
    /// </summary>
    /// <returns>True when this call wrote the blob; false when one of that name is there already.</returns>
    private bool PutIfAbsent(string name, Func<HttpContent> content, long length, byte[] md5, params (string Name, string Value)[] metadata)
    {
        using var put = Send(() =>
        {
            var request = Request(HttpMethod.Put, name);
            request.Headers.Add("x-ms-blob-type", "BlockBlob");
            foreach (var (header, value) in metadata) request.Headers.Add(header, value);
            request.Headers.IfNoneMatch.Add(EntityTagHeaderValue.Any);
            request.Content = content();
            request.Content.Headers.ContentLength = length;
            request.Content.Headers.ContentMD5 = md5;
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
            return request;
        }, $"archive {name}");
        if (put.StatusCode == HttpStatusCode.Created) return true;
        if (put.StatusCode is not (HttpStatusCode.Conflict or HttpStatusCode.PreconditionFailed)) throw Refused(put, $"archive {name}");
        return false;
    }

    /// <summary>The properties and metadata of an archived blob.</summary>
    private HttpResponseMessage Head(string name)
    {
        var head = Send(() => Request(HttpMethod.Head, name), $"read {name}");
        if (head.IsSuccessStatusCode) return head;
        using (head) throw Refused(head, $"read {name}");
    }

    /// <returns>0 when fetched and checked (and, in an encrypted archive, decrypted); 1 when the archive does not hold <paramref name="name"/>.</returns>
    public int Fetch(string name, string destination, int damaged, Func<int, string, int> error, WalEncryption? encryption)
    {
        using var response = Send(() => Request(HttpMethod.Get, name), $"fetch {name}", HttpCompletionOption.ResponseHeadersRead);
        if (response.StatusCode == HttpStatusCode.NotFound) return 1;
        if (!response.IsSuccessStatusCode) throw Refused(response, $"fetch {name}");
        var recorded = response.Headers.TryGetValues(ChecksumHeader, out var values) ? values.FirstOrDefault() : null;
        var md5 = response.Content.Headers.ContentMD5;

        var temporary = destination + ".tmp";
        try
        {
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            using var md = IncrementalHash.CreateHash(HashAlgorithmName.MD5);
            using (var input = response.Content.ReadAsStream())
            using (var output = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0))
            using (var stalled = new CancellationTokenSource())
            {
                var buffer = new byte[1 << 20];
                int read;
                // HttpClient.Timeout ends at the headers; a body that stops arriving must not hold recovery forever.
                while ((read = ReadWithin(input, buffer, stalled)) > 0)
                {
                    sha.AppendData(buffer, 0, read);
                    md.AppendData(buffer, 0, read);
                    output.Write(buffer, 0, read);
                }
            }
            var hash = Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();
            if (recorded != null && recorded != hash)
                return error(damaged, $"DAMAGED ARCHIVE: {_location}/{name} does not match its recorded checksum (sha256 {recorded}, blob {hash}); not handing it to PostgreSQL");
            if (md5 != null && !md5.AsSpan().SequenceEqual(md.GetHashAndReset()))
                return error(damaged, $"DAMAGED ARCHIVE: {_location}/{name} does not match its Content-MD5; not handing it to PostgreSQL");
            return Program.Deliver(temporary, name, destination, $"{_location}/{name}");
        }
        finally { File.Delete(temporary); }
    }

    /// <summary>
    /// Proves write and read, what archiving and recovery need, with a small probe blob that is deleted again. The server
    /// needs no delete permission, so a credential without it passes (and the probe, named as no WAL file is, stays).
    /// </summary>
    public void Check()
    {
        var name = ".pgbackup-write-test-" + Guid.NewGuid().ToString("N");
        var content = Encoding.ASCII.GetBytes("pgbackup");
        using (var put = Send(() =>
        {
            var request = Request(HttpMethod.Put, name);
            request.Headers.Add("x-ms-blob-type", "BlockBlob");
            request.Content = new ByteArrayContent(content);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
            return request;
        }, "write a test blob into"))
            if (!put.IsSuccessStatusCode) throw Refused(put, "write a test blob into");
        try
        {
            using var get = Send(() => Request(HttpMethod.Get, name), "read the test blob from");
            if (!get.IsSuccessStatusCode) throw Refused(get, "read the test blob from");
        }
        finally
        {
            using var delete = Send(() => Request(HttpMethod.Delete, name), "delete the test blob from");
            if (!delete.IsSuccessStatusCode)
                Console.Error.WriteLine($"pgbackup-wal: note: the test blob {name} could not be deleted ({(int)delete.StatusCode}); archiving does not need delete permission");
        }
    }

    private static int ReadWithin(Stream input, byte[] buffer, CancellationTokenSource stalled)
    {
        stalled.CancelAfter(AttemptTimeout);
        try { return input.ReadAsync(buffer, stalled.Token).AsTask().GetAwaiter().GetResult(); }
        catch (OperationCanceledException ex) { throw new IOException($"the download stalled for {AttemptTimeout.TotalSeconds:0} s", ex); }
    }

    private string HashRemote(string name)
    {
        using var response = Send(() => Request(HttpMethod.Get, name), $"read {name}", HttpCompletionOption.ResponseHeadersRead);
        if (!response.IsSuccessStatusCode) throw Refused(response, $"read {name}");
        using var input = response.Content.ReadAsStream();
        return Convert.ToHexString(SHA256.HashData(input)).ToLowerInvariant();
    }

    private static (string Sha256, byte[] Md5) Hash(string path)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var md5 = IncrementalHash.CreateHash(HashAlgorithmName.MD5);
        using var input = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0, FileOptions.SequentialScan);
        var buffer = new byte[1 << 20];
        int read;
        while ((read = input.Read(buffer, 0, buffer.Length)) > 0)
        {
            sha.AppendData(buffer, 0, read);
            md5.AppendData(buffer, 0, read);
        }
        return (Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant(), md5.GetHashAndReset());
    }

    private HttpRequestMessage Request(HttpMethod method, string name)
    {
        var url = _location + "/" + Uri.EscapeDataString(name);
        if (_credentials.SasToken != null) url += "?" + _credentials.SasToken;
        var request = new HttpRequestMessage(method, url);
        request.Headers.Add("x-ms-date", DateTime.UtcNow.ToString("R", CultureInfo.InvariantCulture));
        request.Headers.Add("x-ms-version", ApiVersion);
        return request;
    }

    private HttpResponseMessage Send(Func<HttpRequestMessage> make, string doing, HttpCompletionOption completion = HttpCompletionOption.ResponseContentRead)
    {
        for (var attempt = 0; ; attempt++)
        {
            using var request = make();
            if (_credentials.IsSharedKey) Sign(request);
            HttpResponseMessage? response = null;
            Exception? failure = null;
            try
            {
                response = _http.Send(request, completion);
                if (!IsTransient(response.StatusCode)) return response;
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or IOException) { failure = ex; }
            if (attempt >= Backoff.Length)
            {
                if (response != null) return response;
                throw new IOException($"could not {doing} {_location}: the storage endpoint did not answer ({failure!.Message})", failure);
            }
            response?.Dispose();
            Thread.Sleep(Backoff[attempt]);
        }
    }

    private static bool IsTransient(HttpStatusCode status) => status is HttpStatusCode.RequestTimeout or HttpStatusCode.TooManyRequests or
        HttpStatusCode.InternalServerError or HttpStatusCode.BadGateway or HttpStatusCode.ServiceUnavailable or HttpStatusCode.GatewayTimeout;

    private IOException Refused(HttpResponseMessage response, string doing)
    {
        var code = response.Headers.TryGetValues("x-ms-error-code", out var values) ? " " + values.FirstOrDefault() : "";
        var hint = response.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.Unauthorized
            ? " (check the SAS token or account key in the credentials file: not expired, allowed to read, write, list and delete)" : "";
        return new IOException($"Azure Storage refused to {doing} {_location}: {(int)response.StatusCode}{code}{hint}");
    }

    /// <summary>The Shared Key scheme of the Blob service: an HMAC-SHA256 of the request's canonical form under the account key.</summary>
    private void Sign(HttpRequestMessage request)
    {
        var content = request.Content?.Headers;
        var length = content?.ContentLength is long l and > 0 ? l.ToString(CultureInfo.InvariantCulture) : "";
        var md5 = content?.ContentMD5 is { } hash ? Convert.ToBase64String(hash) : "";
        var ifNoneMatch = request.Headers.IfNoneMatch.Count > 0 ? request.Headers.IfNoneMatch.ToString() : "";
        var headers = request.Headers.Where(h => h.Key.StartsWith("x-ms-", StringComparison.OrdinalIgnoreCase))
            .Select(h => (Name: h.Key.ToLowerInvariant(), Value: string.Join(",", h.Value).Trim()))
            .OrderBy(h => h.Name, StringComparer.Ordinal)
            .Select(h => h.Name + ":" + h.Value + "\n");
        var resource = "/" + _credentials.AccountName + request.RequestUri!.AbsolutePath;
        var text = string.Join("\n", request.Method.Method, "", "", length, md5, content?.ContentType?.ToString() ?? "", "", "", "", ifNoneMatch, "", "", "")
                   + string.Concat(headers) + resource;
        var signature = Convert.ToBase64String(HMACSHA256.HashData(Convert.FromBase64String(_credentials.AccountKey!), Encoding.UTF8.GetBytes(text)));
        request.Headers.TryAddWithoutValidation("Authorization", $"SharedKey {_credentials.AccountName}:{signature}");
    }
}
