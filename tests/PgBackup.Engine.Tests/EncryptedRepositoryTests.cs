using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using PgBackup.Engine;
using PgBackup.Engine.Instance;
using PgBackup.Engine.Logical;
using PgBackup.Engine.Physical;
using PgBackup.Engine.Recovery;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Encryption;
using PgBackup.Testing;
using Xunit;

namespace PgBackup.Engine.Tests;

/// <summary>A cluster whose database holds a marker string that must never be readable in an encrypted repository.</summary>
public sealed class CanaryClusterFixture : IDisposable
{
    public const string Database = "canary";
    public const string Passphrase = "canary passphrase for tests";
    public static readonly string Marker = "PGBACKUP-CANARY-" + Guid.NewGuid().ToString("N");
    public PgTestCluster Cluster { get; } = PgTestCluster.Start("canary", new Dictionary<string, string> { ["wal_level"] = "replica" });

    public CanaryClusterFixture()
    {
        Cluster.CreateDatabase(Database);
        // Enough rows that every format spans several encrypted chunks, and the marker in clear in a text column.
        Cluster.Psql($"create table secrets (id int primary key, note text not null); insert into secrets select g, '{Marker} row ' || g from generate_series(1, 20000) g;", Database);
    }

    public void Dispose() => Cluster.Dispose();
}

public sealed class EncryptedRepositoryTests(CanaryClusterFixture fixture, AzuriteFixture azurite) : IClassFixture<CanaryClusterFixture>, IClassFixture<AzuriteFixture>
{
    private PgTestCluster Cluster => fixture.Cluster;
    private static readonly RepositoryKeys ByPassphrase = new(CanaryClusterFixture.Passphrase, []);

    private RepositoryAddress NewRepository(bool blob) => blob ? azurite.NewRepository("enc") : RepositoryAddress.ForFolder(Targets.NewFolder());

    private static Task<BackupRepository> CreateEncryptedAsync(RepositoryAddress repository, string? passphrase = CanaryClusterFixture.Passphrase, params X509Certificate2[] certificates) =>
        RepositoryService.CreateAsync(repository, new RepositoryService.EncryptionChoice(passphrase, certificates), NullReporter.Instance, default);

    /// <summary>Every file or blob of the repository, as bytes.</summary>
    private async Task<List<(string Name, byte[] Content)>> EveryFileAsync(RepositoryAddress repository)
    {
        var all = new List<(string, byte[])>();
        if (!repository.IsBlob)
        {
            foreach (var file in Directory.GetFiles(repository.Folder!, "*", SearchOption.AllDirectories)) all.Add((file, await File.ReadAllBytesAsync(file)));
            return all;
        }
        var container = azurite.Container(repository);
        await foreach (var item in container.GetBlobsAsync(Azure.Storage.Blobs.Models.BlobTraits.None, Azure.Storage.Blobs.Models.BlobStates.None, repository.Prefix, default))
            all.Add((item.Name, (await container.GetBlobClient(item.Name).DownloadContentAsync()).Value.Content.ToArray()));
        return all;
    }

    private static bool Contains(byte[] haystack, byte[] needle) => haystack.AsSpan().IndexOf(needle) >= 0;

    private async Task<IReadOnlyList<string>> FilesShowingTheMarkerAsync(RepositoryAddress repository)
    {
        var marker = Encoding.UTF8.GetBytes(CanaryClusterFixture.Marker);
        return (await EveryFileAsync(repository)).Where(f => Contains(f.Content, marker)).Select(f => f.Name).ToList();
    }

    private Task<DumpBackup> DumpAsync(RepositoryAddress repository, DumpFormat format, bool globals = false) =>
        DumpService.DumpAsync(new DumpRequest { Target = Targets.For(Cluster, CanaryClusterFixture.Database), Format = format, Repository = repository, Globals = globals, Jobs = format == DumpFormat.Directory ? 2 : 1 },
            NullReporter.Instance, default);

    private async Task<RestoreResult> RestoreAsync(DumpBackup dump, RepositoryAddress repository, string into, RepositoryKeys keys, int jobs = 1)
    {
        var plan = await RestoreService.PlanAsync(new RestoreRequest
        {
            Target = Targets.For(Cluster, into), Source = dump, Repository = repository.IsBlob ? repository : null, Keys = keys, Jobs = jobs,
        }, NullReporter.Instance, default);
        return await RestoreService.ExecuteAsync(plan, NullReporter.Instance, default);
    }

    private bool DatabaseExists(string name) => Cluster.Psql($"select count(*) from pg_database where datname = '{name}'").Trim() == "1";

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Dumps_of_every_format_and_globals_show_no_marker_at_rest_and_restore_with_the_passphrase(bool blob)
    {
        var repository = NewRepository(blob);
        var created = await CreateEncryptedAsync(repository);
        Assert.True(created.Encrypted);
        Assert.Equal(["Passphrase"], created.Recipients);

        var dumps = new List<DumpBackup>();
        foreach (var format in new[] { DumpFormat.Custom, DumpFormat.Tar, DumpFormat.Plain, DumpFormat.Directory }) dumps.Add(await DumpAsync(repository, format));
        var globals = await DumpAsync(repository, DumpFormat.Plain, globals: true);
        Assert.All(dumps.Append(globals), d => Assert.True(d.Encrypted));
        Assert.Empty(await FilesShowingTheMarkerAsync(repository));
        Assert.DoesNotContain(await EveryFileAsync(repository), f => Contains(f.Content, "PGDMP"u8.ToArray()) || Contains(f.Content, "CREATE TABLE"u8.ToArray()));

        var listed = (await BackupCatalog.ListAsync(repository, null, null, null, default)).OfType<DumpBackup>().Where(d => d.Kind == BackupKind.Dump).ToList();
        Assert.Equal(4, listed.Count);
        foreach (var dump in listed)
        {
            var copy = $"enc_{(blob ? "b" : "f")}_{dump.Format.ToString().ToLowerInvariant()}";
            var restored = await RestoreAsync(dump, repository, copy, ByPassphrase, dump.Format is DumpFormat.Directory or DumpFormat.Custom ? 2 : 1);
            Assert.True(restored.ChecksumVerified);
            Assert.Equal("20000", Cluster.Psql($"select count(*) from secrets where note like '{CanaryClusterFixture.Marker}%'", copy).Trim());
            Cluster.DropDatabase(copy);
        }
    }

    [Fact]
    public async Task The_same_dumps_into_a_plain_repository_show_the_marker_so_the_oracle_can_fail()
    {
        var repository = NewRepository(blob: false);
        await RepositoryService.CreateAsync(repository, null, NullReporter.Instance, default);
        await DumpAsync(repository, DumpFormat.Plain);
        await DumpAsync(repository, DumpFormat.Tar);
        Assert.NotEmpty(await FilesShowingTheMarkerAsync(repository));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task No_key_and_a_wrong_key_are_refused_before_any_database_is_created(bool blob)
    {
        var repository = NewRepository(blob);
        await CreateEncryptedAsync(repository);
        var dump = await DumpAsync(repository, DumpFormat.Custom);

        var missing = await Assert.ThrowsAsync<PgBackupException>(() => RestoreAsync(dump, repository, "enc_nokey", RepositoryKeys.None));
        Assert.Equal("PgBackup.EncryptionKeyRequired", missing.ErrorId);
        var wrong = await Assert.ThrowsAsync<PgBackupException>(() => RestoreAsync(dump, repository, "enc_wrongkey", new RepositoryKeys("not the right passphrase", [])));
        Assert.Equal("PgBackup.DecryptionFailed", wrong.ErrorId);
        Assert.False(DatabaseExists("enc_nokey"));
        Assert.False(DatabaseExists("enc_wrongkey"));
    }

    [Fact]
    public async Task A_host_with_only_the_public_certificate_writes_but_cannot_read_and_the_private_key_reads()
    {
        using var rsa = RSA.Create(2048);
        using var certificate = new CertificateRequest("CN=pgbackup-dr", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1)
            .CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
        using var publicOnly = X509CertificateLoader.LoadCertificate(certificate.Export(X509ContentType.Cert));
        var repository = NewRepository(blob: false);
        await CreateEncryptedAsync(repository, null, publicOnly);

        var dump = await DumpAsync(repository, DumpFormat.Custom);
        Assert.Empty(await FilesShowingTheMarkerAsync(repository));
        var refused = await Assert.ThrowsAsync<PgBackupException>(() => RestoreAsync(dump, repository, "enc_public", new RepositoryKeys(null, [publicOnly])));
        Assert.Equal("PgBackup.DecryptionFailed", refused.ErrorId);
        Assert.False(DatabaseExists("enc_public"));

        await RestoreAsync(dump, repository, "enc_private", new RepositoryKeys(null, [certificate]));
        Assert.Equal("20000", Cluster.Psql("select count(*) from secrets", "enc_private").Trim());
        Cluster.DropDatabase("enc_private");
    }

    [Theory]
    [InlineData(DumpFormat.Custom, 1)]
    [InlineData(DumpFormat.Directory, 1)]
    [InlineData(DumpFormat.Custom, 2)]
    public async Task A_flipped_byte_a_cut_off_dump_and_swapped_dumps_are_BackupTampered_and_nothing_is_restored(DumpFormat format, int jobs)
    {
        var repository = NewRepository(blob: false);
        await CreateEncryptedAsync(repository);
        var first = await DumpAsync(repository, format);
        var second = await DumpAsync(repository, format);
        string FileOf(DumpBackup d) => format == DumpFormat.Directory ? Directory.GetFiles(d.Path).OrderByDescending(f => new FileInfo(f).Length).First() : d.Path;

        var victim = FileOf(first);
        var original = await File.ReadAllBytesAsync(victim);
        var flipped = (byte[])original.Clone();
        flipped[flipped.Length / 2] ^= 0x01;
        await File.WriteAllBytesAsync(victim, flipped);
        await AssertTamperedAsync(first, repository, "enc_flip");

        await File.WriteAllBytesAsync(victim, original[..(original.Length - 100)]);
        await AssertTamperedAsync(first, repository, "enc_cut");

        await File.WriteAllBytesAsync(victim, await File.ReadAllBytesAsync(FileOf(second)));
        await AssertTamperedAsync(first, repository, "enc_swap");

        await File.WriteAllBytesAsync(victim, original);
        await RestoreAsync(first, repository, "enc_intact", ByPassphrase, jobs);
        Cluster.DropDatabase("enc_intact");

        async Task AssertTamperedAsync(DumpBackup dump, RepositoryAddress repo, string into)
        {
            var error = await Assert.ThrowsAsync<PgBackupException>(() => RestoreAsync(dump, repo, into, ByPassphrase, jobs));
            Assert.Equal("PgBackup.BackupTampered", error.ErrorId);
            Assert.Contains(Path.GetFileName(dump.Path), error.Message);
            Assert.False(DatabaseExists(into));
        }
    }

    [Fact]
    public async Task Set_recipients_rewraps_without_rewriting_backups()
    {
        using var rsa = RSA.Create(2048);
        using var certificate = new CertificateRequest("CN=pgbackup-prod", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1)
            .CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
        var repository = NewRepository(blob: true);
        await CreateEncryptedAsync(repository);
        var dump = await DumpAsync(repository, DumpFormat.Custom);
        var before = (await EveryFileAsync(repository)).Where(f => !f.Name.EndsWith(RepositoryService.MarkerName)).ToDictionary(f => f.Name, f => Convert.ToHexString(SHA256.HashData(f.Content)));

        var changed = await RepositoryService.SetRecipientsAsync(repository, ByPassphrase, [certificate], [], "a brand new passphrase", false, NullReporter.Instance, default);
        Assert.Equal(2, changed.Recipients.Length);
        var after = (await EveryFileAsync(repository)).Where(f => !f.Name.EndsWith(RepositoryService.MarkerName)).ToDictionary(f => f.Name, f => Convert.ToHexString(SHA256.HashData(f.Content)));
        Assert.Equal(before, after);

        Assert.Equal("PgBackup.DecryptionFailed", (await Assert.ThrowsAsync<PgBackupException>(() => RestoreAsync(dump, repository, "enc_old", ByPassphrase))).ErrorId);
        await RestoreAsync(dump, repository, "enc_new", new RepositoryKeys(null, [certificate]));
        Cluster.DropDatabase("enc_new");

        var last = await RepositoryService.SetRecipientsAsync(repository, new RepositoryKeys("a brand new passphrase", []), [], [certificate.Thumbprint], null, false, NullReporter.Instance, default);
        Assert.Equal(["Passphrase"], last.Recipients);
        Assert.Equal("PgBackup.LastRecipient", (await Assert.ThrowsAsync<PgBackupException>(() =>
            RepositoryService.SetRecipientsAsync(repository, new RepositoryKeys("a brand new passphrase", []), [], [], null, true, NullReporter.Instance, default))).ErrorId);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("client-lz4")]
    public async Task An_encrypted_tar_backup_is_taken_from_the_tools_output_and_a_compressed_one_through_a_spool(string? compress)
    {
        var repository = NewRepository(blob: false);
        await CreateEncryptedAsync(repository);
        var backup = await BaseBackupService.BackupAsync(new BaseBackupRequest { Target = Targets.For(Cluster), Repository = repository, Format = BaseBackupFormat.Tar, Compress = compress },
            NullReporter.Instance, default);
        // Streamed, the WAL is fetched into base.tar at the end (a temporary slot held it) and the manifest taken out of the stream.
        Assert.Equal(compress == null ? WalMethod.Fetch : WalMethod.Stream, backup.WalMethod);
        Assert.Equal(compress == null ? ["backup_manifest", "base.tar"] : ["backup_manifest", "base.tar.lz4", "pg_wal.tar"],
            Directory.GetFiles(backup.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal("0", Cluster.Psql("select count(*) from pg_replication_slots where slot_name like 'pgbackup_base_%'"));
        Assert.Empty(await FilesShowingTheMarkerAsync(repository));
        await TempFolders.AssertNoneLeftAsync("pgbackup-base-*", withFilesOnly: true);

        var tested = await BaseBackupTester.TestAsync(new BackupTestRequest { Backup = backup, Repository = repository, Keys = ByPassphrase, StartInstance = true }, NullReporter.Instance, default);
        Assert.True(tested.Success, string.Join(" ", tested.Failures));
        Assert.True(tested.RestoreTested);
    }

    [Theory]
    [InlineData(BaseBackupFormat.Tar)]
    [InlineData(BaseBackupFormat.Plain)]
    public async Task A_base_backup_from_a_repository_without_a_wal_archive_recovers_with_immediate(BaseBackupFormat format)
    {
        var repository = NewRepository(blob: false);
        await CreateEncryptedAsync(repository);
        var backup = await BaseBackupService.BackupAsync(new BaseBackupRequest { Target = Targets.For(Cluster), Repository = repository, Format = format }, NullReporter.Instance, default);
        Assert.True(backup.Encrypted);
        Assert.Empty(await FilesShowingTheMarkerAsync(repository));
        using var source = await RecoverySource.PrepareAsync(backup, null, null, null, null, null, RecoveryTarget.EndOfBackup(), ByPassphrase, NullReporter.Instance, default);
        var plan = await RecoveryPlanner.PlanAsync(new RecoveryPlanRequest { Candidates = source.Candidates, BackupChosen = true, Target = RecoveryTarget.EndOfBackup(), Repository = source.Repository },
            NullReporter.Instance, default);
        var port = PgBackup.Testing.FreePort.Next();
        var directory = Path.Combine(Targets.NewFolder(), "data");
        var tool = new Wal.WalArchiveTool(WalTool.CopyTo(Path.Combine(Targets.NewFolder(), "WalArchive")));
        var result = await PointInTimeRecovery.RunAsync(new PointInTimeRequest
        {
            Plan = plan, DataDirectory = directory, Port = port, WalTool = tool, OpenArchive = source.OpenArchive,
            Connection = new() { Host = "localhost", Port = port, Database = "postgres", User = PgTestCluster.SuperUser, Password = PgTestCluster.Password },
        }, NullReporter.Instance, default);
        try { Assert.Equal("20000", PgTestCluster.QueryAt(result.Port, "select count(*) from secrets", CanaryClusterFixture.Database)); }
        finally { await InstanceControl.RemoveAsync(directory, force: true, null, NullReporter.Instance, default); }
    }

    [Fact]
    public async Task Encryption_is_chosen_when_a_repository_is_created()
    {
        var used = NewRepository(blob: false);
        await DumpAsync(used, DumpFormat.Custom);
        Assert.Equal("PgBackup.RepositoryNotEmpty", (await Assert.ThrowsAsync<PgBackupException>(() => CreateEncryptedAsync(used))).ErrorId);
        var encrypted = NewRepository(blob: false);
        await CreateEncryptedAsync(encrypted);
        Assert.Equal("PgBackup.RepositoryAlreadyEncrypted", (await Assert.ThrowsAsync<PgBackupException>(() => CreateEncryptedAsync(encrypted))).ErrorId);
        Assert.Equal("PgBackup.EncryptionKeyRequired", (await Assert.ThrowsAsync<PgBackupException>(() => CreateEncryptedAsync(NewRepository(false), null))).ErrorId);
    }
}
