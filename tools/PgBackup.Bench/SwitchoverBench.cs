using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Management.Automation;
using System.Management.Automation.Runspaces;

/// <summary>
/// Switchovers under pgbench -c 4, back and forth, and what the clients saw: how long they waited (the longest time a
/// client completed no transaction around each switchover) and how many of their transactions failed. PgBackup's own
/// switchover with the clients behind PgBouncer (-PgBouncer) and connected directly (libpq with both hosts and
/// target_session_attrs=read-write, the best a client can do alone); then a Patroni cluster switched over by
/// Switch-PgPrimary -Patroni -PgBouncer and by Patroni's own patronictl switchover. The servers, PgBouncer, etcd and
/// Patroni are started by the Pester fixtures (tests/pester/PgBackup.TestCluster.psm1), so the bench runs what the tests run.
/// </summary>
public static class SwitchoverBench
{
    public static void Run(int switchovers, int scale)
    {
        using var runspace = BenchSupport.OpenRunspaceWithModule();
        BenchSupport.Invoke(runspace, $"Import-Module '{Path.Combine(BenchSupport.RepositoryRoot(), "tests", "pester", "PgBackup.TestCluster.psm1")}' -Force -ErrorAction Stop");
        var rows = new List<string>();
        Console.WriteLine($"{switchovers} switchovers per case, pgbench -c 4 on a scale {scale} database; {Environment.ProcessorCount} cores");

        BenchSupport.Invoke(runspace, """
            $global:primary = Start-PgTestCluster -Name 'swbench'
            $global:standby = Start-PgTestStandby -Primary $primary -Name 'swbenchstandby' -ClusterName 'swbench_standby'
            $global:bouncer = Start-PgTestPgBouncer -Cluster $primary
            $global:environment = Enter-PgTestEnvironment -Cluster $primary
            """);
        try
        {
            var servers = new[] { Text(runspace, "$primary.Server"), Text(runspace, "$standby.Server") };
            var password = Text(runspace, "$primary.Password");
            var bin = Text(runspace, "$primary.BinDirectory");
            WaitUntil(runspace, "(Invoke-PgTestSql -Cluster $primary -Sql \"select count(*) from pg_stat_replication where state = 'streaming'\") -eq '1'");
            Pgbench(bin, Direct(servers, password), "-i", "-q", "-s", scale.ToString(CultureInfo.InvariantCulture));

            var bouncerServer = Text(runspace, "$bouncer.Server");
            var config = Text(runspace, "$bouncer.ConfigPath");
            rows.Add(Measure("Switch-PgPrimary -PgBouncer, clients through PgBouncer", bin, Through(bouncerServer, password), switchovers, i =>
            {
                var (from, to) = (servers[i % 2], servers[(i + 1) % 2]);
                Switch(runspace, $"Switch-PgPrimary -Primary '{from}' -Candidate '{to}' -PgBouncer '{bouncerServer}' -PgBouncerConfig '{config}' -Confirm:$false");
                WaitUntil(runspace, $"(Invoke-PgTestSql -Cluster ($primary, $standby | Where-Object Server -EQ '{to}') -Sql \"select count(*) from pg_stat_replication where state = 'streaming'\") -eq '1'");
            }));
            rows.Add(Measure("Switch-PgPrimary, clients connected directly (both hosts, target_session_attrs=read-write)", bin, Direct(servers, password), switchovers, i =>
            {
                // After an even number of switchovers the first server is the primary again.
                var (from, to) = (servers[i % 2], servers[(i + 1) % 2]);
                Switch(runspace, $"Switch-PgPrimary -Primary '{from}' -Candidate '{to}' -Confirm:$false");
                WaitUntil(runspace, $"(Invoke-PgTestSql -Cluster ($primary, $standby | Where-Object Server -EQ '{to}') -Sql \"select count(*) from pg_stat_replication where state = 'streaming'\") -eq '1'");
            }, firstSwitchover: switchovers));
        }
        finally
        {
            BenchSupport.Invoke(runspace, "Exit-PgTestEnvironment -State $environment; Stop-PgTestPgBouncer -PgBouncer $bouncer; Stop-PgTestClusterPair -Cluster $primary, $standby");
        }

        BenchSupport.Invoke(runspace, """
            $global:patroni = Start-PgTestPatroni -Members 2
            $global:environment = Enter-PgTestEnvironment
            $leaderName = (Get-PgReplicationStatus -Patroni $patroni.RestUrl -ErrorAction Stop).Leader
            $global:leader = $patroni.Members | Where-Object Name -EQ $leaderName
            $global:bouncer = Start-PgTestPgBouncer -Cluster ([pscustomobject]@{ Host = '127.0.0.1'; Port = $leader.Port; Password = $patroni.Password; BinDirectory = (Find-PgServerBinDirectory) })
            $env:PGPASSWORD = $patroni.Password
            """);
        try
        {
            var password = Text(runspace, "$patroni.Password");
            var bin = Text(runspace, "$bouncer.BinDirectory");
            var members = Text(runspace, "($patroni.Members | ForEach-Object { $_.Name + '=' + $_.Server }) -join ' '").Split(' ').Select(m => m.Split('=')).ToArray();
            var leader = Text(runspace, "$leader.Name");
            // Members in the order of switchovers: the leader first.
            var order = members.OrderBy(m => m[0] == leader ? 0 : 1).ToArray();
            var bouncerServer = Text(runspace, "$bouncer.Server");
            var config = Text(runspace, "$bouncer.ConfigPath");
            var servers = order.Select(m => m[1]).ToArray();
            Pgbench(bin, Direct(servers, password), "-i", "-q", "-s", scale.ToString(CultureInfo.InvariantCulture));
            const string caughtUp = "Wait-PgReplication -Patroni $patroni.RestUrl -Timeout 00:02:00 -ErrorAction Stop | Out-Null";
            BenchSupport.Invoke(runspace, caughtUp);

            rows.Add(Measure("Patroni cluster, Switch-PgPrimary -Patroni -PgBouncer, clients through PgBouncer", bin, Through(bouncerServer, password), switchovers, i =>
            {
                var (from, to) = (order[i % 2][0], order[(i + 1) % 2][0]);
                Switch(runspace, $"Switch-PgPrimary -Patroni $patroni.RestUrl -PatroniCredential $patroni.RestCredential -Credential $patroni.Credential -Primary '{from}' -Candidate '{to}' -PgBouncer '{bouncerServer}' -PgBouncerConfig '{config}' -Confirm:$false");
                BenchSupport.Invoke(runspace, caughtUp);
            }));
            var patronictl = new[] { "/usr/bin/patronictl" }.Concat((Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, "patronictl"))).FirstOrDefault(File.Exists)
                ?? throw new InvalidOperationException("patronictl is not installed: run scripts/prerequisites.sh --tests (Debian package patroni).");
            var nodeConfig = Text(runspace, "$patroni.Members[0].Config");
            var user = Text(runspace, "$patroni.RestCredential.UserName");
            var restPassword = Text(runspace, "$patroni.RestCredential.GetNetworkCredential().Password");
            rows.Add(Measure("Patroni cluster, patronictl switchover, clients connected directly (both hosts, target_session_attrs=read-write)", bin, Direct(servers, password), switchovers, i =>
            {
                var (from, to) = (order[i % 2][0], order[(i + 1) % 2][0]);
                Run(patronictl, ["-c", nodeConfig, "switchover", "--leader", from, "--candidate", to, "--force"], new() { ["PATRONI_RESTAPI_USERNAME"] = user, ["PATRONI_RESTAPI_PASSWORD"] = restPassword });
                BenchSupport.Invoke(runspace, caughtUp);
            }, firstSwitchover: switchovers));
        }
        finally
        {
            BenchSupport.Invoke(runspace, "Remove-Item Env:PGPASSWORD -ErrorAction SilentlyContinue; Exit-PgTestEnvironment -State $environment; Stop-PgTestPgBouncer -PgBouncer $bouncer; Stop-PgTestPatroni -Patroni $patroni");
        }

        Console.WriteLine();
        Console.WriteLine($"| {switchovers} switchovers under pgbench -c 4 | clients waited, median | largest | failed client transactions | failed connection attempts | transactions done | switchover took, median |");
        Console.WriteLine("|---|---|---|---|---|---|---|");
        foreach (var row in rows) Console.WriteLine(row);
    }

    /// <summary>
    /// Runs <paramref name="switchovers"/> switchovers under the load, a few seconds apart, and sums up what the clients
    /// saw around each one. <paramref name="firstSwitchover"/> numbers them on, so the roles alternate across cases.
    /// </summary>
    private static string Measure(string name, string bin, Dictionary<string, string?> connection, int switchovers, Action<int> switchover, int firstSwitchover = 0)
    {
        Console.WriteLine($"{name}...");
        using var load = new ClientLoad(bin, connection, clients: 4);
        Thread.Sleep(3000);
        var windows = new List<(DateTime Start, DateTime End)>();
        for (var i = 0; i < switchovers; i++)
        {
            var start = DateTime.UtcNow;
            switchover(firstSwitchover + i);
            windows.Add((start, DateTime.UtcNow));
            Thread.Sleep(3000);
        }
        var outcome = load.Stop();
        var waited = windows.Select(w => outcome.LongestPause(w.Start, w.End)).ToList();
        var took = windows.Select(w => w.End - w.Start).ToList();
        foreach (var (w, i) in windows.Select((w, i) => (w, i)))
            Console.WriteLine($"  switchover {i + 1}: took {(w.End - w.Start).TotalSeconds:0.00} s, clients waited at most {waited[i].TotalSeconds:0.00} s");
        Console.WriteLine($"  {outcome.Transactions} transactions, {outcome.Failures} failed, {outcome.RefusedConnections} connection attempts failed");
        return $"| {name} | {BenchSupport.Median(waited).TotalSeconds:0.00} s | {waited.Max().TotalSeconds:0.00} s | {outcome.Failures} | {outcome.RefusedConnections} | {outcome.Transactions} | {BenchSupport.Median(took).TotalSeconds:0.00} s |";
    }

    private static void Switch(Runspace runspace, string script)
    {
        using var ps = PowerShell.Create();
        ps.Runspace = runspace;
        ps.AddScript(script + " -WarningAction SilentlyContinue");
        var result = ps.Invoke();
        if (ps.HadErrors || result.Count != 1) throw new InvalidOperationException($"{script}: {string.Join("; ", ps.Streams.Error)}");
    }

    private static string Text(Runspace runspace, string expression) => BenchSupport.InvokeText(runspace, expression);

    private static void WaitUntil(Runspace runspace, string condition) =>
        BenchSupport.Invoke(runspace, $"Wait-PgTestCondition -What 'the bench' -Condition {{ {condition} }}");

    /// <summary>libpq tries both servers and keeps the one that takes writes, as a client with no pooler in front does at best.</summary>
    private static Dictionary<string, string?> Direct(string[] servers, string password) => new()
    {
        ["PGHOST"] = string.Join(',', servers.Select(s => s.Split(':')[0])), ["PGPORT"] = string.Join(',', servers.Select(s => s.Split(':')[1])),
        ["PGTARGETSESSIONATTRS"] = "read-write", ["PGUSER"] = "postgres", ["PGPASSWORD"] = password, ["PGDATABASE"] = "postgres", ["PGCONNECT_TIMEOUT"] = "2",
    };

    private static Dictionary<string, string?> Through(string bouncer, string password) => new()
    {
        ["PGHOST"] = bouncer.Split(':')[0], ["PGPORT"] = bouncer.Split(':')[1], ["PGUSER"] = "postgres", ["PGPASSWORD"] = password, ["PGDATABASE"] = "postgres", ["PGCONNECT_TIMEOUT"] = "2",
    };

    private static void Pgbench(string bin, Dictionary<string, string?> connection, params string[] arguments) =>
        Run(Path.Combine(bin, "pgbench"), arguments, connection);

    private static void Run(string program, string[] arguments, Dictionary<string, string?> environment)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in arguments) start.ArgumentList.Add(a);
        foreach (var (k, v) in environment) start.Environment[k] = v;
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new InvalidOperationException($"{Path.GetFileName(program)} {string.Join(' ', arguments)} failed: {error.Result}{output.Result}");
    }

    /// <summary>
    /// pgbench clients, one process per client: each runs the TPC-B-like script in five-second runs, logging every
    /// transaction (-l). A run that fails (its connection lost, the server read-only) counts as one failed
    /// transaction (one that could not connect, as a failed connection attempt) and starts again after 100 ms, as an
    /// application retries.
    /// </summary>
    private sealed class ClientLoad : IDisposable
    {
        private readonly string _folder = Directory.CreateTempSubdirectory("pgbackup-bench-clients-").FullName;
        private readonly CancellationTokenSource _stop = new();
        private readonly Task[] _clients;
        private int _failures;
        private int _refused;

        public ClientLoad(string bin, Dictionary<string, string?> connection, int clients)
        {
            _clients = Enumerable.Range(0, clients).Select(c => Task.Factory.StartNew(() =>
            {
                for (var run = 0; !_stop.IsCancellationRequested; run++)
                {
                    var start = new ProcessStartInfo(Path.Combine(bin, "pgbench")) { WorkingDirectory = _folder, RedirectStandardOutput = true, RedirectStandardError = true };
                    foreach (var a in new[] { "-n", "-c", "1", "-T", "5", "-l", $"--log-prefix=c{c}.r{run}" }) start.ArgumentList.Add(a);
                    foreach (var (k, v) in connection) start.Environment[k] = v;
                    using var process = Process.Start(start)!;
                    _ = process.StandardOutput.ReadToEndAsync();
                    _ = process.StandardError.ReadToEndAsync();
                    process.WaitForExit();
                    // pgbench exits 2 when a transaction failed (its client aborted), 1 when it could not connect at all.
                    if (process.ExitCode == 2) Interlocked.Increment(ref _failures);
                    else if (process.ExitCode != 0) Interlocked.Increment(ref _refused);
                    if (process.ExitCode != 0) Thread.Sleep(100);
                }
            }, TaskCreationOptions.LongRunning)).ToArray();
        }

        public Outcome Stop()
        {
            _stop.Cancel();
            Task.WaitAll(_clients);
            // Each log line: client_id transaction_no latency_us script_no epoch_seconds epoch_microseconds.
            var completions = new ConcurrentDictionary<string, List<DateTime>>();
            foreach (var file in Directory.GetFiles(_folder))
            {
                var client = Path.GetFileName(file).Split('.')[0];
                var list = completions.GetOrAdd(client, _ => []);
                foreach (var line in File.ReadLines(file))
                {
                    var f = line.Split(' ');
                    if (f.Length >= 6 && long.TryParse(f[4], out var seconds) && long.TryParse(f[5], out var micro) && long.TryParse(f[2], out _))
                        list.Add(DateTime.UnixEpoch.AddSeconds(seconds).AddTicks(micro * 10));
                }
            }
            return new Outcome(completions.Values.Select(l => l.Order().ToList()).ToList(), _failures, _refused);
        }

        public void Dispose()
        {
            if (!_stop.IsCancellationRequested) Stop();
            try { Directory.Delete(_folder, true); } catch (IOException) { }
        }
    }

    private sealed record Outcome(List<List<DateTime>> Completions, int Failures, int RefusedConnections)
    {
        public int Transactions => Completions.Sum(c => c.Count);

        /// <summary>The longest time any client completed nothing, among the pauses that overlap the switchover.</summary>
        public TimeSpan LongestPause(DateTime start, DateTime end) => Completions
            .SelectMany(c => c.Zip(c.Skip(1), (a, b) => (a, b)))
            .Where(p => p.b >= start && p.a <= end)
            .Select(p => p.b - p.a)
            .DefaultIfEmpty(end - start)
            .Max();
    }
}
