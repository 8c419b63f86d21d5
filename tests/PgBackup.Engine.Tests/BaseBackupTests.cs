using Npgsql;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Logical;
using PgBackup.Engine.Physical;
using PgBackup.Engine.Recovery;
using PgBackup.Testing;

namespace PgBackup.Engine.Tests;

/// <summary>Inserts rows one transaction at a time and remembers how many were acknowledged, until stopped.</summary>
public sealed class LedgerWriter : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private long _acknowledged;

    public LedgerWriter(ConnectionTarget target)
    {
        _loop = Task.Run(async () =>
        {
            await using var connection = await ServerSession.OpenAsync(target, default);
            await using (var create = new NpgsqlCommand("create table if not exists ledger(id bigint primary key, at timestamptz not null default clock_timestamp(), filler text)", connection))
                await create.ExecuteNonQueryAsync();
            await using var insert = new NpgsqlCommand("insert into ledger(id, filler) values ($1, repeat('x', 200))", connection);
            insert.Parameters.Add(new NpgsqlParameter { DataTypeName = "bigint" });
            var next = await ServerSession.ScalarAsync<long>(connection, "select coalesce(max(id), 0) + 1 from ledger", default);
            while (!_stop.IsCancellationRequested)
            {
                insert.Parameters[0].Value = next;
                await insert.ExecuteNonQueryAsync();
                Interlocked.Exchange(ref _acknowledged, next++);
            }
        });
    }

    /// <summary>The highest id whose commit the server has acknowledged.</summary>
    public long Acknowledged => Interlocked.Read(ref _acknowledged);

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        await _loop;
    }
}

[Collection("sample cluster")]
public sealed class BaseBackupTests(SampleClusterFixture fixture)
{
    private PgTestCluster Cluster => fixture.Cluster;

    [Theory]
    [InlineData(BaseBackupFormat.Plain, null)]
    [InlineData(BaseBackupFormat.Plain, "server-lz4")]
    [InlineData(BaseBackupFormat.Tar, "client-gzip:1")]
    [InlineData(BaseBackupFormat.Tar, "client-lz4")]
    [InlineData(BaseBackupFormat.Tar, "server-zstd")]
    public async Task A_backup_taken_under_writes_verifies_starts_and_holds_every_row_acknowledged_before_it(BaseBackupFormat format, string? compress)
    {
        var repository = Targets.NewFolder();
        var reporter = new RecordingReporter();
        BaseBackup backup;
        long before, after;
        await using (var writer = new LedgerWriter(Targets.For(Cluster, SampleClusterFixture.Database)))
        {
            while (writer.Acknowledged < 200) await Task.Delay(20);
            before = writer.Acknowledged;
            backup = await BaseBackupService.BackupAsync(new BaseBackupRequest
            {
                Target = Targets.For(Cluster), Format = format, Compress = compress, Repository = repository,
            }, reporter, default);
            after = writer.Acknowledged;
        }

        Assert.Equal(VerificationState.Verified, backup.VerificationState);
        Assert.True(backup.StopLsn > backup.StartLsn);
        Assert.Equal(1u, backup.Timeline);
        Assert.Equal(WalSegmentName.FromLsn(1, backup.StartLsn).ToString(), backup.StartSegment);
        Assert.Equal(Cluster.Psql("select system_identifier from pg_control_system()"), backup.SystemIdentifier);
        Assert.True(File.Exists(backup.ManifestPath));
        var manifest = BackupManifest.Read(backup.ManifestPath);
        Assert.Null(manifest.ChecksumProblem());
        Assert.All(manifest.Files, f => Assert.Equal("SHA256", f.ChecksumAlgorithm));
        if (format == BaseBackupFormat.Plain)
            // pg_verifybackup reading every file against the SHA-256 manifest PgBackup wrote, checksums included.
            Cluster.RunTool("pg_verifybackup", "--quiet", backup.Path);
        Assert.Empty(await BaseBackupVerifier.VerifyAsync(backup, backup.Path, null, reporter, default));
        Assert.Contains(reporter.ProgressRecords, p => p.Percent > 0 && p.Status.Contains(" MB"));
        var listed = Assert.IsType<BaseBackup>(Assert.Single(BackupCatalog.List(repository, null, null)));
        Assert.Equal(backup.StartLsn, listed.StartLsn);
        Assert.Empty(Directory.GetFileSystemEntries(repository, "*.partial", SearchOption.AllDirectories));

        await using var instance = await LocalInstance.CreateFromBackupAsync(listed, null, reporter, default);
        await instance.StartAsync(TimeSpan.FromMinutes(2), default);
        await using var connection = await ServerSession.OpenAsync(instance.Connection(PgTestCluster.SuperUser, SampleClusterFixture.Database), default);
        var restored = await ServerSession.ScalarAsync<long>(connection, "select max(id) from ledger", default);
        Assert.InRange(restored, before, after);
        Assert.True(await ServerSession.ScalarAsync<bool>(connection, "select count(*) = max(id) - min(id) + 1 from ledger", default), "the restored ledger has holes");
        Assert.Equal("off", await ServerSession.ScalarAsync<string>(connection, "show archive_mode", default));
    }

    [Fact]
    public async Task Test_restore_of_a_base_backup_starts_it_and_removes_it_again()
    {
        var repository = Targets.NewFolder();
        var backup = await BaseBackupService.BackupAsync(new BaseBackupRequest { Target = Targets.For(Cluster), Repository = repository }, NullReporter.Instance, default);
        var result = await BaseBackupTester.TestAsync(new BackupTestRequest { Backup = backup, StartInstance = true }, NullReporter.Instance, default);
        Assert.True(result.Success, string.Join(" ", result.Failures));
        Assert.True(result.RestoreTested);
        Assert.True(result.TablesRestored >= 3); // databases that allow connections
        Assert.False(Directory.Exists(result.RestoreServer));
    }

    [Theory]
    [InlineData(BaseBackupFormat.Plain, null)]
    [InlineData(BaseBackupFormat.Tar, null)]
    [InlineData(BaseBackupFormat.Tar, "client-lz4")]
    public async Task A_damaged_backup_fails_its_manifest_check(BaseBackupFormat format, string? compress)
    {
        var repository = Targets.NewFolder();
        var backup = await BaseBackupService.BackupAsync(new BaseBackupRequest { Target = Targets.For(Cluster), Format = format, Compress = compress, Repository = repository }, NullReporter.Instance, default);
        if (format == BaseBackupFormat.Plain)
            // Same size, different bytes: only the SHA-256 check can tell.
            File.WriteAllText(Path.Combine(backup.Path, "PG_VERSION"), File.ReadAllText(Path.Combine(backup.Path, "PG_VERSION")).Replace('1', '9'));
        else
        {
            // Flip a byte inside a file's data in base.tar (past the first 512-byte header), or in the middle of base.tar.lz4.
            var file = Directory.GetFiles(backup.Path, "base.tar*").Single();
            await using var tar = new FileStream(file, FileMode.Open, FileAccess.ReadWrite);
            var at = compress == null ? 600 : tar.Length / 2;
            tar.Seek(at, SeekOrigin.Begin);
            var b = tar.ReadByte();
            tar.Seek(at, SeekOrigin.Begin);
            tar.WriteByte((byte)(b ^ 0xFF));
        }
        var result = await BaseBackupTester.TestAsync(new BackupTestRequest { Backup = backup }, NullReporter.Instance, default);
        Assert.False(result.Success);
        Assert.NotEmpty(result.Failures);
        Assert.Equal(VerificationState.Failed, Assert.Single(BackupCatalog.List(repository, null, null)).VerificationState);
    }

    [Theory]
    [InlineData(BaseBackupFormat.Plain)]
    [InlineData(BaseBackupFormat.Tar)]
    public async Task Files_that_differ_from_the_servers_checksums_fail_the_check_and_a_wrong_head_start_is_read_again(BaseBackupFormat format)
    {
        var folder = Path.Combine(Targets.NewFolder(), "backup");
        Cluster.RunTool("pg_basebackup", "-D", folder, "-X", "stream", "-c", "fast", "--manifest-checksums=CRC32C", "-F", format == BaseBackupFormat.Plain ? "p" : "t");
        var backup = new BaseBackup { Id = "x", Path = folder, Format = format, WalIncluded = true, ToolVersion = PgTestCluster.MajorVersion.ToString() };
        var manifest = BackupManifest.Read(Path.Combine(folder, "backup_manifest"));
        Assert.All(manifest.Files, f => Assert.Equal("CRC32C", f.ChecksumAlgorithm));
        // A backup pg_basebackup wrote on its own, with its default manifest, passes Test-PgBackup's check as it is.
        Assert.Empty(await BaseBackupVerifier.VerifyAsync(backup, folder, null, NullReporter.Instance, default));

        // A follower that got every digest wrong costs a second read, never a false verdict.
        var wrong = manifest.Files.ToDictionary(f => f.Path, f => new FileDigest(f.Size, "deadbeef", new string('0', 64)));
        Assert.Empty(await BaseBackupVerifier.VerifyAndSealAsync(backup, folder, Task.FromResult<IReadOnlyDictionary<string, FileDigest>>(wrong), null, NullReporter.Instance, default));
        var sealedManifest = BackupManifest.Read(Path.Combine(folder, "backup_manifest"));
        Assert.All(sealedManifest.Files, f => Assert.Equal("SHA256", f.ChecksumAlgorithm));
        if (format == BaseBackupFormat.Plain) Cluster.RunTool("pg_verifybackup", "--quiet", folder);
        Assert.Empty(await BaseBackupVerifier.VerifyAsync(backup, folder, null, NullReporter.Instance, default));

        // Bytes that are not what the server read and checksummed.
        var again = Path.Combine(Targets.NewFolder(), "backup");
        Cluster.RunTool("pg_basebackup", "-D", again, "-X", "stream", "-c", "fast", "--manifest-checksums=CRC32C", "-F", "p");
        var versionFile = Path.Combine(again, "PG_VERSION");
        File.WriteAllText(versionFile, File.ReadAllText(versionFile).Replace('1', '9'));
        var problems = await BaseBackupVerifier.VerifyAndSealAsync(new BaseBackup { Id = "y", Path = again, Format = BaseBackupFormat.Plain, WalIncluded = true, ToolVersion = backup.ToolVersion }, again,
            Task.FromResult<IReadOnlyDictionary<string, FileDigest>>(new Dictionary<string, FileDigest>()), null, NullReporter.Instance, default);
        Assert.Contains(problems, p => p.Contains("'PG_VERSION' has CRC-32C", StringComparison.Ordinal));
        Assert.Contains("CRC32C", File.ReadAllText(Path.Combine(again, "backup_manifest")));
    }

    [Fact]
    public async Task A_cancelled_base_backup_leaves_nothing_behind()
    {
        var repository = Targets.NewFolder();
        using var cancel = new CancellationTokenSource();
        var reporter = new RecordingReporter();
        var run = BaseBackupService.BackupAsync(new BaseBackupRequest { Target = Targets.For(Cluster), Repository = repository, MaxRate = "1024k" }, reporter, cancel.Token);
        while (!reporter.ProgressRecords.Any(p => p.Status.Contains(" MB")) && !run.IsCompleted) await Task.Delay(20);
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run);
        // Only folders, and the lock file that keeps two base backups of one server from running at once.
        Assert.DoesNotContain(Directory.GetFileSystemEntries(repository, "*", SearchOption.AllDirectories), e => !Directory.Exists(e) && Path.GetFileName(e) != "backup.lock");
        Assert.Empty(BackupCatalog.List(repository, null, null));
    }
}

public sealed class StandbyBaseBackupTests
{
    [Fact]
    public async Task A_base_backup_can_be_taken_from_a_standby_and_starts()
    {
        using var primary = PgTestCluster.Start("bb-primary");
        primary.Psql("create table t(id int); insert into t select generate_series(1, 1000);");
        using var standby = PgTestCluster.StartStandbyOf(primary, "bb-standby");
        Assert.Equal("t", standby.Psql("select pg_is_in_recovery()"));
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (standby.Psql("select count(*) from pg_class where relname = 't'") != "1" && DateTime.UtcNow < deadline) await Task.Delay(100);

        var backup = await BaseBackupService.BackupAsync(new BaseBackupRequest { Target = Targets.For(standby), Repository = Targets.NewFolder() }, NullReporter.Instance, default);
        Assert.True(backup.FromStandby);
        Assert.Equal(primary.Psql("select system_identifier from pg_control_system()"), backup.SystemIdentifier);
        var result = await BaseBackupTester.TestAsync(new BackupTestRequest { Backup = backup, StartInstance = true }, NullReporter.Instance, default);
        Assert.True(result.Success, string.Join(" ", result.Failures));
    }
}
