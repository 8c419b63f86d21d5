namespace PgBackup.Testing;

/// <summary>
/// A database worth backing up: several schemas (one with a non-ASCII name), a 100k-row table, foreign keys, a view,
/// a function, a sequence and large objects; and the oracle that compares two databases.
/// </summary>
public static class SampleDatabase
{
    public const string NonAsciiName = "café_données";
    public const int ItemRows = 100_000;

    public static void Create(PgTestCluster cluster, string database, int itemRows = ItemRows)
    {
        cluster.CreateDatabase(database);
        cluster.Psql($$"""
            create schema sales;
            create schema "Ünïcode schema";
            create table public.items(id int primary key, name text not null, price numeric(10,2), created timestamptz not null default '2026-01-01');
            insert into public.items select g, 'item ' || g, g * 1.5, timestamptz '2026-01-01' + g * interval '1 minute' from generate_series(1, {{itemRows}}) g;
            comment on table public.items is 'Every item we sell';
            create table sales.orders(id serial primary key, item_id int not null references public.items(id), qty int not null, note text);
            insert into sales.orders(item_id, qty, note) select (g % least(1000, {{itemRows}})) + 1, g % 7, 'note ü€ ' || g from generate_series(1, 5000) g;
            create index orders_item on sales.orders(item_id);
            create view sales.order_totals as select item_id, sum(qty) as qty from sales.orders group by item_id;
            create table "Ünïcode schema"."Tåble"(k text primary key, v jsonb);
            insert into "Ünïcode schema"."Tåble" values ('a', '{"x": 1}'), ('ß', '{"y": [1,2,3]}');
            create function sales.add(a int, b int) returns int language sql immutable as 'select a + b';
            create sequence sales.invoice_no;
            select setval('sales.invoice_no', 42);
            select lo_from_bytea(0, convert_to('large object one', 'UTF8'));
            select lo_from_bytea(0, decode(repeat('00ff', 5000), 'hex'));
            """, database);
    }

    /// <summary>Row count of every user table and a digest of the large objects, as "schema.table=count" lines.</summary>
    public static string RowCounts(PgTestCluster cluster, string database)
    {
        var tables = cluster.Psql("""
            select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where c.relkind = 'r' and n.nspname not in ('pg_catalog','information_schema') and n.nspname !~ '^pg_' order by 1
            """, database).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var lines = tables.Select(t => $"{t}={cluster.Psql($"select count(*) from {t}", database)}").ToList();
        lines.Add("largeobjects=" + cluster.Psql("select count(*) || ':' || coalesce(md5(string_agg(md5(lo_get(oid)), ',' order by md5(lo_get(oid)))), '') from pg_largeobject_metadata", database));
        lines.Add("sequence=" + cluster.Psql("select coalesce((select last_value::text from pg_sequences where sequencename = 'invoice_no'), 'none')", database));
        return string.Join("\n", lines);
    }

    /// <summary>pg_dump --schema-only without comments and the per-run \restrict keys, so two databases can be compared.</summary>
    public static string Schema(PgTestCluster cluster, string database) =>
        string.Join("\n", cluster.RunTool("pg_dump", "--schema-only", "--no-owner", "--dbname=" + cluster.ConnectionString(database))
            .Split('\n')
            .Where(l => l.Length > 0 && !l.StartsWith("--", StringComparison.Ordinal) && !l.StartsWith("\\restrict", StringComparison.Ordinal) && !l.StartsWith("\\unrestrict", StringComparison.Ordinal)));
}
