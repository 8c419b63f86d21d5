using System.Management.Automation;
using PgBackup.Testing;

namespace PgBackup.Module.Tests;

/// <summary>
/// A cluster archiving through the module, a base backup before and one after the first rows of a ledger, then a
/// "disaster": a DELETE without WHERE after the last good commit. Everything archived.
/// </summary>
public sealed class PitrModuleFixture : IDisposable
{
    public PgTestCluster Cluster { get; } = PgTestCluster.Start("pitr-module", new Dictionary<string, string> { ["track_commit_timestamp"] = "on" });
    public string Repository { get; } = TestFolders.NewPath("pgbackup-module-tests", "pitr-");
    public Dictionary<int, string> CommitTimes { get; } = [];
    public string LastGoodCommit => CommitTimes[20];

    public void Setup(PowerShellSession shell)
    {
        if (CommitTimes.Count > 0) return;
        shell.Run("Enable-PgWalArchiving -Server $s -Repository $r -Restart -Confirm:$false", ("s", Cluster.ServerArgument), ("r", Repository)).AssertNoErrors();
        Cluster.Psql("create table ledger(id int primary key, note text)");
        shell.Run("Start-PgBaseBackup -Server $s -Repository $r", ("s", Cluster.ServerArgument), ("r", Repository)).AssertNoErrors();
        for (var id = 1; id <= 20; id++)
        {
            Cluster.Psql($"insert into ledger values ({id}, 'row {id}')");
            if (id == 10) shell.Run("Start-PgBaseBackup -Server $s -Repository $r", ("s", Cluster.ServerArgument), ("r", Repository)).AssertNoErrors();
        }
        foreach (var line in Cluster.Psql("select id || '|' || to_char(pg_xact_commit_timestamp(xmin) at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') from ledger").Split('\n'))
            CommitTimes[int.Parse(line.Split('|')[0])] = line.Split('|')[1];
        Thread.Sleep(10);
        Cluster.Psql("delete from ledger"); // 14:05, someone forgot the WHERE
        Cluster.ArchiveCurrentSegment();
    }

    public void Dispose()
    {
        Cluster.Dispose();
        try { Directory.Delete(Repository, recursive: true); } catch (IOException) { }
    }
}

[Collection("module")]
public sealed class PointInTimeCmdletTests : IClassFixture<PitrModuleFixture>, IDisposable
{
    private readonly ModuleFixture fx;
    private readonly PitrModuleFixture pitr;
    private readonly List<string> directories = [];

    public PointInTimeCmdletTests(ModuleFixture fx, PitrModuleFixture pitr)
    {
        this.fx = fx;
        this.pitr = pitr;
        pitr.Setup(fx.Shell);
    }

    public void Dispose()
    {
        foreach (var directory in directories.Where(Directory.Exists))
            fx.Shell.Run("Remove-PgInstance -DataDirectory $d -Force -Confirm:$false", ("d", directory));
    }

    private string NewDataDirectory()
    {
        var directory = TestFolders.NewPath("pgbackup-module-tests", "pitr-data-");
        directories.Add(directory);
        return directory;
    }

    private (string Name, object? Value)[] Vars(params (string, object?)[] more) =>
        [("s", pitr.Cluster.ServerArgument), ("r", pitr.Repository), .. more];

    private string LedgerAt(int port) => PgTestCluster.QueryAt(port, "select coalesce(string_agg(id::text, ',' order by id), '') from ledger");

    [Fact]
    public void The_rescue_is_one_pipeline_restore_to_before_the_mistake_dump_the_table_and_put_it_back()
    {
        var dump = Path.Combine(fx.NewRepository(), "ledger.dump");
        var run = fx.Shell.Run("""
            $recovered = Get-PgBackup -Repository $r -Kind Base -Latest | Restore-PgPointInTime -TargetTime $t -DataDirectory $d -Confirm:$false
            $recovered
            $recovered | Invoke-PgDump -Database postgres -Table ledger -Path $p -Format Custom | Out-Null
            Restore-PgDump -Path $p -Server $s -TargetDatabase postgres -DataOnly -Confirm:$false | Out-Null
            """, Vars(("t", DateTimeOffset.Parse(pitr.LastGoodCommit)), ("d", NewDataDirectory()), ("p", dump))).AssertNoErrors();

        var result = Assert.Single(run.Output);
        Assert.Contains("PgBackup.RecoveryResult", result.TypeNames);
        Assert.Equal("localhost", result.Properties["Server"].Value);
        Assert.Equal(true, result.Properties["Promoted"].Value);
        Assert.Equal(DateTimeOffset.Parse(pitr.LastGoodCommit), (DateTimeOffset)result.Properties["ReachedTime"].Value);
        Assert.Equal(string.Join(",", Enumerable.Range(1, 20)), LedgerAt((int)result.Properties["Port"].Value));
        Assert.Equal(string.Join(",", Enumerable.Range(1, 20)), pitr.Cluster.Psql("select string_agg(id::text, ',' order by id) from ledger"));
        pitr.Cluster.Psql("delete from ledger"); // back to the state after the disaster, for the other tests
        pitr.Cluster.ArchiveCurrentSegment();
    }

    [Fact]
    public void Given_a_server_it_picks_the_newest_base_backup_that_can_reach_the_target()
    {
        var backups = fx.Shell.Run("Get-PgBackup -Repository $r -Kind Base", Vars()).AssertNoErrors().Output
            .OrderBy(o => (DateTimeOffset)o.Properties["StartTime"].Value).Select(o => (string)o.Properties["Id"].Value).ToList();
        Assert.Equal(2, backups.Count);

        var early = fx.Shell.Run("Restore-PgPointInTime -Server $s -Repository $r -TargetTime $t -DataDirectory $d -Confirm:$false",
            Vars(("t", DateTimeOffset.Parse(pitr.CommitTimes[5])), ("d", NewDataDirectory()))).AssertNoErrors().Output.Single();
        Assert.Equal(backups[0], early.Properties["BackupId"].Value);
        Assert.Equal("1,2,3,4,5", LedgerAt((int)early.Properties["Port"].Value));

        var late = fx.Shell.Run("Restore-PgPointInTime -Server $s -Repository $r -TargetTime $t -Exclusive -DataDirectory $d -Confirm:$false",
            Vars(("t", DateTimeOffset.Parse(pitr.CommitTimes[15])), ("d", NewDataDirectory()))).AssertNoErrors().Output.Single();
        Assert.Equal(backups[1], late.Properties["BackupId"].Value);
        Assert.Equal(string.Join(",", Enumerable.Range(1, 14)), LedgerAt((int)late.Properties["Port"].Value));

        var byId = fx.Shell.Run("Restore-PgPointInTime -BackupId $id -Repository $r -Immediate -TargetAction Pause -DataDirectory $d -Confirm:$false",
            Vars(("id", backups[1]), ("d", NewDataDirectory()))).AssertNoErrors().Output.Single();
        Assert.Equal(false, byId.Properties["Promoted"].Value);
        Assert.Equal("1,2,3,4,5,6,7,8,9,10", LedgerAt((int)byId.Properties["Port"].Value));
    }

    [Fact]
    public void Bad_targets_and_destinations_are_errors_with_ids_and_nothing_is_written()
    {
        var directory = NewDataDirectory();
        var none = fx.Shell.Run("Get-PgBackup -Repository $r -Kind Base -Latest | Restore-PgPointInTime -DataDirectory $d -Confirm:$false", Vars(("d", directory))).SingleError();
        Assert.Equal("PgBackup.NoRecoveryTarget", none.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidArgument, none.CategoryInfo.Category);

        var beyond = fx.Shell.Run("Get-PgBackup -Repository $r -Kind Base -Latest | Restore-PgPointInTime -TargetTime $t -DataDirectory $d -Confirm:$false",
            Vars(("t", DateTimeOffset.UtcNow.AddHours(1)), ("d", directory))).SingleError();
        Assert.Equal("PgBackup.TargetBeyondArchive", beyond.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidArgument, beyond.CategoryInfo.Category);
        Assert.Equal("PgBackup.RecoveryTarget", beyond.TargetObject.GetType().FullName);
        Assert.Contains("-Latest", beyond.ErrorDetails.RecommendedAction);

        var before = fx.Shell.Run("Restore-PgPointInTime -Server $s -Repository $r -TargetTime '2001-01-01Z' -DataDirectory $d -Confirm:$false", Vars(("d", directory))).SingleError();
        Assert.Equal("PgBackup.TargetBeforeBackupEnd", before.FullyQualifiedErrorId.Split(',')[0]);
        Assert.False(Directory.Exists(directory));

        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "keep.txt"), "precious");
        var full = fx.Shell.Run("Restore-PgPointInTime -Server $s -Repository $r -Latest -DataDirectory $d -Confirm:$false", Vars(("d", directory))).SingleError();
        Assert.Equal("PgBackup.DataDirectoryNotEmpty", full.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.ResourceExists, full.CategoryInfo.Category);
        Assert.Equal("precious", File.ReadAllText(Path.Combine(directory, "keep.txt")));

        var port = fx.Shell.Run("Restore-PgPointInTime -Server $s -Repository $r -Latest -DataDirectory $d -Port $p -Confirm:$false",
            Vars(("d", NewDataDirectory()), ("p", pitr.Cluster.Port))).SingleError();
        Assert.Equal("PgBackup.PortInUse", port.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(pitr.Cluster.Port, port.TargetObject);

        var whatIf = NewDataDirectory();
        fx.Shell.Run("Restore-PgPointInTime -Server $s -Repository $r -Latest -DataDirectory $d -WhatIf", Vars(("d", whatIf))).AssertNoErrors();
        Assert.False(Directory.Exists(whatIf));
    }

    [Fact]
    public void Instances_stop_start_and_are_removed_through_the_pipeline()
    {
        var directory = NewDataDirectory();
        var stopped = fx.Shell.Run("Restore-PgPointInTime -Server $s -Repository $r -Latest -DataDirectory $d -Confirm:$false | Stop-PgInstance -PassThru -Confirm:$false",
            Vars(("d", directory))).AssertNoErrors().Output.Single();
        Assert.Contains("PgBackup.PgInstance", stopped.TypeNames);
        Assert.Equal("Stopped", stopped.Properties["State"].Value.ToString());

        var port = FreePort.Next();
        var started = fx.Shell.Run("Start-PgInstance -DataDirectory $d -Port $p -Confirm:$false", ("d", directory), ("p", port)).AssertNoErrors().Output.Single();
        Assert.Equal("Running", started.Properties["State"].Value.ToString());
        Assert.Equal(port, started.Properties["Port"].Value);
        Assert.Equal("", LedgerAt(port)); // the state after the DELETE, recovered with -Latest

        fx.Shell.Run("Stop-PgInstance $d -Mode Immediate -Confirm:$false", ("d", directory)).AssertNoErrors();
        fx.Shell.Run("Remove-PgInstance $d -WhatIf", ("d", directory)).AssertNoErrors();
        Assert.True(File.Exists(Path.Combine(directory, "PG_VERSION")));
        fx.Shell.Run("Remove-PgInstance $d -Confirm:$false", ("d", directory)).AssertNoErrors();
        Assert.False(Directory.Exists(directory));

        var notData = fx.Shell.Run("Start-PgInstance -DataDirectory $d -Confirm:$false", ("d", fx.NewRepository())).SingleError();
        Assert.Equal("PgBackup.NotADataDirectory", notData.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidArgument, notData.CategoryInfo.Category);
        var timeout = fx.Shell.Run("Start-PgInstance -DataDirectory $d -Timeout 0 -Confirm:$false", ("d", directory)).SingleError();
        Assert.Equal("PgBackup.InvalidTimeout", timeout.FullyQualifiedErrorId.Split(',')[0]);
        var missing = fx.Shell.Run("Stop-PgInstance -DataDirectory $d -Confirm:$false", ("d", directory)).SingleError();
        Assert.Equal("PgBackup.DataDirectoryNotFound", missing.FullyQualifiedErrorId.Split(',')[0]);
    }

    [Fact]
    public void Clusters_the_operating_system_manages_are_left_to_it()
    {
        // A cluster registered the way Debian and Ubuntu do it (/etc/postgresql/<version>/<name>/postgresql.conf).
        Assert.True(Environment.IsPrivilegedProcess, "this test registers a cluster under /etc/postgresql and needs root");
        var directory = fx.NewRepository();
        File.WriteAllText(Path.Combine(directory, "PG_VERSION"), PgTestCluster.MajorVersion + "\n");
        var registration = Path.Combine("/etc/postgresql", "99", "pgbackup" + Guid.NewGuid().ToString("N")[..6]);
        Directory.CreateDirectory(registration);
        try
        {
            File.WriteAllText(Path.Combine(registration, "postgresql.conf"), $"data_directory = '{directory}'\n");
            var start = fx.Shell.Run("Start-PgInstance -DataDirectory $d -Confirm:$false", ("d", directory)).SingleError();
            Assert.Equal("PgBackup.InstanceManagedByOs", start.FullyQualifiedErrorId.Split(',')[0]);
            Assert.Equal(ErrorCategory.InvalidOperation, start.CategoryInfo.Category);
            Assert.Contains("pg_ctlcluster", start.ErrorDetails.RecommendedAction);
            var remove = fx.Shell.Run("Remove-PgInstance -DataDirectory $d -Confirm:$false", ("d", directory)).SingleError();
            Assert.Equal("PgBackup.InstanceManagedByOs", remove.FullyQualifiedErrorId.Split(',')[0]);
            Assert.True(File.Exists(Path.Combine(directory, "PG_VERSION")));
        }
        finally
        {
            Directory.Delete(registration, recursive: true);
            if (!Directory.EnumerateFileSystemEntries("/etc/postgresql/99").Any()) Directory.Delete("/etc/postgresql/99");
        }
    }

    [Fact]
    public void A_drill_measures_rto_and_rpo_against_objectives_writes_evidence_and_cleans_up()
    {
        pitr.Cluster.Psql("insert into ledger values (500, 'after the disaster')");
        pitr.Cluster.ArchiveCurrentSegment();
        var report = Path.Combine(fx.NewRepository(), "drill.md");
        var passed = fx.Shell.Run("Invoke-PgRecoveryDrill -Server $s -Repository $r -RtoObjective 00:15:00 -RpoObjective 00:05:00 -Query 'select count(*) from ledger where id = 500' -ReportPath $p -Confirm:$false",
            Vars(("p", report))).AssertNoErrors().Output.Single();
        Assert.Contains("PgBackup.DrillReport", passed.TypeNames);
        Assert.True((bool)passed.Properties["Passed"].Value, string.Join("; ", (string[])passed.Properties["Failures"].Value));
        Assert.Equal(true, passed.Properties["RtoMet"].Value);
        Assert.Equal(true, passed.Properties["RpoMet"].Value);
        Assert.Equal(TimeSpan.Zero, passed.Properties["Rpo"].Value); // everything committed was archived
        Assert.StartsWith("exact", (string)passed.Properties["RpoMethod"].Value);
        Assert.False(Directory.Exists((string)passed.Properties["DataDirectory"].Value));
        var markdown = File.ReadAllText(report);
        Assert.Contains("**Result: PASSED**", markdown);
        Assert.Contains("| Query: select count(*) from ledger where id = 500 | pass |", markdown);

        // Work committed and not archived yet is the recovery point the drill measures: the time from the newest
        // commit recovered (row 500) to the newest commit on the source (row 501, over a second later).
        Thread.Sleep(1100);
        pitr.Cluster.Psql("insert into ledger values (501, 'not archived')");
        var failed = fx.Shell.Run("Invoke-PgRecoveryDrill -Server $s -Repository $r -RtoObjective 00:00:00.001 -RpoObjective 00:00:01 -Keep -Confirm:$false", Vars()).AssertNoErrors().Output.Single();
        var kept = (string)failed.Properties["DataDirectory"].Value;
        directories.Add(kept);
        Assert.False((bool)failed.Properties["Passed"].Value);
        Assert.Equal(false, failed.Properties["RtoMet"].Value);
        Assert.True(false.Equals(failed.Properties["RpoMet"].Value), $"RPO {failed.Properties["Rpo"].Value}, source newest commit {failed.Properties["SourceNewestCommit"].Value:O}, recovered {failed.Properties["RecoveredTime"].Value:O}, {failed.Properties["RpoMethod"].Value}");
        Assert.True((TimeSpan)failed.Properties["Rpo"].Value >= TimeSpan.FromSeconds(1));
        var failures = (string[])failed.Properties["Failures"].Value;
        Assert.Contains(failures, f => f.StartsWith("RTO objective", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("RPO objective", StringComparison.Ordinal));
        Assert.True(Directory.Exists(kept));
        pitr.Cluster.Psql("delete from ledger");
        pitr.Cluster.ArchiveCurrentSegment();
    }
}
