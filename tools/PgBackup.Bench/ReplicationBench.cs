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
    }



    private static TimeSpan P95(List<TimeSpan> times) => times.Order().ElementAt((int)(times.Count * 0.95));

}
