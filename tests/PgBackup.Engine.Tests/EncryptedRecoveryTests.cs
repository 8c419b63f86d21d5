using System.Text;
using Npgsql;
using PgBackup.Engine.Instance;
using PgBackup.Engine.Physical;
using PgBackup.Engine.Recovery;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Repository.Encryption;
using PgBackup.Engine.Wal;
using PgBackup.Testing;
using Xunit;

namespace PgBackup.Engine.Tests;

/// <summary>
/// A cluster that archives its WAL into an encrypted repository (a folder, or a container in Azurite) and has a base
/// backup there, with a ledger of committed rows after it and a marker string in every row that must never be readable
/// at rest.
/// </summary>
public abstract class EncryptedRecoveryFixture : IDisposable
{
    public const int Rows = 12;
    public const string Passphrase = "recovery drills need keys too";
    /// <summary>A second recipient of the repository: a certificate with its private key.</summary>
    public static readonly System.Security.Cryptography.X509Certificates.X509Certificate2 Certificate = NewCertificate();
    public static readonly string Marker = "PGBACKUP-WAL-CANARY-" + Guid.NewGuid().ToString("N");
    public readonly string Folder = Targets.NewFolder();
    public AzuriteServer? Azurite { get; }
    public PgTestCluster Cluster { get; }
    public RepositoryAddress Repository { get; }
    public WalArchiveTool Tool { get; }
    public BaseBackup Backup { get; }
    public string SystemIdentifier { get; }
    public Dictionary<int, DateTimeOffset> Committed { get; } = [];

    protected EncryptedRecoveryFixture(bool blob)
    {
        Cluster = PgTestCluster.Start(blob ? "encblob" : "encfolder", new Dictionary<string, string> { ["track_commit_timestamp"] = "on" });
        if (blob)
        {
            Azurite = AzuriteServer.Launch();
            Repository = RepositoryAddress.Parse(Azurite.NewContainerUrl("vault"), AzuriteFixture.Settings).WithSecrets(new BlobSecrets(AccountKey: AzuriteServer.AccountKey));
        }
        else Repository = RepositoryAddress.ForFolder(Path.Combine(Folder, "repository"));
        RepositoryService.CreateAsync(Repository, new RepositoryService.EncryptionChoice(Passphrase, [Certificate]), NullReporter.Instance, default).GetAwaiter().GetResult();
        Tool = new WalArchiveTool(WalTool.CopyTo(Path.Combine(Folder, "module", "WalArchive")));
        ArchivingService.EnableAsync(new EnableArchivingRequest { Target = Targets.For(Cluster), Repository = Repository, Tool = Tool, Restart = true },
            NullReporter.Instance, default).GetAwaiter().GetResult();
        SystemIdentifier = Cluster.Psql("select system_identifier from pg_control_system()");
        Cluster.Psql("create table ledger(id int primary key, note text not null)");
        Backup = BaseBackupService.BackupAsync(new BaseBackupRequest { Target = Targets.For(Cluster), Repository = Repository, Format = BaseBackupFormat.Tar },
            NullReporter.Instance, default).GetAwaiter().GetResult();
        using var connection = new NpgsqlConnection($"Host={Cluster.Host};Port={Cluster.Port};Username={PgTestCluster.SuperUser};Password={PgTestCluster.Password};Database=postgres");
        connection.Open();
        for (var id = 1; id <= Rows; id++)
        {
            using var insert = new NpgsqlCommand($"insert into ledger values ({id}, '{Marker} {id}')", connection);
            insert.ExecuteNonQuery();
            using var time = new NpgsqlCommand($"select pg_xact_commit_timestamp(xmin) from ledger where id = {id}", connection);
            Committed[id] = new DateTimeOffset(((DateTime)time.ExecuteScalar()!).ToUniversalTime(), TimeSpan.Zero);
            if (id == Rows / 2) Cluster.ArchiveCurrentSegment();
            Thread.Sleep(5);
        }
        Cluster.ArchiveCurrentSegment();
    }

    private static System.Security.Cryptography.X509Certificates.X509Certificate2 NewCertificate()
    {
        using var rsa = System.Security.Cryptography.RSA.Create(2048);
        return new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=pgbackup-recovery-tests", rsa, System.Security.Cryptography.HashAlgorithmName.SHA256,
            System.Security.Cryptography.RSASignaturePadding.Pkcs1).CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
    }

    /// <summary>Replaces a file of the base backup (base.tar) by other bytes, returning the original.</summary>
    public byte[] ReplaceBackupFile(string name, Func<byte[], byte[]> change)
    {
        if (!Repository.IsBlob)
        {
            var path = Path.Combine(Backup.Path, name);
            var before = File.ReadAllBytes(path);
            File.WriteAllBytes(path, change(before));
            return before;
        }
        var blob = new Azure.Storage.Blobs.BlobServiceClient(Azurite!.ConnectionString).GetBlobContainerClient(Repository.Container)
            .GetBlobClient(Repository.KeyOf(Backup.Path) + "/" + name);
        var original = blob.DownloadContent().Value.Content.ToArray();
        blob.Upload(new BinaryData(change(original)), overwrite: true);
        return original;
    }

    /// <summary>Every archived WAL file's name and stored bytes.</summary>
    public IWalArchiveStore Archive => RepositoryLayout.ArchiveStore(Repository, SystemIdentifier);

    /// <summary>Replaces an archived file's stored bytes (keeping its recorded checksum), returning the original.</summary>
    public byte[] Replace(string name, Func<byte[], byte[]> change)
    {
        if (!Repository.IsBlob)
        {
            var path = Path.Combine(RepositoryLayout.ArchiveFolder(Repository.Folder!, SystemIdentifier), name);
            var before = File.ReadAllBytes(path);
            File.WriteAllBytes(path, change(before));
            return before;
        }
        var blob = new Azure.Storage.Blobs.BlobServiceClient(Azurite!.ConnectionString).GetBlobContainerClient(Repository.Container)
            .GetBlobClient(BlobWalArchiveStore.KeyOf(Repository, SystemIdentifier) + "/" + name);
        var metadata = blob.GetProperties().Value.Metadata;
        var original = blob.DownloadContent().Value.Content.ToArray();
        blob.Upload(new BinaryData(change(original)), new Azure.Storage.Blobs.Models.BlobUploadOptions { Metadata = metadata });
        return original;
    }

    public void Dispose()
    {
        Cluster.Dispose();
        foreach (var file in Directory.GetFiles("/var/lib/postgresql/.pgbackup", $"{SystemIdentifier}-*.json")) WalCredentialsFile.Remove(file);
        Azurite?.Dispose();
        try { Directory.Delete(Folder, recursive: true); } catch (IOException) { }
    }
}

public sealed class EncryptedFolderRecoveryFixture() : EncryptedRecoveryFixture(blob: false);
public sealed class EncryptedBlobRecoveryFixture() : EncryptedRecoveryFixture(blob: true);

public abstract class EncryptedRecoveryTests(EncryptedRecoveryFixture fx) : IAsyncLifetime
{
    private readonly RecoveredInstances instances = new();
    private static readonly RepositoryKeys Keys = new(EncryptedRecoveryFixture.Passphrase, []);

    public Task InitializeAsync() => Task.CompletedTask;
    public Task DisposeAsync() => instances.RemoveAllAsync();

    private async Task<(RecoveryResult Result, string? Spool)> RecoverAsync(RecoveryTarget target, RepositoryKeys keys)
    {
        target.Timeline ??= "current";
        var (source, plan) = await RecoverySource.PlanAsync(null, null, fx.Repository, null, new CatalogFilter(), fx.Cluster.Host, target, null, keys, NullReporter.Instance, default);
        using (source)
        {
            var port = PgBackup.Testing.FreePort.Next();
            var directory = instances.NewDataDirectory(fx.Folder);
            var result = await PointInTimeRecovery.RunAsync(new PointInTimeRequest
            {
                Plan = plan, DataDirectory = directory, Port = port, WalTool = fx.Tool, OpenArchive = source.OpenArchive,
                Connection = new() { Host = "localhost", Port = port, Database = "postgres", User = PgTestCluster.SuperUser, Password = PgTestCluster.Password },
            }, NullReporter.Instance, default);
            return (result, source.Spool);
        }
    }

    private static bool Contains(byte[] haystack, string needle) => haystack.AsSpan().IndexOf(Encoding.UTF8.GetBytes(needle)) >= 0;

    [Fact]
    public void No_base_backup_file_and_no_archived_wal_file_shows_the_marker_though_the_servers_own_wal_does()
    {
        var walFolder = Path.Combine(fx.Cluster.DataDirectory, "pg_wal");
        Assert.Contains(Directory.GetFiles(walFolder), f => Contains(File.ReadAllBytes(f), EncryptedRecoveryFixture.Marker));
        var archive = fx.Archive;
        var names = archive.List().Select(e => e.Name).ToList();
        Assert.Contains(names, n => n.Length == 24);
        foreach (var name in names)
        {
            using var stream = archive.OpenRead(name);
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            Assert.False(Contains(copy.ToArray(), EncryptedRecoveryFixture.Marker), name);
            Assert.True(EncryptedContent.LooksEncrypted(copy.ToArray()), $"{name} is not encrypted");
        }
        Assert.True(fx.Backup.Encrypted);
        Assert.NotEmpty(fx.Backup.ArchiveChecksums!);
    }

    [Fact]
    public async Task A_time_target_recovers_exactly_the_committed_rows_with_the_passphrase()
    {
        var (result, spool) = await RecoverAsync(RecoveryTarget.AtTime(fx.Committed[9], inclusive: true), Keys);
        Assert.Equal(Enumerable.Range(1, 9), RecoveredInstances.Ledger(result.Port));
        Assert.NotNull(spool);
        Assert.False(Directory.Exists(spool), "The decrypted copy is removed after the recovery.");
    }

    [Fact]
    public async Task The_certificate_recovers_the_same_rows_and_a_drill_with_it_passes()
    {
        var certificateKeys = new RepositoryKeys(null, [EncryptedRecoveryFixture.Certificate]);
        var (result, _) = await RecoverAsync(RecoveryTarget.AtTime(fx.Committed[4], inclusive: true), certificateKeys);
        Assert.Equal(Enumerable.Range(1, 4), RecoveredInstances.Ledger(result.Port));
        var report = await RecoveryDrill.RunAsync(new DrillRequest
        {
            Source = Targets.For(fx.Cluster), Repository = fx.Repository, WalTool = fx.Tool, Keys = certificateKeys, Queries = ["select count(*) from ledger where id <= 12"],
        }, NullReporter.Instance, default);
        Assert.True(report.Passed, string.Join(" | ", report.Checks.Select(c => c.ToString())));
        Assert.False(Directory.Exists(report.DataDirectory));
    }

    [Fact]
    public async Task A_flipped_byte_in_the_middle_of_a_base_backup_file_is_BackupTampered_and_nothing_is_written()
    {
        var original = fx.ReplaceBackupFile("base.tar", bytes => { var copy = (byte[])bytes.Clone(); copy[copy.Length / 2] ^= 0x10; return copy; });
        try
        {
            var error = await Assert.ThrowsAsync<PgBackupException>(() => RecoverAsync(RecoveryTarget.EndOfArchive(), Keys));
            Assert.Equal("PgBackup.BackupTampered", error.ErrorId);
            Assert.Contains("base.tar", error.Message);
        }
        finally { fx.ReplaceBackupFile("base.tar", _ => original); }
    }

    [Fact]
    public async Task Without_a_key_or_with_a_wrong_one_recovery_is_refused_before_anything_is_written()
    {
        var missing = await Assert.ThrowsAsync<PgBackupException>(() => RecoverAsync(RecoveryTarget.EndOfArchive(), RepositoryKeys.None));
        Assert.Equal("PgBackup.EncryptionKeyRequired", missing.ErrorId);
        var wrong = await Assert.ThrowsAsync<PgBackupException>(() => RecoverAsync(RecoveryTarget.EndOfArchive(), new RepositoryKeys("a passphrase that is wrong", [])));
        Assert.Equal("PgBackup.DecryptionFailed", wrong.ErrorId);
    }

    private string SegmentAfterBackup(int skip = 0) =>
        fx.Archive.List().Where(f => f.Name.Length == 24 && string.CompareOrdinal(f.Name, fx.Backup.StartSegment) > 0).OrderBy(f => f.Name).Skip(skip).First().Name;

    [Fact]
    public async Task A_flipped_byte_in_an_archived_segment_is_BackupTampered_and_no_server_starts()
    {
        var name = SegmentAfterBackup();
        var original = fx.Replace(name, bytes => { var copy = (byte[])bytes.Clone(); copy[copy.Length / 2] ^= 0x04; return copy; });
        try
        {
            var error = await Assert.ThrowsAsync<PgBackupException>(() => RecoverAsync(RecoveryTarget.EndOfArchive(), Keys));
            Assert.Equal("PgBackup.BackupTampered", error.ErrorId);
            Assert.Contains(name, error.Message);
        }
        finally { fx.Replace(name, _ => original); }
    }

    [Fact]
    public async Task Two_archived_segments_swapped_are_BackupTampered()
    {
        var first = SegmentAfterBackup();
        var second = SegmentAfterBackup(1);
        byte[] secondBytes = [];
        var firstBytes = fx.Replace(first, _ =>
        {
            secondBytes = fx.Replace(second, b => b);
            return secondBytes;
        });
        fx.Replace(second, _ => firstBytes);
        try
        {
            var error = await Assert.ThrowsAsync<PgBackupException>(() => RecoverAsync(RecoveryTarget.EndOfArchive(), Keys));
            Assert.Equal("PgBackup.BackupTampered", error.ErrorId);
        }
        finally
        {
            fx.Replace(first, _ => firstBytes);
            fx.Replace(second, _ => secondBytes);
        }
    }

    [Fact]
    public async Task Test_PgBackup_checks_the_encrypted_files_without_a_key_and_the_content_with_one()
    {
        var repository = fx.Repository.IsBlob ? fx.Repository : null;
        var withoutKey = await BaseBackupTester.TestAsync(new BackupTestRequest { Backup = fx.Backup, Repository = repository }, NullReporter.Instance, default);
        Assert.True(withoutKey.ChecksumValid);
        var withKey = await BaseBackupTester.TestAsync(new BackupTestRequest { Backup = fx.Backup, Repository = repository, Keys = Keys, StartInstance = true }, NullReporter.Instance, default);
        Assert.True(withKey.ChecksumValid);
        Assert.True(withKey.RestoreTested);
        Assert.True(withKey.Success, string.Join(" | ", withKey.Failures));
    }

    [Fact]
    public async Task A_standby_decrypts_what_it_fetches_from_the_archive_with_a_key_file_removed_with_it()
    {
        var directory = instances.NewDataDirectory(fx.Folder);
        var port = PgBackup.Testing.FreePort.Next();
        await Replication.StandbyBuilder.CreateAsync(new Replication.NewStandbyRequest
        {
            Upstream = Targets.For(fx.Cluster), DataDirectory = directory, Port = port, ArchiveRepository = fx.Repository, WalTool = fx.Tool, Keys = Keys,
        }, NullReporter.Instance, default);
        var settings = File.ReadAllText(Path.Combine(directory, "postgresql.auto.conf"));
        Assert.Contains("--decrypt", settings);
        Assert.DoesNotContain(EncryptedRecoveryFixture.Passphrase, settings);
        var keyFile = Path.Combine("/var/lib/postgresql/.pgbackup", $"{fx.SystemIdentifier}-{WalCredentialsFile.StandbyKeyPurpose(directory)}.json");
        Assert.True(File.Exists(keyFile));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(keyFile));

        // Stopped, the standby misses WAL that the primary then recycles (no slot): only the archive has it.
        await RecoveredInstances.CatchUpThroughArchiveAsync(fx.Cluster, directory, port,
            "insert into ledger select 1000 + g, 'x' from generate_series(1, 200) g on conflict do nothing", "delete from ledger where id > 1000");
        await InstanceControl.RemoveAsync(directory, force: true, null, NullReporter.Instance, default);
        Assert.False(File.Exists(keyFile), "Removing the standby removes its key file.");
    }

    [Fact]
    public void The_archive_is_listed_and_verified_without_the_key()
    {
        var statuses = WalArchiveInspector.Inspect(fx.Archive, WalSegmentName.Parse(fx.Backup.StartSegment), fx.Backup.WalSegmentSize, verifyChecksums: true, warn: null, default);
        var status = Assert.Single(statuses);
        Assert.Empty(status.Gaps);
        Assert.Empty(status.ChecksumFailures ?? []);
    }
}

public sealed class EncryptedFolderRecoveryTests(EncryptedFolderRecoveryFixture fx) : EncryptedRecoveryTests(fx), IClassFixture<EncryptedFolderRecoveryFixture>;
public sealed class EncryptedBlobRecoveryTests(EncryptedBlobRecoveryFixture fx) : EncryptedRecoveryTests(fx), IClassFixture<EncryptedBlobRecoveryFixture>;
