using System.Management.Automation;
using PgBackup.Testing;

namespace PgBackup.Module.Tests;

/// <summary>A primary, a standby streaming from it, and a cascading standby streaming from the standby.</summary>
public sealed class ReplicationClusterFixture : IDisposable
{
    public PgTestCluster Primary { get; }
    public PgTestCluster Standby { get; }
    public PgTestCluster Cascade { get; }

    public ReplicationClusterFixture()
    {
        Primary = PgTestCluster.Start("repl-primary");
        Primary.Psql("create table ledger(id serial primary key, note text); select pg_create_physical_replication_slot('spare_slot', true);");
        Standby = PgTestCluster.StartStandbyOf(Primary, "repl-standby");
        Cascade = PgTestCluster.StartStandbyOf(Standby, "repl-cascade");
    }

    public void Dispose()
    {
        Cascade.Dispose();
        Standby.Dispose();
        Primary.Dispose();
    }
}

[Collection("module")]
public sealed class ReplicationCmdletTests(ModuleFixture fx, ReplicationClusterFixture repl) : IClassFixture<ReplicationClusterFixture>
{
    private void WaitForStreaming() =>
        Wait.Until(() => repl.Primary.Psql("select count(*) from pg_stat_replication where state = 'streaming'") == "1" &&
                        repl.Standby.Psql("select count(*) from pg_stat_replication where state = 'streaming'") == "1", "both standbys stream");

    [Fact]
    public void The_primary_shows_its_standby_and_the_standby_shows_its_receiver_and_its_cascade()
    {
        WaitForStreaming();
        repl.Primary.Psql("insert into ledger(note) values ('seen by all')");
        var primary = fx.Shell.Run("Get-PgReplicationStatus -Server $s -IncludeSlots", ("s", repl.Primary.ServerArgument)).AssertNoErrors();
        var link = Assert.Single(primary.Output, o => o.TypeNames.Contains("PgBackup.ReplicationLink"));
        Assert.Equal("Primary", link.Properties["Role"].Value);
        Assert.Equal("streaming", link.Properties["State"].Value);
        Assert.Equal("127.0.0.1", link.Properties["ClientAddress"].Value);
        Assert.True((long)link.Properties["ReplayLagBytes"].Value! >= 0);
        Assert.Matches("^[0-9A-F]+/[0-9A-F]+$", link.Properties["CurrentLsn"].Value!.ToString());
        var slot = Assert.Single(primary.Output, o => o.TypeNames.Contains("PgBackup.ReplicationSlot"));
        Assert.Equal("spare_slot", slot.Properties["SlotName"].Value);
        Assert.Equal(false, slot.Properties["Active"].Value);
        Assert.True((long)slot.Properties["RetainedBytes"].Value! > 0);

        var standby = fx.Shell.Run("Get-PgReplicationStatus -Server $s", ("s", repl.Standby.ServerArgument)).AssertNoErrors();
        var status = Assert.Single(standby.Output, o => o.TypeNames.Contains("PgBackup.StandbyStatus"));
        Assert.Equal("streaming", status.Properties["ReceiverStatus"].Value);
        Assert.Equal(repl.Primary.Port, status.Properties["UpstreamPort"].Value);
        Assert.Equal(repl.Primary.Psql("select system_identifier from pg_control_system()"), status.Properties["SystemIdentifier"].Value);
        var cascade = Assert.Single(standby.Output, o => o.TypeNames.Contains("PgBackup.ReplicationLink"));
        Assert.Equal("Standby", cascade.Properties["Role"].Value);
    }

    [Fact]
    public void Several_servers_pipe_in_as_strings()
    {
        WaitForStreaming();
        var r = fx.Shell.Run("$servers | Get-PgReplicationStatus", ("servers", new[] { repl.Primary.ServerArgument, repl.Standby.ServerArgument, repl.Cascade.ServerArgument })).AssertNoErrors();
        Assert.Equal(2, r.Output.Count(o => o.TypeNames.Contains("PgBackup.StandbyStatus")));
        Assert.Equal(2, r.Output.Count(o => o.TypeNames.Contains("PgBackup.ReplicationLink")));
    }

    [Fact]
    public void Test_PgReplication_passes_healthy_replication_and_explains_a_paused_replay()
    {
        WaitForStreaming();
        var healthy = fx.Shell.Run("Test-PgReplication -Server $s -MaxLagBytes 64MB -MaxReplayLag 00:05:00", ("s", repl.Primary.ServerArgument)).AssertNoErrors();
        Assert.Equal(true, Assert.Single(healthy.Output).Properties["Success"].Value);
        Assert.Equal(true, fx.Shell.Run("Test-PgReplication -Server $s -Quiet", ("s", repl.Standby.ServerArgument)).AssertNoErrors().Output[0].BaseObject);

        repl.Standby.Psql("select pg_wal_replay_pause()");
        try
        {
            repl.Primary.Psql("insert into ledger(note) select 'while paused ' || g from generate_series(1, 2000) g");
            Wait.Until(() => repl.Standby.Psql("select pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()") == "t", "the standby received WAL it has not replayed");

            var status = fx.Shell.Run("Get-PgReplicationStatus -Server $s", ("s", repl.Standby.ServerArgument)).AssertNoErrors()
                .Output.Single(o => o.TypeNames.Contains("PgBackup.StandbyStatus"));
            Assert.Equal(true, status.Properties["ReplayPaused"].Value);
            Assert.True((long)status.Properties["ReplayLagBytes"].Value! > 0);

            var failed = Assert.Single(fx.Shell.Run("Test-PgReplication -Server $s -MaxLagBytes 0", ("s", repl.Standby.ServerArgument)).AssertNoErrors().Output);
            Assert.Equal(false, failed.Properties["Success"].Value);
            Assert.Contains((string[])failed.Properties["Failures"].Value!, f => f.Contains("paused"));

            var e = fx.Shell.Run("Wait-PgReplication -Server $s -Timeout 00:00:02", ("s", repl.Primary.ServerArgument)).SingleError();
            Assert.Equal("PgBackup.ReplicationTimeout", e.FullyQualifiedErrorId.Split(',')[0]);
            Assert.Equal(ErrorCategory.OperationTimeout, e.CategoryInfo.Category);
        }
        finally { repl.Standby.Psql("select pg_wal_replay_resume()"); }

        var target = repl.Primary.Psql("select pg_current_wal_lsn()");
        var waited = fx.Shell.Run("Wait-PgReplication -Server $s -Lsn $l -Timeout 00:00:30", ("s", repl.Primary.ServerArgument), ("l", target)).AssertNoErrors();
        var link = Assert.Single(waited.Output);
        Assert.Equal(target, repl.Primary.Psql($"select least('{link.Properties["ReplayLsn"].Value}'::pg_lsn, '{target}'::pg_lsn)"));
    }

    [Fact]
    public void Synchronous_standbys_are_set_refused_when_absent_and_reset()
    {
        WaitForStreaming();
        var name = repl.Primary.Psql("select application_name from pg_stat_replication");
        Assert.NotEqual("", name);
        try
        {
            var set = fx.Shell.Run("Set-PgSynchronousStandby -Server $s -Standby $n -SynchronousCommit remote_apply", ("s", repl.Primary.ServerArgument), ("n", name)).AssertNoErrors();
            var result = Assert.Single(set.Output);
            Assert.Contains("PgBackup.SynchronousReplicationResult", result.TypeNames);
            Assert.Equal($"FIRST 1 (\"{name}\")", result.Properties["SynchronousStandbyNames"].Value);
            Assert.Equal("remote_apply", result.Properties["SynchronousCommit"].Value);
            Assert.Equal("sync", repl.Primary.Psql("select sync_state from pg_stat_replication"));
            repl.Primary.Psql("insert into ledger(note) values ('committed synchronously')"); // returns only because the standby confirms

            var before = repl.Primary.Psql("show synchronous_standby_names");
            var e = fx.Shell.Run("Set-PgSynchronousStandby -Server $s -Standby ghost", ("s", repl.Primary.ServerArgument)).SingleError();
            Assert.Equal("PgBackup.SynchronousStandbyNotConnected", e.FullyQualifiedErrorId.Split(',')[0]);
            Assert.Equal(ErrorCategory.InvalidOperation, e.CategoryInfo.Category);
            Assert.Contains(name, e.Exception.Message);
            Assert.Equal(before, repl.Primary.Psql("show synchronous_standby_names"));
        }
        finally
        {
            fx.Shell.Run("Set-PgSynchronousStandby -Server $s -Standby @() -SynchronousCommit on", ("s", repl.Primary.ServerArgument)).AssertNoErrors();
        }
        Assert.Equal("", repl.Primary.Psql("show synchronous_standby_names"));
        Assert.Equal("async", repl.Primary.Psql("select sync_state from pg_stat_replication"));
    }

    [Fact]
    public void A_primary_without_standbys_fails_the_test_and_an_unreachable_server_answers_false()
    {
        var lonely = Assert.Single(fx.Shell.Run("Test-PgReplication -Server $s", ("s", fx.Server)).AssertNoErrors().Output);
        Assert.Contains((string[])lonely.Properties["Failures"].Value!, f => f.Contains("No standby"));
        Assert.Equal(false, fx.Shell.Run("Test-PgReplication -Server $s -Quiet", ("s", $"127.0.0.1:{FreePort.Next()}")).AssertNoErrors().Output[0].BaseObject);
        var e = fx.Shell.Run("Wait-PgReplication -Server $s -Lsn 'not-an-lsn'", ("s", fx.Server)).SingleError();
        Assert.Equal("PgBackup.InvalidLsn", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidArgument, e.CategoryInfo.Category);
    }
}
