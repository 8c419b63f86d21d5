namespace PgBackup.Engine.Patroni;

/// <summary>Test-PgReplication and Wait-PgReplication for a cluster that Patroni runs, judged on Patroni's own view.</summary>
public static class PatroniHealth
{
    /// <summary>
    /// Fails a cluster without a leader or without a replica, in maintenance mode (no automatic failover), or with a
    /// replica that does not replicate or lags more than <paramref name="maxLagBytes"/> (or whose lag Patroni does not know).
    /// </summary>
    public static ReplicationTestResult Evaluate(PatroniCluster cluster, long? maxLagBytes)
    {
        var failures = new List<string>();
        var leader = cluster.Members.FirstOrDefault(m => m.Name == cluster.Leader);
        if (leader == null) failures.Add($"The Patroni cluster {cluster.Scope} has no leader.");
        if (cluster.Paused) failures.Add("Patroni's automatic failover is paused (maintenance mode; patronictl resume ends it).");
        var replicas = cluster.Members.Where(m => m.Name != cluster.Leader).ToList();
        if (replicas.Count == 0) failures.Add("The cluster has no replica.");
        foreach (var replica in replicas)
        {
            if (replica.State is not ("running" or "streaming")) failures.Add($"Member {replica.Name} is {replica.State}, not replicating.");
            else if (replica.LagBytes == null) failures.Add($"Patroni does not know how far member {replica.Name} is behind.");
            else if (maxLagBytes is { } max && replica.LagBytes > max) failures.Add($"Member {replica.Name} is {replica.LagBytes} bytes behind (more than {max}).");
        }
        return new ReplicationTestResult
        {
            Server = leader?.Host ?? cluster.RestUrl, Port = leader?.Port ?? 0, Role = "patroni", StandbysChecked = replicas.Count,
            MaxLagBytes = maxLagBytes, Failures = [.. failures], Success = failures.Count == 0,
        };
    }

    /// <summary>Waits until every replica has caught up with the leader (lag 0, as Patroni reports it) and returns the cluster then.</summary>
    public static async Task<PatroniCluster> WaitAsync(PatroniClient client, TimeSpan timeout, IOperationReporter reporter, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var cluster = await client.GetClusterAsync(ct).ConfigureAwait(false);
            var behind = cluster.Members.Where(m => m.Name != cluster.Leader && !(m.State is "running" or "streaming" && m.LagBytes == 0)).ToList();
            if (cluster.Leader != null && behind.Count == 0) return cluster;
            if (DateTime.UtcNow > deadline)
                throw new PgBackupException("ReplicationTimeout", ErrorKind.OperationTimeout,
                    $"The Patroni cluster {cluster.Scope} did not catch up within {timeout}: {(cluster.Leader == null ? "it has no leader" : string.Join(", ", behind.Select(m => $"{m.Name} is {m.State}, {(m.LagBytes?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "unknown")} bytes behind")))}.",
                    client.Display, "Look at the members (Get-PgReplicationStatus -Patroni) and their logs, or wait longer (-Timeout).");
            reporter.Progress($"Waiting for the Patroni cluster {cluster.Scope}", $"{behind.Count} member(s) behind", -1);
            await Task.Delay(250, ct).ConfigureAwait(false);
        }
    }
}
