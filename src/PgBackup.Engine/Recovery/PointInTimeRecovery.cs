using System.Diagnostics;
using System.Globalization;
using Npgsql;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Tools;
using PgBackup.Engine.Wal;
using PgBackup.Engine.Instance;

namespace PgBackup.Engine.Recovery;

public sealed record PointInTimeRequest
{
    public required RecoveryPlan Plan { get; init; }
    public required string DataDirectory { get; init; }
    public required int Port { get; init; }
    /// <summary>How PgBackup connects to the recovered instance to follow the replay: its port and a role of the source cluster.</summary>
    public required ConnectionTarget Connection { get; init; }
    public required WalArchiveTool WalTool { get; init; }
    public string ListenAddresses { get; init; } = "localhost";
    /// <summary>Empty a non-empty data directory first.</summary>
    public bool Force { get; init; }
    /// <summary>Let the recovered instance archive into the original archive (it continues the cluster on a new timeline).</summary>
    public bool ContinueArchiving { get; init; }
    public string? ToolPath { get; init; }
    /// <summary>For an encrypted Tar backup left encrypted (<see cref="RecoverySource.OpenArchive"/>): reads a tar file's plaintext.</summary>
    public Func<string, Stream, Stream>? OpenArchive { get; init; }
}

/// <summary>
/// Point-in-time recovery of a base backup into a local data directory: lays out the files (checked against the backup's
/// manifest as they are copied), writes restore_command (the module's WAL fetcher) and the recovery target the way the
/// server's version expects, starts the instance as the data directory's owner, follows the replay, and checks what was
/// reached. A recovery that fails removes what it wrote; one whose process was killed leaves its <see cref="RecoveryMarker"/>,
/// so what it left is never taken for a finished recovery, and running it again replaces it.
/// </summary>
public static class PointInTimeRecovery
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan ConnectPatience = TimeSpan.FromMinutes(1);
    private const string MonitorFailed = "PgBackup.RecoveryMonitorFailed";

    /// <summary>
    /// Checks the data directory and the port before anything is written; an error names what is in the way. What an
    /// interrupted recovery left is not in the way: it is replaced, its server (if it still runs) stopped first.
    /// </summary>
    public static void CheckDestination(string dataDirectory, int port, bool force)
    {
        var directory = Path.GetFullPath(dataDirectory);
        if (File.Exists(directory))
            throw new PgBackupException("DataDirectoryIsFile", ErrorKind.InvalidArgument, $"'{directory}' is a file, not a folder.", directory, "Give -DataDirectory a folder path.");
        int? leftoverPort = null;
        if (Directory.Exists(directory))
        {
            if (RecoveryMarker.InProgress(directory)) RecoveryMarker.RefuseUnfinished(directory, "restore into");
            var running = InstanceControl.ReadPostmaster(directory) is { } pm && InstanceControl.IsAlive(pm.Pid) ? pm : null;
            if (RecoveryMarker.Abandoned(directory)) leftoverPort = running?.Port;
            else
            {
                if (running != null)
                    throw new PgBackupException("InstanceRunning", ErrorKind.ResourceExists,
                        $"A PostgreSQL server (process {running.Pid}, port {running.Port}) is running from '{directory}'; PgBackup never restores over a running server, even with -Force.", directory,
                        "Choose another -DataDirectory, or stop that server first (Stop-PgInstance) if it is really to be replaced.");
                if (!force && Directory.EnumerateFileSystemEntries(directory).Any())
                    throw new PgBackupException("DataDirectoryNotEmpty", ErrorKind.ResourceExists, $"The data directory '{directory}' is not empty.", directory,
                        "Choose an empty or new folder, or pass -Force to delete what it holds and restore there.");
            }
        }
        if (port != leftoverPort) InstanceControl.EnsurePortFree(port);
    }

    public static async Task<RecoveryResult> RunAsync(PointInTimeRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var plan = request.Plan;
        var backup = plan.Backup;
        var directory = Path.GetFullPath(request.DataDirectory);
        CheckDestination(directory, request.Port, request.Force);
        request.WalTool.EnsureExists();
        var pgCtl = InstanceControl.FindPgCtl(backup.ServerVersion, request.ToolPath, reporter, backup.Path);
        var runAs = !OperatingSystem.IsWindows() && Environment.IsPrivilegedProcess ? LocalInstance.DefaultServiceUser : null;
        var activity = $"Recovering {backup.Id} to {plan.Target}";
        var result = new RecoveryResult
        {
            DataDirectory = directory,
            Server = InstanceControl.ConnectHost(request.ListenAddresses, ""),
            Port = request.Port,
            LogFile = Path.Combine(directory, InstanceControl.LogFileName),
            BackupId = backup.Id,
            BackupPath = backup.Path,
            SourceServer = string.IsNullOrEmpty(backup.Server) ? "" : $"{backup.Server}:{backup.Port}",
            SystemIdentifier = backup.SystemIdentifier,
            Target = plan.Target,
            Archiving = request.ContinueArchiving,
            StartTime = DateTimeOffset.UtcNow,
        };
        result.ConnectionString = $"host={result.Server} port={request.Port} dbname=postgres";
        var clock = Stopwatch.StartNew();
        var existed = Directory.Exists(directory);
        var leftover = existed && RecoveryMarker.Abandoned(directory) ? RecoveryMarker.Owner(directory) : null;
        Directory.CreateDirectory(directory);
        using var marker = RecoveryMarker.Take(directory, $"Restore-PgPointInTime of base backup {backup.Id} to {plan.Target}");
        var started = false;
        ArchivedWalGate? gate = null;
        try
        {
            if (leftover != null)
            {
                await StopQuietlyAsync(pgCtl, runAs, directory, reporter).ConfigureAwait(false);
                reporter.Warning($"Replacing what an interrupted recovery left in '{directory}' ({leftover}).");
            }
            reporter.Milestone($"Restoring base backup {backup.Id} into '{directory}' for recovery to {plan.Target} (timeline {plan.Timeline}).");
            await PrepareDirectoryAsync(directory, runAs, ct).ConfigureAwait(false);
            var total = Math.Max(1, BackupFiles.SourceBytes(backup));
            long copied = 0;
            var lastPercent = -1;
            var restore = Task.Run(() => BackupFiles.Restore(backup, directory, n =>
            {
                var percent = (int)(Interlocked.Add(ref copied, n) * 30 / total);
                if (Interlocked.Exchange(ref lastPercent, percent) != percent) reporter.Progress(activity, $"Restoring files ({copied >> 20} of {total >> 20} MB)", percent);
            }, ct, openArchive: request.OpenArchive), ct);
            await restore.ConfigureAwait(false);
            // The archived WAL is checked against its checksums from here on, on the core the single-threaded replay
            // leaves free (checking during the copy slowed both down).
            gate = ArchivedWalGate.Start(plan, request.WalTool, reporter, ct);
            if (gate.CheckBeforeStart)
            {
                await gate.Completion.ConfigureAwait(false);
                if (gate.Problems.Count > 0) throw gate.Damaged(plan.ArchiveFolder!);
            }
            WriteConfiguration(request, directory, gate.RestoreCommand, reporter);
            if (runAs != null) await ChownAsync(directory, runAs, ct).ConfigureAwait(false);
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            result.RestoreDuration = clock.Elapsed;

            reporter.Progress(activity, "Starting the instance", 30);
            var replayClock = Stopwatch.StartNew();
            started = true;
            var start = await ToolRunner.RunAsUserAsync(pgCtl, runAs, ["start", "-D", directory, "-l", result.LogFile, "-w", "-t", "600"],
                InstanceControl.NoPgData, reporter.Verbose, ct, reporter).ConfigureAwait(false);
            if (!start.Succeeded) reporter.Verbose($"pg_ctl start returned {start.ExitCode}: {start.ErrorSummary(3)}");
            try { await FollowReplayAsync(request, result, activity, reporter, ct).ConfigureAwait(false); }
            catch (PgBackupException) when (gate.Problems.Count > 0 && RecoveryLog.Read(result.LogFile).Contains("DAMAGED ARCHIVE", StringComparison.Ordinal))
            {
                throw gate.Damaged(plan.ArchiveFolder!);
            }
            if (gate.Problems.Count > 0)
                reporter.Warning($"Archived WAL after the recovery target is damaged; a later recovery past it would fail: {string.Join(" ", gate.Problems.Take(3))}");
            result.ReplayDuration = replayClock.Elapsed;
            result.TotalDuration = clock.Elapsed;
            result.EndTime = DateTimeOffset.UtcNow;
            result.WalReplayedBytes = result.ReachedLsn is { } reached ? Math.Max(0, reached - backup.StartLsn) : 0;
            reporter.ProgressCompleted(activity);
            reporter.Milestone($"Recovered to {result.ReachedLsn} (last commit {result.ReachedTime:yyyy-MM-dd HH:mm:ss.ffffff zzz}) on timeline {result.Timeline} in {result.TotalDuration.TotalSeconds:0.0}s; {result.State.ToLowerInvariant()} on port {result.Port}.");
            return result;
        }
        catch (PgBackupException ex) when (ex.ErrorId == MonitorFailed)
        {
            // The recovery itself may be fine and may have taken hours: leave it for the user to look at.
            reporter.ProgressCompleted(activity);
            throw;
        }
        catch (Exception ex) when (ex is PgBackupException or OperationCanceledException or IOException or UnauthorizedAccessException)
        {
            reporter.ProgressCompleted(activity);
            var log = InstanceControl.LogTail(result.LogFile, 40);
            if (started) await StopQuietlyAsync(pgCtl, runAs, directory, reporter).ConfigureAwait(false);
            RemoveWhatWasWritten(directory, existed, reporter);
            if (ex is PgBackupException pg) throw pg;
            if (ex is OperationCanceledException) throw;
            throw new PgBackupException("RestoreFailed", ErrorKind.WriteFailed, $"Restoring into '{directory}' failed: {ex.Message}{Environment.NewLine}{log}", directory,
                "Check that the folder is writable and its disk has room for the whole backup; nothing was left behind.", ex);
        }
        finally { gate?.Dispose(); }
    }

    /// <summary>Waits until the target is reached (promoted, paused, or shut down as asked) and reads what was reached.</summary>
    private static async Task FollowReplayAsync(PointInTimeRequest request, RecoveryResult result, string activity, IOperationReporter reporter, CancellationToken ct)
    {
        var plan = request.Plan;
        var action = plan.Target.Kind == RecoveryTargetKind.Latest ? RecoveryTargetAction.Promote : plan.Target.Action;
        NpgsqlConnection? connection = null;
        Stopwatch? unreachableSince = null;
        try
        {
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                var postmaster = InstanceControl.ReadPostmaster(result.DataDirectory);
                if (postmaster == null || !InstanceControl.IsAlive(postmaster.Pid))
                {
                    if (action == RecoveryTargetAction.Shutdown && RecoveryLog.Read(result.LogFile).Contains("shutdown at recovery target", StringComparison.Ordinal))
                    {
                        RecoveryLog.ReadReached(result);
                        if (result.ReachedLsn == null)
                        {
                            var control = await InstanceControl.ReadControlDataAsync(result.DataDirectory, plan.Backup.ServerVersion, request.ToolPath, reporter, ct).ConfigureAwait(false);
                            if (control.TryGetValue("Minimum recovery ending location", out var text) && Lsn.TryParse(text, out var minimum) && minimum > Lsn.Zero) result.ReachedLsn = minimum;
                        }
                        result.Timeline = result.ReachedLsn is { } l ? plan.TimelineAt(l) : plan.Timeline;
                        result.State = InstanceState.Stopped.ToString();
                        return;
                    }
                    throw RecoveryLog.StoppedShort(result);
                }
                if (action == RecoveryTargetAction.Shutdown) { await Task.Delay(PollInterval, ct).ConfigureAwait(false); continue; }

                connection ??= await TryConnectAsync(request.Connection, postmaster, result, ct).ConfigureAwait(false);
                if (connection == null)
                {
                    if (postmaster.Status is "ready" or "standby") unreachableSince ??= Stopwatch.StartNew();
                    if (unreachableSince?.Elapsed > ConnectPatience)
                        throw MonitorError(request.Connection, result, $"it accepts connections, but not from PgBackup at {request.Connection.Display} for a minute");
                    await Task.Delay(PollInterval, ct).ConfigureAwait(false);
                    continue;
                }
                unreachableSince = null;
                (bool InRecovery, Lsn? Replayed, DateTimeOffset? LastCommit, bool Paused) state;
                try { state = await ReadStateAsync(connection, ct).ConfigureAwait(false); }
                catch (NpgsqlException) when (!ct.IsCancellationRequested)
                {
                    await connection.DisposeAsync().ConfigureAwait(false);
                    connection = null;
                    continue;
                }
                if (state.Replayed is { } replayed && plan.BytesToReplay > 0)
                {
                    var percent = 30 + (int)Math.Clamp((replayed - plan.Backup.StartLsn) * 69 / plan.BytesToReplay, 0, 69);
                    reporter.Progress(activity, $"Replaying WAL ({Math.Max(0, replayed - plan.Backup.StartLsn) >> 20} of {plan.BytesToReplay >> 20} MB, at {replayed})", percent);
                }
                var done = action == RecoveryTargetAction.Promote ? !state.InRecovery : state.Paused;
                if (!done) { await Task.Delay(PollInterval, ct).ConfigureAwait(false); continue; }

                result.ReachedLsn = state.Replayed;
                result.ReachedTime = state.LastCommit;
                result.Promoted = !state.InRecovery;
                result.Timeline = result.Promoted
                    ? uint.Parse((await ServerSession.ScalarAsync<string>(connection, "select pg_walfile_name(pg_current_wal_lsn())", ct).ConfigureAwait(false))![..8], NumberStyles.HexNumber, CultureInfo.InvariantCulture)
                    : state.Replayed is { } r ? plan.TimelineAt(r) : plan.Timeline;
                result.State = InstanceState.Running.ToString();
                CheckReached(plan.Target, result);
                return;
            }
        }
        finally
        {
            if (connection != null) await connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    private static async Task<NpgsqlConnection?> TryConnectAsync(ConnectionTarget target, PostmasterInfo postmaster, RecoveryResult result, CancellationToken ct)
    {
        // Until it is consistent the server refuses connections (57P03); that is the normal start of a recovery.
        if (postmaster.Status is not ("ready" or "standby")) return null;
        try { return await ServerSession.OpenAsync(target with { ConnectTimeoutSeconds = 5 }, ct).ConfigureAwait(false); }
        catch (PgBackupException ex) when (ex.Kind is ErrorKind.AuthenticationFailed or ErrorKind.PermissionDenied)
        {
            throw MonitorError(target, result, $"PgBackup cannot log in as '{target.User}': {ex.Message}", ex);
        }
        catch (PgBackupException) { return null; }
    }

    private static PgBackupException MonitorError(ConnectionTarget target, RecoveryResult result, string why, Exception? inner = null) =>
        new(MonitorFailed, ErrorKind.AuthenticationFailed,
            $"The recovered instance in '{result.DataDirectory}' (port {result.Port}) is running, but its replay cannot be followed: {why}. It was left running, unverified.", target.Display,
            "The recovered instance has the source cluster's roles and pg_hba.conf: pass -Credential for a role that may connect from localhost (or add it to .pgpass). " +
            "Stop-PgInstance or Remove-PgInstance with its -DataDirectory deals with the instance left behind.", inner);

    private static async Task<(bool, Lsn?, DateTimeOffset?, bool)> ReadStateAsync(NpgsqlConnection connection, CancellationToken ct)
    {
        await using var command = new NpgsqlCommand(connection.PostgreSqlVersion.Major >= 14
            ? "select pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), pg_is_in_recovery() and pg_get_wal_replay_pause_state() = 'paused'"
            : "select pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), pg_is_in_recovery() and pg_is_wal_replay_paused()", connection);
        await using var reader = await command.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await reader.ReadAsync(ct).ConfigureAwait(false);
        return (reader.GetBoolean(0), reader.IsDBNull(1) ? null : Lsn.Parse(reader.GetString(1)),
            reader.IsDBNull(2) ? null : new DateTimeOffset(reader.GetDateTime(2).ToUniversalTime(), TimeSpan.Zero), reader.GetBoolean(3));
    }

    /// <summary>PostgreSQL stops exactly where asked or fails; this guards against a target that was silently not applied.</summary>
    private static void CheckReached(RecoveryTarget target, RecoveryResult result)
    {
        var overshot = target.Kind switch
        {
            RecoveryTargetKind.Time => result.ReachedTime is { } t && (target.Inclusive ? t > target.Time!.Value : t >= target.Time!.Value),
            _ => false,
        };
        var short_ = target.Kind == RecoveryTargetKind.Lsn && target.Inclusive && result.ReachedLsn is { } l && l < target.Lsn!.Value;
        if (overshot || short_)
            throw new PgBackupException("TargetMismatch", ErrorKind.InvalidData,
                $"Recovery stopped at LSN {result.ReachedLsn} (last commit {result.ReachedTime:O}), which does not match the target {target}.", result.DataDirectory,
                "Read the server log of the recovered instance; report this, since PostgreSQL should stop exactly at the target.");
    }

    private static async Task PrepareDirectoryAsync(string directory, string? runAs, CancellationToken ct)
    {
        if (Directory.Exists(directory)) Empty(directory);
        Directory.CreateDirectory(directory);
        if (runAs == null) return;
        await ChownAsync(directory, runAs, ct).ConfigureAwait(false);
        var probe = await ToolRunner.RunAsUserAsync(new PgTool("test", "/usr/bin/test", "", 0), runAs, ["-w", directory], new Dictionary<string, string?>(), null, ct).ConfigureAwait(false);
        if (!probe.Succeeded)
            throw new PgBackupException("DataDirectoryNotAccessible", ErrorKind.PermissionDenied,
                $"The server runs as '{runAs}', which cannot reach '{directory}' (a parent folder does not let it through).", directory,
                $"Choose a folder that '{runAs}' can reach (for example under /var/lib/postgresql or /srv), or open the parent folders to it (chmod o+x).");
    }

    private static void WriteConfiguration(PointInTimeRequest request, string directory, string restoreCommand, IOperationReporter reporter)
    {
        var plan = request.Plan;
        var extra = new List<string>();
        // Debian and Ubuntu keep configuration in /etc/postgresql, so their backups hold none; the server needs these files.
        if (!File.Exists(Path.Combine(directory, "postgresql.conf")))
            File.WriteAllText(Path.Combine(directory, "postgresql.conf"), "# Written by PgBackup: the base backup held no postgresql.conf (its server keeps configuration elsewhere).\n");
        if (!File.Exists(Path.Combine(directory, "pg_hba.conf")))
        {
            File.WriteAllText(Path.Combine(directory, "pg_hba.conf"), "# Written by PgBackup: the base backup held no pg_hba.conf.\nlocal all all peer\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n");
            extra.Add("hba_file = " + RecoveryConfig.Quote(Path.Combine(directory, "pg_hba.conf")));
            reporter.Warning($"The backup held no pg_hba.conf; '{directory}' got one that allows local peer logins and password logins from this machine only.");
        }
        if (!File.Exists(Path.Combine(directory, "pg_ident.conf")))
        {
            File.WriteAllText(Path.Combine(directory, "pg_ident.conf"), "");
            extra.Add("ident_file = " + RecoveryConfig.Quote(Path.Combine(directory, "pg_ident.conf")));
        }
        foreach (var leftover in new[] { "standby.signal", "recovery.signal", "recovery.conf", "postmaster.pid", "postmaster.opts" })
            File.Delete(Path.Combine(directory, leftover));

        var settings = new RecoverySettings
        {
            RestoreCommand = restoreCommand,
            Target = plan.Target,
            Timeline = plan.Timeline.ToString(CultureInfo.InvariantCulture),
            Port = request.Port,
            ListenAddresses = request.ListenAddresses,
            SocketDirectory = OperatingSystem.IsWindows() ? null : Path.GetTempPath().TrimEnd('/'),
            KeepArchiving = request.ContinueArchiving,
        };
        var header = $"Added by PgBackup Restore-PgPointInTime on {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm:ss} UTC: recovery of base backup {plan.Backup.Id} to {plan.Target}.";
        foreach (var (file, content, append) in RecoveryConfig.Render(settings, InstanceControl.MajorOf(plan.Backup.ServerVersion) ?? 15, header))
        {
            var path = Path.Combine(directory, file);
            var text = file == "postgresql.auto.conf" && extra.Count > 0 ? content + string.Join("\n", extra) + "\n" : content;
            if (append) File.AppendAllText(path, text);
            else File.WriteAllText(path, text);
        }
    }

    private static async Task ChownAsync(string directory, string owner, CancellationToken ct)
    {
        var result = await DataDirectoryOwner.GiveToAsync(directory, owner + ":", recursive: true, ct).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new PgBackupException("DataDirectoryNotAccessible", ErrorKind.PermissionDenied, $"'{directory}' could not be given to the OS user '{owner}': {result.ErrorSummary()}", directory,
                $"Check that the user '{owner}' exists (it comes with the PostgreSQL server package) and that the folder's file system supports ownership.");
    }

    private static async Task StopQuietlyAsync(PgTool pgCtl, string? runAs, string directory, IOperationReporter reporter)
    {
        try
        {
            if (InstanceControl.ReadPostmaster(directory) is { } pm && InstanceControl.IsAlive(pm.Pid))
                await ToolRunner.RunAsUserAsync(pgCtl, runAs, ["stop", "-D", directory, "-m", "immediate", "-w", "-t", "60"], InstanceControl.NoPgData, reporter.Verbose, CancellationToken.None, reporter).ConfigureAwait(false);
        }
        catch (PgBackupException ex) { reporter.Warning($"The instance in '{directory}' could not be stopped: {ex.Message}"); }
    }

    /// <summary>
    /// Deletes what the folder holds and keeps the folder (with its owner and permissions, which the user chose), and the
    /// recovery's own marker, which goes when the recovery ends.
    /// </summary>
    private static void Empty(string directory)
    {
        foreach (var entry in new DirectoryInfo(directory).EnumerateFileSystemInfos())
        {
            if (entry.Name.StartsWith(RecoveryMarker.FileName, StringComparison.Ordinal)) continue;
            if (entry is DirectoryInfo d) d.Delete(recursive: true);
            else entry.Delete();
        }
    }

    private static void RemoveWhatWasWritten(string directory, bool existed, IOperationReporter reporter)
    {
        try
        {
            if (!Directory.Exists(directory)) return;
            if (!existed) Directory.Delete(directory, recursive: true);
            else Empty(directory);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            reporter.Warning($"What the failed recovery wrote into '{directory}' could not all be removed: {ex.Message}. Delete it before using the folder again.");
        }
    }
}
