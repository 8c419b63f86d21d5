using System.Diagnostics;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Instance;
using PgBackup.Engine.Physical;
using PgBackup.Engine.Recovery;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Wal;
using PgBackup.Testing;
using Xunit;

namespace PgBackup.Engine.Tests;

/// <summary>
/// pgbackup-wal push --parallel (the background pusher) and fetch --parallel (prefetch), against real servers and against
/// a pg_wal laid out by hand where a test needs to kill the pusher at will; the same tests for a folder and for Azurite.
/// </summary>
public abstract class ParallelWalArchivingTests : IDisposable
{
    protected readonly string folder = Targets.NewFolder();
    private readonly List<PgTestCluster> clusters = [];
    private readonly RecoveredInstances recovered = new();

    protected abstract RepositoryAddress NewRepository();
    /// <summary>The repository stops taking writes from the server's OS user (a folder it may not write, a storage endpoint gone).</summary>
    protected abstract void MakeUnreachable(RepositoryAddress repository, string archive);
    protected abstract void MakeReachable(RepositoryAddress repository, string archive);

    public void Dispose()
    {
        recovered.RemoveAllAsync().GetAwaiter().GetResult();
        foreach (var cluster in clusters) cluster.Dispose();
        try { Directory.Delete(folder, recursive: true); }
        catch (IOException) { }
        GC.SuppressFinalize(this);
    }

    private PgTestCluster Start(string name)
    {
        var cluster = PgTestCluster.Start(name, new Dictionary<string, string> { ["max_wal_size"] = "1GB" });
        clusters.Add(cluster);
        return cluster;
    }

    private WalArchiveTool Tool() => new(WalTool.CopyTo(Path.Combine(folder, "module", "WalArchive")));

    private Task<WalArchivingResult> EnableAsync(ConnectionTarget target, RepositoryAddress repository, int parallel = 1, long? dropBacklogAbove = null, bool compress = false) =>
        ArchivingService.EnableAsync(new EnableArchivingRequest
        {
            Target = target, Repository = repository, Tool = Tool(), Restart = true, ArchiveParallel = parallel, DropBacklogAbove = dropBacklogAbove, CompressWal = compress,
        }, NullReporter.Instance, default);

    /// <summary>The archive's location and, for Blob, a credentials file, as pgbackup-wal takes them on its command line.</summary>
    private string[] Archive(RepositoryAddress repository, string systemIdentifier)
    {
        if (!repository.IsBlob)
        {
            var archive = RepositoryLayout.ArchiveFolder(repository.Folder!, systemIdentifier);
            Directory.CreateDirectory(archive);
            return [archive];
        }
        var credentials = Path.Combine(folder, "credentials-" + Guid.NewGuid().ToString("N")[..8] + ".json");
        File.WriteAllText(credentials, BlobStore.WalCredentials(repository).Serialize());
        return [BlobWalArchiveStore.UrlOf(repository, systemIdentifier), "--credentials", credentials];
    }

    /// <summary>A data directory's pg_wal laid out by hand: segments of random content, each with its .ready file.</summary>
    private static string[] FakeWal(string dataDirectory, int count, int firstSegment = 1)
    {
        var status = Directory.CreateDirectory(Path.Combine(dataDirectory, "pg_wal", "archive_status")).FullName;
        return Enumerable.Range(firstSegment, count).Select(i =>
        {
            var name = $"00000001000000000000{i:X4}";
            var path = WalTool.WriteRandomFile(Path.Combine(dataDirectory, "pg_wal", name), 4 << 20);
            File.WriteAllBytes(Path.Combine(status, name + ".ready"), []);
            return path;
        }).ToArray();
    }

    /// <summary>What PostgreSQL does for each ready segment in turn: runs the archive command, and marks it done when it succeeds.</summary>
    private static void ArchiveAsPostgresWould(string[] segments, string[] archive, int parallel)
    {
        foreach (var segment in segments)
        {
            var push = RunNative(["push", segment, .. archive, WalArchiveTool.ParallelOption, parallel.ToString()]);
            Assert.True(push.ExitCode == 0, $"push of {Path.GetFileName(segment)}: {push.StdErr}");
            var status = Path.Combine(Path.GetDirectoryName(segment)!, "archive_status", Path.GetFileName(segment));
            File.Move(status + ".ready", status + ".done");
        }
    }

    /// <summary>Every segment fetched back from the archive (checked against its checksum by the tool) equals the original.</summary>
    private void AssertArchived(string[] segments, string[] archive)
    {
        foreach (var segment in segments)
        {
            var fetched = Path.Combine(folder, "fetched");
            var fetch = WalTool.Run(["fetch", archive[0], Path.GetFileName(segment), fetched, .. archive[1..]]);
            Assert.True(fetch.ExitCode == 0, $"fetch of {Path.GetFileName(segment)}: {fetch.StdErr}");
            Assert.Equal(WalTool.Sha256(segment), WalTool.Sha256(fetched));
        }
    }

    private static (int ExitCode, string StdOut, string StdErr) RunNative(string[] args) =>
        ProcessRunner.Run(WalTool.NativePath, args, timeout: TimeSpan.FromMinutes(2));

    private static Process StartNative(string[] args)
    {
        var start = new ProcessStartInfo(WalTool.NativePath) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) start.ArgumentList.Add(a);
        return Process.Start(start)!;
    }

    private static async Task WaitForAsync(Func<bool> condition, Func<string> what, int seconds = 90)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail(what());
            await Task.Delay(200);
        }
    }

    private static string SpoolLog(PgTestCluster cluster)
    {
        var log = Path.Combine(cluster.DataDirectory, "pg_wal", "pgbackup_archive_spool", "worker.log");
        return (File.Exists(log) ? File.ReadAllText(log) : "(no worker.log)") + " | " + File.ReadAllText(cluster.LogFile);
    }

    private static string WriteSegments(PgTestCluster cluster, int statements)
    {
        cluster.Psql("create table if not exists w(i int, pad text)");
        // Each statement writes about 7 segments of WAL without switching: full segments, as a busy server makes them.
        for (var i = 0; i < statements; i++) cluster.Psql("insert into w select g, repeat(md5(g::text), 30) from generate_series(1, 100000) g");
        return cluster.Psql("select pg_walfile_name(pg_switch_wal())");
    }

    private static Task WaitForArchivedAsync(PgTestCluster cluster, string last, int seconds = 90) =>
        WaitForAsync(() => cluster.Psql($"select coalesce(last_archived_wal, '') >= '{last}' from pg_stat_archiver") == "t",
            () => $"the archiver did not reach {last}: " + cluster.Psql("select last_archived_wal, failed_count, last_failed_wal from pg_stat_archiver"), seconds);

    [Fact]
    public async Task A_busy_server_is_archived_in_parallel_without_a_failure_or_a_gap()
    {
        var cluster = Start("walpar-busy");
        var repository = NewRepository();
        var result = await EnableAsync(Targets.For(cluster), repository, parallel: 4);
        Assert.True(result.Verified);
        Assert.Equal(4, result.ArchiveParallel);
        Assert.Contains(" --parallel 4", result.ArchiveCommand);
        Assert.Equal(4, (await ArchivingService.GetArchivingStateAsync(Targets.For(cluster), default)).ArchiveParallel);

        var last = WriteSegments(cluster, 5);
        await WaitForArchivedAsync(cluster, last);
        Assert.Equal("0", cluster.Psql("select failed_count from pg_stat_archiver"));
        Assert.True(Directory.Exists(Path.Combine(cluster.DataDirectory, "pg_wal", "pgbackup_archive_spool")), "the background pusher ran");

        var statuses = await WalArchiveReport.ForServerAsync(Targets.For(cluster), repository, verifyChecksums: true, NullReporter.Instance, default);
        var status = Assert.Single(statuses);
        Assert.Empty(status.Gaps);
        Assert.Empty(status.ChecksumFailures!);
        Assert.True(status.SegmentCount >= 30, $"{status.SegmentCount} segments archived up to {last}");
    }

    [Theory]
    [InlineData(40)]
    [InlineData(150)]
    [InlineData(400)]
    public void A_killed_background_pusher_loses_nothing_and_the_next_calls_complete_the_work(int killAfterMs)
    {
        var data = Path.Combine(folder, "data-" + killAfterMs);
        var segments = FakeWal(data, 12);
        var archive = Archive(NewRepository(), "7300000000000000001");
        var pusher = StartNative(["push-ahead", Path.Combine(data, "pg_wal"), .. archive, WalArchiveTool.ParallelOption, "3"]);
        Thread.Sleep(killAfterMs);
        pusher.Kill();
        pusher.WaitForExit();

        // Whatever the pusher recorded as committed is in the archive, whole.
        var spool = Path.Combine(data, "pg_wal", "pgbackup_archive_spool");
        var acknowledged = (Directory.Exists(spool) ? Directory.GetFiles(spool, "*.ok") : []).Select(f => Path.Combine(data, "pg_wal", Path.GetFileNameWithoutExtension(f))).ToArray();
        AssertArchived(acknowledged, archive);

        ArchiveAsPostgresWould(segments, archive, parallel: 3);
        AssertArchived(segments, archive);
    }

    [Fact]
    public async Task After_archive_command_changes_nothing_is_acknowledged_from_the_old_archive()
    {
        var data = Path.Combine(folder, "moved");
        var segments = FakeWal(data, 6);
        var old = Archive(NewRepository(), "7300000000000000003");
        var pusher = StartNative(["push-ahead", Path.Combine(data, "pg_wal"), .. old, WalArchiveTool.ParallelOption, "2"]);
        var spool = Path.Combine(data, "pg_wal", "pgbackup_archive_spool");
        await WaitForAsync(() => Directory.Exists(spool) && Directory.GetFiles(spool, "*.ok").Length == segments.Length, () => "the pusher did not push ahead into the old archive");

        // Enable-PgWalArchiving into another repository: the server's calls now name the new archive.
        var moved = Archive(NewRepository(), "7300000000000000003");
        ArchiveAsPostgresWould(segments, moved, parallel: 2);
        AssertArchived(segments, moved);
        Assert.True(pusher.WaitForExit(TimeSpan.FromSeconds(10)), "the pusher for the old archive was told to stop");
    }

    [Fact]
    public void Two_pushers_racing_on_one_segment_archive_it_once_and_both_succeed()
    {
        var archive = Archive(NewRepository(), "7300000000000000002");
        for (var round = 0; round < 4; round++)
        {
            var data = Path.Combine(folder, "race-" + round);
            var segment = FakeWal(data, 1, firstSegment: 0x20 + round)[0];
            var one = StartNative(["push", segment, .. archive, WalArchiveTool.ParallelOption, "2"]);
            var other = StartNative(["push", segment, .. archive]);
            foreach (var push in new[] { one, other })
            {
                var stderr = push.StandardError.ReadToEnd();
                push.WaitForExit();
                Assert.True(push.ExitCode == 0, stderr);
            }
            AssertArchived([segment], archive);
        }
    }

    [Fact]
    public async Task An_unreachable_repository_grows_a_reported_backlog_that_drains_when_it_is_back()
    {
        var cluster = Start("walpar-outage");
        var repository = NewRepository();
        var target = Targets.For(cluster);
        var result = await EnableAsync(target, repository, parallel: 2);

        MakeUnreachable(repository, result.Repository);
        string last;
        try
        {
            last = WriteSegments(cluster, 1);
            await WaitForAsync(() => int.Parse(cluster.Psql("select failed_count from pg_stat_archiver")) > 0, () => "no push failed while the repository was unreachable: " + SpoolLog(cluster));
            var during = Assert.Single(await WalArchiveReport.ForServerAsync(target, repository, verifyChecksums: false, NullReporter.Instance, default), s => s.InRecovery != null);
            Assert.True(during.ReadySegments >= 5, $"{during.ReadySegments} segments wait");
            Assert.True(during.OldestReadyAge > TimeSpan.Zero);
            Assert.True(during.PgWalBytes >= during.ReadySegments * 16L * 1024 * 1024);
            // A storage endpoint that is gone leaves the archive's side unknown; the backlog is reported all the same.
            if (repository.IsBlob) Assert.NotNull(during.ArchiveError);
        }
        finally { MakeReachable(repository, result.Repository); }

        // PostgreSQL retries at the next new segment; the backlog drains.
        cluster.Psql("select pg_switch_wal()");
        last = cluster.Psql("select pg_walfile_name(pg_switch_wal())");
        await WaitForArchivedAsync(cluster, last, seconds: 120);
        var after = Assert.Single(await WalArchiveReport.ForServerAsync(target, repository, verifyChecksums: true, NullReporter.Instance, default), s => s.InRecovery != null);
        Assert.Equal(0, after.ReadySegments);
        Assert.Empty(after.Gaps);
        Assert.Empty(after.ChecksumFailures!);
    }

    [Fact]
    public async Task The_guard_with_a_background_pusher_drops_above_its_limit_and_the_gap_is_reported()
    {
        const long limit = 2 * 16 * 1024 * 1024;
        var cluster = Start("walpar-guard");
        var repository = NewRepository();
        var target = Targets.For(cluster);
        var result = await EnableAsync(target, repository, parallel: 2, dropBacklogAbove: limit);
        Assert.EndsWith($" --parallel 2 --drop-backlog-above {limit}", result.ArchiveCommand);

        var droppedLog = Path.Combine(cluster.DataDirectory, "pgbackup_dropped_wal.log");
        MakeUnreachable(repository, result.Repository);
        try
        {
            for (var i = 0; i < 6; i++) cluster.Psql("select txid_current(); select pg_switch_wal()");
            await WaitForAsync(() => File.Exists(droppedLog), () => "the guard dropped nothing: " + SpoolLog(cluster) + cluster.Psql("select failed_count, last_failed_wal from pg_stat_archiver"), 120);
        }
        finally { MakeReachable(repository, result.Repository); }
        cluster.ArchiveCurrentSegment();
        var dropped = File.ReadAllLines(droppedLog).Select(l => l.Split(' ')[0]).ToArray();
        var reporter = new RecordingReporter();
        var current = Assert.Single(await WalArchiveReport.ForServerAsync(target, repository, verifyChecksums: false, reporter, default), s => s.InRecovery != null);
        Assert.Equal(dropped, current.DroppedSegments);
        Assert.Contains(reporter.Warnings, l => l.Contains("dropped unarchived", StringComparison.Ordinal));
        Assert.Contains(current.Gaps, g => string.CompareOrdinal(g.From, dropped[0]) <= 0 && string.CompareOrdinal(g.To, dropped[0]) >= 0);
    }

    [Fact]
    public async Task Prefetch_during_a_recovery_aborts_at_a_damaged_segment_instead_of_replaying_it()
    {
        var cluster = Start("walpar-prefetch");
        var repository = NewRepository();
        var target = Targets.For(cluster);
        var enabled = await EnableAsync(target, repository);
        var systemIdentifier = enabled.SystemIdentifier;

        // A copy without WAL of its own: it can only become consistent from the archive.
        var directory = recovered.NewDataDirectory(folder);
        cluster.RunTool("pg_basebackup", "-D", directory, "-X", "none", "-c", "fast");
        var names = new List<string>();
        for (var i = 0; i < 8; i++) names.Add(cluster.Psql("create table if not exists p(i int); insert into p select generate_series(1, 1000); select pg_walfile_name(pg_switch_wal())"));
        await WaitForArchivedAsync(cluster, names[^1]);
        var damaged = names[5];
        Damage(repository, enabled.Repository, systemIdentifier, damaged);

        var archive = Archive(repository, systemIdentifier);
        var tool = new WalArchiveTool(WalTool.DllPath, nativePath: WalTool.NativePath);
        var command = archive.Length == 1 ? tool.RestoreCommand(archive[0], prefetch: 4) : tool.RestoreCommand(archive[0], archive[2], standby: false, prefetch: 4);
        File.AppendAllText(Path.Combine(directory, "postgresql.auto.conf"), $"restore_command = '{command.Replace("'", "''")}'\nrecovery_target_action = 'promote'\n");
        File.WriteAllBytes(Path.Combine(directory, "recovery.signal"), []);
        Assert.Equal(0, ProcessRunner.Run("chown", ["-R", "postgres:postgres", directory, .. archive.Length > 1 ? new[] { archive[2] } : []]).ExitCode);
        File.SetUnixFileMode(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

        var port = FreePort.Next();
        // It may get as far as accepting read-only connections before it reaches the damaged segment; then it stops.
        try { await InstanceControl.StartAsync(directory, port, TimeSpan.FromSeconds(60), null, NullReporter.Instance, default); }
        catch (PgBackupException) { }
        await WaitForAsync(() => !File.Exists(Path.Combine(directory, "postmaster.pid")), () => "the recovering server did not stop at the damaged segment");
        var log = File.ReadAllText(Path.Combine(directory, InstanceControl.LogFileName));
        Assert.Contains("DAMAGED ARCHIVE", log);
        Assert.Contains($"restored log file \"{names[4]}\"", log);
        Assert.DoesNotContain($"restored log file \"{damaged}\"", log);
        Assert.Contains("FATAL:  could not restore file \"" + damaged, log);
        // The fetch of the damaged segment had fetched the ones after it ahead, into the spool; the damaged one never went there.
        var spooled = Directory.GetFiles(Path.Combine(directory, "pg_wal", "pgbackup_prefetch")).Select(Path.GetFileName).ToArray();
        Assert.Contains(names[6], spooled);
        Assert.DoesNotContain(damaged, spooled);
    }

    [Fact]
    public async Task Compressed_segments_are_stored_smaller_and_a_point_in_time_recovery_replays_them()
    {
        var cluster = Start("walpar-compress");
        var repository = NewRepository();
        var target = Targets.For(cluster);
        var enabled = await EnableAsync(target, repository, parallel: 2, compress: true);
        Assert.True(enabled.CompressWal);
        Assert.Contains($" {WalCompression.Option} --parallel 2", enabled.ArchiveCommand);
        Assert.True((await ArchivingService.GetArchivingStateAsync(target, default)).CompressWal);

        cluster.Psql("create table ledger(id int primary key)");
        var backup = await BaseBackupService.BackupAsync(new BaseBackupRequest { Target = target, Repository = repository, Format = BaseBackupFormat.Tar },
            NullReporter.Instance, default);
        for (var i = 1; i <= 3; i++) cluster.Psql($"insert into ledger values ({i})");
        var committed = DateTimeOffset.Parse(cluster.Psql("select clock_timestamp()"), System.Globalization.CultureInfo.InvariantCulture);
        await Task.Delay(50);
        WriteSegments(cluster, 1);
        for (var i = 4; i <= 5; i++) cluster.Psql($"insert into ledger values ({i})");
        var last = cluster.ArchiveCurrentSegment();

        // Stored compressed, smaller, and checked by the inspection like any other file.
        var store = RepositoryLayout.ArchiveStore(repository, enabled.SystemIdentifier);
        var files = store.List().Where(f => f.Name.Length == 24).ToList();
        Assert.All(files.Where(f => string.CompareOrdinal(f.Name, backup.StartSegment) > 0), f =>
        {
            using var stored = store.OpenRead(f.Name);
            var start = new byte[WalCompression.MagicLength];
            stored.ReadExactly(start);
            Assert.True(WalCompression.LooksCompressed(start), f.Name);
            Assert.True(f.SizeBytes < 16L * 1024 * 1024, $"{f.Name}: {f.SizeBytes} bytes");
        });
        var status = Assert.Single(await WalArchiveReport.ForServerAsync(target, repository, verifyChecksums: true, NullReporter.Instance, default));
        Assert.Empty(status.ChecksumFailures!);
        Assert.Empty(status.Gaps);

        // A standby's fetch hands PostgreSQL the segment as it was written.
        var archive = Archive(repository, enabled.SystemIdentifier);
        var fetched = Path.Combine(folder, "fetched-" + last);
        var fetch = WalTool.Run(["fetch", archive[0], last, fetched, .. archive[1..]]);
        Assert.True(fetch.ExitCode == 0, fetch.StdErr);
        Assert.Equal(16L * 1024 * 1024, new FileInfo(fetched).Length);

        var recoveryTarget = RecoveryTarget.AtTime(committed);
        recoveryTarget.Timeline = "current";
        using var source = await RecoverySource.PrepareAsync(backup, repository.IsBlob ? repository : null, repository, null, null, null, recoveryTarget,
            Engine.Repository.Encryption.RepositoryKeys.None, NullReporter.Instance, default);
        var plan = await RecoveryPlanner.PlanAsync(new RecoveryPlanRequest { Candidates = source.Candidates, BackupChosen = source.Chosen, Target = recoveryTarget, Repository = source.Repository },
            NullReporter.Instance, default);
        var port = PgBackup.Testing.FreePort.Next();
        var result = await PointInTimeRecovery.RunAsync(new PointInTimeRequest
        {
            Plan = plan, DataDirectory = recovered.NewDataDirectory(folder), Port = port, WalTool = Tool(),
            Connection = new() { Host = "localhost", Port = port, Database = "postgres", User = PgTestCluster.SuperUser, Password = PgTestCluster.Password },
        }, NullReporter.Instance, default);
        Assert.Equal([1, 2, 3], RecoveredInstances.Ledger(result.Port));
    }

    /// <summary>Other bytes under the segment's name, its recorded checksum left as it was.</summary>
    protected abstract void Damage(RepositoryAddress repository, string archive, string systemIdentifier, string name);
}

public sealed class ParallelFolderWalArchivingTests : ParallelWalArchivingTests
{
    protected override RepositoryAddress NewRepository() => RepositoryAddress.Parse(Path.Combine(folder, "repo-" + Guid.NewGuid().ToString("N")[..8]), AzuriteFixture.Settings);

    protected override void MakeUnreachable(RepositoryAddress repository, string archive) => File.SetUnixFileMode(archive, UnixFileMode.UserRead | UnixFileMode.UserExecute);

    protected override void MakeReachable(RepositoryAddress repository, string archive) =>
        File.SetUnixFileMode(archive, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

    protected override void Damage(RepositoryAddress repository, string archive, string systemIdentifier, string name)
    {
        var path = Path.Combine(archive, name);
        var bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 0x40;
        File.WriteAllBytes(path, bytes);
    }
}

/// <summary>Its own Azurite, which the outage test stops and starts again.</summary>
public sealed class ParallelBlobWalArchivingTests(AzuriteFixture azurite) : ParallelWalArchivingTests, IClassFixture<AzuriteFixture>
{
    protected override RepositoryAddress NewRepository()
    {
        var repository = azurite.NewRepository("par");
        azurite.Container(repository).CreateIfNotExists();
        return repository;
    }

    protected override void MakeUnreachable(RepositoryAddress repository, string archive)
    {
        // A kill before Azurite saved its index would lose the segments archived before the outage (a real storage
        // service never does), and with them the archive's start: the gap the guard leaves would not be seen.
        azurite.Azurite.KillAfterSave();
    }

    protected override void MakeReachable(RepositoryAddress repository, string archive) => azurite.Azurite.Start();

    protected override void Damage(RepositoryAddress repository, string archive, string systemIdentifier, string name)
    {
        var blob = azurite.Container(repository).GetBlobClient(BlobWalArchiveStore.KeyOf(repository, systemIdentifier) + "/" + name);
        var bytes = blob.DownloadContent().Value.Content.ToArray();
        bytes[bytes.Length / 2] ^= 0x40;
        var metadata = blob.GetProperties().Value.Metadata;
        blob.Upload(new BinaryData(bytes), new Azure.Storage.Blobs.Models.BlobUploadOptions { Metadata = metadata });
    }
}
