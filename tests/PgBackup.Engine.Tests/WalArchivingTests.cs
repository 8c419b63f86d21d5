using System.Diagnostics;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Wal;
using PgBackup.Testing;
using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Tests;

/// <summary>A cluster with the fixture's defaults (wal_level replica, archive_mode off), for the tests that leave it that way.</summary>
public sealed class PlainArchivingClusterFixture : IDisposable
{
    public PgTestCluster Cluster { get; } = PgTestCluster.Start("walarch-plain");
    public void Dispose() => Cluster.Dispose();
}

public sealed class WalArchivingTests(PlainArchivingClusterFixture plain) : IClassFixture<PlainArchivingClusterFixture>, IDisposable
{
    private readonly string folder = Targets.NewFolder();
    private readonly List<PgTestCluster> clusters = [];

    public void Dispose()
    {
        foreach (var cluster in clusters) cluster.Dispose();
        try { Directory.Delete(folder, recursive: true); }
        catch (IOException) { } // a read-only mount that could not be unmounted
    }

    private PgTestCluster Start(string name, Dictionary<string, string>? settings = null)
    {
        var cluster = PgTestCluster.Start(name, settings);
        clusters.Add(cluster);
        return cluster;
    }

    /// <summary>The tool and the repository both live under paths with a space, a quote and a percent sign, so the command's quoting is exercised for real.</summary>
    private WalArchiveTool Tool() => new(WalTool.CopyTo(Path.Combine(folder, "it's the module", "WalArchive")));

    private static string ReadLog(PgTestCluster cluster)
    {
        using var reader = new StreamReader(new FileStream(cluster.LogFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite));
        return reader.ReadToEnd();
    }

    private string Repository => Path.Combine(folder, "repo 100% 'wal'");

    private EnableArchivingRequest Request(PgTestCluster cluster) => new() { Target = Targets.For(cluster), Repository = Repository, Tool = Tool() };

    [Fact]
    public async Task The_guard_drops_segments_only_while_pushes_fail_above_its_limit_records_each_and_the_gap_is_reported()
    {
        const long limit = 2 * 16 * 1024 * 1024;
        var cluster = Start("walarch-guard");
        var target = Targets.For(cluster);
        var reporter = new RecordingReporter();
        var result = await ArchivingService.EnableAsync(Request(cluster) with { Restart = true, DropBacklogAbove = limit }, reporter, default);
        Assert.EndsWith($" --drop-backlog-above {limit}", result.ArchiveCommand);
        Assert.Contains(reporter.Warnings, l => l.Contains("dropped", StringComparison.Ordinal));
        Assert.Equal(limit, (await ArchivingService.GetArchivingStateAsync(target, default)).DropBacklogAbove);
        var droppedLog = Path.Combine(cluster.DataDirectory, "pgbackup_dropped_wal.log");
        Assert.False(File.Exists(droppedLog), "nothing is dropped while pushes succeed");

        File.SetUnixFileMode(result.Repository, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        try
        {
            for (var i = 0; i < 6; i++) cluster.Psql("select txid_current(); select pg_switch_wal()");
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (!(File.Exists(droppedLog) && int.Parse(cluster.Psql("select count(*) from pg_ls_archive_statusdir() where name like '%.ready'")) <= 2))
            {
                Assert.True(DateTime.UtcNow < deadline, "the guard did not bring the backlog down to its limit within 60 s: " + cluster.Psql("select failed_count, last_failed_wal from pg_stat_archiver"));
                await Task.Delay(200);
            }
        }
        finally { File.SetUnixFileMode(result.Repository, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute); }
        var dropped = File.ReadAllLines(droppedLog).Select(l => l.Split(' ')[0]).ToArray();
        Assert.NotEmpty(dropped);
        Assert.All(dropped, name => Assert.False(File.Exists(Path.Combine(result.Repository, name)), $"{name} was dropped, not archived"));
        cluster.ArchiveCurrentSegment();

        var statuses = await WalArchiveReport.ForServerAsync(target, Repository, verifyChecksums: false, reporter, default);
        var current = Assert.Single(statuses, s => s.InRecovery != null);
        Assert.Equal(dropped, current.DroppedSegments);
        Assert.Contains(reporter.Warnings, l => l.Contains("dropped unarchived", StringComparison.Ordinal));
        Assert.Contains(current.Gaps, g => string.CompareOrdinal(g.From, dropped[0]) <= 0 && string.CompareOrdinal(g.To, dropped[0]) >= 0);
    }

    [Fact]
    public void The_guard_never_drops_a_segment_the_archive_holds_with_other_content()
    {
        var wal = Directory.CreateDirectory(Path.Combine(folder, "data", "pg_wal", "archive_status")).Parent!.FullName;
        var archive = Path.Combine(folder, "archive");
        const string name = "000000010000000000000042";
        var first = WalTool.WriteRandomFile(Path.Combine(folder, "first", name), 1 << 20);
        Assert.Equal(0, WalTool.Run("push", first, archive).ExitCode);
        var other = WalTool.WriteRandomFile(Path.Combine(wal, name), 1 << 20);
        for (var i = 0; i < 5; i++) File.WriteAllBytes(Path.Combine(wal, "archive_status", $"00000001000000000000004{i}.ready"), []);
        var refused = WalTool.Run("push", other, archive, WalArchiveTool.DropOption, "0");
        Assert.NotEqual(0, refused.ExitCode);
        Assert.Contains("different content", refused.StdErr);
        Assert.False(File.Exists(Path.Combine(folder, "data", "pgbackup_dropped_wal.log")));
    }

    [Fact]
    public async Task An_installed_tool_serves_every_cluster_that_runs_it_survives_a_module_update_and_goes_with_the_last_one()
    {
        var root = Path.Combine(folder, "installed 'tools'");
        var module = Path.Combine(folder, "module", "WalArchive");
        var native = new WalArchiveTool(WalTool.CopyTo(module), nativePath: WalTool.CopyNativeTo(Path.Combine(module, WalArchiveTool.NativeRuntimeIdentifier)));
        var first = Start("walinst-a");
        var second = Start("walinst-b");
        EnableArchivingRequest Install(PgTestCluster cluster, WalArchiveTool tool) => Request(cluster) with { Tool = tool, ToolInstallRoot = root, Restart = true };

        var a = await ArchivingService.EnableAsync(Install(first, native), NullReporter.Instance, default);
        var b = await ArchivingService.EnableAsync(Install(second, native), NullReporter.Instance, default);
        Assert.True(a.Verified && b.Verified);
        var installed = Assert.Single(Directory.GetDirectories(root), d => Path.GetFileName(d) != "uses");
        Assert.Matches(@"^0\.1\.0-[0-9a-f]{12}$", Path.GetFileName(installed));
        var nativeInstalled = Path.Combine(installed, WalArchiveTool.NativeRuntimeIdentifier, WalArchiveTool.NativeFileName);
        Assert.StartsWith("'" + nativeInstalled.Replace("'", @"'\''") + "' push ", a.ArchiveCommand);
        static string ToolOf(string command) => command[..command.IndexOf(" push ", StringComparison.Ordinal)];
        Assert.Equal(ToolOf(a.ArchiveCommand), ToolOf(b.ArchiveCommand));

        // A module update (another build) moves one cluster to a new folder; the old one stays while the other runs it.
        var portable = new WalArchiveTool(WalTool.CopyTo(Path.Combine(folder, "module v2", "WalArchive")));
        var moved = await ArchivingService.EnableAsync(Install(first, portable), NullReporter.Instance, default);
        Assert.True(moved.Verified);
        Assert.Equal(2, Directory.GetDirectories(root).Count(d => Path.GetFileName(d) != "uses"));
        Assert.True(Directory.Exists(installed));
        File.Delete(native.NativePath!); // the module's own copy can go: the servers run the installed ones
        first.ArchiveCurrentSegment();
        second.ArchiveCurrentSegment();

        await ArchivingService.DisableAsync(new DisableArchivingRequest { Target = Targets.For(second), ToolInstallRoot = root, Restart = true }, NullReporter.Instance, default);
        Assert.False(Directory.Exists(installed), "no cluster runs the first build any more");
        var newer = Assert.Single(Directory.GetDirectories(root), d => Path.GetFileName(d) != "uses");
        await ArchivingService.DisableAsync(new DisableArchivingRequest { Target = Targets.For(first), ToolInstallRoot = root, Restart = true }, NullReporter.Instance, default);
        Assert.False(Directory.Exists(newer));
        Assert.Empty(Directory.GetFiles(Path.Combine(root, "uses")));
    }

    [Fact]
    public async Task A_minimal_cluster_is_refused_then_enabled_with_a_restart_and_a_segment_arrives()
    {
        var cluster = Start("walarch-minimal", new() { ["wal_level"] = "minimal", ["max_wal_senders"] = "0" });
        var target = Targets.For(cluster);
        var refused = await Assert.ThrowsAsync<PgBackupException>(() => ArchivingService.EnsureArchivingAsync(target, default));
        Assert.Equal("PgBackup.WalLevelTooLow", refused.ErrorId);
        Assert.Equal(ErrorKind.InvalidOperation, refused.Kind);

        var reporter = new RecordingReporter();
        var result = await ArchivingService.EnableAsync(Request(cluster) with { Restart = true, MaxRpo = TimeSpan.FromMinutes(5) }, reporter, default);

        Assert.True(result.Restarted);
        Assert.Empty(result.PendingRestart);
        Assert.Equal("replica", result.WalLevel);
        Assert.Equal("on", result.ArchiveMode);
        Assert.Equal(TimeSpan.FromMinutes(5), result.ArchiveTimeout);
        var systemIdentifier = cluster.Psql("select system_identifier from pg_control_system()");
        Assert.Equal(systemIdentifier, result.SystemIdentifier);
        Assert.Equal(Path.Combine(Repository, "wal", systemIdentifier), result.Repository);
        Assert.True(result.Verified);
        Assert.True(WalSegmentName.TryParse(result.VerifiedSegment, out _));
        Assert.NotNull(result.VerifyDuration);
        var archived = Path.Combine(result.Repository, result.VerifiedSegment!);
        Assert.Equal($"{WalTool.Sha256(archived)}  {result.VerifiedSegment}\n", File.ReadAllText(archived + ".sha256"));
        Assert.Equal(result.ArchiveCommand, cluster.Psql("show archive_command"));
        Assert.Contains(reporter.Lines, l => l.Contains("Restarting", StringComparison.Ordinal));
        // The restarted server goes on logging into the file it logged into before (pg_ctl restart -l <its stderr>).
        var log = ReadLog(cluster);
        Assert.Equal(2, log.Split('\n').Count(l => l.Contains("database system is ready to accept connections", StringComparison.Ordinal)));
        Assert.DoesNotContain("archive command failed", log);

        var state = await ArchivingService.EnsureArchivingAsync(target, default);
        Assert.True(state.IsPgBackupCommand);
        Assert.Equal(result.Repository, state.ArchiveFolder);
        Assert.Equal(systemIdentifier, state.SystemIdentifier);
    }

    [Fact]
    public async Task Every_segment_switched_under_load_arrives_with_a_valid_sidecar_and_disable_resets_the_command()
    {
        // archive_mode is already on (with no command), so enabling needs no restart.
        var cluster = Start("walarch-load", new() { ["archive_mode"] = "on" });
        var result = await ArchivingService.EnableAsync(Request(cluster), NullReporter.Instance, default);
        Assert.Empty(result.PendingRestart);
        Assert.False(result.Restarted);
        Assert.True(result.Verified);

        cluster.Psql("create table load (id bigint generated always as identity, payload text)");
        var switched = new List<string> { result.VerifiedSegment! };
        for (var round = 0; round < 6; round++)
        {
            cluster.Psql("insert into load (payload) select repeat(md5(g::text), 8) from generate_series(1, 3000) g");
            switched.Add(cluster.Psql("select pg_walfile_name(pg_switch_wal())"));
        }
        Assert.Equal(switched.Count, switched.Distinct().Count());

        var clock = Stopwatch.StartNew();
        while (!switched.All(s => File.Exists(Path.Combine(result.Repository, s))) && clock.Elapsed < TimeSpan.FromSeconds(60))
            await Task.Delay(200);
        foreach (var segment in switched)
        {
            var path = Path.Combine(result.Repository, segment);
            Assert.True(File.Exists(path), $"{segment} did not arrive; pg_stat_archiver: {cluster.Psql("select * from pg_stat_archiver")}");
            Assert.Equal(WalSegmentName.DefaultSegmentSize, new FileInfo(path).Length);
            Assert.Equal($"{WalTool.Sha256(path)}  {segment}\n", File.ReadAllText(path + ".sha256"));
        }
        Assert.Empty(Directory.GetFiles(result.Repository, "*.tmp.*"));
        Assert.Equal("0", cluster.Psql("select failed_count from pg_stat_archiver"));
        Assert.DoesNotContain("pgbackup-wal:", ReadLog(cluster));

        var disabled = await ArchivingService.DisableAsync(new DisableArchivingRequest { Target = Targets.For(cluster) }, NullReporter.Instance, default);
        Assert.Equal("", disabled.ArchiveCommand);
        Assert.Equal("", cluster.Psql("show archive_command"));
        Assert.Equal(result.Repository, disabled.Repository);
        // postgresql.conf itself says archive_mode = on, so it stays on, with no command: archiving is off.
        var error = await Assert.ThrowsAsync<PgBackupException>(() => ArchivingService.EnsureArchivingAsync(Targets.For(cluster), default));
        Assert.Equal("PgBackup.ArchivingNotEnabled", error.ErrorId);
        Assert.Contains("empty archive_command", error.Message);
    }

    [Fact]
    public async Task Without_restart_the_pending_settings_are_reported_and_disable_undoes_them()
    {
        var target = Targets.For(plain.Cluster);
        var notEnabled = await Assert.ThrowsAsync<PgBackupException>(() => ArchivingService.EnsureArchivingAsync(target, default));
        Assert.Equal("PgBackup.ArchivingNotEnabled", notEnabled.ErrorId);
        Assert.Equal(ErrorKind.InvalidOperation, notEnabled.Kind);

        var reporter = new RecordingReporter();
        var result = await ArchivingService.EnableAsync(Request(plain.Cluster), reporter, default);
        try
        {
            Assert.Equal(["archive_mode"], result.PendingRestart);
            Assert.False(result.Restarted);
            Assert.False(result.Verified);
            Assert.Equal("off", result.ArchiveMode);
            Assert.Contains(reporter.Warnings, w => w.Contains("archive_mode", StringComparison.Ordinal) && w.Contains("restart", StringComparison.Ordinal));
            // While archive_mode is off, PostgreSQL shows archive_command as "(disabled)"; the file holds what was set.
            Assert.Equal("(disabled)", plain.Cluster.Psql("show archive_command"));
            Assert.Equal(result.ArchiveCommand, plain.Cluster.Psql("select setting from pg_file_settings where name = 'archive_command'"));
            Assert.True(WalArchiveTool.TryParseArchiveCommand(result.ArchiveCommand, out ArchiveCommandParts? configured));
            Assert.Equal(result.Repository, configured.Location);
            var pending = await Assert.ThrowsAsync<PgBackupException>(() => ArchivingService.EnsureArchivingAsync(target, default));
            Assert.Equal("PgBackup.ArchivingNotEnabled", pending.ErrorId);
            Assert.Contains("restart", pending.Message);
        }
        finally
        {
            var disabled = await ArchivingService.DisableAsync(new DisableArchivingRequest { Target = target }, NullReporter.Instance, default);
            Assert.Equal("", disabled.ArchiveCommand);
            Assert.Empty(disabled.PendingRestart);
        }
        Assert.Equal("0", plain.Cluster.Psql("select count(*) from pg_file_settings where name like 'archive%'"));
    }

    [Fact]
    public async Task Disable_leaves_another_tools_archive_command_alone_unless_forced()
    {
        var target = Targets.For(plain.Cluster);
        plain.Cluster.Psql("alter system set archive_command = 'test ! -f /mnt/archive/%f && cp %p /mnt/archive/%f'");
        plain.Cluster.Psql("select pg_reload_conf()");
        try
        {
            var error = await Assert.ThrowsAsync<PgBackupException>(() =>
                ArchivingService.DisableAsync(new DisableArchivingRequest { Target = target }, NullReporter.Instance, default));
            Assert.Equal("PgBackup.ArchiveCommandNotPgBackup", error.ErrorId);
            Assert.Equal("1", plain.Cluster.Psql("select count(*) from pg_file_settings where name = 'archive_command'"));

            var state = await ArchivingService.GetArchivingStateAsync(target, default);
            Assert.False(state.IsPgBackupCommand);
            Assert.Null(state.ArchiveFolder);
        }
        finally
        {
            await ArchivingService.DisableAsync(new DisableArchivingRequest { Target = target, Force = true }, NullReporter.Instance, default);
        }
        Assert.Equal("0", plain.Cluster.Psql("select count(*) from pg_file_settings where name like 'archive%'"));
    }

    [Fact]
    public async Task A_read_only_repository_is_refused_before_anything_changes()
    {
        var mountPoint = Path.Combine(folder, "read-only");
        Directory.CreateDirectory(mountPoint);
        var mount = ProcessRunner.Run("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", mountPoint]);
        Assert.True(mount.ExitCode == 0, $"This test mounts a read-only tmpfs and needs root (CAP_SYS_ADMIN); mount failed: {mount.StdErr.Trim()}");
        try
        {
            var error = await Assert.ThrowsAsync<PgBackupException>(() =>
                ArchivingService.EnableAsync(Request(plain.Cluster) with { Repository = mountPoint, Restart = true }, NullReporter.Instance, default));
            Assert.Equal("PgBackup.RepositoryNotWritable", error.ErrorId);
            Assert.Equal(ErrorKind.PermissionDenied, error.Kind);
            Assert.StartsWith(mountPoint, (string)error.Target!);
            Assert.Equal("0", plain.Cluster.Psql("select count(*) from pg_file_settings where name like 'archive%'"));
            Assert.Empty((await ArchivingService.GetArchivingStateAsync(Targets.For(plain.Cluster), default)).PendingRestart);
        }
        finally
        {
            ProcessRunner.Run("umount", [mountPoint]);
        }
    }

    [Fact]
    public async Task A_repository_the_server_user_cannot_reach_is_refused_before_anything_changes()
    {
        // root can write here, the postgres OS user that runs archive_command cannot even enter the parent folder.
        var closed = Path.Combine(folder, "closed");
        Directory.CreateDirectory(closed);
        File.SetUnixFileMode(closed, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

        var error = await Assert.ThrowsAsync<PgBackupException>(() =>
            ArchivingService.EnableAsync(Request(plain.Cluster) with { Repository = Path.Combine(closed, "repo") }, NullReporter.Instance, default));

        Assert.Equal("PgBackup.RepositoryNotWritable", error.ErrorId);
        Assert.Contains("postgres", error.Message);
        Assert.Equal("0", plain.Cluster.Psql("select count(*) from pg_file_settings where name like 'archive%'"));
    }

    [Fact]
    public async Task A_tool_the_server_user_cannot_run_is_refused_before_anything_changes()
    {
        var hidden = Path.Combine(folder, "hidden");
        var tool = new WalArchiveTool(WalTool.CopyTo(Path.Combine(hidden, "WalArchive")));
        File.SetUnixFileMode(hidden, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

        var error = await Assert.ThrowsAsync<PgBackupException>(() =>
            ArchivingService.EnableAsync(Request(plain.Cluster) with { Tool = tool }, NullReporter.Instance, default));

        Assert.Equal("PgBackup.WalToolNotRunnable", error.ErrorId);
        Assert.Contains("'postgres'", error.Message);
        Assert.Equal("0", plain.Cluster.Psql("select count(*) from pg_file_settings where name like 'archive%'"));
    }

    [Fact]
    public async Task A_segment_that_never_arrives_is_reported_with_the_archivers_failure()
    {
        var cluster = Start("walarch-fail", new() { ["archive_mode"] = "on" });
        // Another cluster with the same system identifier (a copy) has archived different content under the name of
        // the segment the check is going to switch: pgbackup-wal refuses to overwrite it.
        var systemIdentifier = cluster.Psql("select system_identifier from pg_control_system()");
        var current = cluster.Psql("select pg_walfile_name(pg_current_wal_lsn())");
        WalTool.WriteRandomFile(Path.Combine(RepositoryLayout.ArchiveFolder(Repository, systemIdentifier), current), 1024);

        var error = await Assert.ThrowsAsync<PgBackupException>(() => ArchivingService.EnableAsync(
            Request(cluster) with { VerifyTimeout = TimeSpan.FromSeconds(3) }, NullReporter.Instance, default));

        Assert.Equal("PgBackup.ArchiveNotArriving", error.ErrorId);
        Assert.Equal(ErrorKind.InvalidOperation, error.Kind);
        Assert.Equal(current, error.Target);
        Assert.Contains($"last failed WAL {current}", error.Message);
        Assert.Contains("server log", error.RecommendedAction);
        Assert.Contains("refusing to overwrite", ReadLog(cluster));

        // Shutting down with an archive_command that keeps failing costs retries; stop archiving first.
        cluster.Psql("alter system reset archive_command");
        cluster.Psql("select pg_reload_conf()");
    }

    [Fact]
    public async Task A_role_that_is_not_superuser_is_refused()
    {
        plain.Cluster.Psql("do $$ begin if not exists (select from pg_roles where rolname = 'wal_nobody') then create role wal_nobody login password 'nobody-secret'; end if; end $$");
        var target = Targets.For(plain.Cluster) with { User = "wal_nobody", Password = "nobody-secret" };

        var error = await Assert.ThrowsAsync<PgBackupException>(() =>
            ArchivingService.EnableAsync(Request(plain.Cluster) with { Target = target }, NullReporter.Instance, default));

        Assert.Equal("PgBackup.PermissionDenied", error.ErrorId);
        Assert.Equal(ErrorKind.PermissionDenied, error.Kind);
        Assert.Contains("superuser", error.Message);
        Assert.False(Directory.Exists(Repository));
    }
}
