using System.Text;

namespace PgBackup.Engine.Connection;

/// <summary>A user name and password given explicitly (a PSCredential). The password never appears in ToString.</summary>
public sealed class PgCredential(string user, string password)
{
    public string User { get; } = user;
    public string Password { get; } = password;
    public override string ToString() => User;
}

/// <summary>
/// Where to connect and as whom, after resolving -Server, profiles, libpq variables and .pgpass.
/// The password is kept for Npgsql and for the PGPASSWORD of child processes only.
/// </summary>
public sealed record ConnectionTarget
{
    public required string Host { get; init; }
    public required int Port { get; init; }
    public required string Database { get; init; }
    public required string User { get; init; }
    public string? Password { get; init; }
    public string? PasswordSource { get; init; }
    public string? SslMode { get; init; }
    public string? SslRootCert { get; init; }
    public string? PassFile { get; init; }
    public int ConnectTimeoutSeconds { get; init; } = 15;
    /// <summary>The pgbackup.json profile the target came from, if any; recorded in backups so restores find the same settings.</summary>
    public string? Profile { get; init; }

    /// <summary>host:port, for messages and result objects; never holds a secret.</summary>
    public string Display => Host.Contains(':') && !Host.StartsWith('/') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";

    public ConnectionTarget WithDatabase(string database) => this with { Database = database };

    /// <summary>
    /// Whether the server runs on this machine, so that a data directory it reports (SHOW data_directory) is one
    /// PgBackup can act on: reached through a Unix socket folder, a loopback address or this host's name, and the folder exists.
    /// </summary>
    public bool ServesFromHere(string dataDirectory) =>
        (Host.StartsWith('/') || Host is "localhost" or "127.0.0.1" or "::1" || string.Equals(Host, System.Net.Dns.GetHostName(), StringComparison.OrdinalIgnoreCase))
        && Directory.Exists(dataDirectory);

    /// <summary>The environment a pg_* tool needs to reach this server; the password goes here, never into argv.</summary>
    public IReadOnlyDictionary<string, string?> ToolEnvironment()
    {
        var env = new Dictionary<string, string?>
        {
            ["PGHOST"] = Host,
            ["PGPORT"] = Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["PGUSER"] = User,
            ["PGDATABASE"] = Database,
            ["PGPASSWORD"] = Password,
            ["PGSSLMODE"] = SslMode,
            ["PGSSLROOTCERT"] = SslRootCert,
            ["PGPASSFILE"] = PassFile,
            ["PGCONNECT_TIMEOUT"] = ConnectTimeoutSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["PGAPPNAME"] = "PgBackup",
            ["PGSERVICE"] = null,
            ["PGHOSTADDR"] = null,
        };
        return env;
    }

    /// <summary>A --dbname value naming only the database; host, user and password travel in the environment.</summary>
    public static string DbNameArgument(string database) => "--dbname=dbname=" + QuoteConnInfoValue(database);

    public static string QuoteConnInfoValue(string value)
    {
        var sb = new StringBuilder("'");
        foreach (var c in value)
        {
            if (c is '\'' or '\\') sb.Append('\\');
            sb.Append(c);
        }
        return sb.Append('\'').ToString();
    }
}
