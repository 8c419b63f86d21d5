using System.Diagnostics;
using System.Globalization;
using Npgsql;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Wal;
using PgBackup.Engine.Instance;

namespace PgBackup.Engine.Recovery;

public sealed record DrillRequest
{
    public required ConnectionTarget Source { get; init; }
    public required RepositoryAddress Repository { get; init; }
    /// <summary>The keys of an encrypted repository.</summary>
    public Engine.Repository.Encryption.RepositoryKeys Keys { get; init; } = Engine.Repository.Encryption.RepositoryKeys.None;
    public required WalArchiveTool WalTool { get; init; }
    public TimeSpan? RtoObjective { get; init; }
    public TimeSpan? RpoObjective { get; init; }
    /// <summary>Queries run on the source and on the recovered instance; their results must match. Use data that does not change.</summary>
    public IReadOnlyList<string> Queries { get; init; } = [];
    public string QueryDatabase { get; init; } = "postgres";
    /// <summary>Where to recover; a new folder under the temp path when null.</summary>
    public string? DataDirectory { get; init; }
    public int? Port { get; init; }
    public bool Keep { get; init; }
    public string? ReportPath { get; init; }
    public string? ToolPath { get; init; }
}

/// <summary>
/// A recovery drill: recovers the newest base backup of a cluster to the newest archived point on a throwaway instance,
/// measures the recovery time (RTO) and the recovery point (RPO) against their objectives, checks the recovered instance,
/// and removes it. A drill that fails returns a report that says why; only bad input is an error.
/// </summary>
public static class RecoveryDrill
{
    private const string DrillFolderPrefix = "pgbackup-drill-";

    /// <summary>
    /// The throwaway instances of drills whose process was killed before it could remove them: their server may still
    /// run, so they are stopped and removed before a new drill starts one more.
    /// </summary>
    private static async Task RemoveAbandonedDrillsAsync(string? toolPath, IOperationReporter reporter, CancellationToken ct)
    {
        foreach (var folder in Directory.EnumerateDirectories(Path.GetTempPath(), DrillFolderPrefix + "*").Where(RecoveryMarker.Abandoned).ToList())
        {
            try
            {
                reporter.Milestone($"Removing the instance of an interrupted drill in '{folder}' ({RecoveryMarker.Owner(folder)}).");
                await InstanceControl.RemoveAsync(folder, force: true, toolPath, reporter, ct).ConfigureAwait(false);
            }
            catch (PgBackupException ex) { reporter.Warning($"The instance of an interrupted drill in '{folder}' could not be removed: {ex.Message}"); }
        }
    }

    public static async Task<DrillReport> RunAsync(DrillRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        var report = new DrillReport
        {
            Server = request.Source.Host,
            Port = request.Source.Port,
            Repository = request.Repository.Display,
            RtoObjective = request.RtoObjective,
            RpoObjective = request.RpoObjective,
            StartTime = DateTimeOffset.UtcNow,
        };
        var checks = new List<DrillCheck>();
        var activity = $"Recovery drill of {request.Source.Display}";

        reporter.Progress(activity, "Reading the source cluster", 0);
        var source = await ReadSourceAsync(request, ct).ConfigureAwait(false);
        report.SystemIdentifier = source.SystemIdentifier;
        report.SourceLsn = source.Lsn;
        report.SourceNewestCommit = source.NewestCommit ?? source.Now;
        if (source.NewestCommit == null && request.RpoObjective != null)
            reporter.Warning($"track_commit_timestamp is off on {request.Source.Display}, so the RPO is measured as an upper bound (from the drill's start); an idle server can fail the objective it meets. Turn it on (ALTER SYSTEM SET track_commit_timestamp = on, then restart) for an exact RPO.");
        report.RpoMethod = source.NewestCommit != null ? "exact (newest commit timestamp on the source)"
            : "upper bound (track_commit_timestamp is off on the source, so the drill's start stands in for its newest commit)";

        var backup = (await BackupCatalog.ListAsync(request.Repository, new CatalogFilter(Kind: BackupKind.Base), reporter.Warning, null, ct).ConfigureAwait(false)).OfType<BaseBackup>()
            .Where(b => b.SystemIdentifier == source.SystemIdentifier && b.VerificationState != VerificationState.Failed)
            .MaxBy(b => b.StopLsn) ?? throw new PgBackupException("NoBaseBackup", ErrorKind.ObjectNotFound,
                $"The repository '{request.Repository}' holds no base backup of {request.Source.Display} (system identifier {source.SystemIdentifier}).", request.Repository,
                "Take one with Start-PgBaseBackup -Server ... -Repository ..., with WAL archiving enabled (Enable-PgWalArchiving), then run the drill.");
        report.BackupId = backup.Id;
        report.BackupPath = backup.Path;
        report.BackupTime = backup.StartTime;

        if (request.DataDirectory == null) await RemoveAbandonedDrillsAsync(request.ToolPath, reporter, ct).ConfigureAwait(false);
        var directory = Path.GetFullPath(request.DataDirectory ?? Path.Combine(Path.GetTempPath(), DrillFolderPrefix + Guid.NewGuid().ToString("N")[..10]));
        var port = request.Port ?? InstanceControl.FreePort();
        report.DataDirectory = directory;
        report.RecoveredPort = port;
        RecoveryResult? recovered = null;
        RecoverySource? local = null;
        try
        {
            reporter.Milestone($"Drill: recovering base backup {backup.Id} of {request.Source.Display} to the newest archived point in '{directory}'.");
            var rtoClock = Stopwatch.StartNew();
            try
            {
                // From blob storage, the download of the backup and its WAL is part of the recovery time.
                local = await RecoverySource.PrepareAsync(backup, request.Repository.IsBlob ? request.Repository : null, request.Repository, null, null, null,
                    RecoveryTarget.EndOfArchive(), request.Keys, reporter, ct).ConfigureAwait(false);
                var plan = await RecoveryPlanner.PlanAsync(new RecoveryPlanRequest
                {
                    Candidates = local.Candidates, BackupChosen = true, Target = RecoveryTarget.EndOfArchive(), Repository = local.Repository, ToolPath = request.ToolPath,
                }, reporter, ct).ConfigureAwait(false);
                var connection = request.Source with { Host = "localhost", Port = port, Database = "postgres", SslMode = null, SslRootCert = null };
                recovered = await PointInTimeRecovery.RunAsync(new PointInTimeRequest
                {
                    Plan = plan, DataDirectory = directory, Port = port, Connection = connection, WalTool = request.WalTool, ToolPath = request.ToolPath, OpenArchive = local.OpenArchive,
                }, reporter, ct).ConfigureAwait(false);
                report.Rto = rtoClock.Elapsed;
                checks.Add(Check("Recovery", true, $"base backup {backup.Id} recovered to {recovered.ReachedLsn} on timeline {recovered.Timeline} (restore {Seconds(recovered.RestoreDuration)}, replay {Seconds(recovered.ReplayDuration)})"));
            }
            catch (PgBackupException ex)
            {
                checks.Add(Check("Recovery", false, $"{ex.ErrorId}: {ex.Message}"));
            }

            if (recovered != null)
            {
                report.RecoveredLsn = recovered.ReachedLsn;
                report.RecoveredTime = recovered.ReachedTime;
                MeasureRpo(report, source, backup, recovered);
                reporter.Progress(activity, "Checking the recovered instance", 90);
                var target = request.Source with { Host = "localhost", Port = port, SslMode = null, SslRootCert = null };
                await CheckRecoveredAsync(target, source, request, checks, ct).ConfigureAwait(false);
            }
        }
        finally
        {
            local?.Dispose();
            report.Kept = request.Keep && recovered != null;
            // A recovery that failed has removed what it wrote already; only a recovered instance is left to remove.
            if (!report.Kept && File.Exists(Path.Combine(directory, "PG_VERSION")))
            {
                try { await InstanceControl.RemoveAsync(directory, force: true, request.ToolPath, reporter, CancellationToken.None).ConfigureAwait(false); }
                catch (PgBackupException ex) { reporter.Warning($"The drill's instance in '{directory}' could not be removed: {ex.Message}"); }
            }
            reporter.ProgressCompleted(activity);
        }

        if (request.RtoObjective is { } rto)
        {
            report.RtoMet = report.Rto is { } measured && measured <= rto;
            checks.Add(Check("RTO objective", report.RtoMet.Value, report.Rto is { } m ? $"recovered in {Format(m)}; objective {Format(rto)}" : "nothing was recovered"));
        }
        if (request.RpoObjective is { } rpo)
        {
            report.RpoMet = report.Rpo is { } measured && measured <= rpo;
            checks.Add(Check("RPO objective", report.RpoMet.Value, report.Rpo is { } m ? $"{Format(m)} of committed work not recovered ({report.RpoBytes} bytes of WAL); objective {Format(rpo)}" : "nothing was recovered"));
        }
        report.Checks = [.. checks];
        report.Failures = checks.Where(c => !c.Passed).Select(c => $"{c.Name}: {c.Detail}").ToArray();
        report.Passed = report.Failures.Length == 0;
        report.EndTime = DateTimeOffset.UtcNow;
        report.Duration = clock.Elapsed;
        if (request.ReportPath != null)
        {
            // The drill has run; a report that cannot be written must not lose its result.
            try
            {
                DrillReportWriter.Write(report, request.ReportPath);
                report.ReportPath = Path.GetFullPath(request.ReportPath);
            }
            catch (PgBackupException ex) { reporter.Warning(ex.Message + " " + ex.RecommendedAction); }
        }
        reporter.Milestone($"Drill of {request.Source.Display}: {(report.Passed ? "passed" : "FAILED")}; RTO {(report.Rto is { } r ? Format(r) : "-")}, RPO {(report.Rpo is { } p ? Format(p) : "-")}.");
        return report;
    }

    private sealed record SourceState(string SystemIdentifier, Lsn Lsn, DateTimeOffset Now, DateTimeOffset? NewestCommit, IReadOnlyList<string> Databases, IReadOnlyList<string?> QueryResults);

    private static async Task<SourceState> ReadSourceAsync(DrillRequest request, CancellationToken ct)
    {
        await using var connection = await ServerSession.OpenAsync(request.Source, ct).ConfigureAwait(false);
        try
        {
            string?[] facts;
            await using (var command = new NpgsqlCommand("""
                select (select system_identifier::text from pg_control_system()),
                       (case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end)::text,
                       to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                       case when current_setting('track_commit_timestamp')::bool
                            then to_char((select timestamp from pg_last_committed_xact()) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') end
                """, connection))
            await using (var reader = await command.ExecuteReaderAsync(ct).ConfigureAwait(false))
            {
                await reader.ReadAsync(ct).ConfigureAwait(false);
                facts = Enumerable.Range(0, 4).Select(i => reader.IsDBNull(i) ? null : reader.GetString(i)).ToArray();
            }
            var databases = await ServerSession.ListDatabasesAsync(request.Source, ct).ConfigureAwait(false);
            var results = new List<string?>();
            if (request.Queries.Count > 0)
            {
                await using var queries = await ServerSession.OpenAsync(request.Source.WithDatabase(request.QueryDatabase), ct).ConfigureAwait(false);
                foreach (var sql in request.Queries) results.Add(await RunQueryAsync(queries, sql, ct).ConfigureAwait(false));
            }
            return new SourceState(facts[0]!, Lsn.Parse(facts[1]!), ParseUtc(facts[2]!)!.Value, facts[3] is { } t ? ParseUtc(t) : null, databases, results);
        }
        catch (NpgsqlException ex) when (!ct.IsCancellationRequested) { throw ServerSession.Translate(ex, request.Source); }
    }

    /// <summary>Newest commit on the source minus newest commit recovered; no commit since the backup counts from the backup's end.</summary>
    private static void MeasureRpo(DrillReport report, SourceState source, BaseBackup backup, RecoveryResult recovered)
    {
        var recoveredUpTo = recovered.ReachedTime ?? RecoveryPlanner.StopTime(backup);
        var sourceNewest = source.NewestCommit ?? source.Now;
        report.Rpo = sourceNewest > recoveredUpTo ? sourceNewest - recoveredUpTo : TimeSpan.Zero;
        report.RpoBytes = recovered.ReachedLsn is { } reached ? Math.Max(0, source.Lsn - reached) : null;
    }

    private static async Task CheckRecoveredAsync(ConnectionTarget target, SourceState source, DrillRequest request, List<DrillCheck> checks, CancellationToken ct)
    {
        try
        {
            await using (var connection = await ServerSession.OpenAsync(target.WithDatabase("postgres"), ct).ConfigureAwait(false))
            {
                // Writable means promoted and consistent: a write that is rolled back proves it without leaving anything behind.
                await using var transaction = await connection.BeginTransactionAsync(ct).ConfigureAwait(false);
                await new NpgsqlCommand("create temporary table pgbackup_drill_probe(id int); insert into pgbackup_drill_probe values (1)", connection, transaction).ExecuteNonQueryAsync(ct).ConfigureAwait(false);
                await transaction.RollbackAsync(ct).ConfigureAwait(false);
                checks.Add(Check("Accepts writes", true, "the recovered instance is promoted and accepted a write (rolled back)"));
            }
            var recoveredDatabases = await ServerSession.ListDatabasesAsync(target, ct).ConfigureAwait(false);
            var missing = source.Databases.Except(recoveredDatabases, StringComparer.Ordinal).ToList();
            checks.Add(Check("Databases", missing.Count == 0, missing.Count == 0
                ? $"all {source.Databases.Count} databases of the source are there"
                : $"missing from the recovered instance: {string.Join(", ", missing)} (created after the newest archived point, or lost)"));
            var unreadable = new List<string>();
            foreach (var database in recoveredDatabases)
            {
                try
                {
                    await using var connection = await ServerSession.OpenAsync(target.WithDatabase(database), ct).ConfigureAwait(false);
                    await ServerSession.ScalarAsync<long>(connection, "select count(*) from pg_class", ct).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is PgBackupException or NpgsqlException) { unreadable.Add($"{database} ({ex.Message})"); }
            }
            checks.Add(Check("Databases open", unreadable.Count == 0, unreadable.Count == 0 ? $"{recoveredDatabases.Count} databases accept connections and their catalogs read" : "cannot be read: " + string.Join("; ", unreadable)));

            if (request.Queries.Count > 0)
            {
                await using var queries = await ServerSession.OpenAsync(target.WithDatabase(request.QueryDatabase), ct).ConfigureAwait(false);
                for (var i = 0; i < request.Queries.Count; i++)
                {
                    string? value;
                    try { value = await RunQueryAsync(queries, request.Queries[i], ct).ConfigureAwait(false); }
                    catch (NpgsqlException ex) { value = "error: " + ex.Message; }
                    var same = value == source.QueryResults[i];
                    var check = Check("Query: " + request.Queries[i], same, same ? "same result on the source and the recovered instance" : "the results differ");
                    check.SourceValue = source.QueryResults[i];
                    check.RecoveredValue = value;
                    checks.Add(check);
                }
            }
        }
        catch (Exception ex) when (ex is PgBackupException or NpgsqlException)
        {
            checks.Add(Check("Recovered instance answers", false, ex.Message));
        }
    }

    /// <summary>The whole result as text (rows on lines, columns separated by '|'), so any query can be compared.</summary>
    private static async Task<string?> RunQueryAsync(NpgsqlConnection connection, string sql, CancellationToken ct)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await using var reader = await command.ExecuteReaderAsync(ct).ConfigureAwait(false);
        var rows = new List<string>();
        while (await reader.ReadAsync(ct).ConfigureAwait(false))
            rows.Add(string.Join("|", Enumerable.Range(0, reader.FieldCount).Select(i => reader.IsDBNull(i) ? "NULL" : Convert.ToString(reader.GetValue(i), CultureInfo.InvariantCulture))));
        return string.Join("\n", rows);
    }

    private static DrillCheck Check(string name, bool passed, string detail) => new() { Name = name, Passed = passed, Detail = detail };

    private static DateTimeOffset? ParseUtc(string text) =>
        DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t) ? t : null;

    /// <summary>Rounded (TimeSpan formatting truncates), so 0.46 s reads 0:00.5 as the other messages round it.</summary>
    internal static string Format(TimeSpan span)
    {
        var tenths = TimeSpan.FromMilliseconds(Math.Round(span.TotalMilliseconds / 100, MidpointRounding.AwayFromZero) * 100);
        return tenths.ToString(tenths.TotalHours >= 1 ? @"h\:mm\:ss" : @"m\:ss\.f", CultureInfo.InvariantCulture);
    }

    private static string Seconds(TimeSpan span) => span.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture) + " s";
}
