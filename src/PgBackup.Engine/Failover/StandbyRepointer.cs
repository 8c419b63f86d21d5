using PgBackup.Engine.Connection;
using PgBackup.Engine.Instance;
using PgBackup.Engine.Replication;

namespace PgBackup.Engine.Failover;

/// <summary>Points the remaining standbys at a new primary after a switchover or failover.</summary>
internal static class StandbyRepointer
{
    /// <summary>Sets primary_conninfo (it takes effect on reload since PostgreSQL 13) and waits until the standby streams from the new primary.</summary>
    public static async Task<bool> RepointAsync(ConnectionTarget standby, ConnectionTarget primary, TimeSpan timeout, IOperationReporter reporter, CancellationToken ct)
    {
        var conninfo = $"host={ConnectionTarget.QuoteConnInfoValue(primary.Host)} port={primary.Port} user={ConnectionTarget.QuoteConnInfoValue(primary.User)}";
        await using (var connection = await ServerSession.OpenAsync(standby, ct).ConfigureAwait(false))
        {
            // A standby that reads its password from a pass file (New-PgStandby, Join-PgStandby) keeps it: its entry holds
            // for every server of the cluster. Only one that had the password in primary_conninfo is given it there again.
            var current = await ServerSession.ScalarAsync<string>(connection, "select setting from pg_settings where name = 'primary_conninfo'", ct).ConfigureAwait(false) ?? "";
            var passfile = TryParse(current)?.FirstOrDefault(p => p.Key == "passfile").Value;
            if (passfile != null && StandbyPassFile.IsOurs(passfile)) conninfo += " passfile=" + ConnectionTarget.QuoteConnInfoValue(passfile);
            else if (primary.Password != null)
            {
                conninfo += " password=" + ConnectionTarget.QuoteConnInfoValue(primary.Password);
                reporter.Warning($"{standby.Display} had its replication password in primary_conninfo, and keeps it there (in its postgresql.auto.conf, and in base backups taken from it); rebuild it with New-PgStandby, or rejoin it with Join-PgStandby, to have it read the password from a pass file.");
            }
            await ServerSession.ExecuteAsync(connection, $"alter system set primary_conninfo = '{conninfo.Replace("'", "''")}'", standby, ct).ConfigureAwait(false);
            await ServerSession.ScalarAsync<bool>(connection, "select pg_reload_conf()", ct).ConfigureAwait(false);
        }
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            var snapshot = await ReplicationMonitor.ReadAsync(standby, false, ct).ConfigureAwait(false);
            if (snapshot.Standby is { ReceiverStatus: "streaming" } s && s.UpstreamPort == primary.Port) return true;
            await Task.Delay(200, ct).ConfigureAwait(false);
        }
        reporter.Warning($"{standby.Display} does not stream from {primary.Display} yet: if it received WAL the new primary never had, it diverged and needs pg_rewind.");
        return false;
    }

    private static List<KeyValuePair<string, string>>? TryParse(string conninfo)
    {
        try { return ConnInfo.Parse(conninfo); }
        catch (FormatException) { return null; }
    }
}
