using System.Management.Automation;
using PgBackup.Testing;

namespace PgBackup.Module.Tests;

/// <summary>A cluster of its own: these tests switch archiving on and restart the server.</summary>
public sealed class ArchivingClusterFixture : IDisposable
{
    public PgTestCluster Cluster { get; } = PgTestCluster.Start("archiving");
    public ArchivingClusterFixture() => Cluster.Psql("create table ticks(id serial primary key, at timestamptz default now())");
    public void Dispose() => Cluster.Dispose();
}

[Collection("module")]
public sealed class WalArchivingCmdletTests(ModuleFixture fx, ArchivingClusterFixture archiving) : IClassFixture<ArchivingClusterFixture>
{
    private PgTestCluster Cluster => archiving.Cluster;

    private void SwitchWal(int times)
    {
        for (var i = 0; i < times; i++) Cluster.Psql("insert into ticks default values; select pg_switch_wal();");
    }

    [Fact]
    public void Archiving_base_backups_retention_and_gaps_work_together()
    {
        var repo = fx.NewRepository();
        var enabled = fx.Shell.Run("Enable-PgWalArchiving -Server $s -Repository $r -MaxRpo 00:05:00 -Restart -Confirm:$false", ("s", Cluster.ServerArgument), ("r", repo)).AssertNoErrors();
        var result = Assert.Single(enabled.Output);
        Assert.Contains("PgBackup.WalArchivingResult", result.TypeNames);
        Assert.Equal(true, result.Properties["Verified"].Value);
        Assert.Equal(true, result.Properties["Restarted"].Value);
        Assert.Equal("on", result.Properties["ArchiveMode"].Value);
        Assert.Equal(TimeSpan.FromMinutes(5), result.Properties["ArchiveTimeout"].Value);
        var folder = (string)result.Properties["Repository"].Value;
        Assert.StartsWith(Path.Combine(repo, "wal"), folder);

        SwitchWal(2);
        fx.Shell.Run("Start-PgBaseBackup -Server $s -Repository $r", ("s", Cluster.ServerArgument), ("r", repo)).AssertNoErrors();
        SwitchWal(3);
        var newest = fx.Shell.Run("Start-PgBaseBackup -Server $s -Repository $r -WalMethod None", ("s", Cluster.ServerArgument), ("r", repo)).AssertNoErrors().Output[0];
        SwitchWal(2);
        WaitForArchiver();

        var status = Assert.Single(fx.Shell.Run("Get-PgWalArchive -Server $s -Repository $r", ("s", Cluster.ServerArgument), ("r", repo)).AssertNoErrors().Output);
        Assert.Contains("PgBackup.WalArchiveStatus", status.TypeNames);
        Assert.Empty((Array)status.Properties["Gaps"].Value);
        Assert.True((int)status.Properties["SegmentCount"].Value >= 8);
        Assert.NotNull(status.Properties["RecoveryPointObjective"].Value);
        Assert.Equal(Cluster.Psql("select last_archived_wal from pg_stat_archiver"), status.Properties["LastArchivedWal"].Value);

        // Retention keeps the newest base backup and the WAL from its start on; older WAL goes.
        var keepFrom = (string)newest.Properties["StartSegment"].Value;
        fx.Shell.Run("Remove-PgBackup -Repository $r -KeepLast 1 -Confirm:$false", ("r", repo)).AssertNoErrors();
        var segments = Directory.GetFiles(folder).Select(Path.GetFileName).Where(n => n!.Length == 24).Order().ToList();
        Assert.Equal(keepFrom, segments[0]);
        var after = Assert.Single(fx.Shell.Run("Get-PgWalArchive -Server $s -Repository $r", ("s", Cluster.ServerArgument), ("r", repo)).AssertNoErrors().Output);
        Assert.Empty((Array)after.Properties["Gaps"].Value);

        // A segment deleted by hand after the kept backup's start is a reported gap.
        File.Delete(Path.Combine(folder, segments[1]!));
        var gap = Assert.Single(fx.Shell.Run("Get-PgWalArchive -Server $s -Repository $r", ("s", Cluster.ServerArgument), ("r", repo)).AssertNoErrors().Output);
        var gaps = (Array)gap.Properties["Gaps"].Value;
        var first = PSObject.AsPSObject(Assert.Single(gaps.Cast<object>()));
        Assert.Equal(segments[1], first.Properties["From"].Value);

        var disabled = fx.Shell.Run("Disable-PgWalArchiving -Server $s -Confirm:$false", ("s", Cluster.ServerArgument)).AssertNoErrors();
        Assert.Contains("archive_mode", (string[])disabled.Output[0].Properties["PendingRestart"].Value);
    }

    [Fact]
    public void A_base_backup_without_wal_needs_archiving()
    {
        var e = fx.Shell.Run("Start-PgBaseBackup -Server $s -Repository $r -WalMethod None", ("s", fx.Server), ("r", fx.NewRepository())).SingleError();
        Assert.Equal("PgBackup.ArchivingNotEnabled", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidOperation, e.CategoryInfo.Category);
        Assert.Contains("Enable-PgWalArchiving", e.ErrorDetails.RecommendedAction);
    }

    [Fact]
    public void An_archive_that_does_not_exist_is_reported()
    {
        var e = fx.Shell.Run("Get-PgWalArchive -Server $s -Repository $r", ("s", fx.Server), ("r", fx.NewRepository())).SingleError();
        Assert.Equal("PgBackup.WalArchiveNotFound", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.ObjectNotFound, e.CategoryInfo.Category);
    }

    [Fact]
    public void An_unwritable_repository_is_refused_before_the_server_is_changed()
    {
        using var mount = TmpfsMount.Create("ro,size=1m");
        var before = fx.Cluster.Psql("show archive_mode");
        var e = fx.Shell.Run("Enable-PgWalArchiving -Server $s -Repository $r", ("s", fx.Server), ("r", mount.Path)).SingleError();
        Assert.Equal("PgBackup.RepositoryNotWritable", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.PermissionDenied, e.CategoryInfo.Category);
        Assert.Equal(before, fx.Cluster.Psql("show archive_mode"));
        Assert.Equal("", fx.Cluster.Psql("select string_agg(name, ',') from pg_file_settings where sourcefile like '%postgresql.auto.conf' and name like 'archive%'"));
    }

    [Fact]
    public void WhatIf_changes_no_setting()
    {
        fx.Shell.Run("Enable-PgWalArchiving -Server $s -Repository $r -Restart -WhatIf", ("s", fx.Server), ("r", fx.NewRepository())).AssertNoErrors();
        Assert.Equal("", fx.Cluster.Psql("select string_agg(name, ',') from pg_file_settings where sourcefile like '%postgresql.auto.conf'"));
    }

    private void WaitForArchiver()
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        // Done when the segment before the one being written now has been archived.
        const string previousSegment = "pg_walfile_name(pg_current_wal_lsn() - ((pg_current_wal_lsn() - '0/0') % 16777216) - 1)";
        while (Cluster.Psql($"select coalesce(last_archived_wal, '') >= {previousSegment} from pg_stat_archiver") != "t")
        {
            Assert.True(DateTime.UtcNow < deadline, "the archiver did not catch up within 20 s: " + Cluster.Psql("select last_archived_wal || ' ' || coalesce(last_failed_wal, '-') || ' ' || pg_walfile_name(pg_current_wal_lsn() - 1) || ' ' || pg_current_wal_lsn() from pg_stat_archiver"));
            Thread.Sleep(100);
        }
    }
}
