using System.Management.Automation;

namespace PgBackup.Module.Tests;

[Collection("module")]
public sealed class CatalogCmdletTests(ModuleFixture fx)
{
    private string RepositoryWithDumps(int shopDumps, int euDumps)
    {
        var repo = fx.NewRepository();
        for (var i = 0; i < shopDumps; i++) fx.Shell.Run("Invoke-PgDump -Server $s -Database shop -Repository $r -Schema sales", ("s", fx.Server), ("r", repo)).AssertNoErrors();
        for (var i = 0; i < euDumps; i++) fx.Shell.Run("Invoke-PgDump -Server $s -Database shop_eu -Repository $r", ("s", fx.Server), ("r", repo)).AssertNoErrors();
        return repo;
    }

    [Fact]
    public void Get_PgBackup_lists_filters_and_picks_the_latest()
    {
        var repo = RepositoryWithDumps(2, 1);
        var all = fx.Shell.Run("Get-PgBackup -Repository $r", ("r", repo)).AssertNoErrors();
        Assert.Equal(3, all.Output.Count);
        Assert.All(all.Output, o => Assert.Contains("PgBackup.DumpBackup", o.TypeNames));
        Assert.Equal(2, fx.Shell.Run("Get-PgBackup -Repository $r -Database 'shop'", ("r", repo)).Output.Count);
        Assert.Equal(3, fx.Shell.Run("Get-PgBackup -Repository $r -Database 'shop*' -Server $s", ("r", repo), ("s", fx.Server)).Output.Count);
        Assert.Empty(fx.Shell.Run("Get-PgBackup -Repository $r -Server 'elsewhere:5432'", ("r", repo)).Output);
        var latest = fx.Shell.Run("Get-PgBackup -Repository $r -Latest", ("r", repo)).AssertNoErrors();
        Assert.Equal(2, latest.Output.Count);
        Assert.Single(fx.Shell.Run("Get-PgBackup -Repository $r | Where-Object Database -eq 'shop_eu'", ("r", repo)).Output);
    }

    [Fact]
    public void Get_PgBackup_reports_a_missing_repository()
    {
        var e = fx.Shell.Run("Get-PgBackup -Repository /nonexistent/repo").SingleError();
        Assert.Equal("PgBackup.RepositoryNotFound", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.ObjectNotFound, e.CategoryInfo.Category);
    }

    [Fact]
    public void The_repository_can_come_from_the_environment()
    {
        var repo = RepositoryWithDumps(0, 1);
        var r = fx.Shell.Run("$env:PGBACKUP_REPOSITORY = $r; try { Get-PgBackup } finally { $env:PGBACKUP_REPOSITORY = $null }", ("r", repo)).AssertNoErrors();
        Assert.Single(r.Output);
    }

    [Fact]
    public void Remove_PgBackup_applies_KeepLast_and_WhatIf_removes_nothing()
    {
        var repo = RepositoryWithDumps(3, 1);
        fx.Shell.Run("Remove-PgBackup -Repository $r -KeepLast 1 -WhatIf", ("r", repo)).AssertNoErrors();
        Assert.Equal(4, fx.Shell.Run("Get-PgBackup -Repository $r", ("r", repo)).Output.Count);
        var removed = fx.Shell.Run("Remove-PgBackup -Repository $r -KeepLast 1 -PassThru", ("r", repo)).AssertNoErrors();
        Assert.Equal(2, removed.Output.Count);
        Assert.All(removed.Output, o => Assert.False(File.Exists((string)o.Properties["Path"].Value)));
        Assert.All(removed.Output, o => Assert.False(File.Exists((string)o.Properties["MetadataPath"].Value)));
        Assert.Equal(2, fx.Shell.Run("Get-PgBackup -Repository $r", ("r", repo)).Output.Count);
    }

    [Fact]
    public void Remove_PgBackup_refuses_to_remove_the_last_valid_backup_without_Force()
    {
        var repo = RepositoryWithDumps(0, 1);
        var r = fx.Shell.Run("Get-PgBackup -Repository $r | Remove-PgBackup", ("r", repo));
        var e = r.SingleError();
        Assert.Equal("PgBackup.LastValidBackup", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidOperation, e.CategoryInfo.Category);
        Assert.Single(fx.Shell.Run("Get-PgBackup -Repository $r", ("r", repo)).Output);
        Thread.Sleep(1100);
        var older = fx.Shell.Run("Remove-PgBackup -Repository $r -OlderThan 00:00:01", ("r", repo));
        Assert.Contains(older.Warnings, w => w.Contains("only valid backup"));
        fx.Shell.Run("Get-PgBackup -Repository $r | Remove-PgBackup -Force", ("r", repo)).AssertNoErrors();
        Assert.Empty(fx.Shell.Run("Get-PgBackup -Repository $r", ("r", repo)).Output);
    }

    [Fact]
    public void Remove_PgBackup_refuses_an_age_that_is_really_a_number_of_ticks()
    {
        var repo = RepositoryWithDumps(0, 1);
        var e = fx.Shell.Run("Remove-PgBackup -Repository $r -OlderThan 30", ("r", repo)).SingleError();
        Assert.Equal("PgBackup.InvalidOlderThan", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidArgument, e.CategoryInfo.Category);
        Assert.Single(fx.Shell.Run("Get-PgBackup -Repository $r", ("r", repo)).Output);
    }

    [Fact]
    public void Test_PgBackup_restores_into_a_throwaway_database()
    {
        var repo = RepositoryWithDumps(0, 1);
        var r = fx.Shell.Run("Get-PgBackup -Repository $r | Test-PgBackup -Restore", ("r", repo)).AssertNoErrors();
        var result = Assert.Single(r.Output);
        Assert.Contains("PgBackup.BackupTestResult", result.TypeNames);
        Assert.Equal(true, result.Properties["Success"].Value);
        Assert.Equal(true, result.Properties["RestoreTested"].Value);
        Assert.Equal(3, result.Properties["TablesRestored"].Value);
        Assert.Equal("", fx.Cluster.Psql($"select datname from pg_database where datname = '{result.Properties["TestDatabase"].Value}'"));
        Assert.Equal("Verified", fx.Shell.Run("(Get-PgBackup -Repository $r).VerificationState.ToString()", ("r", repo)).Output[0].ToString());
    }

    [Fact]
    public void Test_PgBackup_Quiet_answers_true_or_false()
    {
        var repo = RepositoryWithDumps(0, 1);
        Assert.Equal(true, fx.Shell.Run("Get-PgBackup -Repository $r | Test-PgBackup -Quiet", ("r", repo)).AssertNoErrors().Output[0].BaseObject);
        var path = (string)fx.Shell.Run("Get-PgBackup -Repository $r", ("r", repo)).Output[0].Properties["Path"].Value;
        File.AppendAllText(path, "tampered");
        Assert.Equal(false, fx.Shell.Run("Test-PgBackup -Path $p -Quiet", ("p", path)).AssertNoErrors().Output[0].BaseObject);
        var full = fx.Shell.Run("Test-PgBackup -Path $p", ("p", path)).AssertNoErrors();
        Assert.Equal(false, full.Output[0].Properties["ChecksumValid"].Value);
    }

    [Fact]
    public void Test_PgBackup_WhatIf_creates_no_database()
    {
        var repo = RepositoryWithDumps(0, 1);
        var before = fx.Cluster.Psql("select count(*) from pg_database");
        fx.Shell.Run("Get-PgBackup -Repository $r | Test-PgBackup -Restore -WhatIf", ("r", repo)).AssertNoErrors();
        Assert.Equal(before, fx.Cluster.Psql("select count(*) from pg_database"));
    }

    [Fact]
    public void Get_PgBackupConfig_shows_values_and_their_sources()
    {
        var r = fx.Shell.Run("$env:PGBACKUP_JOBS = '3'; try { Get-PgBackupConfig } finally { $env:PGBACKUP_JOBS = $null }").AssertNoErrors();
        var jobs = Assert.Single(r.Output, o => (string)o.Properties["Name"].Value == "Jobs");
        Assert.Equal("3", jobs.Properties["Value"].Value);
        Assert.Equal("Environment: PGBACKUP_JOBS", jobs.Properties["Source"].Value);
        Assert.Contains(r.Output, o => (string)o.Properties["Name"].Value == "DefaultFormat" && (string)o.Properties["Source"].Value == "Default");
        Assert.Contains(r.Output, o => (string)o.Properties["Name"].Value == "PGPASSFILE");
        Assert.Single(fx.Shell.Run("Get-PgBackupConfig -Name Default*").Output);
    }
}
