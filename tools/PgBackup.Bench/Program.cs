using System.Diagnostics;
using System.Management.Automation;
using System.Management.Automation.Runspaces;
using PgBackup.Testing;

// Usage: PgBackup.Bench [rows (default 2000000)] [rounds (default 3)]      logical backups
//        PgBackup.Bench physical [pgbench scale (default 60)] [rounds (default 3)]   base backups and WAL archiving
//        PgBackup.Bench physical-pairs [pgbench scale (default 60)] [pairs (default 15)] [plain|tar]  Start-PgBaseBackup vs pg_basebackup only
//        PgBackup.Bench blob [pgbench scale (default 60)] [rounds (default 3)]       backups into Azure Blob Storage (Azurite, HTTPS) vs a folder and pgBackRest, then WAL push per segment
//        PgBackup.Bench wal-push [rounds (default 3)]                                  only the per-segment cost of archive commands into a folder
//        PgBackup.Bench blob-wal [rounds (default 3)]                                  only the WAL push per segment to Azurite vs pgbackrest archive-push
//        PgBackup.Bench wal-sustained [seconds (default 60)] [filter, a|b]            sustained WAL archiving under pgbench: pgbackup-wal (--parallel 2, and 1) vs pgBackRest archive-async, folder and Azurite
//        PgBackup.Bench encryption [pgbench scale (default 60)] [rounds (default 3)] [case filter, e.g. BaseBackup] encrypted vs plain repositories, and pgBackRest with and without aes-256-cbc
//        PgBackup.Bench replication [calls (default 50)]                             Get-PgReplicationStatus latency
//        PgBackup.Bench switchover [switchovers (default 5)] [pgbench scale (default 10)] switchovers under pgbench -c 4: through PgBouncer, direct, Patroni (-Patroni and patronictl)
//        PgBackup.Bench migration [pgbench scale (default 70)]                      logical migration under pgbench: write downtime vs pg_dump + pg_restore
//        PgBackup.Bench recovery [pgbench scale (default 68)] [rounds (default 3)]   point-in-time recovery
// Each round times the raw tool and the cmdlet on the same database, alternating which goes first; the median ratio is reported.
if (args.Length > 0 && args[0] == "encryption")
{
    EncryptionBench.Run(args.Length > 1 ? int.Parse(args[1]) : 60, args.Length > 2 ? int.Parse(args[2]) : 3, args.Length > 3 ? args[3] : null);
    return;
}
if (args.Length > 0 && args[0] == "replication")
{
    ReplicationBench.Run(args.Length > 1 ? int.Parse(args[1]) : 50);
    return;
}
if (args.Length > 0 && args[0] == "switchover")
{
    SwitchoverBench.Run(args.Length > 1 ? int.Parse(args[1]) : 5, args.Length > 2 ? int.Parse(args[2]) : 10);
    return;
}
if (args.Length > 0 && args[0] == "migration")
{
    MigrationBench.Run(args.Length > 1 ? int.Parse(args[1]) : 70);
    return;
}
if (args.Length > 0 && args[0] == "recovery")
{
    RecoveryBench.Run(args.Length > 1 ? int.Parse(args[1]) : 68, args.Length > 2 ? int.Parse(args[2]) : 3);
    return;
}
if (args.Length > 0 && args[0] == "physical-pairs")
{
    PhysicalBench.RunPairs(args.Length > 1 ? int.Parse(args[1]) : 60, args.Length > 2 ? int.Parse(args[2]) : 15, args.Length > 3 && args[3].Equals("tar", StringComparison.OrdinalIgnoreCase));
    return;
}
if (args.Length > 0 && args[0] == "wal-push")
{
    PhysicalBench.RunArchiveCommands(args.Length > 1 ? int.Parse(args[1]) : 3);
    return;
}
if (args.Length > 0 && args[0] == "wal-sustained")
{
    WalSustainedBench.Run(args.Length > 1 ? int.Parse(args[1]) : 60, args.Length > 2 ? args[2] : null);
    return;
}
if (args.Length > 0 && args[0] == "blob-wal")
{
    BlobBench.Run(1, args.Length > 1 ? int.Parse(args[1]) : 3, walOnly: true);
    return;
}
if (args.Length > 0 && args[0] == "blob")
{
    BlobBench.Run(args.Length > 1 ? int.Parse(args[1]) : 60, args.Length > 2 ? int.Parse(args[2]) : 3);
    return;
}
if (args.Length > 0 && args[0] == "physical")
{
    PhysicalBench.Run(args.Length > 1 ? int.Parse(args[1]) : 60, args.Length > 2 ? int.Parse(args[2]) : 3);
    return;
}
var rows = args.Length > 0 ? int.Parse(args[0]) : 2_000_000;
var rounds = args.Length > 1 ? int.Parse(args[1]) : 3;
var work = Path.Combine(Path.GetTempPath(), "pgbackup-bench-" + Guid.NewGuid().ToString("N")[..8]);
Directory.CreateDirectory(work);

using var cluster = PgTestCluster.Start("bench");
Console.WriteLine($"Creating the benchmark database: {rows:N0} rows of items plus orders...");
SampleDatabase.Create(cluster, "bench", rows);
cluster.Psql("create table filler as select g as id, md5(g::text) || repeat(md5((g * 7)::text), 4) as payload from generate_series(1, " + rows + ") g", "bench");
cluster.Psql("vacuum analyze", "bench");
var size = long.Parse(cluster.Psql("select pg_database_size('bench')"));
Console.WriteLine($"Database size: {size / 1024 / 1024} MB; PostgreSQL {PgTestCluster.MajorVersion}; {Environment.ProcessorCount} cores; {rounds} rounds");
Environment.SetEnvironmentVariable("PGPASSFILE", PgTestCluster.PgPassFile);
Environment.SetEnvironmentVariable("PGUSER", PgTestCluster.SuperUser);

using var runspace = BenchSupport.OpenRunspaceWithModule();

var cases = new (string Name, Func<int, TimeSpan> Raw, Func<int, TimeSpan> Cmdlet)[]
{
    ("dump, Custom format",
        i => BenchSupport.Time(() => cluster.RunTool("pg_dump", "--format=custom", $"--file={work}/raw{i}.dump", "--dbname=" + cluster.ConnectionString("bench"))),
        i => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"Invoke-PgDump -Server '{cluster.ServerArgument}' -Database bench -Format Custom -Path '{work}/cmdlet{i}.dump'"))),
    ("dump, Directory format, 2 jobs",
        i => BenchSupport.Time(() => cluster.RunTool("pg_dump", "--format=directory", "--jobs=2", $"--file={work}/rawdir{i}", "--dbname=" + cluster.ConnectionString("bench"))),
        i => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"Invoke-PgDump -Server '{cluster.ServerArgument}' -Database bench -Format Directory -Jobs 2 -Path '{work}/cmdletdir{i}'"))),
    ("restore, Custom format into a new database",
        i => BenchSupport.Time(() => { cluster.CreateDatabase($"raw_{i}"); cluster.RunTool("pg_restore", "--exit-on-error", "--single-transaction", "--dbname=" + cluster.ConnectionString($"raw_{i}"), $"{work}/raw{i}.dump"); }),
        i => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"Restore-PgDump -Path '{work}/cmdlet{i}.dump' -Server '{cluster.ServerArgument}' -TargetDatabase cmdlet_{i}"))),
};

Console.WriteLine();
Console.WriteLine("| operation | raw tool (median) | PgBackup cmdlet (median) | ratio |");
Console.WriteLine("|---|---|---|---|");
foreach (var (name, raw, cmdlet) in cases)
{
    var rawTimes = new List<TimeSpan>();
    var cmdletTimes = new List<TimeSpan>();
    for (var i = 0; i < rounds; i++)
    {
        if (i % 2 == 0) { rawTimes.Add(raw(i)); cmdletTimes.Add(cmdlet(i)); }
        else { cmdletTimes.Add(cmdlet(i)); rawTimes.Add(raw(i)); }
    }
    var r = BenchSupport.Median(rawTimes);
    var c = BenchSupport.Median(cmdletTimes);
    Console.WriteLine($"| {name} | {r.TotalSeconds:0.00} s | {c.TotalSeconds:0.00} s | {c / r:0.00} |");
}
// What the restore pays on purpose: the SHA-256 of the dump is verified before anything is touched.
var dumpFile = $"{work}/cmdlet0.dump";
var hashTime = BenchSupport.Median(Enumerable.Range(0, rounds).Select(_ => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$s = [System.IO.File]::OpenRead('{dumpFile}'); try {{ $null = [System.Security.Cryptography.SHA256]::HashData($s) }} finally {{ $s.Dispose() }}"))).ToList());
Console.WriteLine();
Console.WriteLine($"Custom dump size: {new FileInfo(dumpFile).Length / 1024 / 1024} MB; its SHA-256 takes {hashTime.TotalSeconds:0.00} s (part of every PgBackup dump and restore).");
Directory.Delete(work, recursive: true);




