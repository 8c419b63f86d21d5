using System.Globalization;
using System.Net;
using System.Net.Sockets;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Patroni;
using PgBackup.Engine.Tools;
using PgBackup.Engine.Instance;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Wal;

namespace PgBackup.Engine.Replication;

public sealed record NewStandbyRequest
{
    /// <summary>The server to stream from: a primary, or a standby for cascading replication.</summary>
    public required ConnectionTarget Upstream { get; init; }
    public required string DataDirectory { get; init; }
    public required int Port { get; init; }
    /// <summary>listen_addresses of the new standby; 'localhost' when null.</summary>
    public string? ListenAddress { get; init; }
    /// <summary>A physical replication slot on the upstream, created when missing, so the upstream keeps the WAL the standby still needs.</summary>
    public string? Slot { get; init; }
    /// <summary>
    /// A restore_command from the upstream cluster's WAL archive in this repository (folder or blob), for when streaming
    /// falls behind what the upstream still has; needs <see cref="WalTool"/>.
    /// </summary>
    public RepositoryAddress? ArchiveRepository { get; init; }
    /// <summary>The keys of <see cref="ArchiveRepository"/> when it is encrypted: the standby gets the key to decrypt what it fetches.</summary>
    public Repository.Encryption.RepositoryKeys Keys { get; init; } = Repository.Encryption.RepositoryKeys.None;
    public WalArchiveTool? WalTool { get; init; }
    /// <summary>
    /// Install the tool under this root (InstalledToolUses.Root for the cmdlets), when this process may, so that the
    /// restore_command does not run it from the module's folder; null: run <see cref="WalTool"/> where it is.
    /// </summary>
    public string? ToolInstallRoot { get; init; }
    public bool Force { get; init; }
    public TimeSpan StreamingTimeout { get; init; } = TimeSpan.FromSeconds(60);
    public string? ToolPath { get; init; }
}

/// <summary>
/// New-PgStandby: a base backup of the upstream with standby.signal and primary_conninfo (pg_basebackup -R), its own
/// port, started as the data directory's owner, and checked to stream before it is handed back. Whatever it created is
/// removed again when any step fails.
/// </summary>
public static class StandbyBuilder
{
    public static async Task<StandbyStatus> CreateAsync(NewStandbyRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var directory = Path.GetFullPath(request.DataDirectory);
        var activity = $"Creating a standby of {request.Upstream.Display} in {directory}";
        CheckDataDirectory(directory, request.Force);
        CheckPortFree(request.Port, request.ListenAddress);

        ServerInfo info;
        await using (var connection = await ServerSession.OpenAsync(request.Upstream, ct).ConfigureAwait(false))
        {
            if (await PatroniClient.ManagesAsync(connection, null, ct).ConfigureAwait(false))
                throw PatroniClient.Refusal(request.Upstream.Display, "add a standby to its cluster",
                    "Add a member the Patroni way: start Patroni on the new machine with the cluster's scope and the same DCS (it clones itself from a member), and check it with Get-PgReplicationStatus -Patroni.");
            info = await ServerSession.GetInfoAsync(connection, ct).ConfigureAwait(false);
        }
        var locator = new ToolLocator(request.ToolPath);
        var basebackup = locator.Find("pg_basebackup", info.Major, info.Major, reporter);
        var pgCtl = locator.Find("pg_ctl", info.Major, info.Major, reporter);
        if (pgCtl.Major != info.Major)
            throw new PgBackupException("ToolVersionMismatch", ErrorKind.NotInstalled, $"A standby of a PostgreSQL {info.Major} server needs the PostgreSQL {info.Major} server programs; the pg_ctl found is {pgCtl.VersionText}.", pgCtl.Path,
                $"Install the PostgreSQL {info.Major} server package (Debian/Ubuntu: apt-get install postgresql-{info.Major}) or set ToolPath to its bin folder.");
        var owner = Environment.IsPrivilegedProcess && !OperatingSystem.IsWindows() ? InstanceControl.DefaultServiceUser : null;

        // An encrypted archive's key is checked before anything is created.
        using var encryption = request.ArchiveRepository is { } archived
            ? await Repository.Encryption.RepositoryEncryption.OpenForReadingAsync(archived, request.Keys, ct).ConfigureAwait(false) : null;
        var created = !Directory.Exists(directory);
        var started = false;
        string? credentialsFile = null;
        string? keyFile = null;
        string? passFile = null;
        string? pendingUse = null;
        try
        {
            string? restoreCommand = null;
            if (request.ArchiveRepository is { } repository)
            {
                var tool = request.WalTool ?? throw new ArgumentException("A WAL tool is needed for an archive fallback.", nameof(request));
                if (request.ToolInstallRoot is { } root && InstalledToolUses.CanInstall(root))
                {
                    tool = WalToolInstallation.Install(tool, root, reporter);
                    pendingUse = InstalledToolUses.StandbyUse(directory);
                    InstalledToolUses.RecordPendingUse(root, pendingUse, Path.GetDirectoryName(tool.ToolPath)!);
                }
                (restoreCommand, credentialsFile, keyFile) = await RestoreCommandAsync(request, tool, repository, encryption, owner ?? Environment.UserName, reporter, ct).ConfigureAwait(false);
            }
            if (Directory.Exists(directory)) foreach (var entry in Directory.EnumerateFileSystemEntries(directory)) DeleteEntry(entry);
            Directory.CreateDirectory(directory);
            var args = new List<string> { "--pgdata=" + directory, "--write-recovery-conf", "--wal-method=stream", "--checkpoint=fast", "--progress", "--verbose", "--no-password" };
            if (request.Slot != null) { args.Add("--slot=" + request.Slot); if (!await SlotExistsAsync(request.Upstream, request.Slot, ct).ConfigureAwait(false)) args.Add("--create-slot"); }
            reporter.Milestone($"Copying {request.Upstream.Display} into {directory} with pg_basebackup");
            var copy = await ToolRunner.RunAsync(basebackup, args, request.Upstream.ToolEnvironment(), line =>
            {
                if (System.Text.RegularExpressions.Regex.Match(line, @"\((?<pct>\d+)%\)") is { Success: true } m)
                    reporter.Progress(activity, "Copying the data directory", Math.Min(90, int.Parse(m.Groups["pct"].Value, CultureInfo.InvariantCulture) * 9 / 10));
                else reporter.Verbose(line);
            }, ct, reporter: reporter).ConfigureAwait(false);
            if (!copy.Succeeded)
                throw new PgBackupException("StandbyCopyFailed", ErrorKind.ToolFailed, $"pg_basebackup from {request.Upstream.Display} failed (exit code {copy.ExitCode}): {copy.ErrorSummary()}", request.Upstream.Display,
                    "The upstream must allow a replication connection for this role (REPLICATION attribute and a 'replication' line in pg_hba.conf) and have a free WAL sender.");

            // pg_basebackup -R wrote the password it connected with into primary_conninfo; the standby reads it from a pass file instead.
            passFile = await StandbyPassFile.MovePasswordOutAsync(directory, owner ?? Environment.UserName, ct).ConfigureAwait(false);
            if (passFile != null) reporter.Verbose($"The standby reads its replication password from {passFile}, which only '{owner ?? Environment.UserName}' can read; Remove-PgInstance removes it.");
            File.AppendAllText(Path.Combine(directory, "postgresql.auto.conf"), $"""

                # Added by New-PgStandby
                port = {request.Port}
                listen_addresses = '{(request.ListenAddress ?? "localhost").Replace("'", "''")}'
                hot_standby = on
                {(restoreCommand != null ? $"restore_command = '{restoreCommand.Replace("'", "''")}'" : "")}
                """);
            foreach (var stale in new[] { "postmaster.pid", "postmaster.opts" }) File.Delete(Path.Combine(directory, stale));
            if (owner != null) await GiveToAsync(directory, owner, ct).ConfigureAwait(false);
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

            reporter.Progress(activity, "Starting the standby", 92);
            var log = Path.Combine(directory, "pgbackup-standby.log");
            var start = await PgCtlAsync(pgCtl, owner, ["start", "-D", directory, "-l", log, "-w", "-t", "120"], reporter, ct).ConfigureAwait(false);
            started = true;
            if (!start.Succeeded)
                throw new PgBackupException("StandbyStartFailed", ErrorKind.ToolFailed, $"The standby in {directory} did not start: {start.ErrorSummary()} {Tail(log)}", directory,
                    "Read the server log lines above (a port in use, too little memory for shared_buffers, a missing configuration file kept outside the data directory).");

            reporter.Progress(activity, "Waiting until the standby streams", 96);
            var standbyTarget = request.Upstream with { Host = "localhost", Port = request.Port, Database = request.Upstream.Database };
            var deadline = DateTime.UtcNow + request.StreamingTimeout;
            while (true)
            {
                var snapshot = await ReplicationMonitor.ReadAsync(standbyTarget, false, ct).ConfigureAwait(false);
                if (snapshot.Standby is { ReceiverStatus: "streaming" } streaming)
                {
                    reporter.ProgressCompleted(activity);
                    if (pendingUse != null) InstalledToolUses.CommitPendingUse(request.ToolInstallRoot!, pendingUse);
                    reporter.Milestone($"The standby on port {request.Port} streams from {request.Upstream.Display}.");
                    return streaming;
                }
                if (DateTime.UtcNow > deadline)
                    throw new PgBackupException("StandbyNotStreaming", ErrorKind.OperationTimeout,
                        $"The standby on port {request.Port} started but does not stream from {request.Upstream.Display} after {request.StreamingTimeout}: {Tail(log)}", directory,
                        "Check primary_conninfo in postgresql.auto.conf, the upstream's pg_hba.conf and max_wal_senders, and the standby's log.");
                await Task.Delay(200, ct).ConfigureAwait(false);
            }
        }
        catch
        {
            reporter.ProgressCompleted(activity);
            if (started) await PgCtlAsync(pgCtl, owner, ["stop", "-D", directory, "-m", "immediate", "-w"], reporter, CancellationToken.None).ConfigureAwait(false);
            // Nothing half-made is left that could be taken for a working standby, and no credential for it.
            WalCredentialsFile.Remove(credentialsFile);
            WalCredentialsFile.Remove(keyFile);
            WalCredentialsFile.Remove(passFile);
            if (pendingUse != null) InstalledToolUses.AbandonPendingUse(request.ToolInstallRoot!, pendingUse);
            try
            {
                if (created) Directory.Delete(directory, recursive: true);
                else foreach (var entry in Directory.EnumerateFileSystemEntries(directory)) DeleteEntry(entry);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { reporter.Warning($"Could not clean up {directory}: {ex.Message}"); }
            throw;
        }
    }

    /// <summary>
    /// Segments the standby's restore_command fetches ahead, at once, when it catches up through the archive (the tool's
    /// prefetch spool in pg_wal): a standby far behind replays from local copies instead of one round trip per segment.
    /// </summary>
    internal const int PrefetchSegments = 4;

    /// <summary>
    /// The archive is the upstream cluster's: a folder archive as the upstream's archive_command names it (or under the
    /// repository); a blob archive through pgbackup-wal with a credentials file of the standby's own, in --standby mode so
    /// that a storage outage sends the standby back to streaming instead of shutting it down. From an encrypted repository
    /// the standby's OS user also gets the key to decrypt with, in a file only it can read, removed with the instance.
    /// </summary>
    private static async Task<(string Command, string? CredentialsFile, string? KeyFile)> RestoreCommandAsync(NewStandbyRequest request, WalArchiveTool tool, RepositoryAddress repository,
        Repository.Encryption.RepositoryEncryption? encryption, string standbyUser, IOperationReporter reporter, CancellationToken ct)
    {
        var state = await ArchivingService.GetArchivingStateAsync(request.Upstream, ct).ConfigureAwait(false);
        var systemIdentifier = state.SystemIdentifier ?? throw new PgBackupException("PermissionDenied", ErrorKind.PermissionDenied,
            $"The system identifier of {request.Upstream.Display}, which names its WAL archive, cannot be read by '{request.Upstream.User}' (pg_control_system()).", request.Upstream.Display,
            "Connect as a superuser or a member of pg_monitor, or leave out -Repository.");
        string? keyFile = null;
        if (encryption != null)
        {
            keyFile = await WalCredentialsFile.PathForAsync(standbyUser, systemIdentifier, WalCredentialsFile.StandbyKeyPurpose(request.DataDirectory), ct).ConfigureAwait(false);
            await WalCredentialsFile.WriteAsync(keyFile, encryption.WalKeyFileContent(systemIdentifier, withPrivateKey: true), standbyUser, ct).ConfigureAwait(false);
            reporter.Verbose($"The standby decrypts the WAL it fetches with the repository key in {keyFile}, which only '{standbyUser}' can read; Remove-PgInstance removes it.");
        }
        if (!repository.IsBlob)
        {
            var folder = state.ArchiveFolder != null && state.CredentialsFile == null ? state.ArchiveFolder : RepositoryLayout.ArchiveFolder(repository.Folder!, systemIdentifier);
            return (tool.RestoreCommand(folder, keyFile, PrefetchSegments), null, keyFile);
        }
        var file = await WalCredentialsFile.PathForAsync(standbyUser, systemIdentifier, WalCredentialsFile.StandbyPurpose(request.DataDirectory), ct).ConfigureAwait(false);
        try { await WalCredentialsFile.WriteAsync(file, BlobStore.WalCredentials(repository).Serialize(), standbyUser, ct).ConfigureAwait(false); }
        catch { WalCredentialsFile.Remove(keyFile); throw; }
        reporter.Verbose($"The standby fetches archived WAL from {BlobWalArchiveStore.UrlOf(repository, systemIdentifier)} with the credential in {file}.");
        return (tool.RestoreCommand(BlobWalArchiveStore.UrlOf(repository, systemIdentifier), file, standby: true, keyFile, PrefetchSegments), file, keyFile);
    }

    private static void CheckDataDirectory(string directory, bool force)
    {
        if (!Directory.Exists(directory) || !Directory.EnumerateFileSystemEntries(directory).Any()) return;
        if (File.Exists(Path.Combine(directory, "postmaster.pid")))
            throw new PgBackupException("DataDirectoryInUse", ErrorKind.ResourceExists, $"'{directory}' holds a running (or crashed) PostgreSQL instance (postmaster.pid).", directory,
                "Stop that instance and choose another -DataDirectory; PgBackup never overwrites a data directory that may be running, even with -Force.");
        if (!force)
            throw new PgBackupException("TargetNotEmpty", ErrorKind.ResourceExists, $"The data directory '{directory}' is not empty.", directory,
                "Choose an empty or new folder for -DataDirectory, or pass -Force to delete what is in it first.");
    }

    private static void CheckPortFree(int port, string? listenAddress)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
        }
        catch (SocketException)
        {
            throw new PgBackupException("PortInUse", ErrorKind.ResourceExists, $"Port {port} is already in use on this machine.", port,
                "Choose a free port with -Port (another PostgreSQL instance may listen there).");
        }
    }

    private static async Task<bool> SlotExistsAsync(ConnectionTarget upstream, string slot, CancellationToken ct)
    {
        await using var connection = await ServerSession.OpenAsync(upstream, ct).ConfigureAwait(false);
        return await ServerSession.ScalarAsync<long>(connection, "select count(*) from pg_replication_slots where slot_name = $1", ct, slot).ConfigureAwait(false) > 0;
    }

    private static Task<ToolResult> PgCtlAsync(PgTool pgCtl, string? owner, IEnumerable<string> args, IOperationReporter reporter, CancellationToken ct) =>
        ToolRunner.RunAsUserAsync(pgCtl, owner, args, new Dictionary<string, string?> { ["PGDATA"] = null }, reporter.Verbose, ct, reporter);

    private static async Task GiveToAsync(string directory, string owner, CancellationToken ct)
    {
        var result = await DataDirectoryOwner.GiveToAsync(directory, owner + ":", recursive: true, ct).ConfigureAwait(false);
        if (!result.Succeeded) throw new PgBackupException("StandbySetupFailed", ErrorKind.PermissionDenied, $"chown failed: {result.ErrorSummary()}", "chown",
            $"Check that the OS user '{InstanceControl.DefaultServiceUser}' exists (it comes with the PostgreSQL server package).");
    }

    private static void DeleteEntry(string entry)
    {
        if (Directory.Exists(entry)) Directory.Delete(entry, recursive: true);
        else File.Delete(entry);
    }

    private static string Tail(string log) =>
        File.Exists(log) ? string.Join(Environment.NewLine, File.ReadLines(log).TakeLast(10)) : "";
}
