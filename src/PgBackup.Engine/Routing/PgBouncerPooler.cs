using System.Diagnostics;
using System.Text.RegularExpressions;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Routing;

/// <summary>A PgBouncer to move with a switchover: its admin console, and its pgbouncer.ini when it runs on this machine.</summary>
public sealed record PgBouncerRequest(ConnectionTarget Admin, string? ConfigPath);

/// <summary>
/// One PgBouncer in front of a primary, moved by a switchover so that its clients wait instead of failing: the pooler's
/// databases that point at the old primary are paused (PAUSE lets running transactions finish and holds new queries,
/// bounded by a timeout), pointed at the new primary (their [databases] entries in pgbouncer.ini rewritten, then RELOAD)
/// and resumed. However the switchover ends, the pooler is resumed toward whichever server is the primary then: a
/// PgBouncer is never left paused. The admin console speaks only the simple query protocol, so it is driven with psql.
/// </summary>
public sealed class PgBouncerPooler
{
    private readonly PgBouncerRequest _request;
    private readonly PgTool _psql;
    private readonly Stopwatch _paused = new();
    private readonly List<string> _pausedDatabases = [];
    private ConnectionTarget _pointsTo;

    private PgBouncerPooler(PgBouncerRequest request, PgTool psql, IReadOnlyList<string> databases, ConnectionTarget pointsTo)
    {
        _request = request;
        _psql = psql;
        Databases = databases;
        _pointsTo = pointsTo;
    }

    /// <summary>The pooler's databases that point at the old primary: the ones paused, moved and resumed.</summary>
    public IReadOnlyList<string> Databases { get; }
    public string Display => _request.Admin.Display;
    /// <summary>Whether PgBackup rewrites its pgbouncer.ini; otherwise only pause and resume are PgBackup's.</summary>
    public bool HasConfig => _request.ConfigPath != null;

    /// <summary>
    /// Reads the pooler's databases before anything changes: some must point at <paramref name="oldPrimary"/>, and when a
    /// configuration file is given, each of them must be in its [databases] section, so the move can be written.
    /// </summary>
    public static async Task<PgBouncerPooler> CheckAsync(PgBouncerRequest request, ConnectionTarget oldPrimary, string? toolPath, IOperationReporter reporter, CancellationToken ct)
    {
        var psql = new ToolLocator(toolPath).Find("psql", null, null, reporter);
        var rows = await AdminAsync(request, psql, "SHOW DATABASES", ct).ConfigureAwait(false);
        var databases = rows.Select(r => r.Split('|')).Where(f => f.Length >= 3 && f[0] != "pgbouncer" && PointsAt(f[1], f[2], oldPrimary)).Select(f => f[0]).ToList();
        if (databases.Count == 0)
            throw new PgBackupException("PgBouncerNotInFront", ErrorKind.InvalidArgument,
                $"No database of the PgBouncer at {request.Admin.Display} points at {oldPrimary.Display}, so it has nothing to move. Nothing was changed.", request.Admin.Display,
                "Give the admin console of the PgBouncer that sends clients to this primary (SHOW DATABASES there lists its host and port).");
        if (request.ConfigPath != null)
        {
            if (!File.Exists(request.ConfigPath))
                throw new PgBackupException("PgBouncerConfigNotFound", ErrorKind.ObjectNotFound, $"'{request.ConfigPath}' does not exist. Nothing was changed.", request.ConfigPath,
                    "Give the pgbouncer.ini this PgBouncer runs with (SHOW CONFIG on its admin console names it as conffile).");
            var listed = DatabaseEntries(await File.ReadAllLinesAsync(request.ConfigPath, ct).ConfigureAwait(false)).Select(e => e.Name).ToHashSet(StringComparer.Ordinal);
            if (databases.FirstOrDefault(d => !listed.Contains(d) && !listed.Contains("*")) is { } missing)
                throw new PgBackupException("PgBouncerConfigMismatch", ErrorKind.InvalidArgument,
                    $"The PgBouncer at {request.Admin.Display} serves the database '{missing}' from {oldPrimary.Display}, but '{request.ConfigPath}' has no entry for it in [databases]. Nothing was changed.",
                    request.ConfigPath, "Give the pgbouncer.ini this PgBouncer was started with.");
        }
        else reporter.Verbose($"No configuration file for the PgBouncer at {request.Admin.Display}: its databases are paused and resumed, and -RouteScript must point them at the new primary.");
        return new PgBouncerPooler(request, psql, databases, oldPrimary);
    }

    /// <summary>PAUSE every database that points at the old primary, each bounded by <paramref name="timeout"/>; on failure the ones paused are resumed.</summary>
    public async Task PauseAsync(TimeSpan timeout, IOperationReporter reporter, CancellationToken ct)
    {
        _paused.Start();
        try
        {
            foreach (var database in Databases)
            {
                using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
                limit.CancelAfter(timeout);
                try { await QueryAsync("PAUSE " + Identifier(database), limit.Token).ConfigureAwait(false); }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    // PgBouncer goes on pausing after the admin session is gone: what was asked is undone.
                    _pausedDatabases.Add(database);
                    throw new PgBackupException("PgBouncerPauseTimeout", ErrorKind.OperationTimeout,
                        $"The PgBouncer at {Display} did not finish pausing '{database}' within {timeout}: a transaction there is still running. The pooler was resumed and nothing else was changed.",
                        Display, "Wait until long transactions have finished (pg_stat_activity on the primary), or raise -Timeout, and switch over again.");
                }
                _pausedDatabases.Add(database);
                reporter.Verbose($"PgBouncer at {Display}: '{database}' paused");
            }
        }
        catch
        {
            await ResumeAsync(null, reporter, CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Points the paused databases at <paramref name="primary"/> (when it is not the server they point at already and a
    /// configuration file was given) and resumes them. Never throws: a pooler that cannot be resumed is reported in the result.
    /// </summary>
    public async Task<PoolerSwitch> ResumeAsync(ConnectionTarget? primary, IOperationReporter reporter, CancellationToken ct)
    {
        string? problem = null;
        if (primary != null && !SameServer(primary, _pointsTo) && _request.ConfigPath != null && _pausedDatabases.Count > 0)
        {
            try
            {
                await RewriteConfigAsync(primary, ct).ConfigureAwait(false);
                await QueryAsync("RELOAD", ct).ConfigureAwait(false);
                _pointsTo = primary;
                reporter.Verbose($"PgBouncer at {Display}: {string.Join(", ", _pausedDatabases)} now point at {primary.Display}");
            }
            catch (Exception ex) when (ex is PgBackupException or IOException or UnauthorizedAccessException)
            {
                problem = $"it could not be pointed at {primary.Display}: {ex.Message}";
            }
        }
        var resumed = true;
        foreach (var database in _pausedDatabases)
        {
            try { await QueryAsync("RESUME " + Identifier(database), ct).ConfigureAwait(false); }
            catch (PgBackupException ex) when (ex.Message.Contains("is not paused", StringComparison.Ordinal)) { }
            catch (PgBackupException ex)
            {
                resumed = false;
                problem = (problem == null ? "" : problem + "; ") + $"'{database}' could not be resumed: {ex.Message}";
            }
        }
        _paused.Stop();
        if (problem != null) reporter.Warning($"The PgBouncer at {Display}: {problem}. Check it on its admin console (SHOW DATABASES; RESUME).");
        return new PoolerSwitch
        {
            Pooler = Display, Databases = [.. _pausedDatabases], ConfigPath = _request.ConfigPath, PointsTo = _pointsTo.Display, Resumed = resumed,
            ClientsWaited = _paused.Elapsed, Problem = problem,
        };
    }

    /// <summary>Rewrites host and port of every [databases] entry that points at the old primary, keeping everything else of the file.</summary>
    private async Task RewriteConfigAsync(ConnectionTarget primary, CancellationToken ct)
    {
        var path = _request.ConfigPath!;
        var lines = await File.ReadAllLinesAsync(path, ct).ConfigureAwait(false);
        foreach (var entry in DatabaseEntries(lines))
        {
            var host = entry.Settings.FirstOrDefault(p => p.Key == "host").Value ?? "";
            var port = entry.Settings.FirstOrDefault(p => p.Key == "port").Value ?? "5432";
            if (!PointsAt(host, port, _pointsTo)) continue;
            var rewritten = entry.Settings.Where(p => p.Key is not ("host" or "port")).Prepend(new("port", primary.Port.ToString(System.Globalization.CultureInfo.InvariantCulture))).Prepend(new("host", primary.Host));
            lines[entry.Line] = entry.RawName + " = " + ConnInfo.Format(rewritten);
        }
        // Written in place, so the file keeps its owner and mode (PgBouncer runs as another user).
        await File.WriteAllLinesAsync(path, lines, ct).ConfigureAwait(false);
    }

    private static readonly Regex DatabaseEntry = new(@"^\s*(?<name>[^=\s]+|""[^""]+"")\s*=\s*(?<conninfo>.*)$", RegexOptions.Compiled);

    /// <summary>One entry of pgbouncer.ini's [databases] section: its line, its name as written and unquoted, and its connection settings.</summary>
    private sealed record DatabaseLine(int Line, string RawName, IReadOnlyList<KeyValuePair<string, string>> Settings)
    {
        public string Name => RawName.Trim('"');
    }

    /// <summary>The entries of the [databases] section, skipping comments, blank lines and every other section.</summary>
    private static IEnumerable<DatabaseLine> DatabaseEntries(IReadOnlyList<string> lines)
    {
        var section = "";
        for (var i = 0; i < lines.Count; i++)
        {
            var line = lines[i].Trim();
            if (line.StartsWith('[') && line.EndsWith(']')) { section = line[1..^1].Trim().ToLowerInvariant(); continue; }
            if (section == "databases" && line.Length > 0 && line[0] is not (';' or '#') && DatabaseEntry.Match(lines[i]) is { Success: true } entry)
                yield return new DatabaseLine(i, entry.Groups["name"].Value, ConnInfo.Parse(entry.Groups["conninfo"].Value));
        }
    }

    /// <summary>Whether a PgBouncer database's host and port are <paramref name="server"/>'s; the loopback names count as one.</summary>
    private static bool PointsAt(string host, string port, ConnectionTarget server) =>
        port == server.Port.ToString(System.Globalization.CultureInfo.InvariantCulture) &&
        (string.Equals(host, server.Host, StringComparison.OrdinalIgnoreCase) || (IsLoopback(host) && IsLoopback(server.Host)));

    private static bool SameServer(ConnectionTarget a, ConnectionTarget b) => PointsAt(a.Host, a.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), b);

    private static bool IsLoopback(string host) => host is "localhost" or "127.0.0.1" or "::1" || host.StartsWith('/');

    private static string Identifier(string name) => "\"" + name.Replace("\"", "\"\"") + "\"";

    /// <summary>One command on the admin console; the rows of its answer, fields separated by '|'.</summary>
    private Task<List<string>> QueryAsync(string command, CancellationToken ct) => AdminAsync(_request, _psql, command, ct);

    private static async Task<List<string>> AdminAsync(PgBouncerRequest request, PgTool psql, string command, CancellationToken ct)
    {
        var admin = request.Admin with { Database = "pgbouncer" };
        var result = await ToolRunner.RunAsync(psql, ["-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "--no-password", "-c", command], admin.ToolEnvironment(), null, ct,
            captureOutput: true).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new PgBackupException("PgBouncerFailed", ErrorKind.ToolFailed, $"The PgBouncer at {request.Admin.Display} refused '{command}': {result.ErrorSummary()}", request.Admin.Display,
                "Check that the user is in admin_users of pgbouncer.ini and that its admin console is reachable (psql -d pgbouncer).");
        return [.. result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
    }
}
