using Azure.Storage;
using Azure.Storage.Blobs;
using Azure.Storage.Blobs.Specialized;
using Azure.Storage.Sas;
using PgBackup.Engine;
using PgBackup.Engine.Configuration;
using PgBackup.Engine.Logical;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Testing;
using Xunit;

namespace PgBackup.Engine.Tests;

/// <summary>Azurite on loopback for the blob repository tests of one class.</summary>
public sealed class AzuriteFixture : IDisposable
{
    public AzuriteServer Azurite { get; } = AzuriteServer.Launch();

    /// <summary>A new container's address, with an account SAS token in its query as a user would paste it.</summary>
    public RepositoryAddress NewRepository(string? prefix = null) =>
        RepositoryAddress.Parse(Azurite.NewContainerUrl(prefix) + "?" + AccountSas(), Settings);

    public string AccountSas() =>
        new AccountSasBuilder(AccountSasPermissions.All, DateTimeOffset.UtcNow.AddHours(4), AccountSasServices.Blobs, AccountSasResourceTypes.All)
            .ToSasQueryParameters(new StorageSharedKeyCredential(AzuriteServer.Account, AzuriteServer.AccountKey)).ToString();

    public BlobContainerClient Container(RepositoryAddress address) =>
        new BlobServiceClient(Azurite.ConnectionString).GetBlobContainerClient(address.Container);

    public static PgBackupSettings Settings { get; } = PgBackupSettings.Load();

    public void Dispose() => Azurite.Dispose();
}

public sealed class RepositoryAddressTests
{
    private static readonly PgBackupSettings Settings = PgBackupSettings.Load();

    [Fact]
    public void An_account_url_names_account_container_and_prefix_and_keeps_the_sas_token_out_of_sight()
    {
        var a = RepositoryAddress.Parse("https://prodbackups.blob.core.windows.net/pgbackups/eu-west/db1?sv=2024-01-01&sig=c2VjcmV0", Settings);
        Assert.True(a.IsBlob);
        Assert.Equal("prodbackups", a.Account);
        Assert.Equal("pgbackups", a.Container);
        Assert.Equal("eu-west/db1/", a.Prefix);
        Assert.Equal("https://prodbackups.blob.core.windows.net/pgbackups/eu-west/db1", a.Display);
        Assert.Equal("sv=2024-01-01&sig=c2VjcmV0", a.Secrets.SasToken);
        Assert.DoesNotContain("sig", a.ToString() + a.Url + a.Secrets, StringComparison.Ordinal);
        Assert.Equal("eu-west/db1/h_5432/app/x.dump", a.KeyOf(a.UrlOf("eu-west/db1/h_5432/app/x.dump")));
    }

    [Fact]
    public void Plain_http_to_another_machine_is_refused_unless_allowed_and_loopback_needs_no_permission()
    {
        var error = Assert.Throws<PgBackupException>(() => RepositoryAddress.Parse("http://10.20.30.40:10000/acct/backups?sig=c2VjcmV0", Settings));
        Assert.Equal("PgBackup.InsecureRepository", error.ErrorId);
        Assert.Equal(ErrorKind.InvalidArgument, error.Kind);
        Assert.Equal("http://10.20.30.40:10000/acct/backups", error.Target);
        Assert.Contains("AllowInsecureHttp", error.RecommendedAction);
        Assert.DoesNotContain("c2VjcmV0", error.Message + error.RecommendedAction);

        var allowed = PgBackupSettings.Load(new Dictionary<string, string?> { ["AllowInsecureHttp"] = "true" });
        Assert.True(RepositoryAddress.Parse("http://10.20.30.40:10000/acct/backups", allowed).IsBlob);
        Assert.True(RepositoryAddress.Parse("http://localhost:10000/acct/backups", Settings).IsBlob);
        Assert.True(RepositoryAddress.Parse("http://[::1]:10000/acct/backups", Settings).IsBlob);
        Assert.True(RepositoryAddress.Parse("https://acct.blob.core.windows.net/backups", Settings).IsBlob);
    }

    [Fact]
    public void A_path_style_url_is_account_then_container_as_azurite_serves_it()
    {
        var a = RepositoryAddress.Parse("http://127.0.0.1:10000/devstoreaccount1/backups", Settings);
        Assert.Equal("devstoreaccount1", a.Account);
        Assert.Equal("backups", a.Container);
        Assert.Equal("", a.Prefix);
        Assert.Equal("http://127.0.0.1:10000/devstoreaccount1", a.ServiceUri!.AbsoluteUri.TrimEnd('/'));
    }

    [Theory]
    [InlineData("http://127.0.0.1:10000/devstoreaccount1")]
    [InlineData("https://acct.blob.core.windows.net/")]
    [InlineData("https://acct.blob.core.windows.net/Bad_Name")]
    public void A_url_without_a_valid_container_is_refused_by_name(string url)
    {
        var ex = Assert.Throws<PgBackupException>(() => RepositoryAddress.Parse(url + "?sig=secret", Settings));
        Assert.Equal("PgBackup.InvalidRepository", ex.ErrorId);
        Assert.DoesNotContain("secret", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Anything_else_is_a_folder()
    {
        var folder = Targets.NewFolder();
        var a = RepositoryAddress.Parse(folder, Settings);
        Assert.False(a.IsBlob);
        Assert.Equal(folder, a.Folder);
    }

    [Fact]
    public void Messages_from_storage_lose_signatures_and_keys()
    {
        Assert.Equal("GET ...?sv=1&sig=REDACTED&x=1 AccountKey=REDACTED;", BlobStore.Scrub("GET ...?sv=1&sig=abc%2F&x=1 AccountKey=abc/def==;"));
    }
}

[Collection("sample cluster")]
public sealed class BlobRepositoryTests(SampleClusterFixture fixture, AzuriteFixture azurite) : IClassFixture<AzuriteFixture>
{
    private PgTestCluster Cluster => fixture.Cluster;

    [Theory]
    [InlineData(DumpFormat.Custom, 1)]
    [InlineData(DumpFormat.Tar, 1)]
    [InlineData(DumpFormat.Plain, 1)]
    [InlineData(DumpFormat.Directory, 2)]
    public async Task A_dump_goes_into_blobs_and_restores_from_them_exactly(DumpFormat format, int jobs)
    {
        var repository = azurite.NewRepository("nightly");
        var dump = await DumpService.DumpAsync(new DumpRequest
        {
            Target = Targets.For(Cluster, SampleClusterFixture.Database), Format = format, Jobs = jobs, Repository = repository,
        }, NullReporter.Instance, default);
        Assert.StartsWith(repository.Url, dump.Path, StringComparison.Ordinal);
        Assert.Equal(repository.Display, dump.Repository);
        Assert.DoesNotContain("sig=", dump.Path + dump.Repository + dump.MetadataPath, StringComparison.Ordinal);

        var listed = Assert.Single(await BackupCatalog.ListAsync(repository, null, null, null, default));
        Assert.Equal(dump.Path, listed.Path);
        Assert.Equal(dump.Sha256, ((DumpBackup)listed).Sha256);

        var copy = "blob_copy_" + format.ToString().ToLowerInvariant();
        var plan = await RestoreService.PlanAsync(new RestoreRequest
        {
            Target = Targets.For(Cluster, copy), Source = (DumpBackup)listed, Repository = repository, Jobs = jobs,
        }, NullReporter.Instance, default);
        var restored = await RestoreService.ExecuteAsync(plan, NullReporter.Instance, default);
        Assert.True(restored.ChecksumVerified);
        Assert.Equal(SampleDatabase.RowCounts(Cluster, SampleClusterFixture.Database), SampleDatabase.RowCounts(Cluster, copy));
        Cluster.Psql($"drop database {copy}");

        var tested = await DumpTester.TestAsync(new BackupTestRequest { Backup = listed, Repository = repository }, NullReporter.Instance, default);
        Assert.True(tested.Success, string.Join(" ", tested.Failures));
        Assert.Equal(VerificationState.Verified, Assert.Single(await BackupCatalog.ListAsync(repository, null, null, null, default)).VerificationState);

        await BackupCatalog.DeleteAsync(repository, listed, default);
        Assert.Empty(await BackupCatalog.ListAsync(repository, null, null, null, default));
        Assert.Empty(azurite.Container(repository).GetBlobs());
    }

    [Fact]
    public async Task A_changed_blob_fails_the_test_and_the_restore_without_creating_the_database()
    {
        var repository = azurite.NewRepository();
        var dump = await DumpService.DumpAsync(new DumpRequest { Target = Targets.For(Cluster, SampleClusterFixture.Database), Format = DumpFormat.Plain, Repository = repository },
            NullReporter.Instance, default);
        var blob = azurite.Container(repository).GetBlobClient(repository.KeyOf(dump.Path));
        var bytes = blob.DownloadContent().Value.Content.ToArray();
        bytes[bytes.Length / 2] ^= 0x20; // a flipped bit in the middle: the same size, other bytes
        blob.Upload(new BinaryData(bytes), overwrite: true);

        var tested = await DumpTester.TestAsync(new BackupTestRequest { Backup = dump, Repository = repository }, NullReporter.Instance, default);
        Assert.False(tested.Success);
        Assert.Contains(dump.Path, string.Join(" ", tested.Failures), StringComparison.Ordinal);

        var plan = await RestoreService.PlanAsync(new RestoreRequest { Target = Targets.For(Cluster, "blob_tampered"), Source = dump, Repository = repository }, NullReporter.Instance, default);
        var ex = await Assert.ThrowsAsync<PgBackupException>(() => RestoreService.ExecuteAsync(plan, NullReporter.Instance, default));
        Assert.Equal("PgBackup.ChecksumMismatch", ex.ErrorId);
        Assert.Equal("0", Cluster.Psql("select count(*) from pg_database where datname = 'blob_tampered' or datname like 'pgbackup_restoring_%'"));
    }

    [Fact]
    public async Task A_wrong_account_key_is_storage_access_denied_and_writes_nothing()
    {
        var good = azurite.NewRepository();
        var wrong = RepositoryAddress.Parse(good.Url.TrimEnd('/'), AzuriteFixture.Settings)
            .WithSecrets(new BlobSecrets(AccountKey: Convert.ToBase64String(new byte[64])));
        var ex = await Assert.ThrowsAsync<PgBackupException>(() => DumpService.DumpAsync(new DumpRequest
        {
            Target = Targets.For(Cluster, SampleClusterFixture.Database), Repository = wrong,
        }, NullReporter.Instance, default));
        Assert.Equal("PgBackup.StorageAccessDenied", ex.ErrorId);
        Assert.Equal(ErrorKind.PermissionDenied, ex.Kind);
        Assert.DoesNotContain("AccountKey", ex.Message, StringComparison.Ordinal);
        Assert.False(azurite.Container(good).Exists().Value);
    }

    [Fact]
    public async Task A_blob_deleted_behind_the_catalogs_back_is_reported_not_listed()
    {
        var repository = azurite.NewRepository();
        var dump = await DumpService.DumpAsync(new DumpRequest { Target = Targets.For(Cluster, SampleClusterFixture.Database), Repository = repository }, NullReporter.Instance, default);
        azurite.Container(repository).GetBlobClient(repository.KeyOf(dump.Path)).DeleteIfExists();
        var warnings = new List<string>();
        Assert.Empty(await BackupCatalog.ListAsync(repository, null, warnings.Add, null, default));
        Assert.Contains(warnings, w => w.Contains(dump.Path, StringComparison.Ordinal) && w.Contains("missing", StringComparison.Ordinal));
        var plan = RestoreService.PlanAsync(new RestoreRequest { Target = Targets.For(Cluster, "blob_gone"), Source = dump, Repository = repository }, NullReporter.Instance, default);
        Assert.Equal("PgBackup.BackupNotFound", (await Assert.ThrowsAsync<PgBackupException>(() => plan)).ErrorId);
    }

    [Fact]
    public async Task What_a_dead_writer_left_is_not_listed_and_the_next_dump_into_its_folder_removes_it_with_its_uncommitted_blocks()
    {
        var repository = azurite.NewRepository();
        var container = azurite.Container(repository);
        container.CreateIfNotExists();
        var folder = $"{RepositoryLayout.SafeName($"{Cluster.Host}_{Cluster.Port}")}/{SampleClusterFixture.Database}/";
        var deadKey = folder + "sample_20200101T000000000Z.dump";
        container.GetBlockBlobClient(deadKey).StageBlock(Convert.ToBase64String("dead-000001"u8.ToArray()), new MemoryStream(new byte[1024]));
        container.GetBlobClient(deadKey + BlobWriteLock.Suffix).Upload(new BinaryData("Invoke-PgDump of a process that died"));

        var warnings = new List<string>();
        Assert.Empty(await BackupCatalog.ListAsync(repository, null, warnings.Add, null, default));
        Assert.Contains(warnings, w => w.Contains("process that died", StringComparison.Ordinal));

        await DumpService.DumpAsync(new DumpRequest { Target = Targets.For(Cluster, SampleClusterFixture.Database), Repository = repository }, NullReporter.Instance, default);
        Assert.Single(await BackupCatalog.ListAsync(repository, null, null, null, default));
        Assert.False(container.GetBlobClient(deadKey + BlobWriteLock.Suffix).Exists().Value);
        var leftover = await Assert.ThrowsAsync<Azure.RequestFailedException>(() => container.GetBlockBlobClient(deadKey).GetBlockListAsync(Azure.Storage.Blobs.Models.BlockListTypes.All));
        Assert.Equal(404, leftover.Status);
    }
}

/// <summary>Storage that goes away in the middle of an upload, in a class of its own: it stops and starts its own Azurite.</summary>
[Collection("sample cluster")]
public sealed class BlobOutageTests(SampleClusterFixture fixture)
{
    [Fact]
    public async Task Azurite_killed_mid_upload_leaves_no_backup_and_a_rerun_succeeds()
    {
        using var azurite = AzuriteServer.Launch();
        var sas = new AccountSasBuilder(AccountSasPermissions.All, DateTimeOffset.UtcNow.AddHours(4), AccountSasServices.Blobs, AccountSasResourceTypes.All)
            .ToSasQueryParameters(new StorageSharedKeyCredential(AzuriteServer.Account, AzuriteServer.AccountKey)).ToString();
        var repository = RepositoryAddress.Parse(azurite.NewContainerUrl() + "?" + sas, AzuriteFixture.Settings);
        var cluster = fixture.Cluster;
        cluster.Psql("create table if not exists blob_bulk as select g, repeat(md5(g::text), 20) as filler from generate_series(1, 400000) g", SampleClusterFixture.Database);
        try { await KillMidUploadAndRerun(azurite, repository, cluster); }
        finally { cluster.Psql("drop table if exists blob_bulk", SampleClusterFixture.Database); }
    }

    private static bool LockBlobThere(BlobContainerClient container) =>
        container.Exists().Value && container.GetBlobs().Any(b => b.Name.EndsWith(BlobWriteLock.Suffix, StringComparison.Ordinal));

    private static async Task KillMidUploadAndRerun(AzuriteServer azurite, RepositoryAddress repository, PgTestCluster cluster)
    {
        var request = new DumpRequest { Target = Targets.For(cluster, SampleClusterFixture.Database), Format = DumpFormat.Plain, Repository = repository };

        var dumping = DumpService.DumpAsync(request, NullReporter.Instance, default);
        var container = new BlobServiceClient(azurite.ConnectionString).GetBlobContainerClient(repository.Container);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        // Killed once the upload has begun: the writer's lock blob is there and the dump is not finished.
        while (!dumping.IsCompleted && DateTime.UtcNow < deadline && !LockBlobThere(container))
            await Task.Delay(20);
        Assert.False(dumping.IsCompleted, "the dump finished before the storage could be taken away; make blob_bulk bigger");
        azurite.Kill();
        var ex = await Assert.ThrowsAsync<PgBackupException>(() => dumping);
        Assert.Contains(ex.ErrorId, new[] { "PgBackup.StorageUnavailable", "PgBackup.StorageFailed" });

        azurite.Start();
        // Azurite saves its state now and then, so a kill may also lose the container: either way no backup is listed.
        try { Assert.Empty(await BackupCatalog.ListAsync(repository, null, null, null, default)); }
        catch (PgBackupException notThere) when (notThere.ErrorId == "PgBackup.RepositoryNotFound") { }
        var rerun = await DumpService.DumpAsync(request, NullReporter.Instance, default);
        Assert.Equal(rerun.Path, Assert.Single(await BackupCatalog.ListAsync(repository, null, null, null, default)).Path);
    }
}

/// <summary>Base backups into blob storage: uploaded while pg_basebackup writes, verified, committed, tested from there.</summary>
[Collection("sample cluster")]
public sealed class BlobBaseBackupTests(SampleClusterFixture fixture, AzuriteFixture azurite) : IClassFixture<AzuriteFixture>
{
    [Theory]
    [InlineData(null)]
    [InlineData("client-lz4")]
    public async Task A_tar_base_backup_goes_into_blobs_is_listed_and_its_test_start_works(string? compress)
    {
        var repository = azurite.NewRepository("physical");
        var backup = await Physical.BaseBackupService.BackupAsync(new Physical.BaseBackupRequest
        {
            Target = Targets.For(fixture.Cluster), Format = BaseBackupFormat.Tar, Compress = compress, Repository = repository,
        }, NullReporter.Instance, default);
        Assert.StartsWith(repository.Url, backup.Path, StringComparison.Ordinal);
        Assert.Equal(VerificationState.Verified, backup.VerificationState);
        Assert.NotNull(backup.ArchiveChecksums);
        Assert.Contains(backup.ArchiveChecksums!.Keys, k => k.StartsWith("base.tar", StringComparison.Ordinal));
        Assert.Contains(backup.ArchiveChecksums!.Keys, k => k.StartsWith("pg_wal.tar", StringComparison.Ordinal));

        var listed = Assert.IsType<BaseBackup>(Assert.Single(await BackupCatalog.ListAsync(repository, null, null, null, default)));
        var names = azurite.Container(repository).GetBlobs(Azure.Storage.Blobs.Models.BlobTraits.None, Azure.Storage.Blobs.Models.BlobStates.None, repository.KeyOf(backup.Path) + "/", default).Select(b => b.Name[(repository.KeyOf(backup.Path)!.Length + 1)..]).ToList();
        Assert.Contains("backup_manifest", names);
        Assert.Equal(backup.ArchiveChecksums.Keys.Order(), names.Where(n => n != "backup_manifest").Order());
        await TempFolders.AssertNoneLeftAsync("pgbackup-base-*", withFilesOnly: true);

        var tested = await Recovery.BaseBackupTester.TestAsync(new BackupTestRequest { Backup = listed, Repository = repository, StartInstance = true }, NullReporter.Instance, default);
        Assert.True(tested.Success, string.Join(" ", tested.Failures));
        Assert.True(tested.RestoreTested);
    }

    [Fact]
    public async Task A_plain_base_backup_into_blobs_is_refused_before_anything_runs()
    {
        var repository = azurite.NewRepository();
        var ex = await Assert.ThrowsAsync<PgBackupException>(() => Physical.BaseBackupService.BackupAsync(new Physical.BaseBackupRequest
        {
            Target = Targets.For(fixture.Cluster), Format = BaseBackupFormat.Plain, Repository = repository,
        }, NullReporter.Instance, default));
        Assert.Equal("PgBackup.PlainNeedsFolder", ex.ErrorId);
        Assert.False(azurite.Container(repository).Exists().Value);
    }

    [Fact]
    public async Task A_flipped_byte_in_a_base_backup_blob_fails_its_test_naming_the_file()
    {
        var repository = azurite.NewRepository();
        var backup = await Physical.BaseBackupService.BackupAsync(new Physical.BaseBackupRequest
        {
            Target = Targets.For(fixture.Cluster), Format = BaseBackupFormat.Tar, Repository = repository,
        }, NullReporter.Instance, default);
        var blob = azurite.Container(repository).GetBlobClient(repository.KeyOf(backup.Path) + "/base.tar");
        var bytes = blob.DownloadContent().Value.Content.ToArray();
        bytes[bytes.Length / 3] ^= 0x01;
        blob.Upload(new BinaryData(bytes), overwrite: true);
        var tested = await Recovery.BaseBackupTester.TestAsync(new BackupTestRequest { Backup = backup, Repository = repository }, NullReporter.Instance, default);
        Assert.False(tested.Success);
        Assert.Contains("base.tar", string.Join(" ", tested.Failures), StringComparison.Ordinal);
        Assert.Equal(VerificationState.Failed, Assert.Single(await BackupCatalog.ListAsync(repository, null, null, null, default)).VerificationState);
    }
}
