using System.Diagnostics;
using System.Management.Automation;
using System.Management.Automation.Runspaces;
using PgBackup.Testing;

/// <summary>Get-PgReplicationStatus latency after import, for a primary with two standbys, against psql asking the same view.</summary>
public static class ReplicationBench
{
    public static void Run(int calls)
    {
        var root = FindRoot();
        var manifest = Directory.GetFiles(Path.Combine(root, "out", "PgBackup"), "PgBackup.psd1", SearchOption.AllDirectories).Single();
        using var primary = PgTestCluster.Start("replbench");
        using var standby1 = PgTestCluster.StartStandbyOf(primary, "replbench-s1");
        using var standby2 = PgTestCluster.StartStandbyOf(primary, "replbench-s2");
        while (primary.Psql("select count(*) from pg_stat_replication where state = 'streaming'") != "2") Thread.Sleep(100);
        Environment.SetEnvironmentVariable("PGPASSFILE", PgTestCluster.PgPassFile);
        Environment.SetEnvironmentVariable("PGUSER", PgTestCluster.SuperUser);

        using var runspace = RunspaceFactory.CreateRunspace(InitialSessionState.CreateDefault2());
        runspace.Open();
        Invoke(runspace, $"Import-Module '{manifest}' -ErrorAction Stop");
        Invoke(runspace, $"$null = Get-PgReplicationStatus -Server '{primary.ServerArgument}'"); // first call pays for JIT

        var cmdlet = Enumerable.Range(0, calls).Select(_ => Time(() => Invoke(runspace, $"$null = Get-PgReplicationStatus -Server '{primary.ServerArgument}'"))).ToList();
        var psql = Enumerable.Range(0, calls).Select(_ => Time(() => primary.Psql("select * from pg_stat_replication"))).ToList();
        Console.WriteLine($"| Get-PgReplicationStatus, primary with 2 standbys ({calls} calls after import) | median {Median(cmdlet).TotalMilliseconds:0.0} ms | p95 {P95(cmdlet).TotalMilliseconds:0.0} ms |");
        Console.WriteLine($"| psql -c 'select * from pg_stat_replication' (a new process each time) | median {Median(psql).TotalMilliseconds:0.0} ms | p95 {P95(psql).TotalMilliseconds:0.0} ms |");
    }

    private static void Invoke(Runspace runspace, string script)
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
    private static TimeSpan P95(List<TimeSpan> times) => times.Order().ElementAt((int)(times.Count * 0.95));

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PgBackup.sln"))) return dir.FullName;
        throw new InvalidOperationException("Run the benchmark from inside the PgBackup repository.");
    }
}
