using System.Management.Automation;

namespace PgBackup.Module.Tests;

[Collection("module")]
public sealed class StartPgBaseBackupTests(ModuleFixture fx)
{
    [Fact]
    public void A_base_backup_pipes_into_a_test_that_starts_it()
    {
        var repo = fx.NewRepository();
        var r = fx.Shell.Run("Start-PgBaseBackup -Server $s -Repository $r -Format Tar -Compress client-gzip:1 | Test-PgBackup -Restore", ("s", fx.Server), ("r", repo)).AssertNoErrors();
        var test = Assert.Single(r.Output);
        Assert.Contains("PgBackup.BackupTestResult", test.TypeNames);
        Assert.Equal(true, test.Properties["Success"].Value);
        Assert.Equal(true, test.Properties["RestoreTested"].Value);
        Assert.Equal("Tar", test.Properties["Format"].Value);
        Assert.Contains(r.Progress, p => p.PercentComplete > 0 && p.StatusDescription.Contains(" MB"));

        var listed = fx.Shell.Run("Get-PgBackup -Repository $r -Kind Base", ("r", repo)).AssertNoErrors();
        var backup = Assert.Single(listed.Output);
        Assert.Contains("PgBackup.BaseBackup", backup.TypeNames);
        Assert.Equal("Verified", backup.Properties["VerificationState"].Value.ToString());
        Assert.Equal(fx.Cluster.Psql("select system_identifier from pg_control_system()"), backup.Properties["SystemIdentifier"].Value);
        Assert.Matches("^[0-9A-F]+/[0-9A-F]+$", backup.Properties["StartLsn"].Value.ToString());
        Assert.Matches("^[0-9A-F]{24}$", (string)backup.Properties["StartSegment"].Value);
    }

    [Fact]
    public void A_plain_backup_carries_a_SHA256_manifest_that_pg_verifybackup_accepts_on_its_own()
    {
        var r = fx.Shell.Run("Start-PgBaseBackup -Server $s -Repository $r", ("s", fx.Server), ("r", fx.NewRepository())).AssertNoErrors();
        var backup = Assert.Single(r.Output);
        var manifest = File.ReadAllText((string)backup.Properties["ManifestPath"].Value);
        Assert.Contains("\"Checksum-Algorithm\":\"SHA256\"", manifest);
        Assert.DoesNotContain("CRC32C", manifest);
        // Every file read again against the SHA-256 in the manifest, by PostgreSQL's own tool.
        fx.Cluster.RunTool("pg_verifybackup", "--quiet", (string)backup.Properties["Path"].Value);
    }

    [Theory]
    [InlineData("client-lz4")]
    [InlineData("server-zstd")]
    public void Lz4_and_zstd_tar_backups_are_verified_and_started_through_the_modules_own_decompressors(string compress)
    {
        var r = fx.Shell.Run("Start-PgBaseBackup -Server $s -Repository $r -Format Tar -Compress $c | Test-PgBackup -Restore",
            ("s", fx.Server), ("r", fx.NewRepository()), ("c", compress)).AssertNoErrors();
        var test = Assert.Single(r.Output);
        Assert.Equal(true, test.Properties["Success"].Value);
        Assert.Equal(true, test.Properties["RestoreTested"].Value);
    }

    [Fact]
    public void WhatIf_writes_nothing()
    {
        var repo = fx.NewRepository();
        fx.Shell.Run("Start-PgBaseBackup -Server $s -Repository $r -WhatIf", ("s", fx.Server), ("r", repo)).AssertNoErrors();
        Assert.Empty(Directory.GetFileSystemEntries(repo));
    }

    [Fact]
    public void An_unwritable_repository_is_permission_denied()
    {
        using var mount = TmpfsMount.Create("ro,size=1m");
        var e = fx.Shell.Run("Start-PgBaseBackup -Server $s -Repository $r", ("s", fx.Server), ("r", mount.Path)).SingleError();
        Assert.Equal("PgBackup.TargetNotWritable", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.PermissionDenied, e.CategoryInfo.Category);
    }

    [Fact]
    public void A_full_disk_fails_the_backup_and_leaves_nothing_behind()
    {
        using var mount = TmpfsMount.Create("size=2m");
        var e = fx.Shell.Run("Start-PgBaseBackup -Server $s -Repository $r", ("s", fx.Server), ("r", mount.Path)).SingleError();
        Assert.Equal("PgBackup.TargetFull", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.WriteError, e.CategoryInfo.Category);
        Assert.DoesNotContain(Directory.GetFileSystemEntries(mount.Path, "*", SearchOption.AllDirectories), f => !Directory.Exists(f));
        Assert.Empty(fx.Shell.Run("Get-PgBackup -Repository $r", ("r", mount.Path)).Output);
    }

    [Fact]
    public void Stopping_the_pipeline_cancels_the_backup_and_leaves_nothing_behind()
    {
        var repo = fx.NewRepository();
        var (result, stopped) = fx.Shell.RunAndStop($"Start-PgBaseBackup -Server '{fx.Server}' -Repository '{repo}' -MaxRate 1024k",
            p => p.StatusDescription.Contains(" MB"), TimeSpan.FromSeconds(60));
        Assert.True(stopped, "the backup finished before it could be stopped: " + string.Join(" | ", result.AllErrors));
        Assert.DoesNotContain(Directory.GetFileSystemEntries(repo, "*", SearchOption.AllDirectories), f => !Directory.Exists(f));
    }

    [Fact]
    public void Plain_backups_cannot_be_compressed_on_the_client()
    {
        var e = fx.Shell.Run("Start-PgBaseBackup -Server $s -Repository $r -Format Plain -Compress client-gzip", ("s", fx.Server), ("r", fx.NewRepository())).SingleError();
        Assert.Equal("PgBackup.PlainNotCompressible", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidArgument, e.CategoryInfo.Category);
    }

    [Fact]
    public void Retention_removes_base_backups_like_dumps()
    {
        var repo = fx.NewRepository();
        fx.Shell.Run("1..2 | ForEach-Object { Start-PgBaseBackup -Server $s -Repository $r }", ("s", fx.Server), ("r", repo)).AssertNoErrors();
        var removed = fx.Shell.Run("Remove-PgBackup -Repository $r -KeepLast 1 -PassThru", ("r", repo)).AssertNoErrors();
        Assert.Contains("PgBackup.BaseBackup", Assert.Single(removed.Output).TypeNames);
        Assert.False(Directory.Exists((string)removed.Output[0].Properties["Path"].Value));
        Assert.Single(fx.Shell.Run("Get-PgBackup -Repository $r -Kind Base", ("r", repo)).Output);
    }
}
