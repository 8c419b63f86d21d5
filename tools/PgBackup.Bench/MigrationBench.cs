using System.Diagnostics;
using System.Globalization;
using System.Management.Automation;
using PgBackup.Testing;

/// <summary>
/// Moving a pgbench database of about 1 GB to another cluster under pgbench -c 4: the write downtime of
/// Start-/Complete-PgLogicalMigration (from writes stopped on the source to the cutover done, every table compared)
/// against pg_dump -Fd -j 2 plus pg_restore -j 2 of the same database, which needs the writes stopped throughout.
/// </summary>
public static class MigrationBench
{
    public static void Run(int scale)
    {
        using var source = PgTestCluster.Start("migbench-src", new Dictionary<string, string> { ["wal_level"] = "logical", ["max_wal_size"] = "4GB", ["checkpoint_timeout"] = "30min" });
        using var target = PgTestCluster.Start("migbench-dst", new Dictionary<string, string> { ["max_wal_size"] = "4GB", ["checkpoint_timeout"] = "30min" });
        Environment.SetEnvironmentVariable("PGPASSFILE", PgTestCluster.PgPassFile);
        Environment.SetEnvironmentVariable("PGUSER", PgTestCluster.SuperUser);
        Console.WriteLine($"Creating the benchmark database: pgbench scale {scale}...");
        source.CreateDatabase("bench");
        source.RunTool("pgbench", "-i", "-q", "-s", scale.ToString(CultureInfo.InvariantCulture), "bench");
        // pgbench_history has no key, so its updates could not replicate: the pre-check refuses it as it is.
        source.Psql("alter table pgbench_history add column id bigserial primary key", "bench");
        source.Psql("vacuum analyze", "bench");
        var size = long.Parse(source.Psql("select pg_database_size('bench')"), CultureInfo.InvariantCulture);
        Console.WriteLine($"Database {size >> 20} MB; PostgreSQL {PgTestCluster.MajorVersion}; {Environment.ProcessorCount} cores");

        // The dump and restore, with writes stopped for all of it.
        var folder = Path.Combine(Path.GetTempPath(), "pgbackup-migbench-" + Guid.NewGuid().ToString("N")[..8]);
        var dumpAndRestore = BenchSupport.Time(() =>
        {
            source.RunTool("pg_dump", "-Fd", "-j", "2", "-f", folder, "bench");
            target.CreateDatabase("bench_restored");
            target.RunTool("pg_restore", "-j", "2", "-d", "bench_restored", folder);
        });
        Directory.Delete(folder, true);
        target.Psql("drop database bench_restored");
        Console.WriteLine($"pg_dump -Fd -j 2 + pg_restore -j 2: {dumpAndRestore.TotalSeconds:0.0} s");

        using var runspace = BenchSupport.OpenRunspaceWithModule();
        using var load = StartPgbench(source);
        Thread.Sleep(5000);
        var clock = Stopwatch.StartNew();
        BenchSupport.Invoke(runspace, $"$global:migration = Start-PgLogicalMigration -Source '{source.ServerArgument}' -Target '{target.ServerArgument}' -Database bench -Confirm:$false -WarningAction SilentlyContinue");
        var copied = clock.Elapsed;
        Console.WriteLine($"Start-PgLogicalMigration (schema, initial copy of every table, under pgbench -c 4): {copied.TotalSeconds:0.0} s");
        Thread.Sleep(10_000);
        BenchSupport.Invoke(runspace, $"$null = Wait-PgReplication -Server '{source.ServerArgument}' -Timeout 00:10:00");
        using var ps = PowerShell.Create();
        ps.Runspace = runspace;
        ps.AddScript("$migration | Complete-PgLogicalMigration -Confirm:$false");
        var cutover = ps.Invoke().Single();
        if (ps.HadErrors) throw new InvalidOperationException(string.Join("; ", ps.Streams.Error));
        var downtime = (TimeSpan)cutover.Properties["WriteDowntime"].Value;
        var verified = (bool)cutover.Properties["Verified"].Value;
        load.WaitForExit(30_000);
        if (!load.HasExited) load.Kill();
        var transactions = target.Psql("select count(*) from pgbench_history", "bench");
        Console.WriteLine($"Complete-PgLogicalMigration: write downtime {downtime.TotalSeconds:0.00} s, verified {verified}, {transactions} pgbench transactions on the target");
        Console.WriteLine();
        Console.WriteLine($"| {size >> 20} MB under pgbench -c 4 | write downtime |");
        Console.WriteLine("|---|---|");
        Console.WriteLine($"| pg_dump -Fd -j 2 + pg_restore -j 2 | {dumpAndRestore.TotalSeconds:0.0} s |");
        Console.WriteLine($"| Start-PgLogicalMigration, then Complete-PgLogicalMigration (row counts compared) | {downtime.TotalSeconds:0.00} s (set-up and initial copy before it, while the source took writes: {copied.TotalSeconds:0.0} s) |");
    }

    /// <summary>pgbench -c 4 against the source until the cutover ends its sessions (it then exits with an error, as expected).</summary>
    private static Process StartPgbench(PgTestCluster source)
    {
        var start = new ProcessStartInfo(Path.Combine(PgTestCluster.BinDirectory, "pgbench")) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-n", "-c", "4", "-j", "2", "-T", "3600", "-h", source.Host, "-p", source.Port.ToString(CultureInfo.InvariantCulture), "-U", PgTestCluster.SuperUser, "bench" }) start.ArgumentList.Add(a);
        start.Environment["PGPASSWORD"] = PgTestCluster.Password;
        var process = Process.Start(start)!;
        _ = process.StandardOutput.ReadToEndAsync();
        _ = process.StandardError.ReadToEndAsync();
        return process;
    }
}
