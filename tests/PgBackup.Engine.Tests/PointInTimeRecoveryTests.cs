using Npgsql;
using PgBackup.Engine.Physical;
using PgBackup.Engine.Recovery;
using PgBackup.Engine.Wal;
using PgBackup.Testing;
using PgBackup.Engine.Instance;
using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Tests;

/// <summary>
/// A cluster archiving into a repository, one base backup, and a ledger of 20 rows committed one per transaction after it,
/// with each row's commit time, xid and the WAL position after its commit; a restore point follows row 10.
/// </summary>
public sealed class PitrClusterFixture : IDisposable
{
    public const int Rows = 20;
    public readonly string Folder = Targets.NewFolder();
    public PgTestCluster Cluster { get; } = PgTestCluster.Start("pitr", new Dictionary<string, string> { ["track_commit_timestamp"] = "on" });
    public string Repository => Path.Combine(Folder, "repo");
    public WalArchiveTool Tool { get; }
    public BaseBackup Backup { get; }
    public Dictionary<int, (DateTimeOffset Committed, ulong Xid, Lsn After)> Ledger { get; } = [];

    public PitrClusterFixture()
    {
        Tool = new WalArchiveTool(WalTool.CopyTo(Path.Combine(Folder, "module", "WalArchive")));
        ArchivingService.EnableAsync(new EnableArchivingRequest { Target = Targets.For(Cluster), Repository = Repository, Tool = Tool, Restart = true },
            NullReporter.Instance, default).GetAwaiter().GetResult();
        Cluster.Psql("create table ledger(id int primary key)");
        Backup = BaseBackupService.BackupAsync(new BaseBackupRequest { Target = Targets.For(Cluster), Repository = Repository }, NullReporter.Instance, default).GetAwaiter().GetResult();
        using var connection = new NpgsqlConnection($"Host={Cluster.Host};Port={Cluster.Port};Username={PgTestCluster.SuperUser};Password={PgTestCluster.Password};Database=postgres");
        connection.Open();
        for (var id = 1; id <= Rows; id++)
        {
            using (var insert = new NpgsqlCommand($"insert into ledger values ({id}) returning xmin::text", connection))
            {
                var xid = ulong.Parse((string)insert.ExecuteScalar()!);
                using var position = new NpgsqlCommand("select pg_current_wal_insert_lsn()::text", connection);
                Ledger[id] = (default, xid, Lsn.Parse((string)position.ExecuteScalar()!));
            }
            if (id == 10) new NpgsqlCommand("select pg_create_restore_point('after-10')", connection).ExecuteNonQuery();
            Thread.Sleep(5);
        }
        using (var times = new NpgsqlCommand("select id, pg_xact_commit_timestamp(xmin) from ledger", connection))
        using (var reader = times.ExecuteReader())
            while (reader.Read())
                Ledger[reader.GetInt32(0)] = Ledger[reader.GetInt32(0)] with { Committed = new DateTimeOffset(reader.GetDateTime(1).ToUniversalTime(), TimeSpan.Zero) };
        Cluster.ArchiveCurrentSegment();
    }

    public void Dispose()
    {
        Cluster.Dispose();
        try { Directory.Delete(Folder, recursive: true); } catch (IOException) { }
    }
}

public sealed class PointInTimeRecoveryTests(PitrClusterFixture fx) : IClassFixture<PitrClusterFixture>, IAsyncLifetime
{
    private readonly RecoveredInstances instances = new();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => instances.RemoveAllAsync();

    private string NewDataDirectory() => instances.NewDataDirectory(fx.Folder);

    /// <summary>Plans along the backup's own timeline unless the target names one: another test adds a later timeline to the archive.</summary>
    private async Task<RecoveryPlan> Plan(RecoveryTarget target, BaseBackup? backup = null)
    {
        target.Timeline ??= "current";
        return await RecoveryPlanner.PlanAsync(new RecoveryPlanRequest { Candidates = [backup ?? fx.Backup], BackupChosen = true, Target = target, Repository = fx.Repository },
            NullReporter.Instance, default);
    }

    private RecordingReporter lastReporter = new();

    private async Task<RecoveryResult> Recover(RecoveryTarget target, bool continueArchiving = false, string? directory = null, bool force = false)
    {
        lastReporter = new RecordingReporter();
        var port = PgBackup.Testing.FreePort.Next();
        return await PointInTimeRecovery.RunAsync(new PointInTimeRequest
        {
            Plan = await Plan(target),
            DataDirectory = directory ?? NewDataDirectory(),
            Port = port,
            Connection = new() { Host = "localhost", Port = port, Database = "postgres", User = PgTestCluster.SuperUser, Password = PgTestCluster.Password },
            WalTool = fx.Tool,
            ContinueArchiving = continueArchiving,
            Force = force,
        }, lastReporter, default);
    }

    private static int[] LedgerOf(RecoveryResult result) => RecoveredInstances.Ledger(result.Port);

    private static object Scalar(int port, string sql) => RecoveredInstances.Scalar(port, sql);

    private static int[] Upto(int last) => Enumerable.Range(1, last).ToArray();

    [Theory]
    [InlineData(7, true, 7)]
    [InlineData(7, false, 6)]
    public async Task A_time_between_commits_recovers_exactly_the_rows_committed_by_then(int row, bool inclusive, int expectedLast)
    {
        var at = fx.Ledger[row].Committed;
        var result = await Recover(RecoveryTarget.AtTime(at, inclusive));

        Assert.Equal(Upto(expectedLast), LedgerOf(result));
        Assert.True(result.Promoted);
        Assert.Equal("Running", result.State);
        // The last commit replayed is that row's, or a background commit (autovacuum) between it and the target.
        Assert.InRange(result.ReachedTime!.Value, fx.Ledger[expectedLast].Committed, inclusive ? at : at.AddTicks(-1));
        Assert.Equal(fx.Backup.Timeline + 1, result.Timeline);
        Assert.True(result.ReachedLsn > fx.Backup.StopLsn);
        Assert.True(result.WalReplayedBytes > 0);
        Assert.True(result.RestoreDuration > TimeSpan.Zero && result.ReplayDuration > TimeSpan.Zero);
        Assert.Equal(InstanceState.Running, (await InstanceControl.DescribeAsync(result.DataDirectory, default)).State);
        Assert.Contains("archive_mode = off", File.ReadAllText(Path.Combine(result.DataDirectory, "postgresql.auto.conf")));
        Assert.Contains(lastReporter.ProgressRecords, p => p.Status.StartsWith("Replaying WAL", StringComparison.Ordinal) && p.Percent is > 30 and <= 99);
    }

    [Fact]
    public async Task An_lsn_an_xid_and_a_restore_point_each_stop_where_they_say()
    {
        Assert.Equal(Upto(12), LedgerOf(await Recover(RecoveryTarget.AtLsn(fx.Ledger[12].After))));
        Assert.Equal(Upto(15), LedgerOf(await Recover(RecoveryTarget.AtXid(fx.Ledger[15].Xid))));
        Assert.Equal(Upto(14), LedgerOf(await Recover(RecoveryTarget.AtXid(fx.Ledger[15].Xid, inclusive: false))));
        Assert.Equal(Upto(10), LedgerOf(await Recover(RecoveryTarget.AtName("after-10"))));
        var latest = await Recover(RecoveryTarget.EndOfArchive());
        // Everything the source committed is archived (another test adds rows, and archives them too).
        Assert.Equal((int[])Scalar(fx.Cluster.Port, "select array_agg(id order by id) from ledger"), LedgerOf(latest));
        Assert.True(latest.ReachedTime >= fx.Ledger[PitrClusterFixture.Rows].Committed);
    }

    [Fact]
    public async Task A_gzip_tar_backup_is_extracted_and_recovered_the_same_way()
    {
        var tar = await BaseBackupService.BackupAsync(new BaseBackupRequest { Target = Targets.For(fx.Cluster), Repository = fx.Repository, Format = BaseBackupFormat.Tar, Compress = "client-gzip:1" },
            NullReporter.Instance, default);
        fx.Cluster.Psql("insert into ledger values (2001)");
        fx.Cluster.ArchiveCurrentSegment();
        var port = PgBackup.Testing.FreePort.Next();
        var result = await PointInTimeRecovery.RunAsync(new PointInTimeRequest
        {
            Plan = await Plan(RecoveryTarget.EndOfArchive(), tar),
            DataDirectory = NewDataDirectory(),
            Port = port,
            Connection = new() { Host = "localhost", Port = port, Database = "postgres", User = PgTestCluster.SuperUser, Password = PgTestCluster.Password },
            WalTool = fx.Tool,
        }, NullReporter.Instance, default);
        Assert.Contains(2001, LedgerOf(result));
        Assert.True(result.Promoted);

        var before = await Assert.ThrowsAsync<PgBackupException>(() => Plan(RecoveryTarget.AtTime(fx.Ledger[3].Committed), tar));
        Assert.Equal("PgBackup.TargetBeforeBackupEnd", before.ErrorId);
    }

    [Fact]
    public async Task Pause_leaves_the_instance_in_recovery_at_the_target_and_shutdown_stops_it_there()
    {
        var target = RecoveryTarget.AtTime(fx.Ledger[5].Committed);
        target.Action = RecoveryTargetAction.Pause;
        var paused = await Recover(target);
        Assert.False(paused.Promoted);
        Assert.Equal(Upto(5), LedgerOf(paused));
        Assert.Equal(fx.Backup.Timeline, paused.Timeline);

        var shutdown = RecoveryTarget.AtTime(fx.Ledger[5].Committed);
        shutdown.Action = RecoveryTargetAction.Shutdown;
        var stopped = await Recover(shutdown);
        Assert.Equal("Stopped", stopped.State);
        Assert.Equal(InstanceState.Stopped, (await InstanceControl.DescribeAsync(stopped.DataDirectory, default)).State);
        Assert.NotNull(stopped.ReachedLsn);
    }

    [Fact]
    public async Task Targets_the_archive_cannot_reach_are_refused_before_anything_is_written()
    {
        var before = await Assert.ThrowsAsync<PgBackupException>(() => Plan(RecoveryTarget.AtTime(fx.Backup.StartTime.AddMinutes(-1))));
        Assert.Equal("PgBackup.TargetBeforeBackupEnd", before.ErrorId);
        Assert.Contains("earliest point", before.Message);

        var future = await Assert.ThrowsAsync<PgBackupException>(() => Plan(RecoveryTarget.AtTime(DateTimeOffset.UtcNow.AddHours(1))));
        Assert.Equal("PgBackup.TargetBeyondArchive", future.ErrorId);
        Assert.Contains(fx.Ledger[PitrClusterFixture.Rows].Committed.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss.ffffff"), future.Message);

        var lsn = await Assert.ThrowsAsync<PgBackupException>(() => Plan(RecoveryTarget.AtLsn(new Lsn(fx.Ledger[20].After.Value + (1UL << 32)))));
        Assert.Equal("PgBackup.TargetBeyondArchive", lsn.ErrorId);
        var xid = await Assert.ThrowsAsync<PgBackupException>(() => Plan(RecoveryTarget.AtXid(fx.Ledger[20].Xid + 1000)));
        Assert.Equal("PgBackup.TargetBeyondArchive", xid.ErrorId);
        var name = await Assert.ThrowsAsync<PgBackupException>(() => Plan(RecoveryTarget.AtName("no-such-point")));
        Assert.Equal("PgBackup.TargetBeyondArchive", name.ErrorId);
        var timeline = await Assert.ThrowsAsync<PgBackupException>(() => Plan(new RecoveryTarget { Kind = RecoveryTargetKind.Latest, Timeline = "7" }));
        Assert.Equal("PgBackup.TimelineNotInArchive", timeline.ErrorId);
    }

    [Fact]
    public async Task A_missing_segment_is_named_with_the_newest_point_before_it()
    {
        // Two more finished segments, so that the one in the middle can go missing.
        fx.Cluster.Psql("insert into ledger values (1001)");
        var missing = fx.Cluster.ArchiveCurrentSegment();
        fx.Cluster.Psql("insert into ledger values (1002)");
        fx.Cluster.ArchiveCurrentSegment();
        var folder = RepositoryLayout.ArchiveFolder(fx.Repository, fx.Backup.SystemIdentifier);
        var victim = Path.Combine(folder, missing);
        File.Move(victim, victim + ".away");
        try
        {
            var latest = await Assert.ThrowsAsync<PgBackupException>(() => Plan(RecoveryTarget.EndOfArchive()));
            Assert.Equal("PgBackup.WalSegmentMissing", latest.ErrorId);
            Assert.Equal(missing, latest.Target);
            Assert.Contains("can reach LSN", latest.Message);
            var beyond = await Assert.ThrowsAsync<PgBackupException>(() => Plan(RecoveryTarget.AtTime(DateTimeOffset.UtcNow)));
            Assert.Equal("PgBackup.WalSegmentMissing", beyond.ErrorId);
            // A target before the gap is still fine.
            await Plan(RecoveryTarget.AtTime(fx.Ledger[3].Committed));
        }
        finally { File.Move(victim + ".away", victim); }
    }

    private string RowsSegment => Path.Combine(RepositoryLayout.ArchiveFolder(fx.Repository, fx.Backup.SystemIdentifier),
        WalSegmentName.FromLsn(fx.Backup.Timeline, fx.Ledger[20].After, fx.Backup.WalSegmentSize).ToString());

    [Fact]
    public async Task A_damaged_segment_is_found_before_replay_and_nothing_is_left_behind()
    {
        var original = File.ReadAllBytes(RowsSegment);
        var damaged = (byte[])original.Clone();
        damaged[damaged.Length / 2] ^= 0xFF;
        File.WriteAllBytes(RowsSegment, damaged);
        var directory = NewDataDirectory();
        try
        {
            var e = await Assert.ThrowsAsync<PgBackupException>(() => Recover(RecoveryTarget.EndOfArchive(), directory: directory));
            Assert.Equal("PgBackup.WalSegmentDamaged", e.ErrorId);
            Assert.Contains(Path.GetFileName(RowsSegment), e.Message);
            Assert.False(Directory.Exists(directory));
        }
        finally { File.WriteAllBytes(RowsSegment, original); }
    }

    [Fact]
    public async Task A_replay_that_stops_short_of_the_target_reports_the_point_reached_and_the_server_log()
    {
        var plan = await Plan(RecoveryTarget.AtTime(fx.Ledger[19].Committed));
        File.Move(RowsSegment, RowsSegment + ".away"); // the archive loses a segment after the plan was made
        var directory = NewDataDirectory();
        try
        {
            var port = PgBackup.Testing.FreePort.Next();
            var e = await Assert.ThrowsAsync<PgBackupException>(() => PointInTimeRecovery.RunAsync(new PointInTimeRequest
            {
                Plan = plan, DataDirectory = directory, Port = port, WalTool = fx.Tool,
                Connection = new() { Host = "localhost", Port = port, Database = "postgres", User = PgTestCluster.SuperUser, Password = PgTestCluster.Password },
            }, NullReporter.Instance, default));
            Assert.Equal("PgBackup.TargetNotReached", e.ErrorId);
            Assert.Contains("recovery ended before configured recovery target was reached", e.Message);
            Assert.Contains("the last WAL replayed was", e.Message);
            Assert.False(Directory.Exists(directory));
        }
        finally { File.Move(RowsSegment + ".away", RowsSegment); }
    }

    [Fact]
    public async Task A_non_empty_data_directory_and_a_port_in_use_are_refused_and_left_alone()
    {
        var directory = NewDataDirectory();
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "keep.txt"), "precious");
        var full = await Assert.ThrowsAsync<PgBackupException>(() => Recover(RecoveryTarget.EndOfArchive(), directory: directory));
        Assert.Equal("PgBackup.DataDirectoryNotEmpty", full.ErrorId);
        Assert.Equal("precious", File.ReadAllText(Path.Combine(directory, "keep.txt")));

        var plan = await Plan(RecoveryTarget.EndOfArchive());
        var port = await Assert.ThrowsAsync<PgBackupException>(() => PointInTimeRecovery.RunAsync(new PointInTimeRequest
        {
            Plan = plan,
            DataDirectory = NewDataDirectory(),
            Port = fx.Cluster.Port,
            Connection = new() { Host = "localhost", Port = fx.Cluster.Port, Database = "postgres", User = "postgres" },
            WalTool = fx.Tool,
        }, NullReporter.Instance, default));
        Assert.Equal("PgBackup.PortInUse", port.ErrorId);
        Assert.Equal(fx.Cluster.Port, port.Target);

        var forced = await Recover(RecoveryTarget.AtTime(fx.Ledger[2].Committed), directory: directory, force: true);
        Assert.Equal(Upto(2), LedgerOf(forced));
        Assert.False(File.Exists(Path.Combine(directory, "keep.txt")));
    }

    [Fact]
    public async Task A_target_on_a_later_timeline_follows_the_history_after_an_earlier_promotion()
    {
        // The first recovery continues the cluster on a new timeline and archives into the same archive.
        var first = await Recover(RecoveryTarget.AtTime(fx.Ledger[5].Committed), continueArchiving: true);
        Assert.Equal(Upto(5), LedgerOf(first));
        string OnTl2(string sql) => Convert.ToString(Scalar(first.Port, sql), System.Globalization.CultureInfo.InvariantCulture) ?? "";
        OnTl2("insert into ledger values (101)");
        OnTl2("insert into ledger values (102)");
        var at102 = new DateTimeOffset(((DateTime)Scalar(first.Port, "select pg_xact_commit_timestamp(xmin) from ledger where id = 102")).ToUniversalTime(), TimeSpan.Zero);
        OnTl2("insert into ledger values (103)");
        PgTestCluster.ArchiveCurrentSegment(OnTl2);
        await InstanceControl.StopAsync(first.DataDirectory, StopMode.Fast, TimeSpan.FromMinutes(1), null, NullReporter.Instance, default);

        var second = await Recover(new RecoveryTarget { Kind = RecoveryTargetKind.Time, Time = at102, Timeline = "latest" });
        Assert.Equal([.. Upto(5), 101, 102], LedgerOf(second));
        Assert.Equal(first.Timeline + 1, second.Timeline);

        var onFirstTimeline = await Recover(new RecoveryTarget { Kind = RecoveryTargetKind.Time, Time = fx.Ledger[8].Committed, Timeline = "current" });
        Assert.Equal(Upto(8), LedgerOf(onFirstTimeline));
    }
}
