using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.EnvironmentVariables;
using Microsoft.Extensions.Configuration.Json;
using Microsoft.Extensions.Configuration.Memory;

namespace PgBackup.Engine.Configuration;

/// <summary>A named repository from the "Repositories" section of pgbackup.json, usable as -Repository name.</summary>
public sealed record RepositoryProfile(string Name, string Url, PgBackup.Engine.Repository.BlobSecrets Secrets, bool AllowInsecureHttp = false);

/// <summary>A named server from the "Servers" section of pgbackup.json, usable as -Server name.</summary>
/// <param name="Patroni">The REST API of the Patroni that runs this server: its cluster is then read and switched over through Patroni.</param>
public sealed record ServerProfile(string Name, string? Host, int? Port, string? Database, string? User, string? SslMode, string? SslRootCert, string? PassFile, string? Patroni = null);

/// <summary>
/// The effective configuration: built-in defaults &lt; pgbackup.json &lt; PGBACKUP_* environment variables &lt; cmdlet parameters.
/// Read anew on every cmdlet call: runbooks may share a process, so nothing is cached between calls.
/// </summary>
public sealed class PgBackupSettings
{
    public const string EnvironmentPrefix = "PGBACKUP_";
    public const string ConfigPathVariable = "PGBACKUP_CONFIG";

    public static readonly IReadOnlyDictionary<string, (string? Default, string Description)> Known =
        new Dictionary<string, (string?, string)>(StringComparer.OrdinalIgnoreCase)
        {
            ["Repository"] = (null, "Repository (a folder, an Azure Blob container URL or a profile of the Repositories section) used when -Repository is not given."),
            ["ToolPath"] = (null, "Folder holding pg_dump, pg_restore, psql...; when set, only this folder is searched."),
            ["DefaultFormat"] = ("Custom", "Invoke-PgDump format when -Format is not given (Plain, Custom, Directory, Tar)."),
            ["Jobs"] = ("1", "Parallel jobs for Directory dumps and Custom/Directory restores when -Jobs is not given."),
            ["ConnectTimeout"] = ("15", "Seconds to wait for a server connection."),
            ["SslMode"] = (null, "libpq sslmode (disable, allow, prefer, require, verify-ca, verify-full) used when neither the server string nor PGSSLMODE sets one."),
            ["SslRootCert"] = (null, "Root certificate file to verify servers against (verify-ca, verify-full)."),
            ["Passphrase"] = (null, "Passphrase of encrypted repositories when neither -Passphrase nor -Certificate is given; set it as PGBACKUP_PASSPHRASE (for example from an Automation credential), not in pgbackup.json."),
            ["EncryptionCertificate"] = (null, "Certificate that reads encrypted repositories when neither -Passphrase nor -Certificate is given: a .pfx/.pem file with its private key, or the thumbprint of one in the CurrentUser or LocalMachine My store."),
            ["AllowInsecureHttp"] = ("false", "Allow blob repositories over plain HTTP on endpoints other than this machine (a test endpoint on a private network); data and credentials then travel in clear."),
        };

    private readonly IConfigurationRoot _root;
    private readonly IReadOnlyDictionary<string, string?> _parameters;

    private PgBackupSettings(IConfigurationRoot root, IReadOnlyDictionary<string, string?> parameters, string? configFile)
    {
        _root = root;
        _parameters = parameters;
        ConfigFile = configFile;
    }

    public string? ConfigFile { get; }

    public static string DefaultConfigFile =>
        Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.ApplicationData, Environment.SpecialFolderOption.DoNotVerify), "pgbackup", "pgbackup.json");

    /// <param name="parameters">Values the user passed as cmdlet parameters (the highest layer); null values are ignored.</param>
    public static PgBackupSettings Load(IReadOnlyDictionary<string, string?>? parameters = null)
    {
        var explicitPath = Environment.GetEnvironmentVariable(ConfigPathVariable);
        var path = string.IsNullOrWhiteSpace(explicitPath) ? DefaultConfigFile : Path.GetFullPath(explicitPath);
        if (!string.IsNullOrWhiteSpace(explicitPath) && !File.Exists(path))
            throw new PgBackupException("ConfigNotFound", ErrorKind.ObjectNotFound,
                $"The configuration file '{path}' named by {ConfigPathVariable} does not exist.", path,
                $"Create the file, or clear {ConfigPathVariable} to use {DefaultConfigFile}.");

        var builder = new ConfigurationBuilder()
            .AddInMemoryCollection(Known.Where(k => k.Value.Default != null).Select(k => new KeyValuePair<string, string?>(k.Key, k.Value.Default)));
        var fileUsed = File.Exists(path) ? path : null;
        if (fileUsed != null)
            builder.AddJsonFile(fileUsed, optional: false, reloadOnChange: false);
        builder.AddEnvironmentVariables(EnvironmentPrefix);

        IConfigurationRoot root;
        try { root = builder.Build(); }
        catch (Exception ex) when (ex is InvalidDataException or FormatException or System.Text.Json.JsonException)
        {
            throw new PgBackupException("ConfigInvalid", ErrorKind.InvalidData,
                $"The configuration file '{path}' is not valid JSON: {ex.InnerException?.Message ?? ex.Message}", path,
                "Fix the JSON syntax of the file (see about_PgBackup for its shape).", ex);
        }
        var given = (parameters ?? new Dictionary<string, string?>())
            .Where(p => p.Value != null).ToDictionary(p => p.Key, p => p.Value, StringComparer.OrdinalIgnoreCase);
        return new PgBackupSettings(root, given, fileUsed);
    }

    public string? Get(string key) => _parameters.TryGetValue(key, out var v) ? v : NullIfEmpty(_root[key]);

    public string? Repository => Get("Repository");
    public string? Passphrase => Get("Passphrase");
    public string? EncryptionCertificate => Get("EncryptionCertificate");
    public string? ToolPath => Get("ToolPath");
    public string? SslMode => Get("SslMode");
    public string? SslRootCert => Get("SslRootCert");
    public int ConnectTimeoutSeconds => GetInt("ConnectTimeout", 1, 3600, 15);
    public int Jobs => GetInt("Jobs", 1, 256, 1);
    public bool AllowInsecureHttp => GetBool("AllowInsecureHttp");

    public DumpFormat DefaultFormat
    {
        get
        {
            var raw = Get("DefaultFormat") ?? "Custom";
            return Enum.TryParse<DumpFormat>(raw, ignoreCase: true, out var f) && Enum.IsDefined(f)
                ? f
                : throw Invalid("DefaultFormat", raw, "one of Plain, Custom, Directory, Tar");
        }
    }

    public ServerProfile? FindProfile(string name)
    {
        var section = _root.GetSection("Servers").GetChildren()
            .FirstOrDefault(s => string.Equals(s.Key, name, StringComparison.OrdinalIgnoreCase));
        if (section == null) return null;
        int? port = null;
        if (section["Port"] is { Length: > 0 } p)
            port = int.TryParse(p, out var n) && n is > 0 and < 65536 ? n : throw Invalid($"Servers:{section.Key}:Port", p, "a TCP port number");
        return new ServerProfile(section.Key, NullIfEmpty(section["Host"]), port, NullIfEmpty(section["Database"]),
            NullIfEmpty(section["User"]), NullIfEmpty(section["SslMode"]), NullIfEmpty(section["SslRootCert"]), NullIfEmpty(section["PassFile"]), NullIfEmpty(section["Patroni"]));
    }

    /// <summary>
    /// A repository profile: { "Repositories": { "offsite": { "Url": "https://acct.blob.core.windows.net/backups",
    /// "SasToken": "...", "ConnectionString": "...", "AccountKey": "...", "ManagedIdentityClientId": "...", "AllowInsecureHttp": false } } };
    /// "Url" may also be a folder.
    /// </summary>
    public RepositoryProfile? FindRepositoryProfile(string name)
    {
        var section = _root.GetSection("Repositories").GetChildren()
            .FirstOrDefault(s => string.Equals(s.Key, name, StringComparison.OrdinalIgnoreCase));
        if (section == null) return null;
        var url = NullIfEmpty(section["Url"]) ?? NullIfEmpty(section["Path"]) ?? throw Invalid($"Repositories:{section.Key}:Url", "", "a folder or an Azure Blob container URL");
        var allowHttp = NullIfEmpty(section["AllowInsecureHttp"]) is { } raw
            && (bool.TryParse(raw, out var b) ? b : throw Invalid($"Repositories:{section.Key}:AllowInsecureHttp", raw, "true or false"));
        return new RepositoryProfile(section.Key, url, new PgBackup.Engine.Repository.BlobSecrets(NullIfEmpty(section["SasToken"]), NullIfEmpty(section["ConnectionString"]),
            NullIfEmpty(section["AccountKey"]), NullIfEmpty(section["ManagedIdentityClientId"])), allowHttp);
    }

    /// <summary>Every effective setting with the layer it came from, for Get-PgBackupConfig.</summary>
    public IReadOnlyList<ConfigSetting> Describe()
    {
        var keys = new SortedSet<string>(Known.Keys, StringComparer.OrdinalIgnoreCase);
        // PGBACKUP_CONFIG names the file; it is shown as ConfigFile below, not as a setting called "CONFIG".
        foreach (var leaf in Leaves(_root).Where(l => !l.Equals("CONFIG", StringComparison.OrdinalIgnoreCase))) keys.Add(leaf);
        var result = new List<ConfigSetting>();
        foreach (var key in keys)
        {
            var description = Known.TryGetValue(key, out var k) ? k.Description
                : key.StartsWith("Servers:", StringComparison.OrdinalIgnoreCase) ? "Server profile setting"
                : key.StartsWith("Repositories:", StringComparison.OrdinalIgnoreCase) ? "Repository profile setting" : "";
            if (_parameters.TryGetValue(key, out var pv))
            {
                result.Add(new ConfigSetting { Name = key, Value = IsSecret(key) ? "********" : HideQuery(pv), Source = "Parameter", Description = description });
                continue;
            }
            var provider = _root.Providers.Reverse().FirstOrDefault(p => p.TryGet(key, out _));
            string? shown = null;
            provider?.TryGet(key, out shown);
            result.Add(new ConfigSetting
            {
                Name = key,
                Value = IsSecret(key) && shown != null ? "********" : HideQuery(shown),
                Source = provider switch
                {
                    null => "Unset",
                    MemoryConfigurationProvider => "Default",
                    JsonConfigurationProvider => "File: " + ConfigFile,
                    EnvironmentVariablesConfigurationProvider => "Environment: " + EnvironmentPrefix + key.Replace(":", "__").ToUpperInvariant(),
                    _ => provider.ToString() ?? "",
                },
                Description = description,
            });
        }
        result.Add(new ConfigSetting
        {
            Name = "ConfigFile",
            Value = ConfigFile,
            Source = Environment.GetEnvironmentVariable(ConfigPathVariable) is { Length: > 0 } ? "Environment: " + ConfigPathVariable : ConfigFile != null ? "Default" : "Unset",
            Description = $"The pgbackup.json in use (from {ConfigPathVariable}, else {DefaultConfigFile}).",
        });
        foreach (var variable in LibpqVariables)
        {
            var value = Environment.GetEnvironmentVariable(variable);
            if (value == null) continue;
            result.Add(new ConfigSetting
            {
                Name = variable,
                Value = variable == "PGPASSWORD" ? "********" : value,
                Source = "Environment: " + variable,
                Description = "libpq environment variable, used for connections and passed on to the PostgreSQL tools",
            });
        }
        return result;
    }

    public static readonly string[] LibpqVariables =
        ["PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE", "PGSSLMODE", "PGSSLROOTCERT", "PGCONNECT_TIMEOUT"];

    private static bool IsSecret(string key) =>
        key.EndsWith("Password", StringComparison.OrdinalIgnoreCase) || key.EndsWith("SasToken", StringComparison.OrdinalIgnoreCase) ||
        key.EndsWith("ConnectionString", StringComparison.OrdinalIgnoreCase) || key.EndsWith("AccountKey", StringComparison.OrdinalIgnoreCase) ||
        key.EndsWith("Passphrase", StringComparison.OrdinalIgnoreCase);

    /// <summary>A URL's query may hold a SAS token, which is a password: it is never shown.</summary>
    private static string? HideQuery(string? value) =>
        value != null && PgBackup.Engine.Repository.RepositoryAddress.LooksLikeUrl(value) && value.IndexOf('?', StringComparison.Ordinal) is var q and >= 0
            ? value[..q] + "?********" : value;

    private static IEnumerable<string> Leaves(IConfiguration section) =>
        section.GetChildren().SelectMany(c => c.GetChildren().Any() ? Leaves(c) : c.Value != null ? [c.Path] : []);

    private bool GetBool(string key) => Get(key) is not { } raw ? false
        : bool.TryParse(raw, out var b) ? b : raw == "1" || (raw == "0" ? false : throw Invalid(key, raw, "true or false"));

    private int GetInt(string key, int min, int max, int fallback)
    {
        var raw = Get(key);
        if (raw == null) return fallback;
        return int.TryParse(raw, out var n) && n >= min && n <= max ? n : throw Invalid(key, raw, $"a whole number from {min} to {max}");
    }

    private PgBackupException Invalid(string key, string value, string expected) =>
        new("ConfigInvalid", ErrorKind.InvalidData, $"The setting '{key}' has the value '{value}', but it must be {expected}.", value,
            $"Correct '{key}' in {ConfigFile ?? "the configuration"} or the environment variable {EnvironmentPrefix}{key.Replace(":", "__").ToUpperInvariant()}.");

    private static string? NullIfEmpty(string? s) => string.IsNullOrWhiteSpace(s) ? null : s;
}
