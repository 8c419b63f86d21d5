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
        WriteConf(conf, work, cluster);
        Chown(work);
        AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "stanza-create");

        Console.WriteLine($"Creating the benchmark database: pgbench scale {scale} plus a table of random text...");
        FillBenchDatabase(cluster, scale);
        Console.WriteLine($"{rounds} rounds");
        Environment.SetEnvironmentVariable("PGPASSFILE", PgTestCluster.PgPassFile);
        Environment.SetEnvironmentVariable("PGUSER", PgTestCluster.SuperUser);

        using var runspace = BenchSupport.OpenRunspaceWithModule();

        var bin = PgTestCluster.BinDirectory;
        var n = 0;
        string Next(string name) => Path.Combine(work, $"{name}{Interlocked.Increment(ref n)}");
        var cases = new (string Name, Func<TimeSpan> Run)[]
        {
            ("pg_basebackup (plain, -X stream)", () => BenchSupport.Time(() => cluster.RunTool("pg_basebackup", "-D", Next("raw"), "-X", "stream", "-c", "fast"))),
            ("pg_basebackup + pg_verifybackup (CRC-32C manifest)", () => BenchSupport.Time(() =>
            {
                var target = Next("rawc");
                cluster.RunTool("pg_basebackup", "-D", target, "-X", "stream", "-c", "fast");
                Check(ProcessRunner.Run(Path.Combine(bin, "pg_verifybackup"), ["--quiet", target]));
            })),
            ("pg_basebackup + SHA-256 manifest + pg_verifybackup", () => BenchSupport.Time(() =>
            {
                var target = Next("rawv");
                cluster.RunTool("pg_basebackup", "-D", target, "-X", "stream", "-c", "fast", "--manifest-checksums=SHA256");
                Check(ProcessRunner.Run(Path.Combine(bin, "pg_verifybackup"), ["--quiet", target]));
            })),
            ("Start-PgBaseBackup (plain, verified)", () => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Start-PgBaseBackup -Server '{cluster.ServerArgument}' -Path '{Next("cmdlet")}'"))),
            ("pg_basebackup (tar, -X stream)", () => BenchSupport.Time(() => cluster.RunTool("pg_basebackup", "-D", Next("rawtar"), "-Ft", "-X", "stream", "-c", "fast"))),
            ("Start-PgBaseBackup (tar, verified)", () => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Start-PgBaseBackup -Server '{cluster.ServerArgument}' -Path '{Next("cmdlettar")}' -Format Tar"))),
            ("cp -a of the data directory", () => BenchSupport.Time(() => Check(ProcessRunner.Run("cp", ["-a", cluster.DataDirectory, Next("copy")])))),
            ("pgBackRest full, process-max 1, compress none", () => BenchSupport.Time(() => AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--type=full", "--process-max=1", "--compress-type=none", "backup"))),
            ("pgBackRest full, process-max 2, compress none", () => BenchSupport.Time(() => AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--type=full", "--process-max=2", "--compress-type=none", "backup"))),
            ("pgBackRest full, process-max 1, compress lz4", () => BenchSupport.Time(() => AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--type=full", "--process-max=1", "--compress-type=lz4", "backup"))),
            ("pgBackRest full, process-max 2, compress lz4", () => BenchSupport.Time(() => AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--type=full", "--process-max=2", "--compress-type=lz4", "backup"))),
        };

        var times = cases.ToDictionary(c => c.Name, _ => new List<TimeSpan>());
        for (var round = 0; round < rounds; round++)
        {
            // A new order every round, so no case always runs first or always after the same one: this VM's disk is mounted
            // with online discard, and whatever follows the deletion of the last backup writes into freshly discarded blocks.
            var shuffle = new Random(round);
            foreach (var (name, run) in cases.OrderBy(_ => shuffle.Next()))
            {
                times[name].Add(run());
                CleanBackups(work);
            }
        }
        var reference = BenchSupport.Median(times["pg_basebackup (plain, -X stream)"]);
        Console.WriteLine();
        Console.WriteLine("| base backup | median | vs pg_basebackup |");
        Console.WriteLine("|---|---|---|");
        foreach (var (name, _) in cases)
            Console.WriteLine($"| {name} | {BenchSupport.Median(times[name]).TotalSeconds:0.00} s | {BenchSupport.Median(times[name]) / reference:0.00} |");

        ArchiveCommands(cluster, work, conf, pgbackrest, rounds);
        Directory.Delete(work, recursive: true);
    }

    /// <summary>
    /// Only Start-PgBaseBackup against a bare pg_basebackup, in back-to-back pairs whose order alternates, reporting the
    /// median of the per-pair ratios: on a small machine whose disk and CPU speed drift over minutes, pairs measure a few
    /// percent that medians of separate series lose in the noise.
    /// </summary>
    public static void RunPairs(int scale, int pairs, bool tar)
    {
        var work = Path.Combine(Path.GetTempPath(), "pgbackup-physpairs-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(work);
        Chown(work);
        using var cluster = PgTestCluster.Start("physpairs", new Dictionary<string, string> { ["max_wal_size"] = "4GB" });
        Console.WriteLine($"Creating the benchmark database: pgbench scale {scale} plus a table of random text...");
        FillBenchDatabase(cluster, scale);
        Environment.SetEnvironmentVariable("PGPASSFILE", PgTestCluster.PgPassFile);
        Environment.SetEnvironmentVariable("PGUSER", PgTestCluster.SuperUser);
        using var runspace = BenchSupport.OpenRunspaceWithModule();
        var n = 0;
        string Next(string name) => Path.Combine(work, $"{name}{Interlocked.Increment(ref n)}");
        TimeSpan Bare() => BenchSupport.Time(() => cluster.RunTool("pg_basebackup", "-D", Next("raw"), "-X", "stream", "-c", "fast", tar ? "-Ft" : "-Fp"));
        TimeSpan Cmdlet() => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Start-PgBaseBackup -Server '{cluster.ServerArgument}' -Path '{Next("cmdlet")}'" + (tar ? " -Format Tar" : "")));
        // One of each first, so neither pays for warming up the runspace or the page cache in the figures.
        Bare(); CleanBackups(work); Cmdlet(); CleanBackups(work);

        var ratios = new List<double>();
        var bare = new List<TimeSpan>();
        var cmdlet = new List<TimeSpan>();
        Console.WriteLine($"{(tar ? "Tar" : "Plain")} format, -X stream");
        Console.WriteLine("| pair | pg_basebackup | Start-PgBaseBackup | ratio |");
        Console.WriteLine("|---|---|---|---|");
        for (var i = 0; i < pairs; i++)
        {
            TimeSpan b, c;
            if (i % 2 == 0) { b = Bare(); CleanBackups(work); c = Cmdlet(); CleanBackups(work); }
            else { c = Cmdlet(); CleanBackups(work); b = Bare(); CleanBackups(work); }
            bare.Add(b);
            cmdlet.Add(c);
            ratios.Add(c / b);
            Console.WriteLine($"| {i + 1} | {b.TotalSeconds:0.000} s | {c.TotalSeconds:0.000} s | {c / b:0.000} |");
        }
        ratios.Sort();
        Console.WriteLine();
        Console.WriteLine($"Median of {pairs} pair ratios: {ratios[pairs / 2]:0.000} (quartiles {ratios[pairs / 4]:0.000} to {ratios[3 * pairs / 4]:0.000}); " +
            $"medians {BenchSupport.Median(bare).TotalSeconds:0.000} s and {BenchSupport.Median(cmdlet).TotalSeconds:0.000} s");
        Directory.Delete(work, recursive: true);
    }

    internal static void FillBenchDatabase(PgTestCluster cluster, int scale)
    {
        cluster.CreateDatabase("bench");
        cluster.RunTool("pgbench", "-i", "-q", "-s", scale.ToString(), "bench");
        cluster.Psql("create table notes as select g as id, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) as body from generate_series(1, " + scale * 40_000 + ") g", "bench");
        cluster.Psql("checkpoint");
        var size = long.Parse(cluster.Psql("select sum(pg_database_size(oid)) from pg_database"));
        Console.WriteLine($"Cluster size: {size / 1024 / 1024} MB; PostgreSQL {PgTestCluster.MajorVersion}; {Environment.ProcessorCount} cores");
    }

    /// <summary>
    /// The per-segment cost of an archive command: real, completed 16 MB segments of this cluster pushed one by one into a
    /// fresh archive by cp, by pgbackup-wal and by pgbackrest archive-push, each started as a new process as PostgreSQL does.
    /// </summary>
    private static void WriteConf(string conf, string work, PgTestCluster cluster) => File.WriteAllText(conf, $"""
            [global]
            repo1-path={work}/pgbackrest-repo
            log-path={work}/pgbackrest-log
            lock-path={work}/pgbackrest-lock
            log-level-console=warn
            start-fast=y
            repo1-retention-full=1

            {PhysicalBench.Stanza(cluster)}
            """);

    /// <summary>The [bench] stanza of a pgbackrest.conf, for the cluster every pgBackRest case backs up or archives.</summary>
    internal static string Stanza(PgTestCluster cluster) => $"""
        [bench]
        pg1-path={cluster.DataDirectory}
        pg1-port={cluster.Port}
        pg1-socket-path={cluster.SocketDirectory}
        pg1-user=postgres
        """;

    /// <summary>Only the per-segment cost of the archive commands into a folder, on a small cluster.</summary>
    public static void RunArchiveCommands(int rounds)
    {
        var work = Path.Combine(Path.GetTempPath(), "pgbackup-walbench-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(work);
        var pgbackrest = new[] { "/usr/bin/pgbackrest" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("pgBackRest is needed for this benchmark: apt-get install -y pgbackrest");
        var conf = Path.Combine(work, "pgbackrest.conf");
        using var cluster = PgTestCluster.Start("walbench");
        WriteConf(conf, work, cluster);
        Chown(work);
        FillBenchDatabase(cluster, 1);
        ArchiveCommands(cluster, work, conf, pgbackrest, rounds);
        Directory.Delete(work, recursive: true);
    }

    private static void ArchiveCommands(PgTestCluster cluster, string work, string conf, string pgbackrest, int rounds)
    {
        var staging = StageSegments(cluster, work);
        var tool = WalTool();
        var native = NativeWalTool();
        var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "/usr/share/dotnet/dotnet";
        PerSegment(staging, work, rounds, "run as the postgres user",
        [
            ("cp", (seg, dest) => ["cp", seg, dest + "/"], null),
            ("cp + sync", (seg, dest) => ["sh", "-c", $"cp '{seg}' '{dest}/' && sync '{dest}/{Path.GetFileName(seg)}'"], null),
            ("pgbackup-wal push, native", (seg, dest) => [native, "push", seg, dest], null),
            ("pgbackup-wal push, portable (dotnet pgbackup-wal.dll)", (seg, dest) => [dotnet, tool, "push", seg, dest], null),
            ("pgbackrest archive-push, compress none", (seg, dest) => [pgbackrest, $"--config={conf}", "--stanza=bench", $"--repo1-path={dest}", "--compress-type=none", "archive-push", seg],
                dest => AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", $"--repo1-path={dest}", "stanza-create")),
            ("pgbackrest archive-push, compress lz4", (seg, dest) => [pgbackrest, $"--config={conf}", "--stanza=bench", $"--repo1-path={dest}", "--compress-type=lz4", "archive-push", seg],
                dest => AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", $"--repo1-path={dest}", "stanza-create")),
        ]);
    }

    internal const int StagedSegments = 10;

    /// <summary>Real, completed 16 MB segments of this cluster, copied into &lt;work&gt;/segments.</summary>
    internal static string StageSegments(PgTestCluster cluster, string work)
    {
        var staging = Directory.CreateDirectory(Path.Combine(work, "segments")).FullName;
        for (var i = 0; i < StagedSegments; i++) cluster.Psql("insert into pgbench_history(tid, bid, aid, delta, mtime) values (1, 1, 1, 1, now()); select pg_switch_wal();", "bench");
        var current = cluster.Psql("select pg_walfile_name(pg_current_wal_lsn())");
        var done = Directory.GetFiles(Path.Combine(cluster.DataDirectory, "pg_wal")).Select(Path.GetFileName)
            .Where(n => n!.Length == 24 && string.CompareOrdinal(n, current) < 0).Order().TakeLast(StagedSegments).ToList();
        foreach (var name in done) File.Copy(Path.Combine(cluster.DataDirectory, "pg_wal", name!), Path.Combine(staging, name!));
        Chown(work);
        return staging;
    }

    internal static string WalTool() =>
        Directory.GetFiles(Path.Combine(BenchSupport.RepositoryRoot(), "out", "PgBackup"), "pgbackup-wal.dll", SearchOption.AllDirectories).Single();

    /// <summary>The module's native build for this machine (WalArchive/&lt;rid&gt;/pgbackup-wal).</summary>
    internal static string NativeWalTool() =>
        Directory.GetFiles(Path.Combine(BenchSupport.RepositoryRoot(), "out", "PgBackup"), "pgbackup-wal", SearchOption.AllDirectories).SingleOrDefault()
        ?? throw new InvalidOperationException("The module has no native pgbackup-wal: install a C toolchain (apt-get install gcc libc6-dev zlib1g-dev) and build again.");

    /// <summary>
    /// Each command pushes the staged segments one by one into a fresh destination, each push a new process as PostgreSQL
    /// starts it, as the postgres user; prints the median per segment against the first command.
    /// </summary>
    internal static void PerSegment(string staging, string work, int rounds, string how,
        (string Name, Func<string, string, string[]> Command, Action<string>? Prepare)[] commands)
    {
        var perSegment = commands.ToDictionary(c => c.Name, _ => new List<TimeSpan>());
        for (var round = 0; round < rounds; round++)
            foreach (var (name, command, prepare) in commands)
            {
                var dest = Path.Combine(work, "archive-" + Guid.NewGuid().ToString("N")[..6]);
                Directory.CreateDirectory(dest);
                Chown(dest);
                prepare?.Invoke(dest);
                var elapsed = BenchSupport.Time(() =>
                {
                    foreach (var seg in Directory.GetFiles(staging).Order())
                    {
                        var argv = command(seg, dest);
                        AsPostgres(argv[0], argv[1..]);
                    }
                });
                perSegment[name].Add(elapsed / StagedSegments);
                Directory.Delete(dest, recursive: true);
            }
        var reference = BenchSupport.Median(perSegment[commands[0].Name]);
        Console.WriteLine();
        Console.WriteLine($"| archive command, per 16 MB segment ({StagedSegments} segments, {how}) | median | vs {commands[0].Name} |");
        Console.WriteLine("|---|---|---|");
        foreach (var (name, _, _) in commands)
            Console.WriteLine($"| {name} | {BenchSupport.Median(perSegment[name]).TotalMilliseconds:0} ms | {BenchSupport.Median(perSegment[name]) / reference:0.0} |");
    }

    internal static void CleanBackups(string work)
    {
        foreach (var dir in Directory.GetDirectories(work).Where(d => !Path.GetFileName(d).StartsWith("pgbackrest", StringComparison.Ordinal) && Path.GetFileName(d) != "segments"))
            Directory.Delete(dir, recursive: true);
        // Every case starts with nothing of the one before left to write back: cp -a and pgBackRest leave their copies in
        // the page cache, which would slow whichever case comes next.
        Check(ProcessRunner.Run("sync", []));
        // The virtual disk is busy for a while after sync returns (the deletion above discards 1.3 GB on a disk mounted with
        // online discard); whichever case came next ran up to 20% slower.
        Thread.Sleep(TimeSpan.FromSeconds(5));
    }

    internal static void AsPostgres(string program, params string[] args) =>
        Check(Environment.IsPrivilegedProcess
            ? ProcessRunner.Run("runuser", ["-u", "postgres", "--", program, .. args], timeout: TimeSpan.FromMinutes(30))
            : ProcessRunner.Run(program, args, timeout: TimeSpan.FromMinutes(30)));

    internal static void Chown(string path)
    {
        if (Environment.IsPrivilegedProcess) Check(ProcessRunner.Run("chown", ["-R", "postgres:postgres", path]));
    }

    internal static void Check((int ExitCode, string StdOut, string StdErr) result)
    {
        if (result.ExitCode != 0) throw new InvalidOperationException(result.StdErr);
    }




}
