using PgBackup.Engine.Instance;

namespace PgBackup.Engine.Migration;

/// <summary>
/// The pass file a subscription names in its connection string (passfile=), so the source's password is in no catalog:
/// owned by the target server's OS user, mode 0600, under its ~/.pgbackup, one per migration.
/// </summary>
internal static class MigrationPassFile
{
    private static string Purpose(string name) => "subscription-" + name;

    public static Task<string> WriteAsync(string dataDirectory, string serverUser, string name, string user, string password, CancellationToken ct) =>
        StandbyPassFile.WriteForAsync(dataDirectory, serverUser, Purpose(name), user, password, ct);

    /// <summary>Removes the migration's pass file when the target server (connected as <paramref name="t"/>) runs here; false when there is none.</summary>
    public static async Task<bool> RemoveAsync(Npgsql.NpgsqlConnection t, Connection.ConnectionTarget target, string name, CancellationToken ct)
    {
        if (OperatingSystem.IsWindows()) return false;
        var dataDirectory = await Connection.ServerSession.ScalarAsync<string>(t, "show data_directory", ct).ConfigureAwait(false) ?? "";
        if (!target.ServesFromHere(dataDirectory) || await DataDirectoryOwner.FindAsync(dataDirectory, ct).ConfigureAwait(false) is not { } owner) return false;
        return WalCredentialsFile.Remove(await StandbyPassFile.PathForAsync(dataDirectory, owner, Purpose(name), ct).ConfigureAwait(false));
    }
}
