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
        using var sql = typeof(SampleDatabase).Assembly.GetManifestResourceStream("PgBackup.Testing.sample-database.sql")!;
        cluster.Psql(new StreamReader(sql).ReadToEnd().Replace("{ITEM_ROWS}", itemRows.ToString(System.Globalization.CultureInfo.InvariantCulture)), database);
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
