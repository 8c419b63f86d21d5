using System.Net;
using PgBackup.Engine.Configuration;

namespace PgBackup.Engine.Repository;

/// <summary>
/// What -Repository names, parsed once: a folder; a container URL, https://&lt;account&gt;.blob.core.windows.net/&lt;container&gt;[/&lt;prefix&gt;];
/// the path-style http(s)://&lt;host&gt;:&lt;port&gt;/&lt;account&gt;/&lt;container&gt;[/&lt;prefix&gt;] of Azurite and other endpoints; or a
/// profile from the "Repositories" section of pgbackup.json. <see cref="Display"/> never holds a secret: a SAS token in
/// the URL's query is taken out into <see cref="Secrets"/>.
/// </summary>
public sealed class RepositoryAddress
{
    private RepositoryAddress(RepositoryKind kind, string display) { Kind = kind; Display = display; }

    public RepositoryKind Kind { get; }
    /// <summary>How the repository is shown and recorded in backups: the folder, the URL without its query, or the name of a blob profile.</summary>
    public string Display { get; }
    public string? Folder { get; private init; }
    /// <summary>The Blob service endpoint: https://account.blob.core.windows.net, or http://host:port/account for path style.</summary>
    public Uri? ServiceUri { get; private init; }
    public string Account { get; private init; } = "";
    public string Container { get; private init; } = "";
    /// <summary>The folder inside the container ("" or "a/b/", always ending in '/').</summary>
    public string Prefix { get; private init; } = "";
    /// <summary>The container URL with its prefix and without query: what backup paths in this repository start with.</summary>
    public string Url { get; private init; } = "";
    public BlobSecrets Secrets { get; private init; } = new();

    public bool IsBlob => Kind == RepositoryKind.AzureBlob;

    /// <summary>The same repository with other credentials (a profile's, or a caller's that holds them in memory).</summary>
    public RepositoryAddress WithSecrets(BlobSecrets secrets) =>
        new(Kind, Display) { Folder = Folder, ServiceUri = ServiceUri, Account = Account, Container = Container, Prefix = Prefix, Url = Url, Secrets = secrets };

    public override string ToString() => Display;

    /// <summary>A folder repository at a full path.</summary>
    public static RepositoryAddress ForFolder(string path)
    {
        var full = Path.GetFullPath(path);
        return new RepositoryAddress(RepositoryKind.Folder, full) { Folder = full };
    }

    /// <summary>A folder (as engine callers and tests give it); blob addresses come from <see cref="Parse"/>.</summary>
    public static implicit operator RepositoryAddress(string folder) => ForFolder(folder);

    public static bool LooksLikeUrl(string value) =>
        value.StartsWith("https://", StringComparison.OrdinalIgnoreCase) || value.StartsWith("http://", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Parses <paramref name="value"/>. <paramref name="resolveFolder"/> turns a folder into a full path (the cmdlets
    /// resolve it against PowerShell's current location); a profile name wins over a relative folder of the same name.
    /// </summary>
    public static RepositoryAddress Parse(string value, PgBackupSettings settings, Func<string, string>? resolveFolder = null)
    {
        if (string.IsNullOrWhiteSpace(value))
            throw new PgBackupException("NoRepository", ErrorKind.InvalidArgument, "No repository was given.", value,
                "Pass -Repository (a folder or an Azure Blob container URL), or set the Repository setting (PGBACKUP_REPOSITORY or pgbackup.json).");
        if (LooksLikeUrl(value)) return RequireSecureTransport(ParseUrl(value, value, new BlobSecrets()), settings.AllowInsecureHttp);
        if (settings.FindRepositoryProfile(value) is { } profile)
        {
            if (LooksLikeUrl(profile.Url)) return RequireSecureTransport(ParseUrl(profile.Url, profile.Name, profile.Secrets), settings.AllowInsecureHttp || profile.AllowInsecureHttp);
            var folder = resolveFolder?.Invoke(profile.Url) ?? Path.GetFullPath(profile.Url);
            return new RepositoryAddress(RepositoryKind.Folder, folder) { Folder = folder };
        }
        var full = resolveFolder?.Invoke(value) ?? Path.GetFullPath(value);
        return new RepositoryAddress(RepositoryKind.Folder, full) { Folder = full };
    }

    /// <summary>A backup path of a blob repository ("https://.../container/prefix/key") as the key inside the container, or null.</summary>
    public string? KeyOf(string backupPath)
    {
        if (!IsBlob) return null;
        var containerUrl = Url[..^Prefix.Length];
        return backupPath.StartsWith(containerUrl, StringComparison.Ordinal) ? Uri.UnescapeDataString(backupPath[containerUrl.Length..]) : null;
    }

    /// <summary>The URL (without query) of a key inside the container, as backups record their path.</summary>
    public string UrlOf(string key) => Url[..^Prefix.Length] + string.Join('/', key.Split('/').Select(Uri.EscapeDataString));

    private static RepositoryAddress ParseUrl(string raw, string display, BlobSecrets fromProfile)
    {
        if (!Uri.TryCreate(raw, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw Invalid(raw, "it is not an http(s) URL");
        var segments = uri.AbsolutePath.Split('/', StringSplitOptions.RemoveEmptyEntries).Select(Uri.UnescapeDataString).ToList();
        string account;
        Uri service;
        var hostLabels = uri.Host.Split('.');
        var virtualHosted = hostLabels.Length >= 3 && string.Equals(hostLabels[1], "blob", StringComparison.OrdinalIgnoreCase) && !IPAddress.TryParse(uri.Host, out _);
        if (virtualHosted)
        {
            account = hostLabels[0];
            service = new Uri(uri.GetLeftPart(UriPartial.Authority));
        }
        else
        {
            if (segments.Count < 2) throw Invalid(raw, "a path-style URL names the account and then the container: http(s)://host:port/<account>/<container>[/<prefix>]");
            account = segments[0];
            segments.RemoveAt(0);
            service = new Uri(uri.GetLeftPart(UriPartial.Authority) + "/" + Uri.EscapeDataString(account));
        }
        if (segments.Count == 0) throw Invalid(raw, "it names no container: add /<container> to the URL");
        var container = segments[0];
        if (!IsValidContainerName(container))
            throw Invalid(raw, $"'{container}' is not a valid container name (3 to 63 lower-case letters, digits and single hyphens, starting with a letter or digit)");
        var prefix = string.Concat(segments.Skip(1).Select(s => s + "/"));
        var sas = uri.Query.TrimStart('?');
        var secrets = sas.Length > 0 ? fromProfile with { SasToken = sas } : fromProfile;
        var url = service.AbsoluteUri.TrimEnd('/') + "/" + Uri.EscapeDataString(container) + "/" + string.Join('/', segments.Skip(1).Select(Uri.EscapeDataString)) + (prefix.Length > 0 ? "/" : "");
        // The display keeps the address without its query: a SAS token is a password.
        var shown = display == raw ? url.TrimEnd('/') : display;
        return new RepositoryAddress(RepositoryKind.AzureBlob, shown)
        {
            ServiceUri = service,
            Account = account,
            Container = container,
            Prefix = prefix,
            Url = url.EndsWith('/') ? url : url + "/",
            Secrets = secrets,
        };
    }

    /// <summary>
    /// Plain HTTP carries a SAS token or a Shared Key signature, and every backup, in clear: refused unless the endpoint is
    /// this machine (Azurite, a tunnel) or the user allowed it (AllowInsecureHttp, in the settings or the profile).
    /// </summary>
    private static RepositoryAddress RequireSecureTransport(RepositoryAddress address, bool allowed)
    {
        var uri = address.ServiceUri!;
        if (uri.Scheme == Uri.UriSchemeHttps || allowed || uri.IsLoopback) return address;
        throw new PgBackupException("InsecureRepository", ErrorKind.InvalidArgument,
            $"The repository '{address.Display}' is plain HTTP on {uri.Host}, another machine: backups and the credential would travel in clear.", address.Display,
            "Use the https:// address of the endpoint. Only for a test endpoint on a private network, allow plain HTTP explicitly: \"AllowInsecureHttp\": true in the repository's profile (Repositories section of pgbackup.json) or in the settings (PGBACKUP_ALLOWINSECUREHTTP=true).");
    }

    private static bool IsValidContainerName(string name) =>
        name.Length is >= 3 and <= 63 && char.IsAsciiLetterOrDigit(name[0]) && !name.Contains("--", StringComparison.Ordinal) && !name.EndsWith('-') &&
        name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '-');

    private static PgBackupException Invalid(string raw, string why)
    {
        var shown = raw.Contains('?', StringComparison.Ordinal) ? raw[..raw.IndexOf('?', StringComparison.Ordinal)] + "?<query removed>" : raw;
        return new PgBackupException("InvalidRepository", ErrorKind.InvalidArgument, $"'{shown}' is not a repository address PgBackup understands: {why}.", shown,
            "Give a folder, https://<account>.blob.core.windows.net/<container>[/<prefix>], a path-style http(s)://<host>:<port>/<account>/<container>[/<prefix>] (Azurite), or a profile name from the Repositories section of pgbackup.json.");
    }
}

/// <summary>
/// Credentials for a blob repository that came with its address (a SAS token in the URL's query) or from its profile.
/// Never shown: the type prints as a placeholder so it cannot leak through a log line or an error.
/// </summary>
public sealed record BlobSecrets(string? SasToken = null, string? ConnectionString = null, string? AccountKey = null, string? ManagedIdentityClientId = null)
{
    public override string ToString() => "BlobSecrets { (hidden) }";
}
