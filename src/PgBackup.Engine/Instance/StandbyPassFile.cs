using System.Text.RegularExpressions;
using PgBackup.Engine.Connection;

namespace PgBackup.Engine.Instance;

/// <summary>
/// Keeps a standby's replication password out of its data directory: primary_conninfo names a pass file (libpq's
/// passfile=) under ~&lt;server user&gt;/.pgbackup, 0600 and owned by the server's OS user, as Patroni does, instead of holding
/// password=. Every file of a data directory goes into the base backups taken from it (a cascading standby is where backups
/// are offloaded to), and postgresql.auto.conf is one of them. The entry matches any host and port with the replication
/// user, because every server of a physical cluster has the same roles: a standby pointed at another primary after a
/// switchover keeps its file as it is.
/// </summary>
public static class StandbyPassFile
{
    private static readonly Regex PrimaryConnInfoLine = new(@"^[ \t]*primary_conninfo[ \t]*=[ \t]*'(?<value>(?:[^']|'')*)'[ \t]*(\r?\n|$)", RegexOptions.Multiline | RegexOptions.Compiled);

    /// <summary>The purpose part of the file's name (see <see cref="WalCredentialsFile"/>): the data directory, hashed.</summary>
    public static string Purpose(string dataDirectory) => "standby-passfile-" + WalCredentialsFile.DataDirectoryKey(dataDirectory);

    public const string Extension = ".pgpass";

    /// <summary>
    /// Writes the pass file of the standby in <paramref name="dataDirectory"/> (which must hold its pg_control) for
    /// <paramref name="serverUser"/> and returns its path; the same content again leaves it as it is.
    /// </summary>
    public static Task<string> WriteAsync(string dataDirectory, string serverUser, string user, string password, CancellationToken ct) =>
        WriteForAsync(dataDirectory, serverUser, Purpose(dataDirectory), user, password, ct);

    /// <summary>A pass file of the server in <paramref name="dataDirectory"/> for another use (<paramref name="purpose"/>, as a subscription's), one entry for <paramref name="user"/>.</summary>
    public static async Task<string> WriteForAsync(string dataDirectory, string serverUser, string purpose, string user, string password, CancellationToken ct)
    {
        var path = await PathForAsync(dataDirectory, serverUser, purpose, ct).ConfigureAwait(false);
        await WalCredentialsFile.WriteAsync(path, $"*:*:*:{Escape(user)}:{Escape(password)}\n", serverUser, ct).ConfigureAwait(false);
        return path;
    }

    public static async Task<string> PathForAsync(string dataDirectory, string serverUser, string purpose, CancellationToken ct)
    {
        var systemIdentifier = await WalCredentialsFile.SystemIdentifierOfAsync(dataDirectory, ct).ConfigureAwait(false);
        return await WalCredentialsFile.PathForAsync(serverUser, systemIdentifier, purpose, ct, Extension).ConfigureAwait(false);
    }

    /// <summary>Whether <paramref name="path"/> is a pass file PgBackup wrote (another one may not be readable by the server's OS user).</summary>
    public static bool IsOurs(string path) => path.EndsWith(Extension, StringComparison.Ordinal) && WalCredentialsFile.IsInOurFolder(path);

    /// <summary>A connection string for primary_conninfo: the given parts, and the pass file when there is a password.</summary>
    public static async Task<string> ConnInfoAsync(string dataDirectory, string serverUser, ConnectionTarget primary, string? applicationName, CancellationToken ct)
    {
        var conninfo = $"host={ConnectionTarget.QuoteConnInfoValue(primary.Host)} port={primary.Port} user={ConnectionTarget.QuoteConnInfoValue(primary.User)}";
        // On Windows the file could not be restricted to the service account yet; the password stays in primary_conninfo there.
        if (primary.Password != null && OperatingSystem.IsWindows()) conninfo += " password=" + ConnectionTarget.QuoteConnInfoValue(primary.Password);
        else if (primary.Password != null)
            conninfo += " passfile=" + ConnectionTarget.QuoteConnInfoValue(await WriteAsync(dataDirectory, serverUser, primary.User, primary.Password, ct).ConfigureAwait(false));
        return applicationName == null ? conninfo : conninfo + " application_name=" + ConnectionTarget.QuoteConnInfoValue(applicationName);
    }

    /// <summary>
    /// Moves the password pg_basebackup -R wrote into postgresql.auto.conf's primary_conninfo into the pass file, leaving
    /// every other part of it as it was. Returns the pass file's path, or null when primary_conninfo held no password.
    /// </summary>
    public static async Task<string?> MovePasswordOutAsync(string dataDirectory, string serverUser, CancellationToken ct)
    {
        if (OperatingSystem.IsWindows()) return null;
        var autoConf = Path.Combine(dataDirectory, "postgresql.auto.conf");
        var text = await File.ReadAllTextAsync(autoConf, ct).ConfigureAwait(false);
        var match = PrimaryConnInfoLine.Matches(text).LastOrDefault();
        if (match == null) return null;
        var parts = ConnInfo.Parse(match.Groups["value"].Value.Replace("''", "'"));
        var password = parts.FirstOrDefault(p => p.Key == "password").Value;
        if (password == null) return null;
        var user = parts.FirstOrDefault(p => p.Key == "user").Value ?? Environment.UserName;
        var passfile = await WriteAsync(dataDirectory, serverUser, user, password, ct).ConfigureAwait(false);
        var kept = parts.Where(p => p.Key is not ("password" or "passfile")).Append(new("passfile", passfile));
        var conninfo = ConnInfo.Format(kept);
        SetPrimaryConnInfo(dataDirectory, "Written by pg_basebackup -R; the password is in the pass file", conninfo);
        return passfile;
    }

    /// <summary>
    /// Replaces every primary_conninfo of postgresql.auto.conf (an earlier one may hold a password) by
    /// <paramref name="conninfo"/>, followed by <paramref name="moreLines"/>. Written in place, so the file keeps its owner and mode.
    /// </summary>
    public static void SetPrimaryConnInfo(string dataDirectory, string comment, string conninfo, string moreLines = "")
    {
        var autoConf = Path.Combine(dataDirectory, "postgresql.auto.conf");
        var kept = PrimaryConnInfoLine.Replace(File.Exists(autoConf) ? File.ReadAllText(autoConf) : "", "").TrimEnd('\r', '\n');
        File.WriteAllText(autoConf, $"{kept}\n\n# {comment}\nprimary_conninfo = '{conninfo.Replace("'", "''")}'\n{moreLines}");
    }

    /// <summary>A pass file field: colons and backslashes escaped with a backslash.</summary>
    private static string Escape(string field) => field.Replace("\\", "\\\\").Replace(":", "\\:");
}
