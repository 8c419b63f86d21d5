using System.Collections.Concurrent;
using System.Management.Automation;
using PgBackup.Testing;

namespace PgBackup.Module.Tests;

/// <summary>A primary and its standby whose roles the switchover tests swap (and swap back).</summary>
public sealed class SwitchoverClusterFixture : IDisposable
{
    public PgTestCluster A { get; }
    public PgTestCluster B { get; }

    public SwitchoverClusterFixture()
    {
        A = PgTestCluster.Start("switch-a");
        A.Psql("create table ledger(id int primary key)");
        B = PgTestCluster.StartStandbyOf(A, "switch-b");
    }

    public void Dispose()
    {
        B.Dispose();
        A.Dispose();
    }
}

[Collection("module")]
public sealed class SwitchPgPrimaryTests(ModuleFixture fx, SwitchoverClusterFixture sw) : IClassFixture<SwitchoverClusterFixture>
{
    /// <summary>Inserts ids one commit at a time into whichever server it is given and remembers every acknowledged one.</summary>
    private sealed class Writer : IDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Thread _thread;
        public ConcurrentBag<int> Acknowledged { get; } = [];

        public Writer(PgTestCluster primary, int firstId)
        {
            _thread = new Thread(() =>
            {
                for (var id = firstId; !_stop.IsCancellationRequested; id++)
                {
                    try { primary.Psql($"insert into ledger values ({id})"); Acknowledged.Add(id); }
                    catch (InvalidOperationException) { Thread.Sleep(20); } // refused while the primary is down or read-only: not acknowledged
                }
            });
            _thread.Start();
        }

        public void Dispose()
        {
            _stop.Cancel();
            _thread.Join();
        }
    }

    private void SwitchAndCheck(PgTestCluster primary, PgTestCluster candidate, int firstId)
    {
        Wait.Until(() => primary.Psql("select count(*) from pg_stat_replication where state = 'streaming'") == "1", "the candidate streams");
        RunResult result;
        List<int> acknowledged;
        using (var writer = new Writer(primary, firstId))
        {
            Wait.Until(() => writer.Acknowledged.Count >= 20, "the writer has committed");
            result = fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -Confirm:$false", ("p", primary.ServerArgument), ("c", candidate.ServerArgument)).AssertNoErrors();
            Thread.Sleep(200);
            acknowledged = [.. writer.Acknowledged];
        }
        var switched = Assert.Single(result.Output);
        Assert.Contains("PgBackup.SwitchoverResult", switched.TypeNames);
        Assert.Equal(0L, switched.Properties["BytesLost"].Value);
        Assert.Equal(true, switched.Properties["OldPrimaryRejoined"].Value);
        Assert.True((TimeSpan)switched.Properties["WriteUnavailable"].Value! < TimeSpan.FromSeconds(30));
        Assert.Equal(5, ((Array)switched.Properties["Steps"].Value!).Length);

        // Every acknowledged commit is on the new primary; the old primary is now its streaming standby.
        Assert.Equal("f", candidate.Psql("select pg_is_in_recovery()"));
        Assert.Equal("t", primary.Psql("select pg_is_in_recovery()"));
        var present = candidate.Psql($"select string_agg(id::text, ',') from ledger where id >= {firstId}").Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToHashSet();
        Assert.All(acknowledged, id => Assert.Contains(id, present));
        Wait.Until(() => candidate.Psql("select count(*) from pg_stat_replication where state = 'streaming'") == "1", "the old primary streams from the new one");
    }

    [Fact]
    public void A_switchover_loses_no_acknowledged_commit_and_a_second_one_brings_the_roles_back()
    {
        SwitchAndCheck(sw.A, sw.B, 1);
        SwitchAndCheck(sw.B, sw.A, 100_000);
    }

    [Fact]
    public void WhatIf_prints_the_plan_and_changes_nothing_and_guards_refuse()
    {
        var (primary, standby) = sw.A.Psql("select pg_is_in_recovery()") == "f" ? (sw.A, sw.B) : (sw.B, sw.A);
        Wait.Until(() => primary.Psql("select count(*) from pg_stat_replication where state = 'streaming'") == "1", "the standby streams");
        fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -WhatIf", ("p", primary.ServerArgument), ("c", standby.ServerArgument)).AssertNoErrors();
        Assert.Equal("f", primary.Psql("select pg_is_in_recovery()"));
        Assert.Equal("t", standby.Psql("select pg_is_in_recovery()"));

        var reversed = fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -Confirm:$false", ("p", standby.ServerArgument), ("c", primary.ServerArgument)).SingleError();
        Assert.Equal("PgBackup.NotAPrimary", reversed.FullyQualifiedErrorId.Split(',')[0]);
        var notStandby = fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -Confirm:$false", ("p", primary.ServerArgument), ("c", fx.Server)).SingleError();
        Assert.Equal("PgBackup.CandidateNotStandby", notStandby.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidOperation, notStandby.CategoryInfo.Category);
        using (var stranger = PgTestCluster.StartStandbyOf(fx.Cluster, "switch-stranger"))
        {
            var foreign = fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -Confirm:$false", ("p", primary.ServerArgument), ("c", stranger.ServerArgument)).SingleError();
            Assert.Equal("PgBackup.DifferentCluster", foreign.FullyQualifiedErrorId.Split(',')[0]);
            Assert.Equal("f", primary.Psql("select pg_is_in_recovery()"));
        }

        standby.Psql("select pg_wal_replay_pause()");
        try
        {
            primary.Psql("insert into ledger select g from generate_series(500000, 520000) g");
            Wait.Until(() => standby.Psql("select pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()") == "t", "the standby lags");
            var lagging = fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -MaxLagBytes 0 -Confirm:$false", ("p", primary.ServerArgument), ("c", standby.ServerArgument)).SingleError();
            Assert.Equal("PgBackup.CandidateLagging", lagging.FullyQualifiedErrorId.Split(',')[0]);
            Assert.Equal("f", primary.Psql("select pg_is_in_recovery()"));
        }
        finally { standby.Psql("select pg_wal_replay_resume()"); }
    }
}

/// <summary>A primary and two standbys; the failover test kills the primary.</summary>
public sealed class FailoverClusterFixture : IDisposable
{
    public PgTestCluster Primary { get; }
    public PgTestCluster Standby1 { get; }
    public PgTestCluster Standby2 { get; }

    public FailoverClusterFixture()
    {
        // pg_rewind reads the old primary's WAL back to the last common checkpoint; keep it from being recycled.
        Primary = PgTestCluster.Start("fail-p", new Dictionary<string, string> { ["wal_keep_size"] = "256MB" });
        Primary.Psql("create table ledger(id int primary key)");
        Standby1 = PgTestCluster.StartStandbyOf(Primary, "fail-s1");
        Standby2 = PgTestCluster.StartStandbyOf(Primary, "fail-s2");
    }

    public void Dispose()
    {
        Standby2.Dispose();
        Standby1.Dispose();
        Primary.Dispose();
    }
}

[Collection("module")]
public sealed class FailoverTests(ModuleFixture fx, FailoverClusterFixture f) : IClassFixture<FailoverClusterFixture>
{
    private static void Crash(PgTestCluster cluster)
    {
        var pgCtl = Path.Combine(PgTestCluster.BinDirectory, "pg_ctl");
        var (code, _, err) = Environment.IsPrivilegedProcess
            ? ProcessRunner.Run("runuser", ["-u", "postgres", "--", pgCtl, "stop", "-D", cluster.DataDirectory, "-m", "immediate", "-w"])
            : ProcessRunner.Run(pgCtl, ["stop", "-D", cluster.DataDirectory, "-m", "immediate", "-w"]);
        Assert.True(code == 0, err);
    }

    [Fact]
    public void Failover_promotes_the_most_advanced_standby_only_once_fenced_and_the_other_follows()
    {
        Wait.Until(() => f.Primary.Psql("select count(*) from pg_stat_replication where state = 'streaming'") == "2", "both standbys stream");
        var reachable = fx.Shell.Run("Switch-PgPrimary -Failover -Primary $p -Candidate $c -Force -Confirm:$false", ("p", f.Primary.ServerArgument), ("c", new[] { f.Standby1.ServerArgument })).SingleError();
        Assert.Equal("PgBackup.PrimaryReachable", reachable.FullyQualifiedErrorId.Split(',')[0]);

        f.Primary.Psql("insert into ledger select generate_series(1, 100)");
        Wait.Until(() => f.Standby2.Psql("select count(*) from ledger") == "100", "standby 2 has the first rows");
        f.Standby2.Stop();
        f.Primary.Psql("insert into ledger select generate_series(101, 200)");
        Wait.Until(() => f.Standby1.Psql("select count(*) from ledger") == "200", "standby 1 has every row");
        // Standby 1 stops receiving, so the last rows the primary commits before it crashes reach no standby.
        f.Standby1.Psql("alter system set primary_conninfo = ''");
        f.Standby1.Psql("select pg_reload_conf()");
        Wait.Until(() => f.Standby1.Psql("show primary_conninfo") == "" && f.Standby1.Psql("select count(*) from pg_stat_wal_receiver") == "0", "standby 1 no longer receives");
        f.Primary.Psql("set synchronous_commit = on; insert into ledger select generate_series(1001, 1010)"); // on disk before the crash
        Thread.Sleep(200);
        Assert.Equal("0", f.Standby1.Psql("select count(*) from ledger where id > 1000"));
        Crash(f.Primary);
        f.Standby2.StartAgain();

        var candidates = new[] { f.Standby2.ServerArgument, f.Standby1.ServerArgument };
        var unfenced = fx.Shell.Run("Switch-PgPrimary -Failover -Primary $p -Candidate $c -Confirm:$false", ("p", f.Primary.ServerArgument), ("c", candidates)).SingleError();
        Assert.Equal("PgBackup.NotFenced", unfenced.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal("t", f.Standby1.Psql("select pg_is_in_recovery()"));
        Assert.Equal("t", f.Standby2.Psql("select pg_is_in_recovery()"));

        var run = fx.Shell.Run("Switch-PgPrimary -Failover -Primary $p -Candidate $c -FenceScript 'exit 0' -PrimaryDataDirectory $d -Confirm:$false",
            ("p", f.Primary.ServerArgument), ("c", candidates), ("d", f.Primary.DataDirectory)).AssertNoErrors();
        var result = Assert.Single(run.Output);
        Assert.Equal(f.Standby1.ServerArgument, result.Properties["NewPrimary"].Value);
        Assert.Equal(true, result.Properties["Failover"].Value);
        // The ten rows' WAL is the possible loss, read from the crashed primary's own pg_wal.
        var lost = (long)result.Properties["BytesLost"].Value!;
        Assert.True(lost is > 0 and < 1 << 20, string.Join("; ", ((Array)result.Properties["Steps"].Value!).Cast<object>().Select(o => PSObject.AsPSObject(o).Properties["Name"].Value)) + " final " + result.Properties["FinalLsn"].Value);
        Assert.Contains(run.Warnings, w => w.Contains($"{lost} bytes of WAL", StringComparison.Ordinal));
        Assert.Contains((string[])result.Properties["Repointed"].Value!, r => r == f.Standby2.ServerArgument);
        Assert.Contains((string[])result.Properties["CandidatesBehind"].Value!, b => b.StartsWith(f.Standby2.ServerArgument));

        Assert.Equal("f", f.Standby1.Psql("select pg_is_in_recovery()"));
        Assert.Equal("200", f.Standby1.Psql("select count(*) from ledger"));
        f.Standby1.Psql("insert into ledger values (201)");
        Wait.Until(() => f.Standby2.Psql("select count(*) from ledger") == "201", "standby 2 follows the new primary");

        // The crashed old primary rejoins through pg_rewind as a standby of the new primary.
        var joined = Assert.Single(fx.Shell.Run("Join-PgStandby -Server $s -DataDirectory $d -Timeout 00:00:20 -Confirm:$false", ("s", f.Standby1.ServerArgument), ("d", f.Primary.DataDirectory)).AssertNoErrors().Output);
        Assert.Contains("PgBackup.StandbyStatus", joined.TypeNames);
        Assert.Equal("streaming", joined.Properties["ReceiverStatus"].Value);
        Assert.Equal(f.Standby1.Port, joined.Properties["UpstreamPort"].Value);
        Wait.Until(() => f.Primary.Psql("select count(*) from ledger") == "201", "the old primary replays the new primary's writes");
        Assert.Equal("t", f.Primary.Psql("select pg_is_in_recovery()"));

        var running = fx.Shell.Run("Join-PgStandby -Server $s -DataDirectory $d -Confirm:$false", ("s", f.Standby1.ServerArgument), ("d", f.Primary.DataDirectory)).SingleError();
        Assert.Equal("PgBackup.DataDirectoryInUse", running.FullyQualifiedErrorId.Split(',')[0]);
    }
}

/// <summary>A primary with two standbys, for switchovers that stop the primary through a fence script (as for another host).</summary>
public sealed class FencedSwitchoverFixture : IDisposable
{
    public PgTestCluster A { get; }
    public PgTestCluster B { get; }
    public PgTestCluster C { get; }

    public FencedSwitchoverFixture()
    {
        A = PgTestCluster.Start("fence-a");
        A.Psql("create table ledger(id int primary key)");
        B = PgTestCluster.StartStandbyOf(A, "fence-b");
        C = PgTestCluster.StartStandbyOf(A, "fence-c");
    }

    public void Dispose()
    {
        C.Dispose();
        B.Dispose();
        A.Dispose();
    }
}

[Collection("module")]
public sealed class FencedSwitchoverTests(ModuleFixture fx, FencedSwitchoverFixture f) : IClassFixture<FencedSwitchoverFixture>
{
    /// <summary>What an operator's script would do over ssh: a clean shutdown of the primary, and (optionally) its control data.</summary>
    private static string StopScript(PgTestCluster primary, bool printControlData)
    {
        var asPostgres = Environment.IsPrivilegedProcess ? "runuser -u postgres -- " : "";
        var stop = $"cd / && {asPostgres}'{Path.Combine(PgTestCluster.BinDirectory, "pg_ctl")}' stop -D '{primary.DataDirectory}' -m fast -w >/dev/null";
        return printControlData ? $"{stop} && '{Path.Combine(PgTestCluster.BinDirectory, "pg_controldata")}' '{primary.DataDirectory}'" : stop;
    }

    [Fact]
    public void A_primary_stopped_by_a_fence_script_switches_over_and_the_other_standby_follows_the_new_primary()
    {
        Wait.Until(() => f.A.Psql("select count(*) from pg_stat_replication where state = 'streaming'") == "2", "both standbys stream");
        f.A.Psql("insert into ledger select generate_series(1, 100)");

        var whatIf = fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -Standby $o -FenceScript $f -WhatIf",
            ("p", f.A.ServerArgument), ("c", f.B.ServerArgument), ("o", new[] { f.C.ServerArgument }), ("f", StopScript(f.A, true))).AssertNoErrors();
        Assert.Empty(whatIf.Output);
        Assert.Equal("f", f.A.Psql("select pg_is_in_recovery()"));
        Assert.Equal("t", f.B.Psql("select pg_is_in_recovery()"));
        Assert.Equal("2", f.A.Psql("select count(*) from pg_stat_replication where state = 'streaming'"));

        var run = fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -Standby $o -FenceScript $f -Confirm:$false",
            ("p", f.A.ServerArgument), ("c", f.B.ServerArgument), ("o", new[] { f.C.ServerArgument }), ("f", StopScript(f.A, true))).AssertNoErrors();
        var result = Assert.Single(run.Output);
        Assert.Equal(0L, result.Properties["BytesLost"].Value); // proven against the final checkpoint the script printed
        Assert.Equal(false, result.Properties["OldPrimaryRejoined"].Value);
        Assert.Equal([f.C.ServerArgument], (string[])result.Properties["Repointed"].Value!);
        Assert.Contains(run.Warnings, w => w.Contains("Join-PgStandby", StringComparison.Ordinal));
        Assert.Equal("f", f.B.Psql("select pg_is_in_recovery()"));
        Assert.Equal("100", f.B.Psql("select count(*) from ledger"));
        f.B.Psql("insert into ledger values (101)");
        Wait.Until(() => f.C.Psql("select count(*) from ledger") == "101", "the other standby follows the new primary");

        // The old primary rejoins on its host; a second fenced switchover without control data cannot prove zero loss.
        fx.Shell.Run("Join-PgStandby -Server $s -DataDirectory $d -Confirm:$false", ("s", f.B.ServerArgument), ("d", f.A.DataDirectory)).AssertNoErrors();
        Wait.Until(() => f.B.Psql("select count(*) from pg_stat_replication where state = 'streaming'") == "2", "both standbys stream from the new primary");
        var back = fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -Standby $o -FenceScript $f -Confirm:$false",
            ("p", f.B.ServerArgument), ("c", f.A.ServerArgument), ("o", new[] { f.C.ServerArgument }), ("f", StopScript(f.B, false))).AssertNoErrors();
        var unproven = Assert.Single(back.Output);
        Assert.Null(unproven.Properties["BytesLost"].Value);
        Assert.Contains(back.Warnings, w => w.Contains("cannot be proven", StringComparison.Ordinal));
        Assert.Equal("101", f.A.Psql("select count(*) from ledger"));
        Assert.Equal("f", f.A.Psql("select pg_is_in_recovery()"));
        fx.Shell.Run("Join-PgStandby -Server $s -DataDirectory $d -Confirm:$false", ("s", f.A.ServerArgument), ("d", f.B.DataDirectory)).AssertNoErrors();
    }

    [Fact]
    public void A_fence_script_that_leaves_the_primary_running_promotes_nothing()
    {
        var (primary, candidate) = f.A.Psql("select pg_is_in_recovery()") == "f" ? (f.A, f.B) : (f.B, f.A);
        Wait.Until(() => primary.Psql("select count(*) from pg_stat_replication where state = 'streaming'") == "2", "both standbys stream");
        var e = fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -FenceScript 'true' -Confirm:$false", ("p", primary.ServerArgument), ("c", candidate.ServerArgument)).SingleError();
        Assert.Equal("PgBackup.PrimaryStillRunning", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal("t", candidate.Psql("select pg_is_in_recovery()"));
        var failing = fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -FenceScript 'exit 3' -Confirm:$false", ("p", primary.ServerArgument), ("c", candidate.ServerArgument)).SingleError();
        Assert.Equal("PgBackup.FenceFailed", failing.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal("f", primary.Psql("select pg_is_in_recovery()"));
        var notStandby = fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -Standby $o -Confirm:$false", ("p", primary.ServerArgument), ("c", candidate.ServerArgument), ("o", new[] { fx.Server })).SingleError();
        Assert.Equal("PgBackup.StandbyNotStandby", notStandby.FullyQualifiedErrorId.Split(',')[0]);

        // Control data of a crashed primary holds an older checkpoint: no proof, so no promotion.
        var crash = StopScript(primary, printControlData: true).Replace("-m fast", "-m immediate", StringComparison.Ordinal);
        var crashed = fx.Shell.Run("Switch-PgPrimary -Primary $p -Candidate $c -FenceScript $f -Confirm:$false", ("p", primary.ServerArgument), ("c", candidate.ServerArgument), ("f", crash)).SingleError();
        Assert.Equal("PgBackup.PrimaryNotCleanlyStopped", crashed.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal("t", candidate.Psql("select pg_is_in_recovery()"));
        primary.StartAgain();
        Wait.Until(() => primary.Psql("select count(*) from pg_stat_replication where state = 'streaming'") == "2", "both standbys stream again");
    }
}
