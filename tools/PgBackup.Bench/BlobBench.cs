using Azure.Storage.Blobs;
using PgBackup.Testing;

/// <summary>
/// Backups into Azure Blob Storage, in one run, on a database of about 1 GB with Azurite on loopback over HTTPS (pgBackRest
/// speaks nothing else): Start-PgBaseBackup to Azurite against the same backup to a folder and against a full pgBackRest
/// backup to the same Azurite, and Invoke-PgDump -Format Custom to Azurite against the same dump to a folder; then the
/// cost per WAL segment of pgbackup-wal push to Azurite against pgbackrest archive-push to it. With walOnly, only the
/// latter, on a small database.
/// </summary>
public static class BlobBench
{
    public static void Run(int scale, int rounds, bool walOnly = false)
    {
        var work = Path.Combine(Path.GetTempPath(), "pgbackup-blobbench-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(work);
        var pgbackrest = new[] { "/usr/bin/pgbackrest" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("pgBackRest is needed for this benchmark: apt-get install -y pgbackrest");

        var cert = TrustedCertificate(work);
        if (cert == null) return;
        var key = cert + ".key";

        using var azurite = AzuriteServer.Launch(cert, key);
        var service = new BlobServiceClient(azurite.ConnectionString.Replace("http://", "https://", StringComparison.Ordinal));
        service.GetBlobContainerClient("pgbackrest").CreateIfNotExists();
        Environment.SetEnvironmentVariable("AZURE_STORAGE_CONNECTION_STRING", azurite.ConnectionString);

        var conf = Path.Combine(work, "pgbackrest.conf");
        using var cluster = PgTestCluster.Start("blobbench", new Dictionary<string, string> { ["max_wal_size"] = "4GB" });
        File.WriteAllText(conf, $"""
            [global]
            {PgBackRestAzureRepository(azurite)}
            repo1-path=/bench
            repo1-retention-full=1
            log-path={work}/pgbackrest-log
            lock-path={work}/pgbackrest-lock
            log-level-console=warn
            start-fast=y
            archive-check=n

            {PhysicalBench.Stanza(cluster)}
            """);
        PhysicalBench.Chown(work);
        PhysicalBench.AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--no-online", "stanza-create");

        Console.WriteLine($"Creating the benchmark database: pgbench scale {scale} plus a table of random text...");
        PhysicalBench.FillBenchDatabase(cluster, walOnly ? 1 : scale);
        if (!walOnly) Backups(cluster, azurite, service, work, conf, pgbackrest, rounds);
        WalPush(cluster, azurite, service, work, conf, pgbackrest, Environment.GetEnvironmentVariable("SSL_CERT_FILE")!, rounds);
        Directory.Delete(work, recursive: true);
    }

    /// <summary>
    /// A certificate for 127.0.0.1 that this process trusts and pgBackRest is told not to verify
    /// (repo1-storage-verify-tls=n), as the issue's set-up says. .NET reads SSL_CERT_FILE natively, at start-up, so the
    /// benchmark runs again as a child process that has it: in the child this returns the certificate (its key is
    /// &lt;certificate&gt;.key); in the parent it makes them in <paramref name="work"/>, runs the child, deletes
    /// <paramref name="work"/> and returns null.
    /// </summary>
    internal static string? TrustedCertificate(string work)
    {
        var cert = Environment.GetEnvironmentVariable("PGBACKUP_BENCH_CERT");
        if (cert != null) return cert;
        cert = Path.Combine(work, "azurite.pem");
        PhysicalBench.Check(ProcessRunner.Run("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", cert + ".key", "-out", cert, "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]));
        var bundle = Path.Combine(work, "ca-bundle.pem");
        File.WriteAllText(bundle, File.ReadAllText("/etc/ssl/certs/ca-certificates.crt") + File.ReadAllText(cert));
        var self = new System.Diagnostics.ProcessStartInfo(Environment.ProcessPath!) { UseShellExecute = false };
        foreach (var a in Environment.GetCommandLineArgs()) self.ArgumentList.Add(a);
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet") { } else self.ArgumentList.RemoveAt(0);
        self.Environment["SSL_CERT_FILE"] = bundle;
        self.Environment["PGBACKUP_BENCH_CERT"] = cert;
        using var child = System.Diagnostics.Process.Start(self)!;
        child.WaitForExit();
        Directory.Delete(work, recursive: true);
        if (child.ExitCode != 0) throw new InvalidOperationException($"The benchmark failed (exit code {child.ExitCode}).");
        return null;
    }

    /// <summary>The lines of a pgBackRest configuration that put repo1 in Azurite's container "pgbackrest" (created by the caller).</summary>
    internal static string PgBackRestAzureRepository(AzuriteServer azurite) => string.Join('\n',
        "repo1-type=azure",
        $"repo1-azure-account={AzuriteServer.Account}",
        $"repo1-azure-key={AzuriteServer.AccountKey}",
        "repo1-azure-container=pgbackrest",
        "repo1-azure-uri-style=path",
        "repo1-storage-host=127.0.0.1",
        $"repo1-storage-port={azurite.Port}",
        "repo1-storage-verify-tls=n");

    /// <summary>The credentials file pgbackup-wal reads for Azurite's account, readable by the postgres user only.</summary>
    internal static string WriteWalCredentials(string work)
    {
        var credentials = Path.Combine(work, "wal-credentials.json");
        File.WriteAllText(credentials, $"{{\"accountName\": \"{AzuriteServer.Account}\", \"accountKey\": \"{AzuriteServer.AccountKey}\"}}");
        PhysicalBench.Chown(credentials);
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(credentials, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return credentials;
    }

    private static void WalPush(PgTestCluster cluster, AzuriteServer azurite, BlobServiceClient service, string work, string conf, string pgbackrest, string bundle, int rounds)
    {
        var staging = PhysicalBench.StageSegments(cluster, work);
        var tool = PhysicalBench.WalTool();
        var native = PhysicalBench.NativeWalTool();
        var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "/usr/share/dotnet/dotnet";
        var credentials = WriteWalCredentials(work);
        string Container(string dest) => "w" + Path.GetFileName(dest).Replace("-", "", StringComparison.Ordinal);
        string[] AsServer(params string[] argv) => ["env", "SSL_CERT_FILE=" + bundle, .. argv];
        PhysicalBench.PerSegment(staging, work, rounds, "run as the postgres user; Azurite on loopback over HTTPS",
        [
            ("pgbackup-wal push to a folder, native", (seg, dest) => [native, "push", seg, dest], null),
            ("pgbackup-wal push to Azurite, native", (seg, dest) => AsServer(native, "push", seg, $"{azurite.ServiceUrl}/{Container(dest)}/wal/1", "--credentials", credentials),
                dest => service.GetBlobContainerClient(Container(dest)).Create()),
            ("pgbackup-wal push to Azurite, portable", (seg, dest) => AsServer(dotnet, tool, "push", seg, $"{azurite.ServiceUrl}/{Container(dest)}/wal/1", "--credentials", credentials),
                dest => service.GetBlobContainerClient(Container(dest)).Create()),
            ("pgbackrest archive-push to Azurite, compress none", (seg, dest) => [pgbackrest, $"--config={conf}", "--stanza=bench", $"--repo1-path=/{Container(dest)}", "--compress-type=none", "archive-push", seg],
                dest => PhysicalBench.AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", $"--repo1-path=/{Container(dest)}", "--no-online", "stanza-create")),
            ("pgbackrest archive-push to Azurite, compress lz4", (seg, dest) => [pgbackrest, $"--config={conf}", "--stanza=bench", $"--repo1-path=/{Container(dest)}", "--compress-type=lz4", "archive-push", seg],
                dest => PhysicalBench.AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", $"--repo1-path=/{Container(dest)}", "--no-online", "stanza-create")),
        ]);
    }

    private static void Backups(PgTestCluster cluster, AzuriteServer azurite, BlobServiceClient service, string work, string conf, string pgbackrest, int rounds)
    {
        Environment.SetEnvironmentVariable("PGPASSFILE", PgTestCluster.PgPassFile);
        Environment.SetEnvironmentVariable("PGUSER", PgTestCluster.SuperUser);
        using var runspace = BenchSupport.OpenRunspaceWithModule();

        var n = 0;
        string Next(string name) => Path.Combine(work, $"{name}{Interlocked.Increment(ref n)}");
        string Container() => $"{azurite.ServiceUrl}/b{Guid.NewGuid().ToString("N")[..12]}";
        var server = cluster.ServerArgument;
        var cases = new (string Name, Func<TimeSpan> Run)[]
        {
            ("Start-PgBaseBackup -Format Tar to a folder", () => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Start-PgBaseBackup -Server '{server}' -Repository '{Next("folder")}' -Format Tar"))),
            ("Start-PgBaseBackup -Format Tar to Azurite", () => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Start-PgBaseBackup -Server '{server}' -Repository '{Container()}' -Format Tar"))),
            ("pgBackRest full to Azurite, process-max 1, compress none", () => BenchSupport.Time(() => PhysicalBench.AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--type=full", "--process-max=1", "--compress-type=none", "--no-archive-check", "backup"))),
            ("pgBackRest full to Azurite, process-max 2, compress none", () => BenchSupport.Time(() => PhysicalBench.AsPostgres(pgbackrest, $"--config={conf}", "--stanza=bench", "--type=full", "--process-max=2", "--compress-type=none", "--no-archive-check", "backup"))),
            // The storage's own limit, as cp -a is the disk's: the files of a finished Tar backup uploaded by the Azure SDK alone.
            ("the same Tar files uploaded by the Azure SDK alone (4 at a time, 8 MB blocks)", () =>
            {
                var local = Next("sdk");
                cluster.RunTool("pg_basebackup", "-D", local, "-Ft", "-X", "stream", "-c", "fast");
                var container = service.GetBlobContainerClient("s" + Guid.NewGuid().ToString("N")[..12]);
                container.Create();
                return BenchSupport.Time(() => Parallel.ForEach(Directory.GetFiles(local), new ParallelOptions { MaxDegreeOfParallelism = 4 }, file =>
                    container.GetBlobClient(Path.GetFileName(file)).Upload(file, new Azure.Storage.Blobs.Models.BlobUploadOptions
                    {
                        TransferOptions = new Azure.Storage.StorageTransferOptions { MaximumConcurrency = 4, InitialTransferSize = 8 << 20, MaximumTransferSize = 8 << 20 },
                    })));
            }),
            ("Invoke-PgDump -Format Custom to a folder", () => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Invoke-PgDump -Server '{server}' -Database bench -Repository '{Next("dump")}' -Format Custom"))),
            ("Invoke-PgDump -Format Custom to Azurite", () => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Invoke-PgDump -Server '{server}' -Database bench -Repository '{Container()}' -Format Custom"))),
        };
        var times = cases.ToDictionary(c => c.Name, _ => new List<TimeSpan>());
        for (var round = 0; round < rounds; round++)
        {
            var shuffle = new Random(round);
            foreach (var (name, run) in cases.OrderBy(_ => shuffle.Next()))
            {
                times[name].Add(run());
                foreach (var container in service.GetBlobContainers().Where(c => c.Name != "pgbackrest")) service.DeleteBlobContainer(container.Name);
                PhysicalBench.CleanBackups(work);
            }
            Console.WriteLine($"round {round + 1} of {rounds} done");
        }
        TimeSpan M(string name) => BenchSupport.Median(times[name]);
        var folder = M("Start-PgBaseBackup -Format Tar to a folder");
        var blob = M("Start-PgBaseBackup -Format Tar to Azurite");
        Console.WriteLine();
        Console.WriteLine("| backup | median | vs the same to a folder | vs pgBackRest to Azurite (process-max 1) |");
        Console.WriteLine("|---|---|---|---|");
        var peer = M("pgBackRest full to Azurite, process-max 1, compress none");
        foreach (var (name, _) in cases)
        {
            var versusFolder = name.StartsWith("Start-PgBaseBackup", StringComparison.Ordinal) ? $"{M(name) / folder:0.00}"
                : name.StartsWith("Invoke-PgDump", StringComparison.Ordinal) ? $"{M(name) / M("Invoke-PgDump -Format Custom to a folder"):0.00}" : "";
            var versusPeer = name.StartsWith("Invoke-PgDump", StringComparison.Ordinal) ? "" : $"{M(name) / peer:0.00}";
            Console.WriteLine($"| {name} | {M(name).TotalSeconds:0.00} s | {versusFolder} | {versusPeer} |");
        }
    }
}
