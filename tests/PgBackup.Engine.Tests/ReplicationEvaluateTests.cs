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

    [Fact]
    public void Logical_links_are_judged_a_slot_without_subscriber_a_lagging_one_and_a_subscription_still_copying()
    {
        LogicalReplicationLink Publisher(string name, bool active, long lag) => new() { Side = "Publisher", Name = name, Active = active, LagBytes = lag, RetainedWalBytes = 4096 };
        var snapshot = new ReplicationSnapshot(Primary, false, new Lsn(1), [], null, [])
        {
            LogicalLinks = [Publisher("fine", true, 10), Publisher("orphan", false, 0), Publisher("slow", true, 5000),
                new LogicalReplicationLink { Side = "Subscriber", Name = "sub", State = "streaming", Tables = [new LogicalTableSync { Table = "public.a", State = "Copying" }, new LogicalTableSync { Table = "public.b", State = "Ready" }] }],
        };
        var result = ReplicationMonitor.Evaluate(snapshot, maxLagBytes: 1000, maxReplayLag: null);
        Assert.Equal(4, result.StandbysChecked);
        Assert.Collection(result.Failures,
            f => Assert.Contains("'orphan' has no subscriber connected; it holds 4096 bytes", f),
            f => Assert.Contains("'slow' has not confirmed 5000 bytes", f),
            f => Assert.Contains("still copying 1 table(s): public.a (Copying)", f));
        Assert.Null(LogicalLinks.OrphanWarning(snapshot.LogicalLinks[0]));
        Assert.Null(LogicalLinks.OrphanWarning(snapshot.LogicalLinks[1]));
        Assert.Contains("holds 4096 bytes of WAL", LogicalLinks.OrphanWarning(new LogicalReplicationLink { Side = "Publisher", Name = "pgbackup_migration_x", Owned = true, Active = false, RetainedWalBytes = 4096 }));
    }
}
