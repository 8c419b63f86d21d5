using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Instance;

/// <summary>What postmaster.pid says about a running server (see PostgreSQL's pidfile.h for the line order).</summary>
public sealed record PostmasterInfo(int Pid, DateTimeOffset? StartTime, int Port, string SocketDirectory, string ListenAddress, string Status);

/// <summary>
/// Starting, stopping, describing and removing local data directories with pg_ctl, as the directory's owner: PostgreSQL
/// refuses to run as root, so when PgBackup runs as root the server runs as the user who owns the files.
/// Servers that the operating system manages (systemd units, pg_ctlcluster, Windows services) are left to it.
/// </summary>
public static class InstanceControl
{
    public const string LogFileName = "pgbackup-server.log";

    /// <summary>The OS user a server runs as when PgBackup runs as root and nothing says otherwise: the packages' user.</summary>
    public const string DefaultServiceUser = "postgres";

    public static PgInstance Describe(string dataDirectory, string? owner)
    {
        var directory = Path.GetFullPath(dataDirectory);
        EnsureDataDirectory(directory);
        var instance = new PgInstance
        {
            DataDirectory = directory,
            Version = File.ReadAllText(Path.Combine(directory, "PG_VERSION")).Trim(),
            Owner = owner ?? "",
            LogFile = Path.Combine(directory, LogFileName),
            Port = ConfiguredPort(directory) ?? 5432,
        };
        if (ReadPostmaster(directory) is { } pm && IsAlive(pm.Pid))
        {
            instance.State = InstanceState.Running;
            instance.ProcessId = pm.Pid;
            instance.Port = pm.Port;
            instance.SocketDirectory = pm.SocketDirectory;
            instance.ListenAddresses = pm.ListenAddress;
            instance.StartTime = pm.StartTime;
        }
        instance.Server = ConnectHost(instance.ListenAddresses, instance.SocketDirectory);
        return instance;
    }

    public static async Task<PgInstance> DescribeAsync(string dataDirectory, CancellationToken ct) =>
        Describe(dataDirectory, await DataDirectoryOwner.FindAsync(Path.GetFullPath(dataDirectory), ct).ConfigureAwait(false));

    /// <summary>pg_ctl start -w as the owner; with <paramref name="port"/> the server listens there (pg_ctl -o "-p port").</summary>
    public static async Task<PgInstance> StartAsync(string dataDirectory, int? port, TimeSpan timeout, string? toolPath, IOperationReporter reporter, CancellationToken ct)
    {
        RecoveryMarker.RefuseUnfinished(Path.GetFullPath(dataDirectory), "start");
        var instance = await DescribeAsync(dataDirectory, ct).ConfigureAwait(false);
        RefuseManaged(instance, "start");
        if (instance.State == InstanceState.Running)
        {
            reporter.Warning($"The instance in '{instance.DataDirectory}' is already running (process {instance.ProcessId}, port {instance.Port}).");
            return instance;
        }
        if (port is { } p) EnsurePortFree(p);
        var runAs = RunAsFor(instance);
        var pgCtl = FindPgCtl(instance, toolPath, reporter);
        var args = new List<string> { "start", "-D", instance.DataDirectory, "-l", instance.LogFile, "-w", "-t", Seconds(timeout) };
        if (port is { } listen) args.AddRange(["-o", "-p " + listen.ToString(CultureInfo.InvariantCulture)]);
        reporter.Milestone($"Starting the instance in '{instance.DataDirectory}'.");
        var result = await ToolRunner.RunAsUserAsync(pgCtl, runAs, args, NoPgData, reporter.Verbose, ct, reporter).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new PgBackupException("InstanceStartFailed", ErrorKind.ToolFailed,
                $"The instance in '{instance.DataDirectory}' did not start: {result.ErrorSummary()}{Environment.NewLine}{LogTail(instance.LogFile)}", instance.DataDirectory,
                "Read the server log lines above and fix what they name (a port in use, a missing configuration file, permissions), then start it again.");
        return Describe(instance.DataDirectory, instance.Owner);
    }

    public static async Task<PgInstance> StopAsync(string dataDirectory, StopMode mode, TimeSpan timeout, string? toolPath, IOperationReporter reporter, CancellationToken ct)
    {
        var instance = await DescribeAsync(dataDirectory, ct).ConfigureAwait(false);
        if (instance.State == InstanceState.Stopped)
        {
            reporter.Verbose($"The instance in '{instance.DataDirectory}' is not running.");
            return instance;
        }
        RefuseManaged(instance, "stop");
        var pgCtl = FindPgCtl(instance, toolPath, reporter);
        reporter.Milestone($"Stopping the instance in '{instance.DataDirectory}' ({mode.ToString().ToLowerInvariant()} mode).");
        var result = await ToolRunner.RunAsUserAsync(pgCtl, RunAsFor(instance),
            ["stop", "-D", instance.DataDirectory, "-m", mode.ToString().ToLowerInvariant(), "-w", "-t", Seconds(timeout)], NoPgData, reporter.Verbose, ct, reporter).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new PgBackupException(mode == StopMode.Smart ? "InstanceStopTimeout" : "InstanceStopFailed",
                mode == StopMode.Smart ? ErrorKind.OperationTimeout : ErrorKind.ToolFailed,
                $"The instance in '{instance.DataDirectory}' did not stop: {result.ErrorSummary()}", instance.DataDirectory,
                mode == StopMode.Smart
                    ? "Smart mode waits for every client to disconnect; use -Mode Fast to end their sessions, or Immediate when the server hangs."
                    : "Use -Mode Immediate when the server hangs (it then runs crash recovery at its next start).");
        return Describe(instance.DataDirectory, instance.Owner);
    }

    /// <summary>Stops the instance when it runs (fast, then immediate) and deletes the data directory.</summary>
    public static async Task RemoveAsync(string dataDirectory, bool force, string? toolPath, IOperationReporter reporter, CancellationToken ct)
    {
        var full = Path.GetFullPath(dataDirectory);
        if (RecoveryMarker.InProgress(full)) RecoveryMarker.RefuseUnfinished(full, "remove");
        // An interrupted recovery may have stopped before PG_VERSION was written; it is still PgBackup's to remove.
        if (RecoveryMarker.Abandoned(full) && !File.Exists(Path.Combine(full, "PG_VERSION")))
        {
            reporter.Milestone($"Removing '{full}', which an interrupted recovery left ({RecoveryMarker.Owner(full)}).");
            DeleteFolder(full);
            return;
        }
        var instance = await DescribeAsync(dataDirectory, ct).ConfigureAwait(false);
        if (!force) RefuseManaged(instance, "remove");
        if (instance.State == InstanceState.Running)
        {
            try { await StopAsync(instance.DataDirectory, StopMode.Fast, TimeSpan.FromSeconds(60), toolPath, reporter, ct).ConfigureAwait(false); }
            catch (PgBackupException) { await StopAsync(instance.DataDirectory, StopMode.Immediate, TimeSpan.FromSeconds(60), toolPath, reporter, ct).ConfigureAwait(false); }
        }
        reporter.Milestone($"Removing '{instance.DataDirectory}'.");
        await WalCredentialsFile.RemoveStandbysAsync(instance.DataDirectory, reporter, ct).ConfigureAwait(false);
        if (InstalledToolUses.CanInstall(InstalledToolUses.Root))
            foreach (var removed in InstalledToolUses.ReleaseUse(InstalledToolUses.Root, InstalledToolUses.StandbyUse(instance.DataDirectory), reporter.Warning))
                reporter.Verbose($"Removed {removed}, which no server on this machine runs any more.");
        DeleteFolder(instance.DataDirectory);
    }

    private static void DeleteFolder(string directory)
    {
        try { Directory.Delete(directory, recursive: true); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new PgBackupException("RemoveFailed", ErrorKind.PermissionDenied, $"'{directory}' could not be removed: {ex.Message}", directory,
                "Check that this account may delete the folder and that no process holds files open in it.", ex);
        }
    }

    /// <summary>
    /// An error for a cluster the operating system manages (a running systemd service, or a Debian/Ubuntu registered
    /// cluster): acting on it behind the service manager's back leaves the service in a wrong state.
    /// </summary>
    private static void RefuseManaged(PgInstance instance, string verb)
    {
        var unit = instance.ProcessId is { } pid ? SystemdUnit(pid) : null;
        var manager = unit != null ? $"the systemd service {unit}" : ManagedBy(instance.DataDirectory);
        if (manager == null) return;
        var tool = unit != null ? $"systemctl {(verb == "remove" ? "stop" : verb)} {unit}"
            : verb == "remove" ? "pg_dropcluster" : $"pg_ctlcluster <version> <name> {verb}";
        throw new PgBackupException("InstanceManagedByOs", ErrorKind.InvalidOperation,
            $"'{instance.DataDirectory}' belongs to {manager}; PgBackup does not {verb} clusters the operating system manages.", instance.DataDirectory,
            $"Use {tool}{(verb == "remove" ? ", or pass -Force if it is really a throwaway copy" : "")}.");
    }

    /// <summary>The OS user to run pg_ctl as (null: this process's own user); an error when this account cannot act for the owner.</summary>
    public static string? RunAsFor(PgInstance instance)
    {
        if (OperatingSystem.IsWindows() || string.IsNullOrEmpty(instance.Owner)) return null;
        if (Environment.IsPrivilegedProcess) return instance.Owner == "root" ? null : instance.Owner;
        if (instance.Owner == Environment.UserName) return null;
        throw new PgBackupException("NotDataDirectoryOwner", ErrorKind.PermissionDenied,
            $"'{instance.DataDirectory}' belongs to '{instance.Owner}'; PostgreSQL runs only as the owner of its data directory and this account is '{Environment.UserName}'.",
            instance.DataDirectory, $"Run PgBackup as '{instance.Owner}' (or as root, which starts the server as '{instance.Owner}').");
    }

    public static PostmasterInfo? ReadPostmaster(string dataDirectory)
    {
        string[] lines;
        try { lines = File.ReadAllLines(Path.Combine(dataDirectory, "postmaster.pid")); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return null; }
        if (lines.Length < 1 || !int.TryParse(lines[0].Trim(), out var pid)) return null;
        string Line(int i) => lines.Length > i ? lines[i].Trim() : "";
        DateTimeOffset? started = long.TryParse(Line(2), out var epoch) ? DateTimeOffset.FromUnixTimeSeconds(epoch) : null;
        return new PostmasterInfo(pid, started, int.TryParse(Line(3), out var port) ? port : 0, Line(4), Line(5), Line(7));
    }

    public static bool IsAlive(int pid)
    {
        // A server that has exited but that nobody reaped yet (its parent was pg_ctl, long gone, and not every init
        // reaps at once) is a zombie: still listed, no longer running.
        if (OperatingSystem.IsLinux())
        {
            try
            {
                var stat = File.ReadAllText($"/proc/{pid}/stat");
                var state = stat[(stat.LastIndexOf(')') + 2)..].TrimStart();
                return state.Length > 0 && state[0] is not ('Z' or 'X');
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentOutOfRangeException) { return false; }
        }
        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException) { return false; }
    }

    /// <summary>An error when something already listens on the port on the loopback address (a second server there would fail to start).</summary>
    public static void EnsurePortFree(int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
        }
        catch (SocketException ex)
        {
            throw new PgBackupException("PortInUse", ErrorKind.ResourceExists, $"Port {port} is already in use on this machine: {ex.Message}", port,
                "Choose another -Port (a side instance needs a port of its own), or stop what listens there.", ex);
        }
    }

    private static readonly HashSet<int> PortsHandedOut = [];

    /// <summary>
    /// A port nothing listens on now, and one this process has not handed out before: the kernel may give a port that was
    /// just released to the next caller, and an instance that has been given a port has not necessarily bound it yet.
    /// </summary>
    public static int FreePort()
    {
        lock (PortsHandedOut)
        {
            while (true)
            {
                using var listener = new TcpListener(IPAddress.Loopback, 0);
                listener.Start();
                var port = ((IPEndPoint)listener.LocalEndpoint).Port;
                if (PortsHandedOut.Add(port)) return port;
            }
        }
    }

    /// <summary>Where a client connects: the first listen address (localhost for wildcards), or the socket folder when there is no TCP address.</summary>
    public static string ConnectHost(string listenAddresses, string socketDirectory)
    {
        var first = listenAddresses.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).FirstOrDefault();
        return first switch
        {
            null when socketDirectory.Length > 0 => socketDirectory.Split(',')[0].Trim(),
            null or "*" or "0.0.0.0" or "::" => "localhost",
            _ => first,
        };
    }

    public static string LogTail(string logFile, int lines = 15)
    {
        try { return File.Exists(logFile) ? string.Join(Environment.NewLine, File.ReadLines(logFile).TakeLast(lines)) : ""; }
        catch (IOException) { return ""; }
    }

    public static int? MajorOf(string version) => int.TryParse(Regex.Match(version ?? "", @"^\d+").Value, out var m) ? m : null;

    /// <summary>The pg_ctl of the data directory's major version; an error naming the package when only another version is installed.</summary>
    public static PgTool FindPgCtl(string version, string? toolPath, IOperationReporter reporter, object target)
    {
        var major = MajorOf(version);
        var pgCtl = new ToolLocator(toolPath).Find("pg_ctl", major, major, reporter);
        if (major != null && pgCtl.Major != major)
            throw new PgBackupException("ToolVersionMismatch", ErrorKind.NotInstalled, $"Running a PostgreSQL {major} data directory needs the PostgreSQL {major} server programs; the pg_ctl found is {pgCtl.VersionText}.", target,
                $"Install the PostgreSQL {major} server package on this machine (Debian/Ubuntu: apt-get install postgresql-{major}) or set ToolPath to its bin folder.");
        return pgCtl;
    }

    /// <summary>pg_controldata's fields ("Database cluster state", "Minimum recovery ending location"...) for a stopped data directory.</summary>
    public static async Task<IReadOnlyDictionary<string, string>> ReadControlDataAsync(string dataDirectory, string version, string? toolPath, IOperationReporter reporter, CancellationToken ct)
    {
        var major = MajorOf(version);
        var tool = new ToolLocator(toolPath).Find("pg_controldata", major, major, reporter);
        var result = await ToolRunner.RunAsync(tool, [dataDirectory], new Dictionary<string, string?> { ["PGDATA"] = null, ["LC_ALL"] = "C" }, null, ct, captureOutput: true).ConfigureAwait(false);
        return result.StandardOutput.Split('\n').Select(l => l.Split(':', 2)).Where(p => p.Length == 2)
            .GroupBy(p => p[0].Trim()).ToDictionary(g => g.Key, g => g.First()[1].Trim());
    }

    internal static readonly IReadOnlyDictionary<string, string?> NoPgData = new Dictionary<string, string?> { ["PGDATA"] = null };

    internal static string Seconds(TimeSpan timeout) => ((int)Math.Max(1, Math.Ceiling(timeout.TotalSeconds))).ToString(CultureInfo.InvariantCulture);

    private static PgTool FindPgCtl(PgInstance instance, string? toolPath, IOperationReporter reporter) => FindPgCtl(instance.Version, toolPath, reporter, instance.DataDirectory);

    private static void EnsureDataDirectory(string directory)
    {
        if (!Directory.Exists(directory))
            throw new PgBackupException("DataDirectoryNotFound", ErrorKind.ObjectNotFound, $"The data directory '{directory}' does not exist.", directory,
                "Check the path given to -DataDirectory.");
        if (!File.Exists(Path.Combine(directory, "PG_VERSION")))
            throw new PgBackupException("NotADataDirectory", ErrorKind.InvalidArgument, $"'{directory}' is not a PostgreSQL data directory (it has no PG_VERSION file).", directory,
                "Pass the folder that holds PG_VERSION, global/ and base/ (SHOW data_directory on the server names it).");
    }

    /// <summary>The port the configuration files set (the last one wins, postgresql.auto.conf last), or null.</summary>
    private static int? ConfiguredPort(string directory)
    {
        int? port = null;
        foreach (var file in new[] { "postgresql.conf", "postgresql.auto.conf" })
        {
            var path = Path.Combine(directory, file);
            if (!File.Exists(path)) continue;
            foreach (var line in File.ReadLines(path))
                if (Regex.Match(line, @"^\s*port\s*=?\s*'?(\d+)'?") is { Success: true } m) port = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        }
        return port;
    }

    /// <summary>The systemd service that runs the postmaster, if any: restarting it behind systemd's back would orphan it.</summary>
    internal static string? SystemdUnit(int postmaster)
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            foreach (var line in File.ReadLines($"/proc/{postmaster}/cgroup"))
            {
                var path = line[(line.LastIndexOf(':') + 1)..];
                if (!path.Contains("/system.slice/", StringComparison.Ordinal)) continue;
                var unit = path.Split('/').LastOrDefault(p => p.EndsWith(".service", StringComparison.Ordinal));
                if (unit != null && IsMainProcessOf(unit, postmaster)) return unit;
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>
    /// A server started by hand inside some other service (a CI runner, a shell in a unit) lives in that service's cgroup
    /// too; systemd manages it only when the postmaster is the unit's main process.
    /// </summary>
    private static bool IsMainProcessOf(string unit, int postmaster)
    {
        try
        {
            var psi = new System.Diagnostics.ProcessStartInfo("systemctl") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { "show", "--property=MainPID", "--value", unit }) psi.ArgumentList.Add(a);
            using var p = System.Diagnostics.Process.Start(psi)!;
            var output = p.StandardOutput.ReadToEnd();
            if (!p.WaitForExit(5000) || p.ExitCode != 0) return unit.Contains("postgres", StringComparison.OrdinalIgnoreCase);
            return int.TryParse(output.Trim(), out var main) && main == postmaster;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return unit.Contains("postgres", StringComparison.OrdinalIgnoreCase);
        }
    }

    /// <summary>Debian and Ubuntu register clusters in /etc/postgresql/&lt;version&gt;/&lt;name&gt;; such a cluster is pg_ctlcluster's to manage.</summary>
    private static string? ManagedBy(string directory)
    {
        if (!Directory.Exists("/etc/postgresql")) return null;
        foreach (var conf in Directory.EnumerateFiles("/etc/postgresql", "postgresql.conf", SearchOption.AllDirectories))
        {
            try
            {
                foreach (var line in File.ReadLines(conf))
                    if (Regex.Match(line, @"^\s*data_directory\s*=\s*'([^']+)'") is { Success: true } m &&
                        string.Equals(Path.GetFullPath(m.Groups[1].Value).TrimEnd('/'), directory.TrimEnd('/'), StringComparison.Ordinal))
                        return $"the Debian cluster {Path.GetRelativePath("/etc/postgresql", Path.GetDirectoryName(conf)!)} (pg_ctlcluster)";
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { }
        }
        return null;
    }
}
