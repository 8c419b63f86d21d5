using Npgsql;
using PgBackup.Engine.Instance;
using PgBackup.Engine.Physical;
using PgBackup.Engine.Recovery;
using PgBackup.Engine.Replication;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Wal;
using PgBackup.Testing;
using Xunit;

namespace PgBackup.Engine.Tests;

/// <summary>
/// A cluster that archives its WAL into Azurite and has two base backups there, with a ledger of committed rows between
/// them and after: everything recovery, retention and standbys do with a blob repository runs against it.
/// </summary>
public sealed class BlobRecoveryFixture : IDisposable
{
    public const int Rows = 12;
    public readonly string Folder = Targets.NewFolder();
    public AzuriteServer Azurite { get; } = AzuriteServer.Launch();
    public PgTestCluster Cluster { get; } = PgTestCluster.Start("blobpitr", new Dictionary<string, string> { ["track_commit_timestamp"] = "on", ["wal_keep_size"] = "0" });
    public RepositoryAddress Repository { get; }
    public WalArchiveTool Tool { get; }
    public BaseBackup Older { get; }
    public BaseBackup Newer { get; }
    public string SystemIdentifier { get; }
    public Dictionary<int, DateTimeOffset> Committed { get; } = [];
    public Dictionary<int, ulong> Xids { get; } = [];

    public BlobRecoveryFixture()
    {
        Repository = RepositoryAddress.Parse(Azurite.NewContainerUrl("dr"), AzuriteFixture.Settings)
            .WithSecrets(new BlobSecrets(AccountKey: AzuriteServer.AccountKey));
        Tool = new WalArchiveTool(WalTool.CopyTo(Path.Combine(Folder, "module", "WalArchive")));
        ArchivingService.EnableAsync(new EnableArchivingRequest { Target = Targets.For(Cluster), Repository = Repository, Tool = Tool, Restart = true },
            NullReporter.Instance, default).GetAwaiter().GetResult();
        SystemIdentifier = Cluster.Psql("select system_identifier from pg_control_system()");
        Cluster.Psql("create table ledger(id int primary key)");
        Older = Backup();
        Insert(1, Rows / 2);
        Newer = Backup();
        Insert(Rows / 2 + 1, Rows);
        Cluster.ArchiveCurrentSegment();
    }

    private BaseBackup Backup() => BaseBackupService.BackupAsync(new BaseBackupRequest { Target = Targets.For(Cluster), Repository = Repository, Format = BaseBackupFormat.Tar },
        NullReporter.Instance, default).GetAwaiter().GetResult();

    private void Insert(int from, int to)
    {
        using var connection = new NpgsqlConnection($"Host={Cluster.Host};Port={Cluster.Port};Username={PgTestCluster.SuperUser};Password={PgTestCluster.Password};Database=postgres");
        connection.Open();
        for (var id = from; id <= to; id++)
        {
            using var insert = new NpgsqlCommand($"insert into ledger values ({id}) returning xmin::text", connection);
            Xids[id] = ulong.Parse((string)insert.ExecuteScalar()!, System.Globalization.CultureInfo.InvariantCulture);
            using var time = new NpgsqlCommand($"select pg_xact_commit_timestamp(xmin) from ledger where id = {id}", connection);
            Committed[id] = new DateTimeOffset(((DateTime)time.ExecuteScalar()!).ToUniversalTime(), TimeSpan.Zero);
            Thread.Sleep(5);
        }
    }

    public void Dispose()
    {
        Cluster.Dispose();
        foreach (var file in Directory.GetFiles("/var/lib/postgresql/.pgbackup", $"{SystemIdentifier}-archive-*.json")) WalCredentialsFile.Remove(file);
        Azurite.Dispose();
        try { Directory.Delete(Folder, recursive: true); } catch (IOException) { }
    }
}

public sealed class BlobRecoveryTests(BlobRecoveryFixture fx) : IClassFixture<BlobRecoveryFixture>, IAsyncLifetime
{
    private readonly RecoveredInstances instances = new();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => instances.RemoveAllAsync();

    private string NewDataDirectory() => instances.NewDataDirectory(fx.Folder);

    private async Task<RecoveryResult> Recover(RecoverySource source, RecoveryTarget target)
    {
        target.Timeline ??= "current";
        var plan = await RecoveryPlanner.PlanAsync(new RecoveryPlanRequest { Candidates = source.Candidates, BackupChosen = source.Chosen, Target = target, Repository = source.Repository },
            NullReporter.Instance, default);
        var port = PgBackup.Testing.FreePort.Next();
        return await PointInTimeRecovery.RunAsync(new PointInTimeRequest
        {
            Plan = plan, DataDirectory = NewDataDirectory(), Port = port, WalTool = fx.Tool,
            Connection = new() { Host = "localhost", Port = port, Database = "postgres", User = PgTestCluster.SuperUser, Password = PgTestCluster.Password },
        }, NullReporter.Instance, default);
    }

    [Fact]
    public async Task A_time_target_recovers_from_the_blob_repository_exactly_the_rows_committed_by_then_and_leaves_no_download_behind()
    {
        var target = RecoveryTarget.AtTime(fx.Committed[9], inclusive: true);
        string spool;
        RecoveryResult result;
        using (var source = await RecoverySource.PrepareAsync(null, null, fx.Repository, null, new CatalogFilter(), fx.Cluster.Host, target, Engine.Repository.Encryption.RepositoryKeys.None, NullReporter.Instance, default))
        {
            spool = source.Spool!;
            Assert.Equal(fx.Newer.Id, Assert.Single(source.Candidates).Id);
            Assert.StartsWith(fx.Repository.Url, source.BackupPath, StringComparison.Ordinal);
            result = await Recover(source, target);
        }
        Assert.Equal(Enumerable.Range(1, 9), RecoveredInstances.Ledger(result.Port));
        Assert.False(Directory.Exists(spool));
    }

    [Fact]
    public async Task A_transaction_id_before_the_newest_backup_is_recovered_from_the_older_one_downloaded_in_its_place()
    {
        var target = RecoveryTarget.AtXid(fx.Xids[3], inclusive: true);
        target.Timeline = "current";
        var (source, plan) = await RecoverySource.PlanAsync(null, null, fx.Repository, null, new CatalogFilter(), fx.Cluster.Host, target, null, Engine.Repository.Encryption.RepositoryKeys.None, NullReporter.Instance, default);
        using (source)
        {
            Assert.Equal(fx.Older.Id, plan.Backup.Id);
            var port = PgBackup.Testing.FreePort.Next();
            var result = await PointInTimeRecovery.RunAsync(new PointInTimeRequest
            {
                Plan = plan, DataDirectory = NewDataDirectory(), Port = port, WalTool = fx.Tool,
                Connection = new() { Host = "localhost", Port = port, Database = "postgres", User = PgTestCluster.SuperUser, Password = PgTestCluster.Password },
            }, NullReporter.Instance, default);
            Assert.Equal(Enumerable.Range(1, 3), RecoveredInstances.Ledger(result.Port));
        }
        await TempFolders.AssertNoneLeftAsync("pgbackup-spool-*");
    }

    [Fact]
    public async Task A_piped_older_backup_rolls_forward_through_the_blob_archive_to_its_end()
    {
        using var source = await RecoverySource.PrepareAsync(fx.Older, fx.Repository, fx.Repository, null, null, null, RecoveryTarget.EndOfArchive(), Engine.Repository.Encryption.RepositoryKeys.None, NullReporter.Instance, default);
        var result = await Recover(source, RecoveryTarget.EndOfArchive());
        Assert.Equal(Enumerable.Range(1, BlobRecoveryFixture.Rows), RecoveredInstances.Ledger(result.Port));
    }

    [Fact]
    public async Task A_drill_from_the_blob_repository_recovers_checks_and_removes_its_instance()
    {
        var report = await RecoveryDrill.RunAsync(new DrillRequest
        {
            Source = Targets.For(fx.Cluster), Repository = fx.Repository, WalTool = fx.Tool, Queries = ["select count(*) from ledger"],
        }, NullReporter.Instance, default);
        Assert.True(report.Passed, string.Join(" | ", report.Checks.Select(c => c.ToString())));
        Assert.Equal(fx.Newer.Id, report.BackupId);
        Assert.False(Directory.Exists(report.DataDirectory));
    }

    [Fact]
    public async Task A_damaged_segment_in_the_blob_archive_stops_the_recovery_before_it_is_used()
    {
        var store = new BlobWalArchiveStore(fx.Repository, fx.SystemIdentifier);
        var after = store.List().Where(f => f.Name.Length == 24 && string.CompareOrdinal(f.Name, fx.Newer.StartSegment) > 0).OrderBy(f => f.Name).First();
        var copy = RepositoryAddress.Parse(fx.Azurite.NewContainerUrl("damaged"), AzuriteFixture.Settings).WithSecrets(new BlobSecrets(AccountKey: AzuriteServer.AccountKey));
        // A copy of the repository with one segment changed, so the other tests keep their archive.
        var container = new Azure.Storage.Blobs.BlobServiceClient(fx.Azurite.ConnectionString);
        var from = container.GetBlobContainerClient(fx.Repository.Container);
        var to = container.GetBlobContainerClient(copy.Container);
        to.CreateIfNotExists();
        foreach (var blob in from.GetBlobs(Azure.Storage.Blobs.Models.BlobTraits.Metadata, Azure.Storage.Blobs.Models.BlobStates.None, fx.Repository.Prefix, default))
        {
            var content = from.GetBlobClient(blob.Name).DownloadContent().Value.Content.ToArray();
            if (blob.Name.EndsWith(after.Name, StringComparison.Ordinal)) content[content.Length / 2] ^= 0x01;
            to.GetBlobClient(copy.Prefix + blob.Name[fx.Repository.Prefix.Length..]).Upload(new BinaryData(content),
                new Azure.Storage.Blobs.Models.BlobUploadOptions { Metadata = blob.Metadata });
        }
        using var source = await RecoverySource.PrepareAsync(null, null, copy, null, new CatalogFilter(), fx.Cluster.Host, RecoveryTarget.EndOfArchive(), Engine.Repository.Encryption.RepositoryKeys.None, NullReporter.Instance, default);
        var error = await Assert.ThrowsAsync<PgBackupException>(() => Recover(source, RecoveryTarget.EndOfArchive()));
        Assert.Equal("PgBackup.WalSegmentDamaged", error.ErrorId);
        Assert.Contains(after.Name, error.Message);
    }

    [Fact]
    public async Task A_standby_falls_back_to_the_blob_archive_when_the_primary_no_longer_has_the_wal()
    {
        var directory = NewDataDirectory();
        var port = PgBackup.Testing.FreePort.Next();
        // The restore_command runs an installed copy of the tool, which goes when the standby does.
        var tools = Path.Combine(fx.Folder, "installed tools");
        Environment.SetEnvironmentVariable(InstalledToolUses.RootVariable, tools);
        try
        {
            var standby = await StandbyBuilder.CreateAsync(new NewStandbyRequest
            {
                Upstream = Targets.For(fx.Cluster), DataDirectory = directory, Port = port, ArchiveRepository = fx.Repository, WalTool = fx.Tool, ToolInstallRoot = tools,
            }, NullReporter.Instance, default);
            var settings = File.ReadAllText(Path.Combine(directory, "postgresql.auto.conf"));
            Assert.Contains("--standby", settings);
            Assert.Contains(tools, settings);
            Assert.DoesNotContain(AzuriteServer.AccountKey, settings);
            var credentials = Path.Combine("/var/lib/postgresql/.pgbackup", $"{fx.SystemIdentifier}-{WalCredentialsFile.StandbyPurpose(directory)}.json");
            Assert.True(File.Exists(credentials));

            // Stopped, the standby misses WAL that the primary then recycles (wal_keep_size 0, no slot): only the archive has it.
            await RecoveredInstances.CatchUpThroughArchiveAsync(fx.Cluster, directory, port,
                "insert into ledger select 1000 + g from generate_series(1, 200) g on conflict do nothing", "delete from ledger where id > 1000");
            await InstanceControl.RemoveAsync(directory, force: true, null, NullReporter.Instance, default);
            Assert.False(File.Exists(credentials), "Removing the standby removes the credential it was given.");
            Assert.DoesNotContain(Directory.GetDirectories(tools), d => Path.GetFileName(d) != "uses");
        }
        finally { Environment.SetEnvironmentVariable(InstalledToolUses.RootVariable, null); }
    }

    [Fact]
    public async Task Retention_deletes_wal_blobs_only_before_the_oldest_kept_backup()
    {
        // A copy of the archive, so that the other tests keep everything.
        var copy = RepositoryAddress.Parse(fx.Azurite.NewContainerUrl("retention"), AzuriteFixture.Settings).WithSecrets(new BlobSecrets(AccountKey: AzuriteServer.AccountKey));
        var service = new Azure.Storage.Blobs.BlobServiceClient(fx.Azurite.ConnectionString);
        var from = service.GetBlobContainerClient(fx.Repository.Container);
        var to = service.GetBlobContainerClient(copy.Container);
        to.CreateIfNotExists();
        var walKey = BlobWalArchiveStore.KeyOf(fx.Repository, fx.SystemIdentifier) + "/";
        foreach (var blob in from.GetBlobs(Azure.Storage.Blobs.Models.BlobTraits.Metadata, Azure.Storage.Blobs.Models.BlobStates.None, walKey, default))
            await to.GetBlobClient(copy.Prefix + blob.Name[fx.Repository.Prefix.Length..]).UploadAsync(from.GetBlobClient(blob.Name).DownloadContent().Value.Content,
                new Azure.Storage.Blobs.Models.BlobUploadOptions { Metadata = blob.Metadata });

        var plan = Assert.Single(WalRetention.Plan(copy, [fx.Newer]));
        Assert.Equal(fx.Newer.StartSegment, plan.KeepFrom.ToString());
        Assert.NotEmpty(plan.Files);
        Assert.All(plan.Files, f => Assert.True(string.CompareOrdinal(f[..24], fx.Newer.StartSegment) < 0, f));
        WalRetention.Execute(plan);
        var left = new BlobWalArchiveStore(copy, fx.SystemIdentifier).List().Select(f => f.Name).ToList();
        Assert.DoesNotContain(left, n => n.Length >= 24 && string.CompareOrdinal(n[..24], fx.Newer.StartSegment) < 0);
        Assert.Contains(fx.Newer.StartSegment, left);
        Assert.Empty(WalArchiveInspector.GapsAfterOldestKept(copy, [fx.Newer], null));
    }
}
