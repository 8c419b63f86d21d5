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

    public static async Task<bool> RemoveAsync(string dataDirectory, string name, CancellationToken ct)
    {
        if (await DataDirectoryOwner.FindAsync(dataDirectory, ct).ConfigureAwait(false) is not { } owner) return false;
        return WalCredentialsFile.Remove(await StandbyPassFile.PathForAsync(dataDirectory, owner, Purpose(name), ct).ConfigureAwait(false));
    }
}
