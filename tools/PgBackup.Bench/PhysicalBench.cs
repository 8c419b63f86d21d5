using System.Diagnostics;
using System.Management.Automation;
using System.Management.Automation.Runspaces;
using PgBackup.Testing;

/// <summary>
/// Base backups on a database of about 1 GB (pgbench tables plus a table of random text), in one run:
/// Start-PgBaseBackup against pg_basebackup called directly (with and without the verification PgBackup adds),
/// against copying the data directory (the disk's limit), and against full backups by pgBackRest.
/// </summary>
public static class PhysicalBench
{
    public static void Run(int scale, int rounds)
    {
        var root = FindRoot();
        var manifest = Directory.GetFiles(Path.Combine(root, "out", "PgBackup"), "PgBackup.psd1", SearchOption.AllDirectories).Single();
        var work = Path.Combine(Path.GetTempPath(), "pgbackup-physbench-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(work);
        Chown(work);
        var pgbackrest = new[] { "/usr/bin/pgbackrest" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("pgBackRest is needed for this benchmark: apt-get install -y pgbackrest");
        var conf = Path.Combine(work, "pgbackrest.conf");

        using var cluster = PgTestCluster.Start("physbench", new Dictionary<string, string>
        {
            ["archive_mode"] = "on",
            ["archive_command"] = $"'{pgbackrest} --config={conf} --stanza=bench archive-push %p'",
            ["max_wal_size"] = "4GB",
        });
        File.WriteAllText(conf, $"""
            [global]
            repo1-path={work}/pgbackrest-repo
            log-path={work}/pgbackrest-log
            lock-path={work}/pgbackrest-lock
            log-level-console=warn
            start-fast=y
            repo1-retention-full=1

            [bench]
            pg1-path={cluster.DataDirectory}
            pg1-port={cluster.Port}
            pg1-socket-path={cluster.SocketDirectory}
            pg1-user=postgres
            """);
        Chown(work);
        AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "stanza-create");

        Console.WriteLine($"Creating the benchmark database: pgbench scale {scale} plus a table of random text...");
        cluster.CreateDatabase("bench");
        cluster.RunTool("pgbench", "-i", "-q", "-s", scale.ToString(), "--dbname=" + cluster.ConnectionString("bench"));
        cluster.Psql("create table notes as select g as id, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) as body from generate_series(1, " + scale * 40_000 + ") g", "bench");
        cluster.Psql("checkpoint");
        var size = long.Parse(cluster.Psql("select sum(pg_database_size(oid)) from pg_database"));
        Console.WriteLine($"Cluster size: {size / 1024 / 1024} MB; PostgreSQL {PgTestCluster.MajorVersion}; {Environment.ProcessorCount} cores; {rounds} rounds");
        Environment.SetEnvironmentVariable("PGPASSFILE", PgTestCluster.PgPassFile);
        Environment.SetEnvironmentVariable("PGUSER", PgTestCluster.SuperUser);

        using var runspace = RunspaceFactory.CreateRunspace(InitialSessionState.CreateDefault2());
        runspace.Open();
        Ps(runspace, $"Import-Module '{manifest}' -ErrorAction Stop");

        var bin = PgTestCluster.BinDirectory;
        var n = 0;
        string Next(string name) => Path.Combine(work, $"{name}{Interlocked.Increment(ref n)}");
        var cases = new (string Name, Func<TimeSpan> Run)[]
        {
            ("pg_basebackup (plain, -X stream)", () => Time(() => cluster.RunTool("pg_basebackup", "-D", Next("raw"), "-X", "stream", "-c", "fast"))),
            ("pg_basebackup + SHA-256 manifest + pg_verifybackup", () => Time(() =>
            {
                var target = Next("rawv");
                cluster.RunTool("pg_basebackup", "-D", target, "-X", "stream", "-c", "fast", "--manifest-checksums=SHA256");
                Check(ProcessRunner.Run(Path.Combine(bin, "pg_verifybackup"), ["--quiet", target]));
            })),
            ("Start-PgBaseBackup (plain, verified)", () => Time(() => Ps(runspace, $"$null = Start-PgBaseBackup -Server '{cluster.ServerArgument}' -Path '{Next("cmdlet")}'"))),
            ("cp -a of the data directory", () => Time(() => Check(ProcessRunner.Run("cp", ["-a", cluster.DataDirectory, Next("copy")])))),
            ("pgBackRest full, process-max 1, compress none", () => Time(() => AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--type=full", "--process-max=1", "--compress-type=none", "backup"))),
            ("pgBackRest full, process-max 2, compress none", () => Time(() => AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--type=full", "--process-max=2", "--compress-type=none", "backup"))),
            ("pgBackRest full, process-max 1, compress lz4", () => Time(() => AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--type=full", "--process-max=1", "--compress-type=lz4", "backup"))),
            ("pgBackRest full, process-max 2, compress lz4", () => Time(() => AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--type=full", "--process-max=2", "--compress-type=lz4", "backup"))),
        };

        var times = cases.ToDictionary(c => c.Name, _ => new List<TimeSpan>());
        for (var round = 0; round < rounds; round++)
        {
            // Rotate the order every round so no case always runs first (cold caches) or last.
            foreach (var (name, run) in cases.Skip(round % cases.Length).Concat(cases.Take(round % cases.Length)))
            {
                times[name].Add(run());
                CleanBackups(work);
            }
        }
        var reference = Median(times["pg_basebackup (plain, -X stream)"]);
        Console.WriteLine();
        Console.WriteLine("| base backup | median | vs pg_basebackup |");
        Console.WriteLine("|---|---|---|");
        foreach (var (name, _) in cases)
            Console.WriteLine($"| {name} | {Median(times[name]).TotalSeconds:0.00} s | {Median(times[name]) / reference:0.00} |");
        Directory.Delete(work, recursive: true);
    }

    private static void CleanBackups(string work)
    {
        foreach (var dir in Directory.GetDirectories(work).Where(d => !Path.GetFileName(d).StartsWith("pgbackrest", StringComparison.Ordinal)))
            Directory.Delete(dir, recursive: true);
    }

    private static void AsPostgres(string program, params string[] args) =>
        Check(Environment.IsPrivilegedProcess
            ? ProcessRunner.Run("runuser", ["-u", "postgres", "--", program, .. args], timeout: TimeSpan.FromMinutes(30))
            : ProcessRunner.Run(program, args, timeout: TimeSpan.FromMinutes(30)));

    private static void Chown(string path)
    {
        if (Environment.IsPrivilegedProcess) Check(ProcessRunner.Run("chown", ["-R", "postgres:postgres", path]));
    }

    private static void Check((int ExitCode, string StdOut, string StdErr) result)
    {
        if (result.ExitCode != 0) throw new InvalidOperationException(result.StdErr);
    }

    private static void Ps(Runspace runspace, string script)
    {
        using var ps = PowerShell.Create();
        ps.Runspace = runspace;
        ps.AddScript(script);
        ps.Invoke();
        if (ps.HadErrors) throw new InvalidOperationException(string.Join("; ", ps.Streams.Error));
    }

    private static TimeSpan Time(Action action)
    {
        var sw = Stopwatch.StartNew();
        action();
        return sw.Elapsed;
    }

    private static TimeSpan Median(List<TimeSpan> times) => times.Order().ElementAt(times.Count / 2);

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PgBackup.sln"))) return dir.FullName;
        throw new InvalidOperationException("Run the benchmark from inside the PgBackup repository.");
    }
}
