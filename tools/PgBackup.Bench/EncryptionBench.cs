using System.Globalization;
using PgBackup.Testing;

/// <summary>
/// Encrypted against unencrypted repositories, in one run, on a database of about 1 GB: Start-PgBaseBackup -Format Tar,
/// Invoke-PgDump -Format Custom and Restore-PgPointInTime -Immediate into a plain folder repository and into an encrypted
/// one (passphrase), against pgBackRest full backups with repo1-cipher-type none and aes-256-cbc; then the cost per WAL
/// segment of pgbackup-wal push with and without --encrypt against pgbackrest archive-push with and without a cipher.
/// </summary>
public static class EncryptionBench
{
    private const string Passphrase = "benchmark passphrase, long enough";

    public static void Run(int scale, int rounds, string? only = null)
    {
        var work = Path.Combine(Path.GetTempPath(), "pgbackup-encbench-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(work);
        var pgbackrest = new[] { "/usr/bin/pgbackrest" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("pgBackRest is needed for this benchmark: apt-get install -y pgbackrest");
        using var cluster = PgTestCluster.Start("encbench", new Dictionary<string, string> { ["max_wal_size"] = "4GB" });
        var conf = Path.Combine(work, "pgbackrest.conf");
        var cipherConf = Path.Combine(work, "pgbackrest-cipher.conf");
        File.WriteAllText(conf, Conf(work, cluster, "pgbackrest-plain", null));
        File.WriteAllText(cipherConf, Conf(work, cluster, "pgbackrest-cipher", "aes-256-cbc"));
        PhysicalBench.Chown(work);
        PhysicalBench.AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--no-online", "stanza-create");
        PhysicalBench.AsPostgres(pgbackrest, $"--config={cipherConf}", "--stanza=bench", "--no-online", "stanza-create");

        Console.WriteLine($"Creating the benchmark database: pgbench scale {scale} plus a table of random text...");
        PhysicalBench.FillBenchDatabase(cluster, scale);
        var size = long.Parse(cluster.Psql("select pg_database_size('bench')"), CultureInfo.InvariantCulture);
        Console.WriteLine($"Database {size >> 20} MB; PostgreSQL {PgTestCluster.MajorVersion}; {Environment.ProcessorCount} cores; {rounds} rounds");
        Environment.SetEnvironmentVariable("PGPASSFILE", PgTestCluster.PgPassFile);
        Environment.SetEnvironmentVariable("PGUSER", PgTestCluster.SuperUser);
        Environment.SetEnvironmentVariable("PGBACKUP_PASSPHRASE", Passphrase);
        using var runspace = BenchSupport.OpenRunspaceWithModule();
        var server = cluster.ServerArgument;

        // One backup in each repository to recover from; the timed backups go into fresh repositories of each kind.
        var plainSource = Path.Combine(work, "source-plain");
        var encryptedSource = Path.Combine(work, "source-encrypted");
        BenchSupport.Invoke(runspace, $"$null = New-PgRepository -Repository '{encryptedSource}' -Encrypt -Passphrase ([System.Net.NetworkCredential]::new('', $env:PGBACKUP_PASSPHRASE).SecurePassword)");
        BenchSupport.Invoke(runspace, $"$global:plainBackup = Start-PgBaseBackup -Server '{server}' -Repository '{plainSource}' -Format Tar");
        BenchSupport.Invoke(runspace, $"$global:encryptedBackup = Start-PgBaseBackup -Server '{server}' -Repository '{encryptedSource}' -Format Tar");

        var n = 0;
        string Next(string name) => Path.Combine(work, $"{name}{Interlocked.Increment(ref n)}");
        string NewEncrypted()
        {
            var repository = Next("encrypted");
            BenchSupport.Invoke(runspace, $"$null = New-PgRepository -Repository '{repository}' -Encrypt -Passphrase ([System.Net.NetworkCredential]::new('', $env:PGBACKUP_PASSPHRASE).SecurePassword)");
            return repository;
        }
        TimeSpan Recover(string backup)
        {
            var directory = Next("recovered");
            var time = BenchSupport.Time(() => BenchSupport.Invoke(runspace,
                $"$null = $global:{backup} | Restore-PgPointInTime -Immediate -DataDirectory '{directory}' -Port {FreePort.Next()} -Confirm:$false"));
            BenchSupport.Invoke(runspace, $"Remove-PgInstance '{directory}' -Confirm:$false");
            return time;
        }
        var cases = new (string Name, Func<TimeSpan> Run)[]
        {
            ("Start-PgBaseBackup -Format Tar, plain", () => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Start-PgBaseBackup -Server '{server}' -Repository '{Next("plain")}' -Format Tar"))),
            ("Start-PgBaseBackup -Format Tar, encrypted", () => { var r = NewEncrypted(); return BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Start-PgBaseBackup -Server '{server}' -Repository '{r}' -Format Tar")); }),
            ("Start-PgBaseBackup -Format Plain, plain", () => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Start-PgBaseBackup -Server '{server}' -Repository '{Next("plain")}' -Format Plain"))),
            ("Start-PgBaseBackup -Format Plain, encrypted", () => { var r = NewEncrypted(); return BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Start-PgBaseBackup -Server '{server}' -Repository '{r}' -Format Plain")); }),
            ("Invoke-PgDump -Format Custom, plain", () => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Invoke-PgDump -Server '{server}' -Database bench -Repository '{Next("plain")}' -Format Custom"))),
            ("Invoke-PgDump -Format Custom, encrypted", () => { var r = NewEncrypted(); return BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Invoke-PgDump -Server '{server}' -Database bench -Repository '{r}' -Format Custom")); }),
            ("Restore-PgPointInTime -Immediate, plain", () => Recover("plainBackup")),
            ("Restore-PgPointInTime -Immediate, encrypted", () => Recover("encryptedBackup")),
            ("pgBackRest full, process-max 1, compress none, no cipher", () => BenchSupport.Time(() => PhysicalBench.AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--type=full", "--process-max=1", "--compress-type=none", "--no-archive-check", "backup"))),
            ("pgBackRest full, process-max 1, compress none, aes-256-cbc", () => BenchSupport.Time(() => PhysicalBench.AsPostgres(pgbackrest, $"--config={cipherConf}", "--stanza=bench", "--type=full", "--process-max=1", "--compress-type=none", "--no-archive-check", "backup"))),
        };
        // A filter on the cases' names (pgBackRest's always run) times one operation against the peer in less time.
        if (only != null) cases = cases.Where(c => c.Name.Contains(only, StringComparison.OrdinalIgnoreCase) || c.Name.StartsWith("pgBackRest", StringComparison.Ordinal)).ToArray();
        var times = cases.ToDictionary(c => c.Name, _ => new List<TimeSpan>());
        for (var round = 0; round < rounds; round++)
        {
            var shuffle = new Random(round);
            foreach (var (name, run) in cases.OrderBy(_ => shuffle.Next()))
            {
                var (cpu, children) = (BenchSupport.ProcessorTime(), BenchSupport.ChildProcessorTime());
                var time = run();
                times[name].Add(time);
                Console.WriteLine($"  {name}: {time.TotalSeconds:0.00} s (CPU: PgBackup {(BenchSupport.ProcessorTime() - cpu).TotalSeconds:0.00} s, tools {(BenchSupport.ChildProcessorTime() - children).TotalSeconds:0.00} s)");
                foreach (var dir in Directory.GetDirectories(work).Where(d => Path.GetFileName(d) is var f && (f.StartsWith("plain", StringComparison.Ordinal) || f.StartsWith("encrypted", StringComparison.Ordinal))))
                    Directory.Delete(dir, recursive: true);
                PhysicalBench.Check(ProcessRunner.Run("sync", []));
                Thread.Sleep(TimeSpan.FromSeconds(5));
            }
            Console.WriteLine($"round {round + 1} of {rounds} done");
        }
        TimeSpan M(string name) => BenchSupport.Median(times[name]);
        Console.WriteLine();
        Console.WriteLine("| operation | plain | encrypted | encrypted / plain |");
        Console.WriteLine("|---|---|---|---|");
        foreach (var pair in cases.Select(c => c.Name).Where(c => c.EndsWith(", plain", StringComparison.Ordinal) && times.ContainsKey(c[..^", plain".Length] + ", encrypted")))
        {
            var encrypted = pair[..^", plain".Length] + ", encrypted";
            Console.WriteLine($"| {pair[..^", plain".Length]} | {M(pair).TotalSeconds:0.00} s | {M(encrypted).TotalSeconds:0.00} s | {M(encrypted) / M(pair):0.00} |");
        }
        var peerPlain = M("pgBackRest full, process-max 1, compress none, no cipher");
        var peerCipher = M("pgBackRest full, process-max 1, compress none, aes-256-cbc");
        Console.WriteLine($"| pgBackRest full (process-max 1, compress none), aes-256-cbc | {peerPlain.TotalSeconds:0.00} s | {peerCipher.TotalSeconds:0.00} s | {peerCipher / peerPlain:0.00} |");
        if (times.ContainsKey("Start-PgBaseBackup -Format Tar, encrypted"))
            Console.WriteLine($"Encrypted Start-PgBaseBackup against encrypted pgBackRest: {M("Start-PgBaseBackup -Format Tar, encrypted") / peerCipher:0.00}");

        if (only == null) WalPush(cluster, work, conf, cipherConf, pgbackrest, runspace, rounds);
        Directory.Delete(work, recursive: true);
    }

    private static void WalPush(PgTestCluster cluster, string work, string conf, string cipherConf, string pgbackrest, System.Management.Automation.Runspaces.Runspace runspace, int rounds)
    {
        var staging = PhysicalBench.StageSegments(cluster, work);
        var native = PhysicalBench.NativeWalTool();
        // The public key file Enable-PgWalArchiving would write, taken from an encrypted repository's marker.
        var repository = Path.Combine(work, "keysource");
        BenchSupport.Invoke(runspace, $"$null = New-PgRepository -Repository '{repository}' -Encrypt -Passphrase ([System.Net.NetworkCredential]::new('', $env:PGBACKUP_PASSPHRASE).SecurePassword)");
        var marker = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(repository, "pgbackup-repository.json"))).RootElement.GetProperty("encryption");
        var keyFile = Path.Combine(work, "wal-key.json");
        File.WriteAllText(keyFile, $$"""{"format": "pgbackup-wal-key/1", "publicKey": "{{marker.GetProperty("publicKey").GetString()}}", "keyId": "{{marker.GetProperty("keyId").GetString()}}", "namePrefix": "wal/1/"}""");
        PhysicalBench.Chown(keyFile);
        PhysicalBench.PerSegment(staging, work, rounds, "run as the postgres user",
        [
            ("pgbackup-wal push, native", (seg, dest) => [native, "push", seg, dest], null),
            ("pgbackup-wal push, native, --encrypt", (seg, dest) => [native, "push", seg, dest, "--encrypt", keyFile], null),
            ("pgbackrest archive-push, compress none", (seg, dest) => [pgbackrest, $"--config={conf}", "--stanza=bench", $"--repo1-path={dest}", "--compress-type=none", "archive-push", seg],
                dest => PhysicalBench.AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", $"--repo1-path={dest}", "--no-online", "stanza-create")),
            ("pgbackrest archive-push, compress none, aes-256-cbc", (seg, dest) => [pgbackrest, $"--config={cipherConf}", "--stanza=bench", $"--repo1-path={dest}", "--compress-type=none", "archive-push", seg],
                dest => PhysicalBench.AsPostgres(pgbackrest, $"--config={cipherConf}", "--stanza=bench", $"--repo1-path={dest}", "--no-online", "stanza-create")),
        ]);
    }

    private static string Conf(string work, PgTestCluster cluster, string repository, string? cipher) => $"""
        [global]
        repo1-path={work}/{repository}
        {(cipher != null ? $"repo1-cipher-type={cipher}\nrepo1-cipher-pass=benchmark-cipher-pass" : "")}
        log-path={work}/pgbackrest-log
        lock-path={work}/pgbackrest-lock
        log-level-console=warn
        start-fast=y
        repo1-retention-full=1
        archive-check=n

        {PhysicalBench.Stanza(cluster)}
        """;
}
