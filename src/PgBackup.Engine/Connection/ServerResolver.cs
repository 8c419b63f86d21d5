using System.Globalization;
using PgBackup.Engine.Configuration;

namespace PgBackup.Engine.Connection;

/// <summary>What the user typed: -Server (host, host:port, libpq connection string, URI or profile name), -Port, -Database, -Credential.</summary>
public sealed record ServerRequest(string? Server, int? Port = null, string? Database = null, PgCredential? Credential = null);

/// <summary>
/// Turns a ServerRequest into a ConnectionTarget. Precedence per field: cmdlet parameter, then the -Server string
/// (or profile), then the libpq environment variables, then PgBackup settings and libpq's defaults.
/// </summary>
public static class ServerResolver
{
    private static readonly string[] SslModes = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

    public static ConnectionTarget Resolve(ServerRequest request, PgBackupSettings settings, Action<string>? warn = null)
    {
        var fromString = Parse(request.Server, settings);
        string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;

        var host = fromString.GetValueOrDefault("host") ?? Env("PGHOST") ?? "localhost";
        if (host.Contains(',')) host = host.Split(',')[0];
        var portText = request.Port?.ToString(CultureInfo.InvariantCulture) ?? fromString.GetValueOrDefault("port") ?? Env("PGPORT") ?? "5432";
        if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
            throw new PgBackupException("InvalidServer", ErrorKind.InvalidArgument, $"'{portText}' is not a valid TCP port.", request.Server != null ? Redact(request.Server) : portText,
                "Give a port from 1 to 65535, as -Port 5432 or -Server host:5432.");
        var database = request.Database ?? fromString.GetValueOrDefault("dbname") ?? Env("PGDATABASE") ?? "postgres";
        var user = request.Credential?.User is { Length: > 0 } cu ? cu : fromString.GetValueOrDefault("user") ?? Env("PGUSER") ?? Environment.UserName;

        string? password = null, source = null;
        if (request.Credential != null) (password, source) = (request.Credential.Password, "credential");
        else if (fromString.GetValueOrDefault("password") is { } sp) (password, source) = (sp, "connection string");
        else if (Env("PGPASSWORD") is { } ep) (password, source) = (ep, "PGPASSWORD");

        var passFile = fromString.GetValueOrDefault("passfile") ?? Env("PGPASSFILE");
        if (password == null)
        {
            var path = passFile ?? PgPassFile.DefaultPath;
            if (PgPassFile.Lookup(path, host, port, database, user, warn) is { } pp) (password, source) = (pp, "password file " + path);
        }

        var sslMode = fromString.GetValueOrDefault("sslmode") ?? Env("PGSSLMODE") ?? settings.SslMode;
        if (sslMode != null && !SslModes.Contains(sslMode, StringComparer.OrdinalIgnoreCase))
            throw new PgBackupException("InvalidSslMode", ErrorKind.InvalidArgument, $"'{sslMode}' is not an sslmode libpq knows.", sslMode,
                "Use one of: " + string.Join(", ", SslModes) + ".");

        var timeoutText = fromString.GetValueOrDefault("connect_timeout") ?? Env("PGCONNECT_TIMEOUT");
        var timeout = timeoutText != null && int.TryParse(timeoutText, out var t) && t > 0 ? t : settings.ConnectTimeoutSeconds;

        return new ConnectionTarget
        {
            Host = host,
            Port = port,
            Database = database,
            User = user,
            Password = password,
            PasswordSource = source,
            SslMode = sslMode?.ToLowerInvariant(),
            SslRootCert = fromString.GetValueOrDefault("sslrootcert") ?? Env("PGSSLROOTCERT") ?? settings.SslRootCert,
            PassFile = passFile,
            ConnectTimeoutSeconds = timeout,
            Profile = fromString.GetValueOrDefault("profile"),
        };
    }

    /// <summary>Splits a -Server value into libpq keywords (host, port, dbname, user, password, sslmode, ...).</summary>
    public static Dictionary<string, string> Parse(string? server, PgBackupSettings? settings = null)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        if (string.IsNullOrWhiteSpace(server)) return result;
        server = server.Trim();

        if (server.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase) || server.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase))
            return ParseUri(server);
        if (server.Contains('='))
            return ParseKeyValue(server);
        if (settings?.FindProfile(server) is { } profile)
        {
            void Put(string key, string? value) { if (value != null) result[key] = value; }
            Put("profile", profile.Name);
            Put("host", profile.Host ?? server);
            Put("port", profile.Port?.ToString(CultureInfo.InvariantCulture));
            Put("dbname", profile.Database);
            Put("user", profile.User);
            Put("sslmode", profile.SslMode);
            Put("sslrootcert", profile.SslRootCert);
            Put("passfile", profile.PassFile);
            return result;
        }
        SplitHostPort(server, result, server);
        return result;
    }

    private static void SplitHostPort(string text, Dictionary<string, string> into, string original)
    {
        if (text.StartsWith('['))
        {
            var close = text.IndexOf(']');
            if (close < 0) throw BadServer(original, "an IPv6 address opened with '[' is not closed with ']'");
            into["host"] = text[1..close];
            var rest = text[(close + 1)..];
            if (rest.StartsWith(':') && rest.Length > 1) into["port"] = rest[1..];
            else if (rest.Length > 0) throw BadServer(original, $"unexpected '{rest}' after the address");
            return;
        }
        var colons = text.Count(c => c == ':');
        if (colons == 1)
        {
            var i = text.IndexOf(':');
            if (i == 0) throw BadServer(original, "the host name is missing before ':'");
            into["host"] = text[..i];
            if (i + 1 < text.Length) into["port"] = text[(i + 1)..];
        }
        else into["host"] = text;
    }

    private static Dictionary<string, string> ParseUri(string uri)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var rest = uri[(uri.IndexOf("://", StringComparison.Ordinal) + 3)..];
        var query = "";
        var q = rest.IndexOf('?');
        if (q >= 0) { query = rest[(q + 1)..]; rest = rest[..q]; }
        var slash = rest.IndexOf('/');
        if (slash >= 0)
        {
            var db = Uri.UnescapeDataString(rest[(slash + 1)..]);
            if (db.Length > 0) result["dbname"] = db;
            rest = rest[..slash];
        }
        var at = rest.LastIndexOf('@');
        if (at >= 0)
        {
            var userInfo = rest[..at];
            rest = rest[(at + 1)..];
            var colon = userInfo.IndexOf(':');
            if (colon >= 0)
            {
                result["user"] = Uri.UnescapeDataString(userInfo[..colon]);
                result["password"] = Uri.UnescapeDataString(userInfo[(colon + 1)..]);
            }
            else if (userInfo.Length > 0) result["user"] = Uri.UnescapeDataString(userInfo);
        }
        if (rest.Length > 0)
        {
            var first = rest.Split(',')[0];
            SplitHostPort(Uri.UnescapeDataString(first), result, "postgresql://" + first);
        }
        foreach (var pair in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = pair.IndexOf('=');
            if (eq <= 0) throw BadServer(RedactUri(uri), $"the URI parameter '{pair}' has no value");
            result[Uri.UnescapeDataString(pair[..eq])] = Uri.UnescapeDataString(pair[(eq + 1)..]);
        }
        return result;
    }

    private static Dictionary<string, string> ParseKeyValue(string text)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var i = 0;
        while (i < text.Length)
        {
            while (i < text.Length && char.IsWhiteSpace(text[i])) i++;
            if (i >= text.Length) break;
            var keyStart = i;
            while (i < text.Length && text[i] != '=' && !char.IsWhiteSpace(text[i])) i++;
            var key = text[keyStart..i];
            while (i < text.Length && char.IsWhiteSpace(text[i])) i++;
            if (i >= text.Length || text[i] != '=') throw BadServer(RedactKeyValue(text), $"'{key}' is not followed by '='");
            i++;
            while (i < text.Length && char.IsWhiteSpace(text[i])) i++;
            var value = new System.Text.StringBuilder();
            if (i < text.Length && text[i] == '\'')
            {
                i++;
                while (i < text.Length && text[i] != '\'')
                {
                    if (text[i] == '\\' && i + 1 < text.Length) i++;
                    value.Append(text[i++]);
                }
                if (i >= text.Length) throw BadServer(RedactKeyValue(text), $"the quoted value of '{key}' is not closed");
                i++;
            }
            else
            {
                while (i < text.Length && !char.IsWhiteSpace(text[i]))
                {
                    if (text[i] == '\\' && i + 1 < text.Length) i++;
                    value.Append(text[i++]);
                }
            }
            result[key] = value.ToString();
        }
        return result;
    }

    private static PgBackupException BadServer(string server, string why) =>
        new("InvalidServer", ErrorKind.InvalidArgument, $"The server '{server}' cannot be understood: {why}.", server,
            "Give -Server as host, host:port, [ipv6]:port, a libpq connection string ('host=db1 port=5432'), a postgresql:// URI, or a profile name from pgbackup.json.");

    /// <summary>The server string as it may appear in messages: without any password.</summary>
    public static string Redact(string? server) =>
        server == null ? "" : server.Contains("://") ? RedactUri(server) : server.Contains('=') ? RedactKeyValue(server) : server;

    private static string RedactUri(string uri) => System.Text.RegularExpressions.Regex.Replace(
        System.Text.RegularExpressions.Regex.Replace(uri, @"(://[^:/@]*):[^@/]*@", "$1:********@"), @"(?i)([?&]password=)[^&]*", "$1********");

    private static string RedactKeyValue(string text) =>
        System.Text.RegularExpressions.Regex.Replace(text, @"(?i)(password\s*=\s*)('([^'\\]|\\.)*'|\S+)", "$1********");
}
