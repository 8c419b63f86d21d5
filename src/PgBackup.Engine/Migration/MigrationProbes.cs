using Npgsql;
using PgBackup.Engine.Connection;

namespace PgBackup.Engine.Migration;

/// <summary>A server as a migration needs to know it.</summary>
internal sealed record MigrationServerFacts(int Major, string SystemIdentifier, bool InRecovery, string WalLevel, bool Superuser, bool Replication, bool CreateSubscription,
    int FreeSlots, int FreeWalSenders, int FreeOrigins, int LogicalWorkers, int SyncWorkers, long LargeObjects);

/// <summary>A table of the source database: whether logical replication can carry its updates and deletes.</summary>
internal sealed record SourceTable(string Schema, string Name, string Owner, bool Logged, bool Partitioned, bool HasIdentity);

/// <summary>The SQL of logical migrations: every question and statement about publications, slots and subscriptions.</summary>
internal static class MigrationProbes
{
    public static async Task<MigrationServerFacts> ServerAsync(NpgsqlConnection c, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand("""
            select current_setting('server_version_num')::int / 10000,
                   (select system_identifier::text from pg_control_system()),
                   pg_is_in_recovery(),
                   current_setting('wal_level'),
                   r.rolsuper, r.rolreplication,
                   coalesce((select pg_has_role(current_user, oid, 'member') from pg_roles where rolname = 'pg_create_subscription'), false),
                   current_setting('max_replication_slots')::int - (select count(*) from pg_replication_slots)::int,
                   current_setting('max_wal_senders')::int - (select count(*) from pg_stat_replication)::int,
                   current_setting('max_replication_slots')::int - (select count(*) from pg_replication_origin)::int,
                   current_setting('max_logical_replication_workers')::int,
                   current_setting('max_sync_workers_per_subscription')::int,
                   (select count(*) from pg_largeobject_metadata)
            from pg_roles r where r.rolname = current_user
            """, c);
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await r.ReadAsync(ct).ConfigureAwait(false);
        return new MigrationServerFacts(r.GetInt32(0), r.GetString(1), r.GetBoolean(2), r.GetString(3), r.GetBoolean(4), r.GetBoolean(5), r.GetBoolean(6),
            r.GetInt32(7), r.GetInt32(8), r.GetInt32(9), r.GetInt32(10), r.GetInt32(11), r.GetInt64(12));
    }

    /// <summary>The user tables of the connected database (partitioned tables as their root), with what replicates their updates.</summary>
    public static async Task<List<SourceTable>> TablesAsync(NpgsqlConnection c, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand("""
            select n.nspname, c.relname, pg_get_userbyid(c.relowner), c.relpersistence = 'p', c.relkind = 'p',
                   c.relreplident in ('f', 'i') or (c.relreplident = 'd' and exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary))
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where c.relkind in ('r', 'p') and not c.relispartition
              and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_(toast|temp)'
              and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')
            order by 1, 2
            """, c);
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        var tables = new List<SourceTable>();
        while (await r.ReadAsync(ct).ConfigureAwait(false))
            tables.Add(new SourceTable(r.GetString(0), r.GetString(1), r.GetString(2), r.GetBoolean(3), r.GetBoolean(4), r.GetBoolean(5)));
        return tables;
    }

    /// <summary>Which of the tables exist in the connected database, and whether each holds rows.</summary>
    public static async Task<Dictionary<string, bool>> ExistingTablesAsync(NpgsqlConnection c, IEnumerable<MigrationTable> tables, CancellationToken ct)
    {
        var present = new Dictionary<string, bool>(StringComparer.Ordinal);
        foreach (var table in tables)
        {
            if (!await ServerSession.ScalarAsync<bool>(c, "select to_regclass($1) is not null", ct, table.Qualified).ConfigureAwait(false)) continue;
            present[table.Display] = await ServerSession.ScalarAsync<bool>(c, $"select exists (select 1 from {table.Qualified})", ct).ConfigureAwait(false);
        }
        return present;
    }

    /// <summary>Where a migration of this name exists already, or null: a publication or slot on the source, a subscription on the target.</summary>
    public static async Task<string?> ExistsAsync(NpgsqlConnection source, NpgsqlConnection target, string name, CancellationToken ct)
    {
        var found = new List<string>();
        if (await ServerSession.ScalarAsync<bool>(source, "select exists (select 1 from pg_replication_slots where slot_name = $1)", ct, name).ConfigureAwait(false)) found.Add("a slot on the source");
        if (await ServerSession.ScalarAsync<bool>(source, "select exists (select 1 from pg_publication where pubname = $1)", ct, name).ConfigureAwait(false)) found.Add("a publication on the source");
        if (await ServerSession.ScalarAsync<bool>(target, "select exists (select 1 from pg_subscription where subname = $1)", ct, name).ConfigureAwait(false)) found.Add("a subscription on the target");
        return found.Count == 0 ? null : string.Join(", ", found);
    }

    /// <summary>Creates the target database with the source database's encoding and locale.</summary>
    public static async Task CreateDatabaseLikeAsync(ConnectionTarget source, ConnectionTarget target, CancellationToken ct)
    {
        string encoding, collate, ctype;
        await using (var s = await ServerSession.OpenAsync(source, ct).ConfigureAwait(false))
        {
            await using var cmd = new NpgsqlCommand("select pg_encoding_to_char(encoding), datcollate, datctype from pg_database where datname = current_database()", s);
            await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            await r.ReadAsync(ct).ConfigureAwait(false);
            (encoding, collate, ctype) = (r.GetString(0), r.GetString(1), r.GetString(2));
        }
        await using var t = await ServerSession.OpenAsync(target with { Database = "postgres" }, ct).ConfigureAwait(false);
        await ServerSession.ExecuteAsync(t,
            $"create database {ServerSession.QuoteIdentifier(target.Database)} template template0 encoding '{encoding}' lc_collate '{collate.Replace("'", "''")}' lc_ctype '{ctype.Replace("'", "''")}'", target, ct).ConfigureAwait(false);
    }

    public static async Task DropDatabaseAsync(ConnectionTarget target, IOperationReporter reporter)
    {
        try
        {
            using var patience = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await using var t = await ServerSession.OpenAsync(target with { Database = "postgres" }, patience.Token).ConfigureAwait(false);
            await ServerSession.ExecuteAsync(t, $"drop database if exists {ServerSession.QuoteIdentifier(target.Database)} with (force)", target, patience.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is PgBackupException or NpgsqlException or OperationCanceledException)
        {
            reporter.Warning($"The database {target.Database} that the set-up created on {target.Display} could not be dropped: {ex.Message}");
        }
    }

    /// <summary>How often the subscription's table copies failed (pg_stat_subscription_stats); 0 before PostgreSQL 15.</summary>
    public static async Task<long> SyncErrorsAsync(NpgsqlConnection t, string subscription, CancellationToken ct)
    {
        if (await ServerSession.ScalarAsync<int>(t, "select current_setting('server_version_num')::int", ct).ConfigureAwait(false) < 150000) return 0;
        return await ServerSession.ScalarAsync<long>(t, "select coalesce((select sync_error_count + apply_error_count from pg_stat_subscription_stats where subname = $1), 0)", ct, subscription).ConfigureAwait(false);
    }

    /// <summary>
    /// Drops the subscription without touching the source: disabled and detached from its slot first (the slot is
    /// PgBackup's to drop on the source). False when there is none.
    /// </summary>
    public static async Task<bool> DropSubscriptionAsync(NpgsqlConnection t, ConnectionTarget target, string name, CancellationToken ct)
    {
        if (!await ServerSession.ScalarAsync<bool>(t, "select exists (select 1 from pg_subscription where subname = $1)", ct, name).ConfigureAwait(false)) return false;
        // A subscription lives in one database; ALTER and DROP must run there.
        var database = await ServerSession.ScalarAsync<string>(t, "select d.datname from pg_subscription s join pg_database d on d.oid = s.subdbid where s.subname = $1", ct, name).ConfigureAwait(false)!;
        await using var there = database == t.Database ? null : await ServerSession.OpenAsync(target with { Database = database! }, ct).ConfigureAwait(false);
        var c = there ?? t;
        await ServerSession.ExecuteAsync(c, $"alter subscription {name} disable", target, ct).ConfigureAwait(false);
        await ServerSession.ExecuteAsync(c, $"alter subscription {name} set (slot_name = none)", target, ct).ConfigureAwait(false);
        await ServerSession.ExecuteAsync(c, $"drop subscription {name}", target, ct).ConfigureAwait(false);
        return true;
    }

    /// <summary>
    /// Drops the slot (ending the WAL sender that holds it), the publication, and, with <paramref name="allowWrites"/>,
    /// the read-only setting a cutover of this migration put on the database. Returns what it removed.
    /// </summary>
    public static async Task<List<string>> DropSourceSideAsync(NpgsqlConnection s, ConnectionTarget source, string name, bool allowWrites, CancellationToken ct)
    {
        var removed = new List<string>();
        // The database may have been made read-only by a cutover: this session writes anyway.
        await ServerSession.ExecuteAsync(s, "set default_transaction_read_only = off", source, ct).ConfigureAwait(false);
        for (var attempt = 0; await ServerSession.ScalarAsync<bool>(s, "select exists (select 1 from pg_replication_slots where slot_name = $1)", ct, name).ConfigureAwait(false); attempt++)
        {
            var pid = await ServerSession.ScalarAsync<int>(s, "select coalesce(active_pid, 0) from pg_replication_slots where slot_name = $1", ct, name).ConfigureAwait(false);
            if (pid > 0) await ServerSession.ScalarAsync<bool>(s, "select pg_terminate_backend($1)", ct, pid).ConfigureAwait(false);
            try
            {
                await ServerSession.ExecuteAsync(s, $"select pg_drop_replication_slot('{name}')", source, ct).ConfigureAwait(false);
                removed.Add($"slot {name} on {source.Display}");
                break;
            }
            // Still active: the WAL sender takes a moment to go, or the subscriber reconnected.
            catch (PgBackupException) when (attempt < 50) { await Task.Delay(200, ct).ConfigureAwait(false); }
        }
        if (await ServerSession.ScalarAsync<bool>(s, "select exists (select 1 from pg_publication where pubname = $1)", ct, name).ConfigureAwait(false))
        {
            await ServerSession.ExecuteAsync(s, $"drop publication {name}", source, ct).ConfigureAwait(false);
            removed.Add($"publication {name} on {source.Display}");
        }
        if (allowWrites && await WritesStoppedByAsync(s, ct).ConfigureAwait(false) == name)
        {
            await AllowWritesAsync(s, source, ct).ConfigureAwait(false);
            removed.Add($"the read-only setting of {source.Database}");
        }
        return removed;
    }

    /// <summary>
    /// Makes the connected database refuse writes: new sessions start read-only (default_transaction_read_only, marked
    /// as the migration's with pgbackup.writes_stopped_by) and every other client session is ended.
    /// </summary>
    public static async Task StopWritesAsync(NpgsqlConnection s, ConnectionTarget source, string name, CancellationToken ct)
    {
        var database = ServerSession.QuoteIdentifier(source.Database);
        await ServerSession.ExecuteAsync(s, $"alter database {database} set default_transaction_read_only = on", source, ct).ConfigureAwait(false);
        await ServerSession.ExecuteAsync(s, $"alter database {database} set pgbackup.writes_stopped_by = '{name}'", source, ct).ConfigureAwait(false);
        await ServerSession.ExecuteAsync(s, """
            select pg_terminate_backend(pid) from pg_stat_activity
            where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'
            """, source, ct).ConfigureAwait(false);
    }

    public static async Task AllowWritesAsync(NpgsqlConnection s, ConnectionTarget source, CancellationToken ct)
    {
        var database = ServerSession.QuoteIdentifier(source.Database);
        await ServerSession.ExecuteAsync(s, $"alter database {database} reset default_transaction_read_only", source, ct).ConfigureAwait(false);
        await ServerSession.ExecuteAsync(s, $"alter database {database} reset pgbackup.writes_stopped_by", source, ct).ConfigureAwait(false);
    }

    /// <summary>The migration whose cutover made the connected database read-only, or null.</summary>
    public static async Task<string?> WritesStoppedByAsync(NpgsqlConnection s, CancellationToken ct) =>
        await ServerSession.ScalarAsync<string>(s, """
            select substr(c, length('pgbackup.writes_stopped_by=') + 1)
            from pg_db_role_setting st join pg_database d on d.oid = st.setdatabase, unnest(st.setconfig) c
            where d.datname = current_database() and st.setrole = 0 and c like 'pgbackup.writes\_stopped\_by=%'
            """, ct).ConfigureAwait(false);

    /// <summary>The tables a publication carries, schema-qualified and quoted.</summary>
    public static async Task<List<MigrationTable>> PublishedTablesAsync(NpgsqlConnection s, string publication, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand("select schemaname, tablename from pg_publication_tables where pubname = $1 order by 1, 2", s);
        cmd.Parameters.Add(new NpgsqlParameter { Value = publication });
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        var tables = new List<MigrationTable>();
        while (await r.ReadAsync(ct).ConfigureAwait(false)) tables.Add(new MigrationTable(r.GetString(0), r.GetString(1), false));
        return tables;
    }

    /// <summary>The slot's confirmed position and the source's current one.</summary>
    public static async Task<(Lsn Confirmed, Lsn Current)?> SlotPositionAsync(NpgsqlConnection s, string slot, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand("select confirmed_flush_lsn::text, pg_current_wal_lsn()::text from pg_replication_slots where slot_name = $1", s);
        cmd.Parameters.Add(new NpgsqlParameter { Value = slot });
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        if (!await r.ReadAsync(ct).ConfigureAwait(false)) return null;
        return (r.IsDBNull(0) ? default : Lsn.Parse(r.GetString(0)), Lsn.Parse(r.GetString(1)));
    }

    /// <summary>Every sequence of the connected database that has been used, with its last value.</summary>
    public static async Task<Dictionary<string, long?>> SequencesAsync(NpgsqlConnection c, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand("select quote_ident(schemaname) || '.' || quote_ident(sequencename), last_value from pg_sequences order by 1", c);
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        var sequences = new Dictionary<string, long?>(StringComparer.Ordinal);
        while (await r.ReadAsync(ct).ConfigureAwait(false)) sequences[r.GetString(0)] = r.IsDBNull(1) ? null : r.GetInt64(1);
        return sequences;
    }

    /// <summary>A table's row count and, with <paramref name="checksum"/>, an order-independent checksum of its rows' text.</summary>
    public static async Task<(long Rows, string? Checksum)> TableDigestAsync(NpgsqlConnection c, MigrationTable table, bool checksum, CancellationToken ct)
    {
        var sql = checksum
            ? $"select count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text from {table.Qualified} t"
            : $"select count(*), null::text from {table.Qualified}";
        await using var cmd = new NpgsqlCommand(sql, c) { CommandTimeout = 0 };
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await r.ReadAsync(ct).ConfigureAwait(false);
        return (r.GetInt64(0), r.IsDBNull(1) ? null : r.GetString(1));
    }
}
