using Npgsql;
using PgBackup.Engine.Connection;

namespace PgBackup.Engine.Replication;

/// <summary>
/// Logical replication as one server sees it: on a primary, its logical slots with the lag and WAL each holds; on any
/// server, its subscriptions with each table's sync state. PgBackup's migrations own the names that start with
/// <see cref="OwnedPrefix"/>.
/// </summary>
public static class LogicalLinks
{
    public const string OwnedPrefix = "pgbackup_migration_";

    public static async Task<IReadOnlyList<LogicalReplicationLink>> ReadAsync(NpgsqlConnection connection, ConnectionTarget target, bool inRecovery, Lsn current, CancellationToken ct)
    {
        var links = new List<LogicalReplicationLink>();
        if (!inRecovery)
        {
            await using var cmd = new NpgsqlCommand("""
                select s.slot_name, coalesce(s.database, ''), s.active, coalesce(r.state, ''), s.confirmed_flush_lsn::text, s.restart_lsn::text,
                       extract(epoch from r.replay_lag)::float8, r.reply_time
                from pg_replication_slots s left join pg_stat_replication r on r.pid = s.active_pid
                where s.slot_type = 'logical' and not s.temporary
                order by s.slot_name
                """, connection);
            await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            while (await r.ReadAsync(ct).ConfigureAwait(false))
            {
                var confirmed = r.IsDBNull(4) ? (Lsn?)null : Lsn.Parse(r.GetString(4));
                var restart = r.IsDBNull(5) ? (Lsn?)null : Lsn.Parse(r.GetString(5));
                links.Add(new LogicalReplicationLink
                {
                    Server = target.Host, Port = target.Port, Side = "Publisher", Name = r.GetString(0), Database = r.GetString(1), Owned = r.GetString(0).StartsWith(OwnedPrefix, StringComparison.Ordinal),
                    Active = r.GetBoolean(2), State = r.GetBoolean(2) ? r.GetString(3) : "inactive", CurrentLsn = current, ConfirmedLsn = confirmed,
                    LagBytes = confirmed is { } c ? Math.Max(0, current - c) : null, RetainedWalBytes = restart is { } rs ? Math.Max(0, current - rs) : null,
                    Lag = r.IsDBNull(6) ? null : TimeSpan.FromSeconds(r.GetDouble(6)), LastMessageTime = r.IsDBNull(7) ? null : r.GetFieldValue<DateTimeOffset>(7),
                });
            }
        }
        var subscriptions = new List<(string Name, string Database, bool Enabled, bool Running, Lsn? Received, DateTimeOffset? LastMessage)>();
        await using (var cmd = new NpgsqlCommand("""
            select s.subname, d.datname, s.subenabled, w.pid is not null, w.received_lsn::text, w.last_msg_receipt_time
            from pg_subscription s join pg_database d on d.oid = s.subdbid
              left join pg_stat_subscription w on w.subid = s.oid and w.relid is null
            order by s.subname
            """, connection))
        await using (var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false))
            while (await r.ReadAsync(ct).ConfigureAwait(false))
                subscriptions.Add((r.GetString(0), r.GetString(1), r.GetBoolean(2), r.GetBoolean(3), r.IsDBNull(4) ? null : Lsn.Parse(r.GetString(4)),
                    r.IsDBNull(5) ? null : r.GetFieldValue<DateTimeOffset>(5)));
        foreach (var sub in subscriptions)
            links.Add(new LogicalReplicationLink
            {
                Server = target.Host, Port = target.Port, Side = "Subscriber", Name = sub.Name, Database = sub.Database, Owned = sub.Name.StartsWith(OwnedPrefix, StringComparison.Ordinal),
                Active = sub.Enabled, State = sub.Running ? "streaming" : sub.Enabled ? "starting" : "disabled", ConfirmedLsn = sub.Received, LastMessageTime = sub.LastMessage,
                Tables = await TableStatesInAsync(connection, target, sub.Database, sub.Name, ct).ConfigureAwait(false),
            });
        return links;
    }

    /// <summary>The table states of a subscription, read in its own database; none when this login may not connect there.</summary>
    private static async Task<LogicalTableSync[]> TableStatesInAsync(NpgsqlConnection connection, ConnectionTarget target, string database, string subscription, CancellationToken ct)
    {
        if (database == connection.Database) return await TableStatesAsync(connection, subscription, ct).ConfigureAwait(false);
        try
        {
            await using var there = await ServerSession.OpenAsync(target with { Database = database }, ct).ConfigureAwait(false);
            return await TableStatesAsync(there, subscription, ct).ConfigureAwait(false);
        }
        catch (PgBackupException) { return []; }
    }

    /// <summary>Each table of the subscription and its sync state (pg_subscription_rel), read in the subscription's database.</summary>
    public static async Task<LogicalTableSync[]> TableStatesAsync(NpgsqlConnection c, string subscription, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand("""
            select n.nspname || '.' || cl.relname, r.srsubstate::text, r.srsublsn::text
            from pg_subscription_rel r join pg_subscription s on s.oid = r.srsubid
              join pg_class cl on cl.oid = r.srrelid join pg_namespace n on n.oid = cl.relnamespace
            where s.subname = $1 and s.subdbid = (select oid from pg_database where datname = current_database())
            order by 1
            """, c);
        cmd.Parameters.Add(new NpgsqlParameter { Value = subscription });
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        var tables = new List<LogicalTableSync>();
        while (await r.ReadAsync(ct).ConfigureAwait(false))
            tables.Add(new LogicalTableSync { Table = r.GetString(0), State = SyncState(r.GetString(1)), Lsn = r.IsDBNull(2) ? null : Lsn.Parse(r.GetString(2)) });
        return [.. tables];
    }

    private static string SyncState(string code) => code switch
    {
        "i" => "Init", "d" => "Copying", "f" => "Copied", "s" => "Synchronized", "r" => "Ready", _ => code,
    };

    /// <summary>A warning for a PgBackup slot nobody consumes: it keeps WAL on the source until it is dropped.</summary>
    public static string? OrphanWarning(LogicalReplicationLink link) => link is { Side: "Publisher", Owned: true, Active: false }
        ? $"The logical slot {link.Name} on {link.Server}:{link.Port} (database {link.Database}) belongs to a PgBackup migration whose subscriber is not connected; it holds {link.RetainedWalBytes ?? 0} bytes of WAL, and more as the source writes. " +
          "Resume the subscription, or remove the migration with Stop-PgLogicalMigration (or pg_drop_replication_slot)."
        : null;
}
