using System.Management.Automation;
using System.Management.Automation.Runspaces;
using PgBackup.Testing;

/// <summary>Get-PgReplicationStatus latency after import, for a primary with two standbys, against psql asking the same view.</summary>
public static class ReplicationBench
{
    public static void Run(int calls)
    {
        using var primary = PgTestCluster.Start("replbench");
        using var standby1 = PgTestCluster.StartStandbyOf(primary, "replbench-s1");
        using var standby2 = PgTestCluster.StartStandbyOf(primary, "replbench-s2");
        while (primary.Psql("select count(*) from pg_stat_replication where state = 'streaming'") != "2") Thread.Sleep(100);
        Environment.SetEnvironmentVariable("PGPASSFILE", PgTestCluster.PgPassFile);
        Environment.SetEnvironmentVariable("PGUSER", PgTestCluster.SuperUser);

        using var runspace = BenchSupport.OpenRunspaceWithModule();
        BenchSupport.Invoke(runspace, $"$null = Get-PgReplicationStatus -Server '{primary.ServerArgument}'"); // first call pays for JIT

        var cmdlet = Enumerable.Range(0, calls).Select(_ => BenchSupport.Time(() => BenchSupport.Invoke(runspace, $"$null = Get-PgReplicationStatus -Server '{primary.ServerArgument}'"))).ToList();
        var psql = Enumerable.Range(0, calls).Select(_ => BenchSupport.Time(() => primary.Psql("select * from pg_stat_replication"))).ToList();
        Console.WriteLine($"| Get-PgReplicationStatus, primary with 2 standbys ({calls} calls after import) | median {BenchSupport.Median(cmdlet).TotalMilliseconds:0.0} ms | p95 {P95(cmdlet).TotalMilliseconds:0.0} ms |");
        Console.WriteLine($"| psql -c 'select * from pg_stat_replication' (a new process each time) | median {BenchSupport.Median(psql).TotalMilliseconds:0.0} ms | p95 {P95(psql).TotalMilliseconds:0.0} ms |");

        // Switch-PgPrimary under a pgbench load: how long writes are unavailable, switching back and forth.
        primary.RunTool("pgbench", "-i", "-q", "-s", "5", "postgres");
        standby2.Dispose();
        var (current, other) = (primary, standby1);
        var unavailable = new List<TimeSpan>();
        for (var round = 0; round < 3; round++)
        {
            while (current.Psql("select count(*) from pg_stat_replication where state = 'streaming'") != "1") Thread.Sleep(100);
            using var load = new CancellationTokenSource();
            var pgbench = Task.Run(() =>
            {
                try { current.RunTool("pgbench", "-c", "4", "-j", "2", "-T", "15", "-n", "postgres"); }
                catch (InvalidOperationException) { } // pgbench exits with an error once its server goes away: that is the point
            });
            Thread.Sleep(3000);
            using var ps = PowerShell.Create();
            ps.Runspace = runspace;
            ps.AddScript($"Switch-PgPrimary -Primary '{current.ServerArgument}' -Candidate '{other.ServerArgument}' -Confirm:$false");
            var result = ps.Invoke();
            if (ps.HadErrors) throw new InvalidOperationException(string.Join("; ", ps.Streams.Error));
            unavailable.Add((TimeSpan)result[0].Properties["WriteUnavailable"].Value);
            pgbench.Wait();
            (current, other) = (other, current);
        }
        Console.WriteLine($"| Switch-PgPrimary under pgbench -c 4 (3 switchovers): writes unavailable | median {BenchSupport.Median(unavailable).TotalSeconds:0.00} s | max {unavailable.Max().TotalSeconds:0.00} s |");
    }



    private static TimeSpan P95(List<TimeSpan> times) => times.Order().ElementAt((int)(times.Count * 0.95));

}
