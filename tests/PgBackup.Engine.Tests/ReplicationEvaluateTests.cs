using PgBackup.Engine.Replication;

namespace PgBackup.Engine.Tests;

public sealed class ReplicationEvaluateTests
{
    private static readonly Connection.ConnectionTarget Primary = new() { Host = "db1", Port = 5432, Database = "postgres", User = "u" };

    private static ReplicationLink Link(string name, string state = "streaming", long lag = 0, TimeSpan? replayLag = null) =>
        new() { ApplicationName = name, State = state, ReplayLagBytes = lag, ReplayLag = replayLag };

    [Fact]
    public void Every_reason_is_reported_and_idle_standbys_pass()
    {
        var snapshot = new ReplicationSnapshot(Primary, false, new Lsn(100), [Link("a"), Link("b", "catchup", 5000, TimeSpan.FromMinutes(2)), Link("c", replayLag: null)], null, []);
        var result = ReplicationMonitor.Evaluate(snapshot, maxLagBytes: 1000, maxReplayLag: TimeSpan.FromMinutes(1));
        Assert.False(result.Success);
        Assert.Equal(3, result.StandbysChecked);
        Assert.Equal(3, result.Failures.Length);
        Assert.All(result.Failures, f => Assert.Contains("'b'", f));
    }

    [Fact]
    public void A_primary_without_standbys_and_a_paused_standby_fail()
    {
        Assert.Contains("No standby", Assert.Single(ReplicationMonitor.Evaluate(new ReplicationSnapshot(Primary, false, new Lsn(1), [], null, []), null, null).Failures));
        var standby = new StandbyStatus { ReceiverStatus = "streaming", ReplayPaused = true, ReplayLagBytes = 10, ReplayDelay = TimeSpan.FromSeconds(3) };
        var result = ReplicationMonitor.Evaluate(new ReplicationSnapshot(Primary, true, new Lsn(1), [], standby, []), maxLagBytes: 100, maxReplayLag: TimeSpan.FromSeconds(10));
        Assert.Equal("Standby", result.Role);
        Assert.Contains("paused", Assert.Single(result.Failures));
    }
}
