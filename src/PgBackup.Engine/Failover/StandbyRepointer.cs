using PgBackup.Engine.Connection;
using PgBackup.Engine.Replication;

namespace PgBackup.Engine.Failover;

/// <summary>Points the remaining standbys at a new primary after a switchover or failover.</summary>
internal static class StandbyRepointer
{
    /// <summary>Sets primary_conninfo (it takes effect on reload since PostgreSQL 13) and waits until the standby streams from the new primary.</summary>
    public static async Task<bool> RepointAsync(ConnectionTarget standby, ConnectionTarget primary, TimeSpan timeout, IOperationReporter reporter, CancellationToken ct)
    {
        var conninfo = $"host={ConnectionTarget.QuoteConnInfoValue(primary.Host)} port={primary.Port} user={ConnectionTarget.QuoteConnInfoValue(primary.User)}" +
                       (primary.Password != null ? $" password={ConnectionTarget.QuoteConnInfoValue(primary.Password)}" : "");
        await using (var connection = await ServerSession.OpenAsync(standby, ct).ConfigureAwait(false))
        {
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
}
