using System.Net.Sockets;
using Npgsql;

namespace PgBackup.Engine.Connection;

/// <summary>Facts about a server that the engine needs before running a tool.</summary>
public sealed record ServerInfo(int VersionNum, string Version, string Encoding)
{
    public int Major => VersionNum / 10000;
}

/// <summary>
/// Opens Npgsql connections for a ConnectionTarget and turns connection failures into PgBackupExceptions
/// that say whether the server, the password or the database is the problem.
/// </summary>
public static class ServerSession
{
    public static async Task<NpgsqlConnection> OpenAsync(ConnectionTarget target, CancellationToken ct)
    {
        var builder = new NpgsqlConnectionStringBuilder
        {
            Host = target.Host,
            Port = target.Port,
            Database = target.Database,
            Username = target.User,
            Password = target.Password,
            Timeout = target.ConnectTimeoutSeconds,
            ApplicationName = "PgBackup",
            Pooling = false,
        };
        if (target.SslMode != null) builder.SslMode = ToNpgsql(target.SslMode);
        if (target.SslRootCert != null) builder.RootCertificate = target.SslRootCert;
        if (target.PassFile != null) builder.Passfile = target.PassFile;

        var connection = new NpgsqlConnection(builder.ConnectionString);
        try
        {
            await connection.OpenAsync(ct).ConfigureAwait(false);
            return connection;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw Translate(ex, target);
        }
    }

    public static async Task<ServerInfo> GetInfoAsync(NpgsqlConnection connection, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand(
            "select current_setting('server_version_num')::int, current_setting('server_version'), pg_encoding_to_char(encoding) from pg_database where datname = current_database()",
            connection);
        await using var reader = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await reader.ReadAsync(ct).ConfigureAwait(false);
        return new ServerInfo(reader.GetInt32(0), reader.GetString(1), reader.GetString(2));
    }

    /// <summary>The timeline the server writes WAL on now (a primary), from the name of its current segment.</summary>
    public static async Task<uint> TimelineAsync(NpgsqlConnection connection, CancellationToken ct) =>
        (uint)await ScalarAsync<int>(connection, "select ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int", ct).ConfigureAwait(false);

    /// <summary>The cluster's system identifier (pg_control), which every standby and copy of it shares.</summary>
    public static async Task<string> SystemIdentifierAsync(NpgsqlConnection connection, CancellationToken ct) =>
        await ScalarAsync<string>(connection, "select system_identifier::text from pg_control_system()", ct).ConfigureAwait(false) ?? "";

    public static async Task<T?> ScalarAsync<T>(NpgsqlConnection connection, string sql, CancellationToken ct, params object[] parameters)
    {
        await using var cmd = new NpgsqlCommand(sql, connection);
        foreach (var p in parameters) cmd.Parameters.Add(new NpgsqlParameter { Value = p });
        var value = await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false);
        return value is null or DBNull ? default : (T)Convert.ChangeType(value, typeof(T), System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Runs a statement; a refusal by the server (no CREATEDB privilege, a database in use) becomes a PgBackupException.</summary>
    public static async Task ExecuteAsync(NpgsqlConnection connection, string sql, ConnectionTarget target, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand(sql, connection);
        try { await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false); }
        catch (NpgsqlException ex) when (!ct.IsCancellationRequested) { throw Translate(ex, target); }
    }

    public static async Task<List<string>> ListDatabasesAsync(ConnectionTarget target, CancellationToken ct)
    {
        await using var connection = await OpenAsync(target, ct).ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand("select datname from pg_database where datallowconn and not datistemplate order by datname", connection);
        await using var reader = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        var names = new List<string>();
        while (await reader.ReadAsync(ct).ConfigureAwait(false)) names.Add(reader.GetString(0));
        return names;
    }

    public static string QuoteIdentifier(string name) => "\"" + name.Replace("\"", "\"\"") + "\"";

    public static Exception Translate(Exception ex, ConnectionTarget target)
    {
        if (ex is PgBackupException) return ex;
        var who = $"{target.User}@{target.Display}";
        if (ex is PostgresException pg)
        {
            return pg.SqlState switch
            {
                "28P01" or "28000" => new PgBackupException("AuthenticationFailed", ErrorKind.AuthenticationFailed,
                    $"The server {target.Display} refused the login of '{target.User}': {pg.MessageText}", who,
                    "Check the user name and password (-Credential, PGPASSWORD or the .pgpass file" +
                    (target.PasswordSource != null ? $"; the password used came from the {target.PasswordSource}" : "; no password was found") +
                    ") and the server's pg_hba.conf.", ex),
                "3D000" => new PgBackupException("DatabaseNotFound", ErrorKind.ObjectNotFound,
                    $"The database '{target.Database}' does not exist on {target.Display}.", target.Database,
                    "Check the name with Invoke-PgDump -Database * -WhatIf or psql -l; database names are case-sensitive.", ex),
                "42501" => new PgBackupException("PermissionDenied", ErrorKind.PermissionDenied,
                    $"The server {target.Display} refused '{target.User}': {pg.MessageText}", who,
                    "Use a role with the privilege the message names (CREATEDB to create databases, ownership to drop them), or ask the DBA to grant it.", ex),
                "55006" => new PgBackupException("DatabaseInUse", ErrorKind.InvalidOperation,
                    $"The server {target.Display} refused because the database is in use: {pg.MessageText}", target.Database,
                    "Disconnect the other sessions (pg_terminate_backend) or, on PostgreSQL 13 and later, let PgBackup drop the database WITH (FORCE).", ex),
                "57P03" => new PgBackupException("ServerStarting", ErrorKind.ConnectionFailed,
                    $"The server {target.Display} is not accepting connections yet: {pg.MessageText}", target.Display,
                    "Wait until the server has finished starting or recovering, then run the command again.", ex),
                _ => new PgBackupException("ServerError", ErrorKind.InvalidOperation,
                    $"The server {target.Display} reported {pg.SqlState}: {pg.MessageText}", who,
                    "Read the server's message above; it names what the server refused.", ex),
            };
        }
        if (ex is NpgsqlException { InnerException: PostgresException inner }) return Translate(inner, target);
        if (ex.Message.Contains("password", StringComparison.OrdinalIgnoreCase) && ex.Message.Contains("provided", StringComparison.OrdinalIgnoreCase))
            return new PgBackupException("AuthenticationFailed", ErrorKind.AuthenticationFailed,
                $"The server {target.Display} asks for a password for '{target.User}', and none was given.", who,
                "Pass -Credential, set PGPASSWORD, or add a line for this server to your .pgpass file (PGPASSFILE).", ex);
        if (Chain(ex).OfType<System.Security.Authentication.AuthenticationException>().FirstOrDefault() is { } tls)
            return new PgBackupException("TlsFailed", ErrorKind.ConnectionFailed,
                $"The TLS connection to {target.Display} failed (sslmode={target.SslMode ?? "prefer"}): {tls.Message}", target.Display,
                "Check that SslRootCert (sslrootcert, PGSSLROOTCERT) names the CA that signed the server's certificate, and for verify-full that the host name matches the certificate.", ex);
        if (ex is NpgsqlException or SocketException or TimeoutException or IOException || ex.InnerException is SocketException or TimeoutException)
            return new PgBackupException("ServerUnreachable", ErrorKind.ConnectionFailed,
                $"Cannot connect to the PostgreSQL server at {target.Display}: {(ex.InnerException ?? ex).Message}", target.Display,
                "Check that the server is running and listens on that host and port (listen_addresses, firewall), and that -Server and -Port are right.", ex);
        return ex;
    }

    private static IEnumerable<Exception> Chain(Exception? ex)
    {
        for (; ex != null; ex = ex.InnerException) yield return ex;
    }

    private static SslMode ToNpgsql(string libpqMode) => libpqMode switch
    {
        "disable" => SslMode.Disable,
        "allow" => SslMode.Allow,
        "prefer" => SslMode.Prefer,
        "require" => SslMode.Require,
        "verify-ca" => SslMode.VerifyCA,
        "verify-full" => SslMode.VerifyFull,
        _ => SslMode.Prefer,
    };
}
