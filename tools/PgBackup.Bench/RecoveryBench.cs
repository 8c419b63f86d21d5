using System.Globalization;
using PgBackup.Testing;

/// <summary>
/// Point-in-time recovery of a pgbench database of about 1 GB plus about 1 GB of archived WAL to a time in the middle of
/// that WAL, in one run: Restore-PgPointInTime against the same steps done by hand in a shell script (cp -a of the base
/// backup, restore_command = cp, recovery settings, recovery.signal, pg_ctl start, wait for the promotion).
/// </summary>
public static class RecoveryBench
{
    public static void Run(int scale, int rounds)
    {
        var work = Path.Combine(Path.GetTempPath(), "pgbackup-pitrbench-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(work);
        Chown(work);
        var repository = Path.Combine(work, "repo");
        using var cluster = PgTestCluster.Start("pitrbench", new Dictionary<string, string> { ["max_wal_size"] = "4GB", ["checkpoint_timeout"] = "30min" });
        Environment.SetEnvironmentVariable("PGPASSFILE", PgTestCluster.PgPassFile);
        Environment.SetEnvironmentVariable("PGUSER", PgTestCluster.SuperUser);
        using var runspace = BenchSupport.OpenRunspaceWithModule();
        BenchSupport.Invoke(runspace, $"$null = Enable-PgWalArchiving -Server '{cluster.ServerArgument}' -Repository '{repository}' -Restart -Confirm:$false");

        Console.WriteLine($"Creating the benchmark database: pgbench scale {scale}...");
        cluster.CreateDatabase("bench");
        cluster.RunTool("pgbench", "-i", "-q", "-s", scale.ToString(CultureInfo.InvariantCulture), "bench");
        cluster.Psql("checkpoint");
        BenchSupport.Invoke(runspace, $"$global:backup = Start-PgBaseBackup -Server '{cluster.ServerArgument}' -Repository '{repository}'");
        var backupPath = Directory.GetDirectories(Path.Combine(repository), "base_*", SearchOption.AllDirectories).Single();

        Console.WriteLine("Writing about 1 GB of WAL with pgbench, the target time in the middle...");
        var start = Lsn(cluster);
        WriteWal(cluster, start, 512L << 20);
        var target = cluster.Psql("select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'");
        Thread.Sleep(50);
        WriteWal(cluster, start, 1L << 30);
        var segment = cluster.Psql("select pg_walfile_name(pg_switch_wal())");
        while (string.CompareOrdinal(cluster.Psql("select coalesce(last_archived_wal, '') from pg_stat_archiver"), segment) < 0) Thread.Sleep(200);
        var archive = Directory.GetDirectories(Path.Combine(repository, "wal")).Single();
        var size = long.Parse(cluster.Psql("select pg_database_size('bench')"), CultureInfo.InvariantCulture);
        Console.WriteLine($"Database {size >> 20} MB; WAL after the backup {(Lsn(cluster) - start) >> 20} MB; target {target}; PostgreSQL {PgTestCluster.MajorVersion}; {Environment.ProcessorCount} cores; {rounds} rounds");

        var n = 0;
        string Next(string name) => Path.Combine(work, $"{name}{Interlocked.Increment(ref n)}");
        var cases = new (string Name, Func<TimeSpan> Run)[]
        {
            ("Restore-PgPointInTime", () =>
            {
                var directory = Next("cmdlet");
                var time = BenchSupport.Time(() => BenchSupport.Invoke(runspace,
                    $"$global:recovered = $global:backup | Restore-PgPointInTime -TargetTime '{target}' -DataDirectory '{directory}' -Port {FreePort.Next()} -Confirm:$false"));
                var phases = BenchSupport.InvokeText(runspace, "'restore {0:0.00} s, replay {1:0.00} s, total {2:0.00} s' -f $global:recovered.RestoreDuration.TotalSeconds, $global:recovered.ReplayDuration.TotalSeconds, $global:recovered.TotalDuration.TotalSeconds");
                Console.WriteLine($"    (cmdlet: {phases})");
                BenchSupport.Invoke(runspace, $"Remove-PgInstance '{directory}' -Confirm:$false");
                return time;
            }),
            ("shell script: cp -a, cp restore_command, pg_ctl start, wait", () =>
            {
                var directory = Next("script");
                var script = Path.Combine(work, "recover.sh");
                File.WriteAllText(script, HandScript);
                var port = FreePort.Next().ToString(CultureInfo.InvariantCulture);
                (int, string, string) run = (0, "", "");
                var time = BenchSupport.Time(() => run = ProcessRunner.Run("bash", [script, backupPath, directory, archive, target, port, PgTestCluster.BinDirectory], timeout: TimeSpan.FromHours(1)));
                Check(run);
                Console.WriteLine($"    (script: {run.Item2.Trim()})");
                Check(ProcessRunner.Run("runuser", ["-u", "postgres", "--", Path.Combine(PgTestCluster.BinDirectory, "pg_ctl"), "stop", "-D", directory, "-m", "immediate", "-w"]));
                Directory.Delete(directory, recursive: true);
                return time;
            }),
        };

        var times = cases.ToDictionary(c => c.Name, _ => new List<TimeSpan>());
        for (var round = 0; round < rounds; round++)
            foreach (var c in round % 2 == 0 ? cases : cases.Reverse())
            {
                var t = c.Run();
                times[c.Name].Add(t);
                Console.WriteLine($"  round {round + 1}: {c.Name}: {t.TotalSeconds:0.00} s");
            }
        var script_ = BenchSupport.Median(times[cases[1].Name]);
        Console.WriteLine();
        foreach (var c in cases)
            Console.WriteLine($"{c.Name,-62} median {BenchSupport.Median(times[c.Name]).TotalSeconds,7:0.00} s   ratio to the script {BenchSupport.Median(times[c.Name]) / script_:0.00}");
        Directory.Delete(work, recursive: true);
    }

    /// <summary>What an admin would type: copy, configure, start, wait until promoted. Run as root, starting the server as postgres.</summary>
    private const string HandScript = """
        set -euo pipefail
        backup=$1; data=$2; archive=$3; target=$4; port=$5; bin=$6
        t0=$(date +%s.%N)
        cp -a "$backup" "$data"
        rm -f "$data/backup_manifest"
        cat >> "$data/postgresql.auto.conf" <<EOF
        port = $port
        unix_socket_directories = '/tmp'
        listen_addresses = 'localhost'
        archive_mode = off
        restore_command = 'cp $archive/%f %p'
        recovery_target_time = '$target'
        recovery_target_action = 'promote'
        EOF
        touch "$data/recovery.signal"
        chown -R postgres: "$data"
        chmod 700 "$data"
        t1=$(date +%s.%N)
        runuser -u postgres -- "$bin/pg_ctl" start -D "$data" -l "$data/server.log" -w -t 3600 >/dev/null
        until [ "$(runuser -u postgres -- "$bin/psql" -h /tmp -p "$port" -d postgres -Atc 'select pg_is_in_recovery()' 2>/dev/null)" = "f" ]; do sleep 0.2; done
        t2=$(date +%s.%N)
        awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "copy and configure %.2f s, start and replay %.2f s", b - a, c - b }'
        """;

    private static long Lsn(PgTestCluster cluster) => long.Parse(cluster.Psql("select pg_current_wal_lsn() - '0/0'"), CultureInfo.InvariantCulture);

    private static void WriteWal(PgTestCluster cluster, long start, long until)
    {
        while (Lsn(cluster) - start < until)
            cluster.RunTool("pgbench", "-n", "-c", "2", "-j", "2", "-T", "5", "bench");
    }

    private static void Check((int ExitCode, string StdOut, string StdErr) result)
    {
        if (result.ExitCode != 0) throw new InvalidOperationException($"exit code {result.ExitCode}: {result.StdErr}{result.StdOut}");
    }

    private static void Chown(string path) => Check(ProcessRunner.Run("chown", ["-R", "postgres:", path]));
}
