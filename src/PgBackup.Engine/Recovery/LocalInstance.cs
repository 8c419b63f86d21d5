using PgBackup.Engine.Connection;
using PgBackup.Engine.Tools;
using PgBackup.Engine.Instance;

namespace PgBackup.Engine.Recovery;

/// <summary>
/// A PostgreSQL instance started from a base backup in a local folder, as the OS user that may run it
/// (PostgreSQL refuses root: when PgBackup runs as root, the instance runs as "postgres"). It listens only on a private
/// Unix socket (or 127.0.0.1 on Windows), never archives, and is removed again by Dispose.
/// </summary>
public sealed class LocalInstance : IAsyncDisposable
{
    public const string DefaultServiceUser = InstanceControl.DefaultServiceUser;

    private readonly PgTool _pgCtl;
    private readonly string? _runAs;
    private readonly IOperationReporter _reporter;
    private bool _started;

    private LocalInstance(string folder, int port, PgTool pgCtl, string? runAs, IOperationReporter reporter)
    {
        Folder = folder;
        DataDirectory = Path.Combine(folder, "data");
        Port = port;
        _pgCtl = pgCtl;
        _runAs = runAs;
        _reporter = reporter;
    }

    public string Folder { get; }
    public string DataDirectory { get; }
    public int Port { get; }
    public string LogFile => Path.Combine(Folder, "server.log");
    public string SocketDirectory => Folder;

    /// <summary>Copies or extracts the backup into a new folder under the temp path and configures it to run privately.</summary>
    public static async Task<LocalInstance> CreateFromBackupAsync(BaseBackup backup, string? toolPath, IOperationReporter reporter, CancellationToken ct)
    {
        var pgCtl = InstanceControl.FindPgCtl(backup.ServerVersion, toolPath, reporter, backup.Path);
        var runAs = Environment.IsPrivilegedProcess && !OperatingSystem.IsWindows() ? DefaultServiceUser : null;
        var folder = Path.Combine(Path.GetTempPath(), "pgbackup-instance-" + Guid.NewGuid().ToString("N")[..10]);
        var instance = new LocalInstance(folder, InstanceControl.FreePort(), pgCtl, runAs, reporter);
        try
        {
            Directory.CreateDirectory(instance.DataDirectory);
            await Task.Run(() => BackupFiles.Restore(backup, instance.DataDirectory, null, ct, verify: false), ct).ConfigureAwait(false);
            File.AppendAllText(Path.Combine(instance.DataDirectory, "postgresql.auto.conf"), $"""

                # Added by PgBackup for a throwaway test instance: private, and never archiving into the original archive.
                port = {instance.Port}
                listen_addresses = '{(OperatingSystem.IsWindows() ? "127.0.0.1" : "")}'
                unix_socket_directories = '{(OperatingSystem.IsWindows() ? "" : folder)}'
                archive_mode = off
                archive_command = ''
                restore_command = ''
                primary_conninfo = ''
                logging_collector = off
                """);
            File.WriteAllText(Path.Combine(instance.DataDirectory, "pg_hba.conf"), OperatingSystem.IsWindows()
                ? "host all all 127.0.0.1/32 trust\n" : "local all all trust\n");
            foreach (var signal in new[] { "standby.signal", "recovery.signal", "postmaster.pid" })
                File.Delete(Path.Combine(instance.DataDirectory, signal));
            if (runAs != null) await instance.GiveToServiceUserAsync(ct).ConfigureAwait(false);
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(instance.DataDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            return instance;
        }
        catch
        {
            await instance.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Starts the instance and waits until it accepts connections, which after a base backup means it has reached consistency.</summary>
    public async Task StartAsync(TimeSpan timeout, CancellationToken ct)
    {
        var result = await RunPgCtlAsync(["start", "-D", DataDirectory, "-l", LogFile, "-w", "-t", ((int)timeout.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture)], ct).ConfigureAwait(false);
        _started = true;
        if (!result.Succeeded)
            throw new PgBackupException("InstanceStartFailed", ErrorKind.ToolFailed,
                $"The instance restored into '{DataDirectory}' did not start: {result.ErrorSummary()}{Environment.NewLine}{LogTail()}", DataDirectory,
                "Read the server log lines above; a backup that cannot reach consistency is missing WAL (take it with -WalMethod Stream).");
    }

    public ConnectionTarget Connection(string user, string database = "template1") => new()
    {
        Host = OperatingSystem.IsWindows() ? "127.0.0.1" : SocketDirectory,
        Port = Port,
        Database = database,
        User = user,
        SslMode = "disable",
    };

    public async ValueTask DisposeAsync()
    {
        if (_started)
        {
            try
            {
                var stop = await RunPgCtlAsync(["stop", "-D", DataDirectory, "-m", "fast", "-w", "-t", "60"], CancellationToken.None).ConfigureAwait(false);
                if (!stop.Succeeded) await RunPgCtlAsync(["stop", "-D", DataDirectory, "-m", "immediate", "-w"], CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is PgBackupException or IOException) { _reporter.Warning($"Could not stop the test instance in '{DataDirectory}': {ex.Message}"); }
        }
        try { if (Directory.Exists(Folder)) Directory.Delete(Folder, recursive: true); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { _reporter.Warning($"Could not remove '{Folder}': {ex.Message}; remove it by hand."); }
    }

    public string LogTail(int lines = 15) => InstanceControl.LogTail(LogFile, lines);

    private Task<ToolResult> RunPgCtlAsync(IEnumerable<string> args, CancellationToken ct) =>
        ToolRunner.RunAsUserAsync(_pgCtl, _runAs, args, new Dictionary<string, string?> { ["PGDATA"] = null }, _reporter.Verbose, ct, _reporter);

    private async Task GiveToServiceUserAsync(CancellationToken ct)
    {
        var result = await DataDirectoryOwner.GiveToAsync(Folder, _runAs + ":", recursive: true, ct).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new PgBackupException("InstanceSetupFailed", ErrorKind.PermissionDenied, $"Preparing '{Folder}' for the {_runAs} user failed: {result.ErrorSummary()}", Folder,
                $"Check that the OS user '{_runAs}' exists (it comes with the PostgreSQL server package).");
    }
}
