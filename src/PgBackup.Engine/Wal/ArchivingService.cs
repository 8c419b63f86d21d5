using System.Diagnostics;
using System.Globalization;
using Npgsql;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Instance;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Wal;

/// <summary>
/// Turns WAL archiving on and off with ALTER SYSTEM, restarts the server only when asked, and proves that archiving works
/// by switching to a new segment and waiting for it in the archive. The archive folder is &lt;repository&gt;/wal/&lt;system
/// identifier&gt;, so two clusters never mix their WAL in one repository.
/// </summary>
public static class ArchivingService
{
    private static readonly TimeSpan ReloadTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(200);
    private const string DisabledArchiveCommand = "(disabled)";

    public static async Task<WalArchivingResult> EnableAsync(EnableArchivingRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        Validate(request);
        request.Tool.EnsureExists();
        var target = request.Target;
        var activity = $"Enabling WAL archiving on {target.Display}";
        reporter.Progress(activity, "Connecting", 0);
        try
        {
            var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
            try
            {
                var info = await ServerSession.GetInfoAsync(connection, ct).ConfigureAwait(false);
                await EnsureSuperuserAsync(connection, target, "Enabling WAL archiving", ct).ConfigureAwait(false);
                var server = await ReadServerAsync(connection, ct).ConfigureAwait(false);
                var before = server.State;
                if (!string.IsNullOrEmpty(before.ArchiveLibrary))
                    throw new PgBackupException("ArchiveLibraryInUse", ErrorKind.InvalidOperation,
                        $"The server {target.Display} archives through the module archive_library = '{before.ArchiveLibrary}', which takes the place of archive_command.",
                        before.ArchiveLibrary, "Reset archive_library (ALTER SYSTEM RESET archive_library) if PgBackup should archive this server, then run the command again.");
                if (!string.IsNullOrEmpty(before.ArchiveCommand) && !before.IsPgBackupCommand && !request.Force)
                    throw new PgBackupException("ArchiveCommandInUse", ErrorKind.ResourceExists,
                        $"{target.Display} already archives with another archive_command: {before.ArchiveCommand}", before.ArchiveCommand,
                        "Another tool archives this server; replacing its command would break its backups. Pass -Force to replace it anyway.");
                if (server.InRecovery)
                    reporter.Warning($"{target.Display} is a standby: with archive_mode = on it archives nothing until it is promoted.");

                // Everything that can fail without touching the server comes first: the archive, the tool, the command.
                reporter.Progress(activity, "Preparing the archive", 10);
                var local = target.ServesFromHere(server.DataDirectory);
                var owner = local ? await Instance.DataDirectoryOwner.FindAsync(server.DataDirectory, ct).ConfigureAwait(false) : null;
                var tool = request.Tool.ForServer(server.Os);
                var installRoot = local && server.Os == (OperatingSystem.IsWindows() ? ServerOs.Windows : ServerOs.Unix) ? request.ToolInstallRoot : null;
                if (installRoot != null && !Instance.InstalledToolUses.CanInstall(installRoot))
                {
                    reporter.Warning($"pgbackup-wal is not installed into {installRoot} (this account may not write there), so archive_command runs it from the module's folder, and updating or removing the module changes it under the running archive. Run Enable-PgWalArchiving as root (or an administrator) to install it.");
                    installRoot = null;
                }
                // What this attempt adds beside what the running archive_command uses, removed again if the attempt fails before
                // the new command is written; the old ones go only once the new command is in place.
                string? pendingUse = null;
                ArchiveDestination? archive = null;
                var altered = false;
                try
                {
                    if (installRoot != null)
                    {
                        tool = WalToolInstallation.Install(tool, installRoot, reporter);
                        // Recorded before archive_command names it: a record without a command only keeps a folder longer.
                        pendingUse = Instance.InstalledToolUses.ArchiveUse(before.SystemIdentifier!, server.DataDirectory);
                        Instance.InstalledToolUses.RecordPendingUse(installRoot, pendingUse, Path.GetDirectoryName(tool.ToolPath)!);
                    }
                    archive = request.Repository.IsBlob
                        ? await PrepareBlobArchiveAsync(request.Repository, before.SystemIdentifier!, server.DataDirectory, target, local, owner, ct).ConfigureAwait(false)
                        : await PrepareArchiveFolderAsync(RepositoryLayout.ArchiveFolder(request.Repository.Folder!, before.SystemIdentifier!), owner, reporter, ct).ConfigureAwait(false);
                    var folder = archive.Location;
                    archive = await PrepareEncryptionAsync(archive, request.Repository, before.SystemIdentifier!, server.DataDirectory, target, local, owner, reporter, ct).ConfigureAwait(false);
                    var command = tool.ArchiveCommand(folder, archive.CredentialsFile, request.DropBacklogAbove, archive.KeyFile, request.ArchiveParallel, request.CompressWal);
                    if (request.DropBacklogAbove is { } drop)
                        reporter.Warning($"With the guard set, a segment whose push fails while more than {drop} bytes of WAL wait in pg_wal is dropped: PostgreSQL recycles it unarchived, and point-in-time recovery cannot pass it. Get-PgWalArchive reports every dropped segment.");
                    if (local)
                        await ProbeToolAsync(tool, owner, archive.CredentialsFile != null ? tool.CheckCommand(folder, archive.CredentialsFile) : null, reporter, ct).ConfigureAwait(false);

                    reporter.Progress(activity, "Changing settings", 25);
                    if (before.WalLevel == "minimal") await AlterSystemAsync(connection, target, "wal_level", "replica", reporter, ct).ConfigureAwait(false);
                    if (before.ArchiveMode != "always") await AlterSystemAsync(connection, target, "archive_mode", "on", reporter, ct).ConfigureAwait(false);
                    await AlterSystemAsync(connection, target, "archive_command", command, reporter, ct).ConfigureAwait(false);
                    altered = true;
                    if (request.MaxRpo is { } rpo)
                        await AlterSystemAsync(connection, target, "archive_timeout", ((long)Math.Ceiling(rpo.TotalSeconds)).ToString(CultureInfo.InvariantCulture) + "s", reporter, ct).ConfigureAwait(false);
                    await ReloadAsync(connection, target, reporter, ct).ConfigureAwait(false);
                }
                catch when (!altered)
                {
                    if (pendingUse != null) Instance.InstalledToolUses.AbandonPendingUse(installRoot!, pendingUse);
                    if (archive is { NewCredentials: true, CredentialsFile: { } written } && written != before.CredentialsFile) Instance.WalCredentialsFile.Remove(written);
                    if (archive is { NewKeyFile: true, KeyFile: { } writtenKey } && writtenKey != before.KeyFile) Instance.WalCredentialsFile.Remove(writtenKey);
                    throw;
                }
                var state = await ReadStateAsync(connection, ct).ConfigureAwait(false);
                var location = archive!.Location;
                // The build and the credential this cluster's command used before go now, if nothing else uses them.
                if (pendingUse != null)
                {
                    Instance.InstalledToolUses.CommitPendingUse(installRoot!, pendingUse);
                    foreach (var removed in Instance.InstalledToolUses.RemoveUnused(installRoot!, reporter.Warning)) reporter.Verbose($"Removed {removed}, which no cluster's archive_command runs any more.");
                }
                if (local && before.CredentialsFile != null && before.CredentialsFile != archive.CredentialsFile && Instance.WalCredentialsFile.Remove(before.CredentialsFile))
                    reporter.Verbose($"Removed the credentials file {before.CredentialsFile}, which the previous archive_command read.");
                if (local && before.KeyFile != null && before.KeyFile != archive.KeyFile && Instance.WalCredentialsFile.Remove(before.KeyFile))
                    reporter.Verbose($"Removed the key file {before.KeyFile}, which the previous archive_command read.");

                bool restarted;
                (connection, state, restarted) = await RestartIfPendingAsync(connection, state, request.Restart, request.ToolPath, target, server, owner, info,
                    "WAL archiving starts then", reporter, ct).ConfigureAwait(false);

                var result = Result(target, location, before.SystemIdentifier!, state, restarted);
                // Only settings that archiving depends on hold the check back; an unrelated pending change (shared_buffers) does not.
                if (request.Verify && !state.PendingRestart.Any(n => n is "wal_level" or "archive_mode" or "archive_library") && !server.InRecovery)
                {
                    reporter.Progress(activity, "Waiting for a WAL segment to arrive in the archive", 60);
                    (result.VerifiedSegment, result.VerifyDuration) = await VerifyAsync(connection, target, archive, request.VerifyTimeout, reporter, ct).ConfigureAwait(false);
                    result.Verified = true;
                }
                reporter.Milestone(result.Verified
                    ? $"WAL archiving of {target.Display} into {location} works: {result.VerifiedSegment} arrived in {result.VerifyDuration!.Value.TotalSeconds:0.0}s."
                    : $"WAL archiving of {target.Display} into {location} is configured" + (result.PendingRestart.Length > 0 ? $"; waiting for a restart ({string.Join(", ", result.PendingRestart)})." : "."));
                return result;
            }
            finally { await connection.DisposeAsync().ConfigureAwait(false); }
        }
        finally { reporter.ProgressCompleted(activity); }
    }

    public static async Task<WalArchivingResult> DisableAsync(DisableArchivingRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var target = request.Target;
        var activity = $"Disabling WAL archiving on {target.Display}";
        reporter.Progress(activity, "Connecting", 0);
        try
        {
            var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
            try
            {
                var info = await ServerSession.GetInfoAsync(connection, ct).ConfigureAwait(false);
                await EnsureSuperuserAsync(connection, target, "Disabling WAL archiving", ct).ConfigureAwait(false);
                var server = await ReadServerAsync(connection, ct).ConfigureAwait(false);
                var before = server.State;
                if (!string.IsNullOrEmpty(before.ArchiveCommand) && !before.IsPgBackupCommand && !request.Force)
                    throw new PgBackupException("ArchiveCommandNotPgBackup", ErrorKind.InvalidOperation,
                        $"The archive_command of {target.Display} is not PgBackup's: {before.ArchiveCommand}", before.ArchiveCommand,
                        "Another tool archives this server; leave it, or pass -Force to reset archive_command, archive_mode and archive_timeout anyway.");

                reporter.Progress(activity, "Resetting settings", 30);
                foreach (var name in new[] { "archive_command", "archive_mode", "archive_timeout" })
                {
                    await ServerSession.ExecuteAsync(connection, "ALTER SYSTEM RESET " + name, target, ct).ConfigureAwait(false);
                    reporter.Verbose($"ALTER SYSTEM RESET {name}");
                }
                await ReloadAsync(connection, target, reporter, ct).ConfigureAwait(false);
                var state = await ReadStateAsync(connection, ct).ConfigureAwait(false);
                if (!string.IsNullOrEmpty(state.ArchiveCommand))
                    reporter.Warning($"archive_command is still set on {target.Display} by its configuration files ({state.ArchiveCommand}); ALTER SYSTEM RESET cannot undo that. Edit postgresql.conf.");

                var owner = target.ServesFromHere(server.DataDirectory) ? await Instance.DataDirectoryOwner.FindAsync(server.DataDirectory, ct).ConfigureAwait(false) : null;
                bool restarted;
                (connection, state, restarted) = await RestartIfPendingAsync(connection, state, request.Restart, request.ToolPath, target, server, owner, info,
                    $"until then archive_mode stays {state.ArchiveMode} and WAL segments wait in pg_wal for an archive_command", reporter, ct).ConfigureAwait(false);
                var result = Result(target, before.ArchiveFolder ?? "", before.SystemIdentifier ?? "", state, restarted);
                // The secret, and an installed tool no other cluster runs, go with the command that needed them.
                if (string.IsNullOrEmpty(state.ArchiveCommand) && target.ServesFromHere(server.DataDirectory))
                {
                    if (Instance.WalCredentialsFile.Remove(before.CredentialsFile)) reporter.Verbose($"Removed the credentials file {before.CredentialsFile}.");
                    if (Instance.WalCredentialsFile.Remove(before.KeyFile)) reporter.Verbose($"Removed the key file {before.KeyFile}.");
                    if (before.SystemIdentifier != null && request.ToolInstallRoot is { } root && Instance.InstalledToolUses.CanInstall(root))
                        foreach (var removed in Instance.InstalledToolUses.ReleaseUse(root, Instance.InstalledToolUses.ArchiveUse(before.SystemIdentifier, server.DataDirectory), reporter.Warning))
                            reporter.Verbose($"Removed {removed}, which no cluster's archive_command runs any more.");
                }
                reporter.Milestone($"WAL archiving of {target.Display} is disabled" + (result.PendingRestart.Length > 0 ? $"; {string.Join(", ", result.PendingRestart)} wait for a restart." : "."));
                return result;
            }
            finally { await connection.DisposeAsync().ConfigureAwait(false); }
        }
        finally { reporter.ProgressCompleted(activity); }
    }

    /// <summary>The server's archiving settings, read only.</summary>
    public static async Task<ArchivingState> GetArchivingStateAsync(ConnectionTarget target, CancellationToken ct)
    {
        await using var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
        return await GetArchivingStateAsync(connection, ct).ConfigureAwait(false);
    }

    public static Task<ArchivingState> GetArchivingStateAsync(NpgsqlConnection connection, CancellationToken ct) => ReadStateAsync(connection, ct);

    /// <summary>
    /// For features that need a WAL archive (base backups, point-in-time restores): the state when the server archives,
    /// otherwise PgBackup.WalLevelTooLow or PgBackup.ArchivingNotEnabled.
    /// </summary>
    public static async Task<ArchivingState> EnsureArchivingAsync(ConnectionTarget target, CancellationToken ct)
    {
        var state = await GetArchivingStateAsync(target, ct).ConfigureAwait(false);
        Ensure(state, target);
        return state;
    }

    public static async Task<ArchivingState> EnsureArchivingAsync(NpgsqlConnection connection, ConnectionTarget target, CancellationToken ct)
    {
        var state = await GetArchivingStateAsync(connection, ct).ConfigureAwait(false);
        Ensure(state, target);
        return state;
    }

    private static void Ensure(ArchivingState state, ConnectionTarget target)
    {
        var pending = state.PendingRestart.Length > 0 ? $" ({string.Join(", ", state.PendingRestart)} changed and wait for a restart)" : "";
        if (state.WalLevel == "minimal")
            throw new PgBackupException("WalLevelTooLow", ErrorKind.InvalidOperation,
                $"The server {target.Display} runs with wal_level = minimal, which writes too little WAL to archive or to restore from{pending}.", target.Display,
                "Run Enable-PgWalArchiving -Restart (it sets wal_level = replica), or set wal_level = replica and restart the server.");
        if (!state.IsArchiving)
            throw new PgBackupException("ArchivingNotEnabled", ErrorKind.InvalidOperation,
                state.ArchiveMode is "on" or "always"
                    ? $"The server {target.Display} has archive_mode = {state.ArchiveMode} but an empty archive_command, so WAL piles up in pg_wal and reaches no archive{pending}."
                    : $"WAL archiving is not enabled on {target.Display}: archive_mode = {state.ArchiveMode}{pending}.",
                target.Display,
                state.PendingRestart.Length > 0
                    ? "Restart the server so that the pending settings take effect (or run Enable-PgWalArchiving -Restart)."
                    : "Run Enable-PgWalArchiving -Server ... -Repository ... -Restart.");
    }

    private static void Validate(EnableArchivingRequest r)
    {
        if (r.Repository is null || string.IsNullOrWhiteSpace(r.Repository.Display))
            throw new PgBackupException("NoDestination", ErrorKind.InvalidArgument, "No repository was given for the WAL archive.", null,
                "Pass -Repository (a folder the database server can write to), or set the Repository setting (PGBACKUP_REPOSITORY or pgbackup.json).");
        if (r.MaxRpo is { } rpo && (rpo < TimeSpan.FromSeconds(1) || rpo > TimeSpan.FromSeconds(int.MaxValue / 2)))
            throw new PgBackupException("InvalidMaxRpo", ErrorKind.InvalidArgument, $"-MaxRpo must be from 1 second to about 34 years, not {rpo}.", rpo,
                "Pass -MaxRpo as a TimeSpan such as (New-TimeSpan -Minutes 5); leave it out to let only full segments be archived.");
        if (r.DropBacklogAbove is < 0)
            throw new PgBackupException("InvalidDropBacklogAbove", ErrorKind.InvalidArgument, $"-DropBacklogAbove must not be negative, not {r.DropBacklogAbove}.", r.DropBacklogAbove,
                "Pass the number of bytes of WAL that may wait in pg_wal before segments are dropped, such as 50GB; leave it out never to drop WAL.");
        if (r.ArchiveParallel is < 1 or > WalArchiveTool.MaxParallel)
            throw new PgBackupException("InvalidArchiveParallel", ErrorKind.InvalidArgument,
                $"-ArchiveParallel must be from 1 to {WalArchiveTool.MaxParallel}, not {r.ArchiveParallel}.", r.ArchiveParallel,
                "Pass how many segments may be archived at once, such as 4; 1 archives only the segment the server asks for.");
        if (r.VerifyTimeout <= TimeSpan.Zero)
            throw new PgBackupException("InvalidTimeout", ErrorKind.InvalidArgument, $"The verification timeout must be positive, not {r.VerifyTimeout}.", r.VerifyTimeout,
                "Pass a positive timeout.");
    }

    private static async Task EnsureSuperuserAsync(NpgsqlConnection connection, ConnectionTarget target, string what, CancellationToken ct)
    {
        if (await ServerSession.ScalarAsync<string>(connection, "select current_setting('is_superuser')", ct).ConfigureAwait(false) == "on") return;
        throw new PgBackupException("PermissionDenied", ErrorKind.PermissionDenied,
            $"{what} on {target.Display} changes the server's configuration with ALTER SYSTEM, which needs a superuser; '{target.User}' is not one.",
            $"{target.User}@{target.Display}", "Connect as a superuser (for example postgres) with -Credential, or ask the DBA to run the command.");
    }

    /// <summary>Facts about the server that enabling archiving needs besides its settings.</summary>
    private sealed record ServerFacts(ArchivingState State, string DataDirectory, ServerOs Os, bool InRecovery);

    private static async Task<ServerFacts> ReadServerAsync(NpgsqlConnection connection, CancellationToken ct)
    {
        var state = await ReadStateAsync(connection, ct).ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand("select current_setting('data_directory'), version(), pg_is_in_recovery()", connection);
        await using var reader = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await reader.ReadAsync(ct).ConfigureAwait(false);
        var version = reader.GetString(1);
        var os = version.Contains("Visual C++", StringComparison.OrdinalIgnoreCase) || version.Contains("mingw", StringComparison.OrdinalIgnoreCase) ||
                 version.Contains("windows", StringComparison.OrdinalIgnoreCase) ? ServerOs.Windows : ServerOs.Unix;
        return new ServerFacts(state, reader.GetString(0), os, reader.GetBoolean(2));
    }

    private static async Task<ArchivingState> ReadStateAsync(NpgsqlConnection connection, CancellationToken ct)
    {
        bool canReadFiles;
        string? systemIdentifier;
        await using (var cmd = new NpgsqlCommand(
            "select has_function_privilege('pg_show_all_file_settings()', 'execute'), " +
            "case when has_function_privilege('pg_control_system()', 'execute') then (select system_identifier::text from pg_control_system()) end", connection))
        await using (var reader = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false))
        {
            await reader.ReadAsync(ct).ConfigureAwait(false);
            canReadFiles = reader.GetBoolean(0);
            systemIdentifier = reader.IsDBNull(1) ? null : reader.GetString(1);
        }

        // pending_restart stays set after ALTER SYSTEM RESET even when the value would not change (enable, then disable
        // before any restart); when the files can be read, a setting whose configured value is the current one is not pending.
        var pendingSql = canReadFiles
            ? "s.pending_restart and s.setting is distinct from coalesce((select f.setting from pg_file_settings f where f.name = s.name " +
              "and (f.error is null or f.error = 'setting could not be applied') order by f.seqno desc limit 1), s.boot_val)"
            : "s.pending_restart";
        var settings = new Dictionary<string, string>();
        var pending = new List<string>();
        await using (var cmd = new NpgsqlCommand(
            $"select s.name, s.setting, {pendingSql} from pg_settings s " +
            "where s.name in ('wal_level','archive_mode','archive_command','archive_library','archive_timeout') or s.pending_restart order by s.name", connection))
        await using (var reader = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false))
        {
            while (await reader.ReadAsync(ct).ConfigureAwait(false))
            {
                settings[reader.GetString(0)] = reader.IsDBNull(1) ? "" : reader.GetString(1);
                if (reader.GetBoolean(2)) pending.Add(reader.GetString(0));
            }
        }

        var command = settings.GetValueOrDefault("archive_command");
        if (command == DisabledArchiveCommand)
        {
            // While archive_mode is off PostgreSQL shows "(disabled)" instead of the command; the files say what is configured.
            command = canReadFiles
                ? await ServerSession.ScalarAsync<string>(connection,
                    "select coalesce((select setting from pg_file_settings where name = 'archive_command' and error is null order by seqno desc limit 1), '')", ct).ConfigureAwait(false)
                : null;
        }
        var ours = WalArchiveTool.TryParseArchiveCommand(command, out ArchiveCommandParts? parts);
        var timeout = long.TryParse(settings.GetValueOrDefault("archive_timeout"), NumberStyles.Integer, CultureInfo.InvariantCulture, out var seconds) && seconds > 0
            ? TimeSpan.FromSeconds(seconds) : (TimeSpan?)null;
        return new ArchivingState
        {
            WalLevel = settings.GetValueOrDefault("wal_level") ?? "",
            ArchiveMode = settings.GetValueOrDefault("archive_mode") ?? "",
            ArchiveCommand = command,
            ArchiveLibrary = settings.GetValueOrDefault("archive_library"),
            ArchiveTimeout = timeout,
            IsPgBackupCommand = ours,
            ArchiveFolder = parts?.Location,
            CredentialsFile = parts?.CredentialsFile,
            KeyFile = parts?.KeyFile,
            DropBacklogAbove = parts?.DropBacklogAbove,
            ArchiveParallel = parts?.Parallel ?? 1,
            CompressWal = parts?.Compress ?? false,
            PendingRestart = [.. pending],
            SystemIdentifier = systemIdentifier,
        };
    }

    private static WalArchivingResult Result(ConnectionTarget target, string folder, string systemIdentifier, ArchivingState state, bool restarted) => new()
    {
        Server = target.Host,
        Port = target.Port,
        Repository = folder,
        SystemIdentifier = systemIdentifier,
        ArchiveMode = state.ArchiveMode,
        WalLevel = state.WalLevel,
        ArchiveCommand = state.ArchiveCommand ?? "",
        ArchiveTimeout = state.ArchiveTimeout,
        ArchiveParallel = state.ArchiveParallel,
        CompressWal = state.CompressWal,
        PendingRestart = state.PendingRestart,
        Restarted = restarted,
    };

    private static async Task AlterSystemAsync(NpgsqlConnection connection, ConnectionTarget target, string name, string value, IOperationReporter reporter, CancellationToken ct)
    {
        // ALTER SYSTEM takes no parameters; an E'' literal reads the same whatever standard_conforming_strings is.
        var literal = "E'" + value.Replace(@"\", @"\\").Replace("'", "''") + "'";
        await ServerSession.ExecuteAsync(connection, $"ALTER SYSTEM SET {name} = {literal}", target, ct).ConfigureAwait(false);
        reporter.Verbose($"ALTER SYSTEM SET {name} = '{value}'");
    }

    /// <summary>
    /// pg_reload_conf() only signals the postmaster; this session applies the new files at a later command boundary. Wait
    /// until pg_conf_load_time() (this session's last load) moves before reading pending_restart.
    /// </summary>
    private static async Task ReloadAsync(NpgsqlConnection connection, ConnectionTarget target, IOperationReporter reporter, CancellationToken ct)
    {
        var loadedBefore = await ServerSession.ScalarAsync<DateTime>(connection, "select pg_conf_load_time()", ct).ConfigureAwait(false);
        await ServerSession.ExecuteAsync(connection, "select pg_reload_conf()", target, ct).ConfigureAwait(false);
        var clock = Stopwatch.StartNew();
        while (await ServerSession.ScalarAsync<DateTime>(connection, "select pg_conf_load_time()", ct).ConfigureAwait(false) <= loadedBefore)
        {
            if (clock.Elapsed > ReloadTimeout)
            {
                var errors = await ServerSession.ScalarAsync<string>(connection,
                    "select string_agg(format('%s (%s line %s): %s', coalesce(name, '?'), sourcefile, sourceline, error), '; ') from pg_file_settings " +
                    "where error is not null and error <> 'setting could not be applied'", ct).ConfigureAwait(false);
                throw new PgBackupException("ReloadFailed", ErrorKind.InvalidOperation,
                    $"The server {target.Display} did not reload its configuration within {ReloadTimeout.TotalSeconds:0}s" + (errors != null ? $": {errors}" : "."), target.Display,
                    "Look at the server log for the configuration error, fix it (ALTER SYSTEM RESET or postgresql.conf), and run the command again.");
            }
            await Task.Delay(20, ct).ConfigureAwait(false);
        }
        reporter.Verbose("The server reloaded its configuration.");
    }

    private static bool IsRoot => !OperatingSystem.IsWindows() && Environment.IsPrivilegedProcess;

    /// <summary>Where archive_command writes: a folder, or a blob archive's URL with the file its credentials are in.</summary>
    private sealed record ArchiveDestination(string Location, string? CredentialsFile, Func<string, CancellationToken, Task<bool>> HoldsAsync, bool NewCredentials = false)
    {
        /// <summary>The public key file of an encrypted repository, which push encrypts to.</summary>
        public string? KeyFile { get; init; }
        public bool NewKeyFile { get; init; }
    }

    /// <summary>
    /// For an encrypted repository: its public key (and the archive's name prefix), in a file of the server's OS user that
    /// archive_command names, so every segment is encrypted before it leaves the server. No secret is in it.
    /// </summary>
    private static async Task<ArchiveDestination> PrepareEncryptionAsync(ArchiveDestination archive, RepositoryAddress repository, string systemIdentifier, string dataDirectory,
        ConnectionTarget target, bool local, string? owner, IOperationReporter reporter, CancellationToken ct)
    {
        using var encryption = await Repository.Encryption.RepositoryEncryption.LoadAsync(repository, ct).ConfigureAwait(false);
        if (encryption == null) return archive;
        if (!local || owner == null)
            throw new PgBackupException("EncryptedArchivingNeedsLocalServer", ErrorKind.InvalidOperation,
                $"'{repository.Display}' is encrypted, so pgbackup-wal needs the repository's public key in a file on the database server, and {target.Display} does not run on this machine (or its data directory's owner cannot be found).",
                target.Display, "Run Enable-PgWalArchiving on the database server itself (for example in a PowerShell remoting session to it), with -Server localhost.");
        var content = encryption.WalKeyFileContent(systemIdentifier, withPrivateKey: false);
        var file = await Instance.WalCredentialsFile.PathForAsync(owner, systemIdentifier, Instance.WalCredentialsFile.ArchiveKeyPurpose(dataDirectory, content), ct).ConfigureAwait(false);
        var written = await Instance.WalCredentialsFile.WriteAsync(file, content, owner, ct).ConfigureAwait(false);
        reporter.Verbose($"pgbackup-wal encrypts every WAL file to the repository's key {Convert.ToHexString(encryption.Keyring.KeyId).ToLowerInvariant()} ({file}).");
        return archive with { KeyFile = file, NewKeyFile = written };
    }

    /// <summary>
    /// A blob archive: the container exists (this account can write it), and the credential pgbackup-wal will use is in a
    /// file only the server's OS user can read. Only for a server on this machine, where that file can be written.
    /// </summary>
    private static async Task<ArchiveDestination> PrepareBlobArchiveAsync(RepositoryAddress repository, string systemIdentifier, string dataDirectory, ConnectionTarget target,
        bool local, string? owner, CancellationToken ct)
    {
        if (!local || owner == null)
            throw new PgBackupException("BlobArchivingNeedsLocalServer", ErrorKind.InvalidOperation,
                $"WAL archiving of {target.Display} into '{repository.Display}' stores the storage credential in a file on the database server for its OS user, and {target.Display} does not run on this machine (or its data directory's owner cannot be found).",
                target.Display, "Run Enable-PgWalArchiving on the database server itself (for example in a PowerShell remoting session to it), with -Server localhost.");
        var credentials = Repository.Blob.BlobStore.WalCredentials(repository);
        var store = Repository.Blob.BlobStore.Open(repository);
        await store.EnsureContainerAsync(ct).ConfigureAwait(false);
        var content = credentials.Serialize();
        var file = await Instance.WalCredentialsFile.PathForAsync(owner, systemIdentifier, Instance.WalCredentialsFile.ArchivePurpose(dataDirectory, content), ct).ConfigureAwait(false);
        var written = await Instance.WalCredentialsFile.WriteAsync(file, content, owner, ct).ConfigureAwait(false);
        var key = Repository.Blob.BlobWalArchiveStore.KeyOf(repository, systemIdentifier);
        return new ArchiveDestination(Repository.Blob.BlobWalArchiveStore.UrlOf(repository, systemIdentifier), file,
            (name, token) => store.ExistsAsync(key + "/" + name, token), written);
    }

    private static async Task<ArchiveDestination> PrepareArchiveFolderAsync(string folder, string? serverUser, IOperationReporter reporter, CancellationToken ct)
    {
        var destination = new ArchiveDestination(folder, null, (name, _) => Task.FromResult(File.Exists(Path.Combine(folder, name))));
        try
        {
            FolderProbe.EnsureWritable(folder);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw NotWritable(folder, ex.Message, "this account", ex);
        }
        if (!IsRoot || serverUser == null || serverUser == "root") return destination;

        // archive_command runs as the server's OS user, not as us: hand it the folder and check that it can get there.
        var chown = await Instance.DataDirectoryOwner.GiveToAsync(folder, serverUser, recursive: false, ct).ConfigureAwait(false);
        if (!chown.Succeeded) throw NotWritable(folder, $"chown {serverUser} failed: {chown.ErrorSummary()}", serverUser);
        reporter.Verbose($"The archive folder {folder} now belongs to {serverUser}, the user the server runs as.");
        var access = await RunAsync("runuser", ["-u", serverUser, "--", "test", "-w", folder, "-a", "-x", folder], ct).ConfigureAwait(false);
        if (!access.Succeeded)
            throw NotWritable(folder, $"the server's OS user '{serverUser}' cannot write there (a parent folder may not let it through)", serverUser);
        return destination;
    }

    /// <summary>
    /// Runs the tool the way the server will (same dotnet host, same dll, same OS user) before the server depends on it:
    /// --version, or for a blob archive <paramref name="check"/>, which also proves the credential and the network path.
    /// </summary>
    private static async Task ProbeToolAsync(WalArchiveTool tool, string? serverUser, string[]? check, IOperationReporter reporter, CancellationToken ct)
    {
        var asServerUser = IsRoot && serverUser != null && serverUser != "root";
        if (!asServerUser && serverUser != null && serverUser != Environment.UserName) return; // we cannot act as the server's user
        string[] command = check ?? [.. tool.Invocation, "--version"];
        ToolResult result = asServerUser
            ? await RunAsync("runuser", ["-u", serverUser!, "--", .. command], ct).ConfigureAwait(false)
            : await RunAsync(command[0], command[1..], ct).ConfigureAwait(false);
        var who = serverUser ?? Environment.UserName;
        if (check != null && !result.Succeeded && result.ExitCode != 127 && result.ErrorLines.Any(l => l.StartsWith("pgbackup-wal:", StringComparison.Ordinal)))
            throw new PgBackupException("WalArchiveNotUsable", ErrorKind.PermissionDenied,
                $"pgbackup-wal, run as the server's OS user '{who}', cannot use the blob archive {check[^3]}: " + string.Join(" ", result.ErrorLines.Where(l => l.Length > 0).Take(3)),
                check[^3], "Check the credential (a SAS token must allow read, add, create, write, list and delete) and that the database server reaches the storage endpoint (DNS, firewall, proxy).");
        if (!result.Succeeded || (check == null && !result.StandardOutput.StartsWith("pgbackup-wal", StringComparison.Ordinal)))
            throw new PgBackupException("WalToolNotRunnable", ErrorKind.NotInstalled,
                $"The server's OS user '{who}' cannot run the WAL archive tool ({string.Join(' ', tool.Invocation)}): " +
                string.Join(" ", result.ErrorLines.Where(l => l.Length > 0).Take(3)), tool.NativePath ?? tool.ToolPath,
                tool.IsNative
                    ? $"Install PgBackup where '{who}' can read and run it (every parent folder must let that user through)."
                    : $"Install PgBackup where '{who}' can read it (every parent folder must let that user through), and the .NET runtime 8 or later where it can run it.");
        reporter.Verbose($"'{who}' runs {result.StandardOutput.Trim()} ({string.Join(' ', tool.Invocation)}).");
    }

    private static PgBackupException NotWritable(string folder, string detail, string who, Exception? inner = null) =>
        new("RepositoryNotWritable", ErrorKind.PermissionDenied, $"The WAL archive folder '{folder}' is not writable: {detail}", folder,
            $"Use a repository that {who} and the database server's OS user can write to (check permissions, that every parent folder can be entered, and that the volume is not read-only or full).", inner);

    /// <summary>
    /// Restarts the server when settings wait for it and the caller asked for it, and then reads the state again on a new
    /// connection; otherwise warns what waits for a restart and what that means (<paramref name="meanwhile"/>).
    /// </summary>
    private static async Task<(NpgsqlConnection Connection, ArchivingState State, bool Restarted)> RestartIfPendingAsync(NpgsqlConnection connection,
        ArchivingState state, bool restart, string? toolPath, ConnectionTarget target, ServerFacts server, string? owner, ServerInfo info, string meanwhile,
        IOperationReporter reporter, CancellationToken ct)
    {
        if (state.PendingRestart.Length == 0) return (connection, state, false);
        var pending = string.Join(", ", state.PendingRestart);
        if (!restart)
        {
            reporter.Warning($"{pending} take effect only when {target.Display} restarts (data directory {server.DataDirectory}); {meanwhile}. " +
                             "Run again with -Restart, or restart the server in a maintenance window.");
            return (connection, state, false);
        }
        if (!await ServerRestart.RestartAsync(target, server.DataDirectory, pending, meanwhile, owner, toolPath, info.Major, reporter, ct).ConfigureAwait(false)) return (connection, state, false);
        await connection.DisposeAsync().ConfigureAwait(false);
        connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
        return (connection, await ReadStateAsync(connection, ct).ConfigureAwait(false), true);
    }

    private static async Task<(string Segment, TimeSpan Duration)> VerifyAsync(NpgsqlConnection connection, ConnectionTarget target, ArchiveDestination archive, TimeSpan timeout,
        IOperationReporter reporter, CancellationToken ct)
    {
        var folder = archive.Location;
        var archivedBefore = await ServerSession.ScalarAsync<long>(connection, "select archived_count from pg_stat_archiver", ct).ConfigureAwait(false);
        // A switch in a segment that holds no new WAL does nothing; a committed xid guarantees a record to switch away from.
        await ServerSession.ExecuteAsync(connection, "select txid_current()", target, ct).ConfigureAwait(false);
        var segment = await ServerSession.ScalarAsync<string>(connection, "select pg_walfile_name(pg_switch_wal())", ct).ConfigureAwait(false)
            ?? throw new InvalidOperationException("pg_switch_wal() returned nothing.");
        reporter.Verbose($"Switched WAL; waiting for {segment} in {folder}.");
        var clock = Stopwatch.StartNew();
        var switched = WalSegmentName.Parse(segment);
        // A file of that name may already be there (from a copy of this cluster); only the server's word that it archived
        // the segment, together with the file, proves that archiving works.
        while (!(await ArchivedAsync(connection, switched, ct).ConfigureAwait(false) && await archive.HoldsAsync(segment, ct).ConfigureAwait(false)))
        {
            if (clock.Elapsed > timeout)
            {
                await using var cmd = new NpgsqlCommand(
                    "select archived_count, last_archived_wal, failed_count, last_failed_wal, last_failed_time, pg_current_logfile() from pg_stat_archiver", connection);
                await using var reader = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
                await reader.ReadAsync(ct).ConfigureAwait(false);
                string? Text(int i) => reader.IsDBNull(i) ? null : Convert.ToString(reader.GetValue(i), CultureInfo.InvariantCulture);
                var failed = reader.GetInt64(2);
                var detail = failed > 0
                    ? $"the archiver has failed {failed} times; last failed WAL {Text(3)} at {reader.GetFieldValue<DateTimeOffset>(4):u}"
                    : $"the archiver reports no failure; last archived WAL {Text(1) ?? "none"} ({reader.GetInt64(0) - archivedBefore} archived since the switch)";
                var log = Text(5) is { } logFile ? $" ({logFile})" : "";
                throw new PgBackupException("ArchiveNotArriving", ErrorKind.InvalidOperation,
                    $"The WAL segment {segment} did not arrive in {folder} within {timeout.TotalSeconds:0}s: {detail}.", segment,
                    $"Look at the server log{log} for lines starting with 'pgbackup-wal:' or 'archive command failed': they name the cause (permissions of the archive folder for the server's OS user, a missing .NET runtime, a full disk).");
            }
            await Task.Delay(PollInterval, ct).ConfigureAwait(false);
        }
        reporter.Verbose($"{segment} arrived in the archive after {clock.Elapsed.TotalSeconds:0.0}s.");
        return (segment, clock.Elapsed);
    }

    /// <summary>The archiver works through segments in order, so a later last_archived_wal means ours is done too.</summary>
    private static async Task<bool> ArchivedAsync(NpgsqlConnection connection, WalSegmentName segment, CancellationToken ct)
    {
        var last = await ServerSession.ScalarAsync<string>(connection, "select last_archived_wal from pg_stat_archiver", ct).ConfigureAwait(false);
        return last is { Length: >= 24 } && WalSegmentName.TryParse(last[..24], out var archived) && archived.CompareTo(segment) >= 0;
    }

    private static Task<ToolResult> RunAsync(string program, IEnumerable<string> arguments, CancellationToken ct) =>
        ToolRunner.RunAsync(new PgTool(program, program, "", 0), arguments, new Dictionary<string, string?>(), null, ct, captureOutput: true);
}
