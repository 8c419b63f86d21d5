using System.Diagnostics;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Patroni;
using PgBackup.Engine.Replication;
using PgBackup.Engine.Tools;
using PgBackup.Engine.Instance;

namespace PgBackup.Engine.Failover;

public sealed record RejoinRequest
{
    /// <summary>The stopped old primary's data directory on this machine.</summary>
    public required string DataDirectory { get; init; }
    /// <summary>The new primary to follow.</summary>
    public required ConnectionTarget Primary { get; init; }
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(120);
    public string? ToolPath { get; init; }
}

/// <summary>
/// Join-PgStandby: turns a failed or demoted primary into a standby of the new primary. pg_rewind undoes whatever it
/// wrote after the timelines diverged (and finishes its crash recovery first), writes standby.signal and
/// primary_conninfo; the server is then started as the data directory's owner and checked to stream.
/// </summary>
public static class RejoinService
{
    public static async Task<StandbyStatus> RejoinAsync(RejoinRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var directory = Path.GetFullPath(request.DataDirectory);
        if (!File.Exists(Path.Combine(directory, "PG_VERSION")))
            throw new PgBackupException("NotADataDirectory", ErrorKind.ObjectNotFound, $"'{directory}' is not a PostgreSQL data directory (no PG_VERSION).", directory,
                "Give the data directory of the old primary on this machine.");
        var pid = Path.Combine(directory, "postmaster.pid");
        if (File.Exists(pid) && int.TryParse(File.ReadLines(pid).FirstOrDefault(), out var postmaster) && IsRunning(postmaster))
            throw new PgBackupException("DataDirectoryInUse", ErrorKind.ResourceExists, $"The server in '{directory}' is running (pid {postmaster}); it must be stopped before it can be rewound.", directory,
                "Stop it first (pg_ctl stop -D <data directory> -m fast). If it still accepts writes, you have two primaries: fence it now.");

        ServerInfo info;
        await using (var connection = await ServerSession.OpenAsync(request.Primary, ct).ConfigureAwait(false))
        {
            if (await PatroniClient.ManagesAsync(connection, directory, ct).ConfigureAwait(false))
                throw PatroniClient.Refusal(request.Primary.Display, "rejoin a member",
                    "Let Patroni rejoin the former leader: start Patroni on that member again (with use_pg_rewind: true it rewinds it), or run patronictl reinit <scope> <member>.");
            info = await ServerSession.GetInfoAsync(connection, ct).ConfigureAwait(false);
            if (await ServerSession.ScalarAsync<bool>(connection, "select pg_is_in_recovery()", ct).ConfigureAwait(false))
                throw new PgBackupException("NotAPrimary", ErrorKind.InvalidOperation, $"{request.Primary.Display} is a standby; the old primary must follow the new primary.", request.Primary.Display,
                    "Give the promoted server as -Server.");
            // Right after a promotion the control file still names the old timeline until a checkpoint; pg_rewind reads it
            // and would wrongly find nothing to rewind.
            await ServerSession.ExecuteAsync(connection, "checkpoint", request.Primary, ct).ConfigureAwait(false);
        }
        var locator = new ToolLocator(request.ToolPath);
        var rewind = locator.Find("pg_rewind", info.Major, info.Major, reporter);
        var pgCtl = locator.Find("pg_ctl", info.Major, info.Major, reporter);
        // As root, pg_rewind and the server run as whoever owns the data directory (postgres unless a service account was chosen).
        var owner = Environment.IsPrivilegedProcess && !OperatingSystem.IsWindows()
            ? await DataDirectoryOwner.FindAsync(directory, ct).ConfigureAwait(false) is { } found && found != "root" ? found : InstanceControl.DefaultServiceUser
            : null;
        var activity = $"Rejoining {directory} as a standby of {request.Primary.Display}";

        // pg_rewind copies the source's configuration files too; the old primary keeps its own port, sockets and access rules.
        var ownConfig = ConfigFiles.Where(f => File.Exists(Path.Combine(directory, f))).ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(directory, f)));
        reporter.Progress(activity, "pg_rewind", 10);
        var source = $"host={ConnectionTarget.QuoteConnInfoValue(request.Primary.Host)} port={request.Primary.Port} user={ConnectionTarget.QuoteConnInfoValue(request.Primary.User)} dbname=postgres";
        var result = await ToolRunner.RunAsUserAsync(rewind, owner, ["--target-pgdata=" + directory, "--source-server=" + source, "--write-recovery-conf", "--progress"],
            new Dictionary<string, string?> { ["PGPASSWORD"] = request.Primary.Password, ["PGDATA"] = null, ["PGSSLMODE"] = request.Primary.SslMode, ["PGSSLROOTCERT"] = request.Primary.SslRootCert },
            reporter.Verbose, ct, reporter).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new PgBackupException("RewindFailed", ErrorKind.ToolFailed, $"pg_rewind of '{directory}' from {request.Primary.Display} failed: {result.ErrorSummary()}", directory,
                "pg_rewind needs data checksums or wal_log_hints = on in the old primary, and the WAL back to the last common checkpoint on both servers (wal_keep_size, or a WAL archive); otherwise make a new standby with New-PgStandby -Force.");

        foreach (var (file, content) in ownConfig) File.WriteAllBytes(Path.Combine(directory, file), content);
        // pg_rewind's primary_conninfo is its source string, which has no password: the standby needs the same login we used,
        // from a pass file outside the data directory.
        var conninfo = await StandbyPassFile.ConnInfoAsync(directory, owner ?? Environment.UserName, request.Primary, null, ct).ConfigureAwait(false);
        StandbyPassFile.SetPrimaryConnInfo(directory, $"Added by Join-PgStandby: this server follows {request.Primary.Display}", conninfo);

        reporter.Progress(activity, "Starting as a standby", 60);
        var log = Path.Combine(directory, "pgbackup-rejoin.log");
        var start = await ToolRunner.RunAsUserAsync(pgCtl, owner, ["start", "-D", directory, "-l", log, "-w", "-t", ((int)request.Timeout.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture)],
            new Dictionary<string, string?> { ["PGDATA"] = null }, reporter.Verbose, ct, reporter).ConfigureAwait(false);
        if (!start.Succeeded)
            throw new PgBackupException("StandbyStartFailed", ErrorKind.ToolFailed,
                $"The rewound server in '{directory}' did not start: {start.ErrorSummary()}{Environment.NewLine}{(File.Exists(log) ? string.Join(Environment.NewLine, File.ReadLines(log).TakeLast(8)) : "")}", directory, $"Read {log}.");

        var port = ReadPort(directory);
        var standby = request.Primary with { Host = "localhost", Port = port };
        var deadline = DateTime.UtcNow + request.Timeout;
        while (true)
        {
            var snapshot = await ReplicationMonitor.ReadAsync(standby, false, ct).ConfigureAwait(false);
            if (snapshot.Standby is { ReceiverStatus: "streaming" } streaming)
            {
                reporter.ProgressCompleted(activity);
                reporter.Milestone($"{directory} (port {port}) streams from {request.Primary.Display}.");
                return streaming;
            }
            if (DateTime.UtcNow > deadline)
                throw new PgBackupException("StandbyNotStreaming", ErrorKind.OperationTimeout,
                    $"The rewound server on port {port} does not stream from {request.Primary.Display}:{Environment.NewLine}{string.Join(Environment.NewLine, File.ReadLines(log).TakeLast(8))}" +
                    $"{Environment.NewLine}pg_rewind said: {string.Join(" | ", result.ErrorLines.TakeLast(12))}", directory,
                    $"Read {log}; a standby that received WAL the new primary never had needs pg_rewind to have run cleanly.");
            await Task.Delay(200, ct).ConfigureAwait(false);
        }
    }

    private static readonly string[] ConfigFiles = ["postgresql.conf", "postgresql.auto.conf", "pg_hba.conf", "pg_ident.conf"];

    private static bool IsRunning(int pid)
    {
        try { return !Process.GetProcessById(pid).HasExited; }
        catch (ArgumentException) { return false; }
    }

    /// <summary>The port the server listens on: the last "port =" in postgresql.auto.conf or postgresql.conf, else 5432.</summary>
    private static int ReadPort(string directory)
    {
        foreach (var file in new[] { "postgresql.auto.conf", "postgresql.conf" })
        {
            var path = Path.Combine(directory, file);
            if (!File.Exists(path)) continue;
            var last = File.ReadLines(path).Select(l => System.Text.RegularExpressions.Regex.Match(l, @"^\s*port\s*=\s*'?(\d+)")).LastOrDefault(m => m.Success);
            if (last != null) return int.Parse(last.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        }
        return 5432;
    }
}
