using Npgsql;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Migration;

/// <summary>
/// Copies the schema of the migrated tables to the target: pg_dump --schema-only (of the whole database when every
/// table goes into a new one, else of the missing tables and their partitions, after their schemas), applied with psql
/// in one transaction, so a failure leaves no half schema behind.
/// </summary>
internal static class SchemaCopy
{
    public static async Task CopyAsync(LogicalMigrationPlan plan, IOperationReporter reporter, CancellationToken ct)
    {
        var source = plan.Request.Source;
        var target = plan.Request.Target;
        var locator = new ToolLocator(plan.Request.ToolPath);
        // A pg_dump at least as new as the source; the target's version when there is one, as for any dump restored there.
        var pgDump = locator.Find("pg_dump", plan.SourceMajor, plan.TargetMajor, reporter);
        var psql = locator.Find("psql", null, plan.TargetMajor, reporter);
        var folder = Directory.CreateTempSubdirectory("pgbackup-schema-");
        try
        {
            var file = Path.Combine(folder.FullName, "schema.sql");
            var arguments = new List<string> { "--schema-only", "--no-publications", "--no-subscriptions", "--format=plain", "--file=" + file };
            if (!plan.WholeSchema)
            {
                foreach (var table in await WithPartitionsAsync(source, plan.MissingOnTarget, ct).ConfigureAwait(false))
                    arguments.Add("--table=" + table);
                await using var t = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
                foreach (var schema in plan.MissingOnTarget.Select(x => x.Schema).Distinct())
                    await ServerSession.ExecuteAsync(t, "create schema if not exists " + ServerSession.QuoteIdentifier(schema), target, ct).ConfigureAwait(false);
            }
            arguments.Add(ConnectionTarget.DbNameArgument(source.Database));
            var dump = await ToolRunner.RunAsync(pgDump, arguments, source.ToolEnvironment(), reporter.Verbose, ct).ConfigureAwait(false);
            if (!dump.Succeeded)
                throw new PgBackupException("SchemaCopyFailed", ErrorKind.ToolFailed, $"pg_dump --schema-only of {source.Database} on {source.Display} failed: {dump.ErrorSummary()}", source.Database,
                    "Fix what pg_dump names (a privilege, a lock held for long) and run Start-PgLogicalMigration again.");
            var apply = await ToolRunner.RunAsync(psql, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "--no-password", "-f", file, ConnectionTarget.DbNameArgument(target.Database)],
                target.ToolEnvironment(), reporter.Verbose, ct).ConfigureAwait(false);
            if (!apply.Succeeded)
                throw new PgBackupException("SchemaCopyFailed", ErrorKind.ToolFailed, $"The schema of {source.Database} could not be created in {target.Database} on {target.Display}: {apply.ErrorSummary()}", target.Database,
                    "The usual causes are roles or extensions the target lacks: create them there first (pg_dumpall --globals-only for the roles, CREATE EXTENSION for the extensions), then run Start-PgLogicalMigration again.");
        }
        finally { folder.Delete(recursive: true); }
    }

    /// <summary>pg_dump --table patterns that name each table exactly, with every partition of a partitioned one.</summary>
    private static async Task<List<string>> WithPartitionsAsync(ConnectionTarget source, IEnumerable<MigrationTable> tables, CancellationToken ct)
    {
        await using var s = await ServerSession.OpenAsync(source, ct).ConfigureAwait(false);
        var patterns = new List<string>();
        foreach (var table in tables)
        {
            if (!table.Partitioned) { patterns.Add(table.Qualified); continue; }
            await using var cmd = new NpgsqlCommand("select n.nspname, c.relname from pg_partition_tree($1::regclass) p join pg_class c on c.oid = p.relid join pg_namespace n on n.oid = c.relnamespace", s);
            cmd.Parameters.Add(new NpgsqlParameter { Value = table.Qualified });
            await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            while (await r.ReadAsync(ct).ConfigureAwait(false)) patterns.Add(ServerSession.QuoteIdentifier(r.GetString(0)) + "." + ServerSession.QuoteIdentifier(r.GetString(1)));
        }
        return patterns;
    }
}
