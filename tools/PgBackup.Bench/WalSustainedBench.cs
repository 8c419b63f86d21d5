using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Runtime.Loader;
using System.Text.RegularExpressions;
using Azure.Storage.Blobs;
using PgBackup.Testing;

/// <summary>
/// Sustained WAL archiving, in one run: on a fresh cluster per case, pgbench writes as fast as it can for a fixed time while
/// the archive_command keeps up or falls behind, then the archive drains. pgbackup-wal pushing ahead 2 at a time, and
/// synchronously, against pgBackRest's asynchronous archive-push (process-max 2), into a folder and into Azurite over HTTPS.
/// Every 200 ms it counts the .ready files in pg_wal/archive_status and reads pg_stat_archiver; it reports the WAL written,
/// the archiving rate in the window and with the drain, the largest backlog, the failures, and whether the archive holds
/// every segment from the first to the last without a gap.
/// </summary>
public static class WalSustainedBench
{
    private const string Clients = "4", Threads = "2";
    private static readonly TimeSpan SampleEvery = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan DrainLimit = TimeSpan.FromMinutes(15);

    /// <summary>Prepare makes the archive (given the cluster and a folder of its own) and returns the archive_command, and what lists the archive's files.</summary>
    private sealed record Case(string Name, Func<PgTestCluster, string, (string ArchiveCommand, Func<IEnumerable<string>> List)> Prepare);

    private sealed record Result(string Name, decimal WalBytes, double Tps, TimeSpan Window, long ArchivedInWindow, long Archived,
        TimeSpan Drain, int MaxReady, long Failed, long SegmentSize, string Check);

    public static void Run(int seconds, string? only = null)
    {
        var work = Path.Combine(Path.GetTempPath(), "pgbackup-walsustained-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(work);
        var pgbackrest = new[] { "/usr/bin/pgbackrest" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("pgBackRest is needed for this benchmark: apt-get install -y pgbackrest");
        var cert = BlobBench.TrustedCertificate(work);
        if (cert == null) return;

        var tool = EngineWalTool();
        using var azurite = AzuriteServer.Launch(cert, cert + ".key");
        var service = new BlobServiceClient(azurite.ConnectionString.Replace("http://", "https://", StringComparison.Ordinal));
        service.GetBlobContainerClient("pgbackrest").CreateIfNotExists();
        var credentials = BlobBench.WriteWalCredentials(work);
        PhysicalBench.Chown(work);

        // pgBackRest's asynchronous archiving: archive-push hands the segment to a background process that pushes the next
        // ready ones too, process-max of them at once, and answers PostgreSQL from its spool.
        string PgBackRest(PgTestCluster cluster, string dir, string repository, string compress = "lz4")
        {
            var conf = Path.Combine(dir, "pgbackrest.conf");
            File.WriteAllText(conf, $"""
                [global]
                {repository}
                archive-async=y
                process-max=2
                compress-type={compress}
                spool-path={dir}/pgbackrest-spool
                log-path={dir}/pgbackrest-log
                lock-path={dir}/pgbackrest-lock
                log-level-console=warn

                {PhysicalBench.Stanza(cluster)}
                """);
            PhysicalBench.Chown(dir);
            PhysicalBench.AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "stanza-create");
            return $"{pgbackrest} --config={conf} --stanza=bench archive-push %p";
        }
        (string, Func<IEnumerable<string>>) PgBackupFolder(string dir, int parallel, bool compress = false)
        {
            var archive = Directory.CreateDirectory(Path.Combine(dir, "archive")).FullName;
            PhysicalBench.Chown(dir);
            return ((string)tool.ArchiveCommand(archive, parallel: parallel, compress: compress), () => Directory.GetFiles(archive).Select(f => Path.GetFileName(f)));
        }
        (string, Func<IEnumerable<string>>) PgBackupAzurite(int parallel, bool compress = false)
        {
            var container = "w" + Guid.NewGuid().ToString("N")[..16];
            service.GetBlobContainerClient(container).Create();
            return ((string)tool.ArchiveCommand($"{azurite.ServiceUrl}/{container}/wal/1", credentials, parallel: parallel, compress: compress), () => Blobs(container, "wal/1/"));
        }
        IEnumerable<string> Blobs(string container, string prefix) =>
            service.GetBlobContainerClient(container).GetBlobs(new Azure.Storage.Blobs.Models.GetBlobsOptions { Prefix = prefix }).Select(b => b.Name[(b.Name.LastIndexOf('/') + 1)..]);

        Case[] cases =
        [
            new("PgBackup, folder, --parallel 2", (_, dir) => PgBackupFolder(dir, 2)),
            new("PgBackup, folder, --parallel 2 --compress", (_, dir) => PgBackupFolder(dir, 2, compress: true)),
            new("PgBackup, folder, synchronous (parallel 1)", (_, dir) => PgBackupFolder(dir, 1)),
            new("pgBackRest, folder, archive-async, process-max 2, lz4", (cluster, dir) =>
                (PgBackRest(cluster, dir, $"repo1-path={dir}/repo"),
                 () => Directory.EnumerateFiles(Path.Combine(dir, "repo", "archive"), "*", SearchOption.AllDirectories).Select(f => Path.GetFileName(f)))),
            new("PgBackup, Azurite, --parallel 2", (_, _) => PgBackupAzurite(2)),
            new("PgBackup, Azurite, --parallel 2 --compress", (_, _) => PgBackupAzurite(2, compress: true)),
            new("PgBackup, Azurite, --parallel 4", (_, _) => PgBackupAzurite(4)),
            new("PgBackup, Azurite, --parallel 4 --compress", (_, _) => PgBackupAzurite(4, compress: true)),
            new("pgBackRest, Azurite, archive-async, process-max 2, lz4", (cluster, dir) =>
            {
                var path = "s" + Guid.NewGuid().ToString("N")[..16];
                return (PgBackRest(cluster, dir, BlobBench.PgBackRestAzureRepository(azurite) + $"\nrepo1-path=/{path}"), () => Blobs("pgbackrest", path + "/archive/"));
            }),
            new("pgBackRest, Azurite, archive-async, process-max 2, compress none", (cluster, dir) =>
            {
                var path = "s" + Guid.NewGuid().ToString("N")[..16];
                return (PgBackRest(cluster, dir, BlobBench.PgBackRestAzureRepository(azurite) + $"\nrepo1-path=/{path}", "none"), () => Blobs("pgbackrest", path + "/archive/"));
            }),
        ];
        // Cases whose name contains one of the '|'-separated words of the filter, to compare a few in less time.
        if (only != null) cases = cases.Where(c => only.Split('|').Any(w => c.Name.Contains(w, StringComparison.OrdinalIgnoreCase))).ToArray();

        Console.WriteLine($"Sustained WAL archiving: pgbench -c {Clients} -j {Threads} -T {seconds} -n with a script that writes 5000 wide rows per transaction (about 1.5 MB of WAL), a fresh cluster per case " +
            $"(max_wal_size 4GB, wal_compression off; the test clusters run with fsync off and synchronous_commit off); " +
            $"PostgreSQL {PgTestCluster.MajorVersion}; {Environment.ProcessorCount} cores; Azurite on loopback over HTTPS");
        var results = new List<Result>();
        for (var i = 0; i < cases.Length; i++)
        {
            Console.WriteLine($"{cases[i].Name}...");
            results.Add(Measure(cases[i], Directory.CreateDirectory(Path.Combine(work, $"case{i + 1}")).FullName, seconds));
        }

        static string Mb(double bytes) => (bytes / (1 << 20)).ToString("0", CultureInfo.InvariantCulture);
        Console.WriteLine();
        Console.WriteLine("| archive_command | WAL written | pgbench | segments archived (in the window / in all) | archived MB/s in the window | MB/s with the drain | drain | largest .ready backlog | failed | archive |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in results)
        {
            var window = r.Window.TotalSeconds;
            Console.WriteLine($"| {r.Name} | {Mb((double)r.WalBytes)} MB ({Mb((double)r.WalBytes / window)} MB/s) | {r.Tps:0} tps | {r.ArchivedInWindow} / {r.Archived} | " +
                $"{Mb(r.ArchivedInWindow * r.SegmentSize / window)} | {Mb(r.Archived * r.SegmentSize / (window + r.Drain.TotalSeconds))} | {r.Drain.TotalSeconds:0.0} s | " +
                $"{r.MaxReady} | {r.Failed} | {r.Check} |");
        }
        Console.WriteLine();
        Console.WriteLine("pgBackRest compresses with lz4 here (its default is gz); pgbackup-wal compresses with --compress (LZ4, fastest level). The window is pgbench's run; " +
            "the drain is from its end until no .ready file is left. Segments archived count pg_stat_archiver.archived_count from the start of the window.");
        Directory.Delete(work, recursive: true);
    }

    private static Result Measure(Case c, string dir, int seconds)
    {
        using var cluster = PgTestCluster.Start("walsustained", new Dictionary<string, string> { ["max_wal_size"] = "4GB", ["wal_compression"] = "off" });
        cluster.CreateDatabase("bench");
        // A write-heavy load, so that archiving and not the workload is what can fall behind: each client fills a table of its
        // own with 5000 wide rows per transaction (about 1.5 MB of WAL), emptied first so that nothing grows but the WAL.
        for (var client = 0; client < int.Parse(Clients, CultureInfo.InvariantCulture); client++)
            cluster.Psql($"create table w_{client}(i int, pad text)", "bench");
        var script = Path.Combine(dir, "wal-load.sql");
        File.WriteAllText(script, "truncate w_:client_id;\ninsert into w_:client_id select g, repeat(md5(g::text), 8) from generate_series(1, 5000) g;\n");
        PhysicalBench.Chown(dir);
        var (command, list) = c.Prepare(cluster, dir);
        cluster.Psql("alter system set archive_mode = on");
        cluster.Psql($"alter system set archive_command = '{command.Replace("'", "''", StringComparison.Ordinal)}'");
        cluster.Stop();
        cluster.StartAgain();
        // One segment archived before the clock starts: the command works, and pgBackRest's background process is up.
        try { cluster.ArchiveCurrentSegment(); }
        catch (TimeoutException) { throw new InvalidOperationException($"{c.Name}: the first segment was not archived within a minute. The server log ends:\n{Tail(cluster.LogFile)}"); }
        var segmentSize = long.Parse(cluster.Psql("select pg_size_bytes(current_setting('wal_segment_size'))"), CultureInfo.InvariantCulture);

        var status = Path.Combine(cluster.DataDirectory, "pg_wal", "archive_status");
        int Ready() => Directory.EnumerateFiles(status, "*.ready").Count();
        using var archiver = new ArchiverMonitor(cluster);
        var start = archiver.Sample();
        var maxReady = 0;
        var clock = Stopwatch.StartNew();
        var pgbench = Task.Run(() => ProcessRunner.Run(Path.Combine(PgTestCluster.BinDirectory, "pgbench"),
            ["-h", cluster.Host, "-p", cluster.Port.ToString(CultureInfo.InvariantCulture), "-U", PgTestCluster.SuperUser,
             "-c", Clients, "-j", Threads, "-T", seconds.ToString(CultureInfo.InvariantCulture), "-n", "-f", script, "bench"],
            new Dictionary<string, string?> { ["PGPASSFILE"] = PgTestCluster.PgPassFile }, timeout: TimeSpan.FromSeconds(seconds) + TimeSpan.FromMinutes(5)));
        while (!pgbench.Wait(SampleEvery))
        {
            maxReady = Math.Max(maxReady, Ready());
            archiver.Sample();
        }
        var window = clock.Elapsed;
        var end = archiver.Sample();
        maxReady = Math.Max(maxReady, Ready());
        var (exit, output, error) = pgbench.Result;
        if (exit != 0) throw new InvalidOperationException($"pgbench failed (exit code {exit}): {error}");
        var tps = Regex.Match(output, @"tps = ([0-9.]+)") is { Success: true } m ? double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : double.NaN;

        var drain = Stopwatch.StartNew();
        while (Ready() > 0)
        {
            if (drain.Elapsed > DrainLimit) throw new TimeoutException($"{c.Name}: the archive did not drain within {DrainLimit.TotalMinutes} minutes; {Ready()} segments still ready.");
            Thread.Sleep(SampleEvery);
            archiver.Sample();
        }
        var drained = drain.Elapsed;
        // pg_stat_archiver counts a segment a moment after its .ready file became .done.
        var final = archiver.Sample();
        for (var settle = 0; settle < 25; settle++)
        {
            Thread.Sleep(SampleEvery);
            var next = archiver.Sample();
            if (next.Archived == final.Archived) break;
            final = next;
        }
        var walBytes = decimal.Parse(cluster.Psql($"select pg_wal_lsn_diff('{end.Lsn}', '{start.Lsn}')"), CultureInfo.InvariantCulture);
        return new Result(c.Name, walBytes, tps, window, end.Archived - start.Archived, final.Archived - start.Archived, drained, maxReady,
            final.Failed, segmentSize, CheckArchive(list(), final.LastArchived, segmentSize));
    }

    /// <summary>Every segment from the first in the archive to the last is there, and the last is the server's last archived.</summary>
    private static string CheckArchive(IEnumerable<string> files, string lastArchived, long segmentSize)
    {
        // Folder and blob archives of pgbackup-wal hold <segment> (and <segment>.sha256 in a folder); pgBackRest <segment>-<sha1>.lz4.
        var segments = files.Where(f => f.Length >= 24 && f[..24].All(char.IsAsciiHexDigitUpper) && (f.Length == 24 || f[24] == '-'))
            .Select(f => f[..24]).ToHashSet();
        if (segments.Count == 0) return "empty";
        var first = segments.Min(StringComparer.Ordinal)!;
        var last = segments.Max(StringComparer.Ordinal)!;
        var missing = new List<string>();
        for (var s = first; string.CompareOrdinal(s, last) <= 0; s = NextSegment(s, segmentSize))
            if (!segments.Contains(s)) missing.Add(s);
        var text = missing.Count == 0 ? $"{segments.Count} segments, no gap" : $"{missing.Count} MISSING between {first} and {last}, first {missing[0]}";
        return last == lastArchived ? text : $"{text}; its last is {last} but the server's last archived is {lastArchived}";
    }

    private static string NextSegment(string name, long segmentSize)
    {
        var log = uint.Parse(name[8..16], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        var seg = uint.Parse(name[16..24], NumberStyles.HexNumber, CultureInfo.InvariantCulture) + 1;
        if (seg >= 0x1_0000_0000L / segmentSize) { seg = 0; log++; }
        return $"{name[..8]}{log:X8}{seg:X8}";
    }

    private static string Tail(string file) => string.Join('\n', File.ReadLines(file).TakeLast(20));

    /// <summary>pg_stat_archiver and the insert position, read through one psql session so that sampling costs no process start.</summary>
    private sealed class ArchiverMonitor : IDisposable
    {
        private readonly Process psql;

        public ArchiverMonitor(PgTestCluster cluster)
        {
            var info = new ProcessStartInfo(Path.Combine(PgTestCluster.BinDirectory, "psql"))
            {
                UseShellExecute = false,
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
            };
            foreach (var a in new[] { "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", cluster.Host, "-p", cluster.Port.ToString(CultureInfo.InvariantCulture), "-U", PgTestCluster.SuperUser, "-d", "postgres" })
                info.ArgumentList.Add(a);
            info.Environment["PGPASSFILE"] = PgTestCluster.PgPassFile;
            psql = Process.Start(info) ?? throw new InvalidOperationException("psql did not start.");
        }

        public (long Archived, long Failed, string LastArchived, string Lsn) Sample()
        {
            psql.StandardInput.WriteLine("select archived_count, failed_count, coalesce(last_archived_wal, ''), pg_current_wal_lsn() from pg_stat_archiver;");
            psql.StandardInput.Flush();
            var fields = (psql.StandardOutput.ReadLine() ?? throw new InvalidOperationException("The psql session that samples pg_stat_archiver ended.")).Split('|');
            return (long.Parse(fields[0], CultureInfo.InvariantCulture), long.Parse(fields[1], CultureInfo.InvariantCulture), fields[2], fields[3]);
        }

        public void Dispose()
        {
            psql.StandardInput.Close();
            if (!psql.WaitForExit(5000)) psql.Kill();
            psql.Dispose();
        }
    }

    /// <summary>
    /// PgBackup.Engine's WalArchiveTool from the built module, in a load context of its own over the module's Dependencies
    /// folder as the module loads it. A project reference would put the engine and Npgsql in this process's default context,
    /// where the module's PgBackup.dll would then bind to them, in every mode, instead of to its own copies.
    /// </summary>
    private static dynamic EngineWalTool()
    {
        var module = Path.GetDirectoryName(BenchSupport.ModuleManifest())!;
        var engine = new EngineContext(module).LoadFromAssemblyPath(Path.Combine(module, "Dependencies", "PgBackup.Engine.dll"));
        var type = engine.GetType("PgBackup.Engine.Wal.WalArchiveTool", throwOnError: true)!;
        // (toolPath, dotnetHost, serverOs, nativePath)
        return Activator.CreateInstance(type, PhysicalBench.WalTool(), null, null, PhysicalBench.NativeWalTool())!;
    }

    private sealed class EngineContext(string module) : AssemblyLoadContext("PgBackup.Bench.Engine")
    {
        protected override Assembly? Load(AssemblyName name)
        {
            var path = name.Name == "PgBackup.Model" ? Path.Combine(module, "PgBackup.Model.dll") : Path.Combine(module, "Dependencies", name.Name + ".dll");
            return File.Exists(path) ? LoadFromAssemblyPath(path) : null;
        }
    }
}
