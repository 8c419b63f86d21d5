using Azure.Storage.Blobs.Models;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Wal;
using PgBackup.Testing;
using Xunit;

namespace PgBackup.Engine.Tests;

/// <summary>
/// WAL archiving into Azurite through pgbackup-wal as the server's OS user: its own cluster, since enabling archiving
/// restarts it and the test writes WAL.
/// </summary>
public sealed class BlobWalArchivingTests(AzuriteFixture azurite) : IClassFixture<AzuriteFixture>, IDisposable
{
    private readonly string folder = Targets.NewFolder();
    private readonly List<PgTestCluster> clusters = [];

    public void Dispose()
    {
        foreach (var cluster in clusters) cluster.Dispose();
        try { Directory.Delete(folder, recursive: true); }
        catch (IOException) { }
    }

    private PgTestCluster Start(string name)
    {
        var cluster = PgTestCluster.Start(name);
        clusters.Add(cluster);
        return cluster;
    }

    private WalArchiveTool Tool() => new(WalTool.CopyTo(Path.Combine(folder, "module", "WalArchive")));

    [Fact]
    public async Task Archiving_into_blobs_keeps_up_with_a_writer_checks_every_segment_and_keeps_the_secret_in_a_file_only_the_server_user_reads()
    {
        var cluster = Start("walblob");
        var repository = azurite.NewRepository("archive");
        var sas = repository.Secrets.SasToken!;
        var result = await ArchivingService.EnableAsync(new EnableArchivingRequest
        {
            Target = Targets.For(cluster), Repository = repository, Tool = Tool(), Restart = true,
        }, NullReporter.Instance, default);

        Assert.True(result.Verified);
        var systemIdentifier = cluster.Psql("select system_identifier from pg_control_system()");
        Assert.Equal(BlobWalArchiveStore.UrlOf(repository, systemIdentifier), result.Repository);
        var command = cluster.Psql("show archive_command");
        Assert.DoesNotContain("sig=", command);
        Assert.DoesNotContain(sas, command);
        Assert.True(WalArchiveTool.TryParseArchiveCommand(command, out ArchiveCommandParts? parts));
        Assert.Equal(result.Repository, parts.Location);
        var (location, credentialsFile) = (parts.Location, parts.CredentialsFile);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(credentialsFile!));
        Assert.Equal("postgres", ProcessRunner.Run("stat", ["-c", "%U", credentialsFile!]).StdOut.Trim());
        Assert.DoesNotContain(cluster.DataDirectory, credentialsFile!);

        // A writer that fills 12 segments, switching as it goes: every one arrives, and the archiver never fails.
        var last = "";
        for (var i = 0; i < 12; i++)
            last = cluster.Psql("create table if not exists w(i int, pad text); insert into w select g, repeat('x', 500) from generate_series(1, 2000) g; select pg_walfile_name(pg_switch_wal())");
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (cluster.Psql($"select coalesce(last_archived_wal, '') >= '{last}' from pg_stat_archiver") != "t")
        {
            Assert.True(DateTime.UtcNow < deadline, "the archiver did not catch up within 60 s: " + cluster.Psql("select last_archived_wal, failed_count, last_failed_wal from pg_stat_archiver"));
            await Task.Delay(200);
        }
        Assert.Equal("0", cluster.Psql("select failed_count from pg_stat_archiver"));

        var statuses = await WalArchiveReport.ForServerAsync(Targets.For(cluster), repository, verifyChecksums: true, NullReporter.Instance, default);
        var status = Assert.Single(statuses);
        Assert.Empty(status.Gaps);
        Assert.Empty(status.ChecksumFailures!);
        Assert.True(status.SegmentCount >= 12, $"{status.SegmentCount} segments archived up to {last}");
        Assert.Equal(0, status.FailedCount);

        // The same segment again is accepted; other content under its name is refused.
        var container = azurite.Container(repository);
        var key = BlobWalArchiveStore.KeyOf(repository, systemIdentifier) + "/" + status.LastSegment;
        var copy = Path.Combine(folder, status.LastSegment!);
        await container.GetBlobClient(key).DownloadToAsync(copy);
        var tool = Tool();
        Assert.Equal(0, WalTool.Run("push", copy, location!, "--credentials", credentialsFile!).ExitCode);
        var other = WalTool.WriteRandomFile(Path.Combine(folder, "other", status.LastSegment!));
        var refused = WalTool.Run("push", other, location!, "--credentials", credentialsFile!);
        Assert.Equal(4, refused.ExitCode);
        Assert.Contains("different content", refused.StdErr);

        // Fetch hands over exactly what was archived; a missing file is "not in the archive"; a changed blob aborts recovery.
        var fetched = Path.Combine(folder, "fetched");
        Assert.Equal(0, WalTool.Run("fetch", location!, status.LastSegment!, fetched, "--credentials", credentialsFile!).ExitCode);
        Assert.Equal(WalTool.Sha256(copy), WalTool.Sha256(fetched));
        Assert.Equal(1, WalTool.Run("fetch", location!, "0000000100000000000000FE", fetched, "--credentials", credentialsFile!).ExitCode);
        var blob = container.GetBlobClient(key);
        var metadata = (await blob.GetPropertiesAsync()).Value.Metadata;
        await blob.UploadAsync(new BinaryData(File.ReadAllBytes(other)), new BlobUploadOptions { Metadata = metadata });
        var damaged = WalTool.Run("fetch", location!, status.LastSegment!, fetched, "--credentials", credentialsFile!, "--standby");
        Assert.Equal(200, damaged.ExitCode);
        Assert.Contains("DAMAGED ARCHIVE", damaged.StdErr);

        await ArchivingService.DisableAsync(new DisableArchivingRequest { Target = Targets.For(cluster), Restart = true }, NullReporter.Instance, default);
        Assert.False(File.Exists(credentialsFile), "Disable-PgWalArchiving removes the credentials file with the command that used it.");
    }

    [Fact]
    public async Task A_wrong_key_is_storage_access_denied_before_the_server_is_touched()
    {
        var cluster = Start("walblob-wrongkey");
        var good = azurite.NewRepository();
        var wrong = RepositoryAddress.Parse(good.Url.TrimEnd('/'), AzuriteFixture.Settings)
            .WithSecrets(new BlobSecrets(AccountKey: Convert.ToBase64String(new byte[64])));
        var error = await Assert.ThrowsAsync<PgBackupException>(() => ArchivingService.EnableAsync(new EnableArchivingRequest
        {
            Target = Targets.For(cluster), Repository = wrong, Tool = Tool(), Restart = true,
        }, NullReporter.Instance, default));
        Assert.Equal("PgBackup.StorageAccessDenied", error.ErrorId);
        Assert.Equal("0", cluster.Psql("select count(*) from pg_file_settings where name in ('archive_command', 'archive_mode')"));
    }

    [Fact]
    public async Task Without_a_sas_token_or_key_the_server_cannot_sign_in_and_archiving_is_refused_saying_what_to_give()
    {
        var cluster = Start("walblob-nokey");
        var address = RepositoryAddress.Parse(azurite.NewRepository().Url.TrimEnd('/'), AzuriteFixture.Settings);
        var error = await Assert.ThrowsAsync<PgBackupException>(() => ArchivingService.EnableAsync(new EnableArchivingRequest
        {
            Target = Targets.For(cluster), Repository = address, Tool = Tool(),
        }, NullReporter.Instance, default));
        Assert.Equal("PgBackup.CredentialRequired", error.ErrorId);
        Assert.Contains("SAS token", error.RecommendedAction);
    }

    [Fact]
    public async Task Storage_that_does_not_answer_aborts_a_recovery_but_sends_a_standby_back_to_streaming()
    {
        var credentials = Path.Combine(folder, "credentials.json");
        File.WriteAllText(credentials, new WalStorageCredentials(null, AzuriteServer.Account, AzuriteServer.AccountKey).Serialize());
        var url = $"http://127.0.0.1:{FreePort.Next()}/{AzuriteServer.Account}/nobody/wal/1";
        var destination = Path.Combine(folder, "fetched");
        // Both wait out the tool's retries (about 15 s), so they run side by side.
        var recovery = Task.Run(() => WalTool.Run("fetch", url, "000000010000000000000001", destination, "--credentials", credentials));
        var standby = Task.Run(() => WalTool.Run("fetch", url, "000000010000000000000001", destination, "--credentials", credentials, "--standby"));
        var (recoveryResult, standbyResult) = (await recovery, await standby);
        Assert.Equal(200, recoveryResult.ExitCode);
        Assert.Equal(1, standbyResult.ExitCode);
        Assert.Contains("did not answer", standbyResult.StdErr);
        Assert.False(File.Exists(destination));
    }

    [Fact]
    public async Task The_credentials_file_is_never_written_through_a_link_the_server_user_planted()
    {
        // ~postgres/.pgbackup is the server user's to change; as root, a link there must not lead PgBackup elsewhere.
        var home = Directory.CreateDirectory(Path.Combine(folder, "home")).FullName;
        var elsewhere = Directory.CreateDirectory(Path.Combine(folder, "elsewhere")).FullName;
        File.CreateSymbolicLink(Path.Combine(home, ".pgbackup"), elsewhere);
        var credentials = new WalStorageCredentials("sv=1&sig=c2VjcmV0", null, null).Serialize();
        var error = await Assert.ThrowsAsync<PgBackupException>(() =>
            Instance.WalCredentialsFile.WriteAsync(Path.Combine(home, ".pgbackup", "1-archive-x.json"), credentials, "postgres", default));
        Assert.Equal("PgBackup.CredentialsFileNotWritable", error.ErrorId);
        Assert.Empty(Directory.GetFileSystemEntries(elsewhere));
        Assert.DoesNotContain("c2VjcmV0", error.Message + error.RecommendedAction);
    }
}
