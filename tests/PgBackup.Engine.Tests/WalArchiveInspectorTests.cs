using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using PgBackup.Engine.Wal;
using PgBackup.Testing;
using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Tests;

public sealed class WalArchiveInspectorTests : IDisposable
{
    private const long Mb16 = WalSegmentName.DefaultSegmentSize;
    private const long Gb1 = 1L << 30;
    private const string SystemIdentifier = "7301234567890123456";

    private readonly List<string> _cleanup = [];
    private readonly List<string> _warnings = [];
    private readonly string _folder;

    public WalArchiveInspectorTests()
    {
        var repository = NewRepository();
        _folder = Path.Combine(repository, "wal", SystemIdentifier);
        Directory.CreateDirectory(_folder);
    }

    public void Dispose()
    {
        foreach (var folder in _cleanup)
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
    }

    [Fact]
    public void Counts_first_last_and_size_of_a_timeline()
    {
        Segments(1, 1, 2, 3, 4, 5);
        WriteWithSidecar("000000010000000000000006", "sidecars are not counted");

        var status = Assert.Single(Inspect());

        Assert.Equal(1u, status.Timeline);
        Assert.Equal(6, status.SegmentCount);
        Assert.Equal("000000010000000000000001", status.FirstSegment);
        Assert.Equal("000000010000000000000006", status.LastSegment);
        Assert.Equal(5 * SegmentContent.Length + "sidecars are not counted".Length, status.SizeBytes);
        Assert.Equal(SystemIdentifier, status.SystemIdentifier);
        Assert.Equal(_folder, status.ArchiveFolder);
        Assert.Empty(status.Gaps);
        Assert.Empty(status.HistoryFiles);
        Assert.Null(status.ChecksumFailures);
        Assert.Null(status.Server);
        Assert.Null(status.CurrentLsn);
        Assert.Empty(_warnings);
    }

    [Fact]
    public void Temporary_files_are_ignored_and_foreign_files_warned_about()
    {
        Segments(1, 1, 2, 3);
        Write("000000010000000000000004.tmp.81234");
        Write("000000010000000000000003.sha256.tmp.81235");
        Write("00000002.history.tmp.81236", "1\t0/4000000\tno recovery target specified\n");
        Write("notes.txt");
        Directory.CreateDirectory(Path.Combine(_folder, "000000010000000000000005"));

        var status = Assert.Single(Inspect());

        Assert.Equal(3, status.SegmentCount);
        Assert.Equal("000000010000000000000003", status.LastSegment);
        Assert.Contains("notes.txt", Assert.Single(_warnings));
    }

    [Fact]
    public void A_missing_segment_in_the_middle_is_a_gap()
    {
        Segments(1, 1, 2, 4, 5, 10);

        var gaps = Assert.Single(Inspect()).Gaps;

        Assert.Equal([("000000010000000000000003", "000000010000000000000003", 1), ("000000010000000000000006", "000000010000000000000009", 4)],
            gaps.Select(g => (g.From, g.To, g.MissingCount)));
    }

    [Fact]
    public void Gaps_start_at_the_required_segment_when_one_is_given()
    {
        Segments(1, 4, 5, 6);

        var gap = Assert.Single(Assert.Single(Inspect(requiredFrom: Segment(1, 2))).Gaps);
        Assert.Equal(("000000010000000000000002", "000000010000000000000003", 2), (gap.From, gap.To, gap.MissingCount));

        Assert.Empty(Assert.Single(Inspect()).Gaps);
        Assert.Empty(Assert.Single(Inspect(requiredFrom: Segment(1, 5))).Gaps);
    }

    [Fact]
    public void Gaps_count_across_the_end_of_a_log()
    {
        Write("0000000100000000000000FE");
        Write("0000000100000000000000FF");
        Write("000000010000000100000000");
        Assert.Empty(Assert.Single(Inspect()).Gaps);

        File.Delete(Path.Combine(_folder, "0000000100000000000000FF"));
        File.Delete(Path.Combine(_folder, "000000010000000100000000"));
        Write("000000010000000100000001");
        var gap = Assert.Single(Assert.Single(Inspect()).Gaps);
        Assert.Equal(("0000000100000000000000FF", "000000010000000100000000", 2), (gap.From, gap.To, gap.MissingCount));
    }

    [Fact]
    public void With_1GB_segments_a_log_has_four_segments()
    {
        Write("000000010000000000000002");
        Write("000000010000000000000003");
        Write("000000010000000100000000");
        Assert.Empty(Assert.Single(Inspect(segmentSize: Gb1)).Gaps);

        Write("0000000100000000000000FF"); // cannot exist with 1 GB segments
        Assert.Equal(3, Assert.Single(Inspect(segmentSize: Gb1)).SegmentCount);
        Assert.Contains(_warnings, w => w.Contains("0000000100000000000000FF", StringComparison.Ordinal));
    }

    [Fact]
    public void A_timeline_switch_follows_the_history_file_without_a_false_gap()
    {
        Segments(1, 1, 2, 3);
        History(2, "1\t0/4000000\tno recovery target specified");
        Segments(2, 4, 5, 6);

        var statuses = Inspect(requiredFrom: Segment(1, 1));

        Assert.Equal([1u, 2u], statuses.Select(s => s.Timeline));
        var (one, two) = (statuses[0], statuses[1]);
        Assert.Equal(("000000010000000000000001", "000000010000000000000003", 3), (one.FirstSegment, one.LastSegment, one.SegmentCount));
        Assert.Equal(("000000020000000000000004", "000000020000000000000006", 3), (two.FirstSegment, two.LastSegment, two.SegmentCount));
        Assert.Empty(one.HistoryFiles);
        Assert.Equal(["00000002.history"], two.HistoryFiles);
        Assert.Equal(3 * SegmentContent.Length + new FileInfo(Path.Combine(_folder, "00000002.history")).Length, two.SizeBytes);
        Assert.Empty(one.Gaps);
        Assert.Empty(two.Gaps);
        Assert.Empty(WalArchiveInspector.MissingSegments(_folder, Segment(1, 1), Segment(2, 6), Mb16));
        Assert.Empty(_warnings);
    }

    [Fact]
    public void A_switch_inside_a_segment_continues_in_the_childs_copy_of_that_segment()
    {
        // A promoted standby archives the old timeline's last segment as .partial; the new timeline's first segment holds its WAL up to the switch.
        Segments(1, 1, 2, 3);
        Write("000000010000000000000004.partial");
        History(2, "1\t0/4000100\tno recovery target specified");
        Segments(2, 4, 5);

        var statuses = Inspect(requiredFrom: Segment(1, 2));

        Assert.All(statuses, s => Assert.Empty(s.Gaps));
        Assert.Equal(["000000010000000000000004.partial"], statuses[0].PartialSegments);
        Assert.Equal(3, statuses[0].SegmentCount);
        Assert.Empty(statuses[1].PartialSegments);

        File.Delete(Path.Combine(_folder, "000000020000000000000004"));
        Assert.Equal(["000000020000000000000004"], WalArchiveInspector.MissingSegments(_folder, Segment(1, 2), Segment(2, 5), Mb16).Select(s => s.ToString()));
    }

    [Fact]
    public void After_a_point_in_time_recovery_the_parents_abandoned_segments_are_neither_needed_nor_enough()
    {
        Segments(1, 1, 2, 3, 4, 5, 6, 7, 8);
        History(2, "1\t0/5000000\tbefore 2026-11-23 14:05:00+00");
        Segments(2, 5, 6);

        Assert.All(Inspect(requiredFrom: Segment(1, 1)), s => Assert.Empty(s.Gaps));

        // Without the child's segment 5, the parent's segment 5 (past the switch point) does not stand in for it.
        File.Delete(Path.Combine(_folder, "000000020000000000000005"));
        var gap = Assert.Single(Inspect()[1].Gaps);
        Assert.Equal(("000000020000000000000005", 1), (gap.From, gap.MissingCount));
    }

    [Fact]
    public void A_segment_missing_before_the_switch_shows_on_the_parent_and_the_child()
    {
        Segments(1, 1, 2, 4, 5, 6);
        History(2, "1\t0/5000000\tno recovery target specified");
        Segments(2, 5, 7);

        var statuses = Inspect(requiredFrom: Segment(1, 1));

        Assert.Equal(["000000010000000000000003"], statuses[0].Gaps.Select(g => g.From));
        Assert.Equal([("000000010000000000000003", "000000010000000000000003"), ("000000020000000000000006", "000000020000000000000006")],
            statuses[1].Gaps.Select(g => (g.From, g.To)));
        Assert.Equal(["000000010000000000000003", "000000020000000000000006"],
            WalArchiveInspector.MissingSegments(_folder, Segment(1, 1), Segment(2, 7), Mb16).Select(s => s.ToString()));
    }

    [Fact]
    public void A_gap_spanning_a_switch_is_split_per_timeline()
    {
        Segments(1, 1, 2);
        History(2, "1\t0/4000000\tno recovery target specified");
        Segments(2, 6);

        var gaps = Inspect()[1].Gaps;

        Assert.Equal([("000000010000000000000003", "000000010000000000000003", 1), ("000000020000000000000004", "000000020000000000000005", 2)],
            gaps.Select(g => (g.From, g.To, g.MissingCount)));
    }

    [Fact]
    public void Three_timelines_follow_the_whole_ancestry()
    {
        Segments(1, 1, 2);
        History(2, "1\t0/3000000\tno recovery target specified");
        Segments(2, 3, 4);
        History(3, "1\t0/3000000\tno recovery target specified", "2\t0/5000000\tno recovery target specified");
        Segments(3, 5, 6);

        var three = Inspect(requiredFrom: Segment(1, 1))[2];

        Assert.Empty(three.Gaps);
        Assert.Equal(["00000002.history", "00000003.history"], three.HistoryFiles);
        File.Delete(Path.Combine(_folder, "000000020000000000000004"));
        Assert.Equal(["000000020000000000000004"], WalArchiveInspector.MissingSegments(_folder, Segment(1, 1), Segment(3, 6), Mb16).Select(s => s.ToString()));
    }

    [Fact]
    public void A_missing_history_file_is_warned_about_without_inventing_gaps()
    {
        Segments(1, 1, 2, 3);
        Segments(2, 4, 5, 6);

        var statuses = Inspect(requiredFrom: Segment(1, 1));

        Assert.All(statuses, s => Assert.Empty(s.Gaps));
        Assert.Contains("00000002.history", Assert.Single(_warnings));
        var ex = Assert.Throws<PgBackupException>(() => WalArchiveInspector.MissingSegments(_folder, Segment(1, 1), Segment(2, 6), Mb16));
        Assert.Equal("PgBackup.WalTimelineNotInHistory", ex.ErrorId);
        Assert.Contains("00000002.history", ex.Message);
    }

    [Fact]
    public void A_timeline_with_only_its_history_file_is_listed()
    {
        Segments(1, 1, 2, 3);
        History(2, "1\t0/4000000\tno recovery target specified");

        var two = Inspect()[1];

        Assert.Equal(2u, two.Timeline);
        Assert.Equal(0, two.SegmentCount);
        Assert.Null(two.FirstSegment);
        Assert.Empty(two.Gaps);
    }

    [Fact]
    public void Backup_history_files_belong_to_their_timeline()
    {
        Segments(1, 1, 2, 3);
        Write("000000010000000000000002.00000028.backup", "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n");

        var status = Assert.Single(Inspect());

        Assert.Equal(["000000010000000000000002.00000028.backup"], status.BackupHistoryFiles);
        Assert.Equal(3, status.SegmentCount);
        Assert.Empty(_warnings);
    }

    [Fact]
    public void Verification_reports_files_that_do_not_match_their_sidecar_or_have_none()
    {
        WriteWithSidecar("000000010000000000000001", "one");
        WriteWithSidecar("000000010000000000000002", "two");
        WriteWithSidecar("000000010000000000000003", "three", upperCaseHash: true);
        Write("000000010000000000000002", "two, changed after archiving");
        Write("000000010000000000000004", "four, archived without a sidecar");
        WriteWithSidecar("00000002.history", "1\t0/5000000\tno recovery target specified\n");
        WriteWithSidecar("000000020000000000000005", "five");

        var statuses = Inspect(verify: true);

        Assert.Equal(["000000010000000000000002", "000000010000000000000004"], statuses[0].ChecksumFailures!);
        Assert.Equal(Array.Empty<string>(), statuses[1].ChecksumFailures);
        Assert.Equal(2, _warnings.Count);
        Assert.Contains(_warnings, w => w.Contains("000000010000000000000002 does not match", StringComparison.Ordinal));
        Assert.Contains(_warnings, w => w.Contains("000000010000000000000004 has no .sha256", StringComparison.Ordinal));
        Assert.All(Inspect(verify: false), s => Assert.Null(s.ChecksumFailures));
    }

    [Fact]
    public void IsSegmentArchived_and_MissingSegments_on_one_timeline()
    {
        Segments(1, 3, 4, 6);

        Assert.True(WalArchiveInspector.IsSegmentArchived(_folder, Segment(1, 4)));
        Assert.False(WalArchiveInspector.IsSegmentArchived(_folder, Segment(1, 5)));
        Assert.False(WalArchiveInspector.IsSegmentArchived(_folder, Segment(2, 4)));
        Assert.Equal(["000000010000000000000002", "000000010000000000000005", "000000010000000000000007"],
            WalArchiveInspector.MissingSegments(_folder, Segment(1, 2), Segment(1, 7), Mb16).Select(s => s.ToString()));
        Assert.Empty(WalArchiveInspector.MissingSegments(_folder, Segment(1, 6), Segment(1, 3), Mb16));
    }

    [Fact]
    public void MissingSegments_refuses_a_start_on_an_abandoned_branch()
    {
        Segments(1, 1, 2, 3, 4, 5, 6, 7);
        History(2, "1\t0/5000000\tbefore 2026-11-23 14:05:00+00");
        Segments(2, 5, 6, 7);

        Assert.Empty(WalArchiveInspector.MissingSegments(_folder, Segment(1, 4), Segment(2, 7), Mb16));
        var ex = Assert.Throws<PgBackupException>(() => WalArchiveInspector.MissingSegments(_folder, Segment(1, 6), Segment(2, 7), Mb16));
        Assert.Equal("PgBackup.WalTimelineNotInHistory", ex.ErrorId);
        Assert.Equal(ErrorKind.InvalidArgument, ex.Kind);

        // For the timeline object, such a start says nothing about timeline 2: its gaps are checked from the oldest segment on its path.
        Assert.Empty(Inspect(requiredFrom: Segment(1, 6))[1].Gaps);
    }

    [Fact]
    public void A_missing_folder_and_an_impossible_segment_size_are_user_errors()
    {
        var missing = Assert.Throws<PgBackupException>(() => WalArchiveInspector.Inspect(Path.Combine(_folder, "nope"), null, Mb16, false, null));
        Assert.Equal("PgBackup.WalArchiveNotFound", missing.ErrorId);
        Assert.Equal(ErrorKind.ObjectNotFound, missing.Kind);

        foreach (var size in new[] { 0L, 1000L, 3L << 20, 2L << 30 })
        {
            var ex = Assert.Throws<PgBackupException>(() => WalArchiveInspector.Inspect(_folder, null, size, false, null));
            Assert.Equal("PgBackup.InvalidWalSegmentSize", ex.ErrorId);
        }
    }

    [Fact]
    public void History_files_are_parsed_with_decimal_timelines_comments_and_blank_lines()
    {
        var lineage = WalInventory.ParseHistory(11, "# comment\n1\t0/3000000\tno recovery target specified\n\n10\t1/A0000028\tat restore point \"x\"\n");

        Assert.Equal([new WalTimelineSpan(1, Lsn.Zero, Lsn.Parse("0/3000000")), new WalTimelineSpan(10, Lsn.Parse("0/3000000"), Lsn.Parse("1/A0000028")),
            new WalTimelineSpan(11, Lsn.Parse("1/A0000028"), null)], lineage);
        Assert.Equal(1u, WalInventory.TimelineAt(lineage, 2, Mb16));
        Assert.Equal(10u, WalInventory.TimelineAt(lineage, 3, Mb16));
        Assert.Equal(10u, WalInventory.TimelineAt(lineage, 0x1_9F, Mb16));
        Assert.Equal(11u, WalInventory.TimelineAt(lineage, 0x1_A0, Mb16));
        Assert.Throws<FormatException>(() => WalInventory.ParseHistory(3, "2\t0/5000000\tx\n1\t0/3000000\ty\n"));
        Assert.Throws<FormatException>(() => WalInventory.ParseHistory(3, "3\t0/5000000\tx\n"));
        Assert.Throws<FormatException>(() => WalInventory.ParseHistory(3, "1 zero\n"));
    }

    [Fact]
    public void A_damaged_history_file_is_warned_about()
    {
        Segments(1, 1, 2);
        History(2, "this is not a history file");
        Segments(2, 3);

        Assert.All(Inspect(), s => Assert.Empty(s.Gaps));
        Assert.Contains(_warnings, w => w.Contains("damaged", StringComparison.Ordinal));
    }

    // Recovery point objective: L is the newest archived segment, the current segment is where the server writes.
    private static readonly DateTimeOffset Now = new(2026, 11, 25, 12, 0, 0, TimeSpan.Zero);

    [Fact]
    public void Rpo_is_zero_when_nothing_is_unarchived_and_unknown_when_nothing_is_archived()
    {
        var live = Live(lastArchived: 4, current: 5, unarchivedBytes: 0);
        Assert.Equal(TimeSpan.Zero, WalArchiveInspector.RecoveryPointObjective(live, Now.AddHours(-1), Now));
        Assert.Null(WalArchiveInspector.RecoveryPointObjective(new(null, null, Segment(1, 5), null), Now.AddHours(-1), Now));
    }

    [Fact]
    public void Rpo_counts_from_when_the_last_archived_segment_was_completed()
    {
        // L was completed at 11:00 but the archiver, failing until 11:58, only then copied it: the current segment's WAL is an hour old.
        var live = Live(lastArchived: 4, current: 5, unarchivedBytes: 100, statusFiles: ("000000010000000000000004.done", Now.AddHours(-1)));
        Assert.Equal(TimeSpan.FromHours(1), WalArchiveInspector.RecoveryPointObjective(live, Now.AddMinutes(-2), Now));
    }

    [Fact]
    public void Rpo_falls_back_to_the_last_archive_time_when_only_the_current_segment_is_unarchived()
    {
        var live = Live(lastArchived: 4, current: 5, unarchivedBytes: 100);
        Assert.Equal(TimeSpan.FromMinutes(2), WalArchiveInspector.RecoveryPointObjective(live, Now.AddMinutes(-2), Now));
    }

    [Fact]
    public void Rpo_with_complete_segments_waiting_is_at_least_the_age_of_the_first_waiting_one()
    {
        var live = Live(lastArchived: 4, current: 9, unarchivedBytes: 5 * Mb16, statusFiles: ("000000010000000000000005.ready", Now.AddMinutes(-30)));
        Assert.Equal(TimeSpan.FromMinutes(30), WalArchiveInspector.RecoveryPointObjective(live, Now.AddMinutes(-1), Now));
        Assert.Equal(TimeSpan.FromMinutes(40), WalArchiveInspector.RecoveryPointObjective(Live(4, 9, 5 * Mb16), Now.AddMinutes(-40), Now));
    }

    [Fact]
    [Trait("Category", "Integration")]
    public async Task A_real_clusters_archive_matches_pg_stat_archiver_and_a_deleted_segment_is_reported()
    {
        using var cluster = PgTestCluster.Start("walarchive", new Dictionary<string, string> { ["archive_mode"] = "on" });
        var repository = NewRepository();
        var systemIdentifier = cluster.Psql("select system_identifier from pg_control_system()");
        var folder = Path.Combine(repository, "wal", systemIdentifier);
        Directory.CreateDirectory(folder);
        if (Environment.IsPrivilegedProcess) Assert.Equal(0, ProcessRunner.Run("chown", ["-R", "postgres:postgres", repository]).ExitCode);
        cluster.Psql($"alter system set archive_command = 'cp %p {folder.Replace("'", "''")}/%f'");
        cluster.Psql("select pg_reload_conf()");
        cluster.Psql("create table t (id int, payload text)");
        var lastSwitched = "";
        for (var i = 0; i < 4; i++)
        {
            cluster.Psql("insert into t select g, repeat('x', 200) from generate_series(1, 2000) g");
            lastSwitched = cluster.Psql("select pg_walfile_name(pg_switch_wal())");
        }
        await WaitUntilArchived(cluster, lastSwitched);
        // Committed and flushed, but in the segment that is still being written, so not archived.
        cluster.Psql("set synchronous_commit = on; insert into t values (0, 'not archived yet')");

        var reporter = new RecordingReporter();
        var target = Targets.For(cluster);
        var status = Assert.Single(await WalArchiveInspector.InspectServerAsync(target, repository, null, false, reporter, CancellationToken.None));

        var archivedCount = long.Parse(cluster.Psql("select archived_count from pg_stat_archiver"), CultureInfo.InvariantCulture);
        Assert.Equal(cluster.Host, status.Server);
        Assert.Equal(cluster.Port, status.Port);
        Assert.Equal(systemIdentifier, status.SystemIdentifier);
        Assert.Equal(1u, status.Timeline);
        Assert.Equal(Path.GetFullPath(folder), status.ArchiveFolder);
        Assert.Equal(archivedCount, status.ArchivedCount);
        Assert.Equal(archivedCount, status.SegmentCount);
        Assert.Equal(archivedCount * Mb16, status.SizeBytes);
        Assert.Equal("000000010000000000000001", status.FirstSegment);
        Assert.Equal(lastSwitched, status.LastSegment);
        Assert.Equal(lastSwitched, status.LastArchivedWal);
        Assert.NotNull(status.LastArchivedTime);
        Assert.Equal(0, status.FailedCount);
        Assert.False(status.InRecovery);
        Assert.Empty(status.Gaps);
        Assert.Equal(WalSegmentName.Parse(lastSwitched).Next(Mb16).ToString(), status.CurrentSegment);
        Assert.Equal(status.CurrentSegment, WalSegmentName.FromLsn(1, status.CurrentLsn!.Value, Mb16).ToString());
        Assert.InRange(status.UnarchivedBytes!.Value, 1, Mb16);
        Assert.Equal(status.UnarchivedBytes, status.CurrentLsn.Value - WalSegmentName.Parse(lastSwitched).Next(Mb16).StartLsn(Mb16));
        Assert.InRange(status.RecoveryPointObjective!.Value, TimeSpan.Zero, TimeSpan.FromMinutes(5));
        Assert.Empty(reporter.Warnings);

        var first = WalSegmentName.Parse(status.FirstSegment!);
        var middle = first.Next(Mb16).Next(Mb16);
        File.Delete(Path.Combine(folder, middle.ToString()));
        var afterDelete = Assert.Single(await WalArchiveInspector.InspectServerAsync(target, repository, null, false, reporter, CancellationToken.None));
        var gap = Assert.Single(afterDelete.Gaps);
        Assert.Equal((middle.ToString(), middle.ToString(), 1), (gap.From, gap.To, gap.MissingCount));
        Assert.Equal(archivedCount - 1, afterDelete.SegmentCount);
        Assert.False(WalArchiveInspector.IsSegmentArchived(folder, middle));
        Assert.Equal(new[] { middle }, WalArchiveInspector.MissingSegments(folder, first, WalSegmentName.Parse(lastSwitched), Mb16));

        var elsewhere = NewRepository();
        var ex = await Assert.ThrowsAsync<PgBackupException>(() => WalArchiveInspector.InspectServerAsync(target, elsewhere, null, false, reporter, CancellationToken.None));
        Assert.Equal("PgBackup.WalArchiveNotFound", ex.ErrorId);
        Assert.Equal(ErrorKind.ObjectNotFound, ex.Kind);
        Assert.Contains($"Enable-PgWalArchiving -Server {cluster.Host} -Port {cluster.Port} -Repository {elsewhere}", ex.RecommendedAction);
    }

    private static async Task WaitUntilArchived(PgTestCluster cluster, string segment)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (cluster.Psql("select coalesce(last_archived_wal, '') from pg_stat_archiver") != segment)
        {
            if (DateTime.UtcNow > deadline)
                Assert.Fail($"{segment} was not archived within 60 s: {cluster.Psql("select * from pg_stat_archiver")}\n{File.ReadAllText(cluster.LogFile)}");
            await Task.Delay(100);
        }
    }

    private const string SegmentContent = "wal bytes";

    private IReadOnlyList<WalArchiveStatus> Inspect(WalSegmentName? requiredFrom = null, bool verify = false, long segmentSize = Mb16) =>
        WalArchiveInspector.Inspect(_folder, requiredFrom, segmentSize, verify, _warnings.Add);

    private static WalSegmentName Segment(uint timeline, ulong number) => WalSegmentName.FromNumber(timeline, number, Mb16);

    private static WalArchiveInspector.LiveArchiveState Live(ulong lastArchived, ulong current, long unarchivedBytes, params (string Name, DateTimeOffset Time)[] statusFiles) =>
        new(Segment(1, lastArchived), Segment(1, lastArchived + 1), Segment(1, current), unarchivedBytes, statusFiles.ToDictionary(f => f.Name, f => f.Time));

    private void Segments(uint timeline, params ulong[] numbers)
    {
        foreach (var number in numbers) Write(Segment(timeline, number).ToString());
    }

    private void History(uint timeline, params string[] lines) => Write(WalInventory.HistoryFileName(timeline), string.Join('\n', lines) + "\n");

    private void Write(string name, string content = SegmentContent) => File.WriteAllText(Path.Combine(_folder, name), content);

    private void WriteWithSidecar(string name, string content, bool upperCaseHash = false)
    {
        Write(name, content);
        var hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(content)));
        File.WriteAllText(Path.Combine(_folder, name + ".sha256"), $"{(upperCaseHash ? hash : hash.ToLowerInvariant())}  {name}\n");
    }

    private string NewRepository()
    {
        var folder = Targets.NewFolder();
        _cleanup.Add(folder);
        return folder;
    }
}
