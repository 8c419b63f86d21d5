using System.Diagnostics;
using Npgsql;
using PgBackup.Engine.Connection;

namespace PgBackup.Engine.Migration;

/// <summary>Which migration to cut over, and how.</summary>
public sealed record LogicalCutoverRequest
{
    public required ConnectionTarget Source { get; init; }
    public required ConnectionTarget Target { get; init; }
    /// <summary>The migration's name; null to derive it from the two databases, as Start-PgLogicalMigration named it.</summary>
    public string? Name { get; init; }
    /// <summary>The most the target may be behind before writes are stopped.</summary>
    public long MaxLagBytes { get; init; } = 16 * 1024 * 1024;
    /// <summary>The applications are stopped by the user: PgBackup does not make the source read-only.</summary>
    public bool LeaveSourceWritable { get; init; }
    /// <summary>Compare a checksum of every row, not only the row counts.</summary>
    public bool VerifyData { get; init; }
    /// <summary>How long the target may take to confirm the source's last WAL.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>A cutover, checked without changing anything (what -WhatIf shows).</summary>
public sealed record LogicalCutoverPlan(LogicalCutoverRequest Request, string Name, IReadOnlyList<MigrationTable> Tables, long LagBytes)
{
    public IReadOnlyList<string> Steps =>
    [
        Request.LeaveSourceWritable
            ? $"Leave {Request.Source.Database} on {Request.Source.Display} writable (-LeaveSourceWritable: the applications are stopped by you)"
            : $"Stop writes on {Request.Source.Database} on {Request.Source.Display}: default_transaction_read_only = on for the database and its client sessions ended (Stop-PgLogicalMigration undoes it)",
        $"Wait until {Request.Target.Display} confirmed the source's last WAL (now {LagBytes} bytes behind; at most {Request.Timeout})",
        $"Set every sequence on the target to the source's value",
        $"Compare the row counts{(Request.VerifyData ? " and checksums" : "")} of {Tables.Count} table(s)",
        $"Drop the subscription {Name} on the target, and the slot and publication {Name} on the source",
    ];
}

/// <summary>
/// The cutover of a logical migration: writes on the source database are stopped (reversibly), the target confirms
/// everything the source wrote, the sequences follow, every table is compared, and only then are the subscription,
/// slot and publication dropped. When a table differs, nothing is dropped and the source stays read-only, so nothing
/// can diverge while the user looks.
/// </summary>
public static class LogicalCutoverService
{
    public static async Task<LogicalCutoverPlan> PlanAsync(LogicalCutoverRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var source = request.Source;
        var target = request.Target;
        await using var s = await ServerSession.OpenAsync(source, ct).ConfigureAwait(false);
        await using var t = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
        try
        {
            var name = request.Name ?? await LogicalMigrationService.NameOfAsync(s, source.Database, t, target.Database, ct).ConfigureAwait(false);
            var states = await Replication.LogicalLinks.TableStatesAsync(t, name, ct).ConfigureAwait(false);
            var position = await MigrationProbes.SlotPositionAsync(s, name, ct).ConfigureAwait(false);
            if (states.Length == 0 || position == null)
                throw new PgBackupException("MigrationNotFound", ErrorKind.ObjectNotFound,
                    $"No migration {name} from {source.Database} on {source.Display} to {target.Database} on {target.Display} runs ({(position == null ? "no slot on the source" : "no subscription on the target")}). Nothing was changed.",
                    name, "Start one with Start-PgLogicalMigration; Get-PgReplicationStatus lists the logical replication of each server.");
            if (states.Where(x => x.State != "Ready").ToArray() is { Length: > 0 } copying)
                throw new PgBackupException("MigrationNotSynchronized", ErrorKind.InvalidOperation,
                    $"{copying.Length} table(s) of {name} have not finished their initial copy: {string.Join(", ", copying.Select(x => $"{x.Table} ({x.State})"))}. Nothing was changed.", name,
                    $"Wait until every table is Ready (Get-PgReplicationStatus -Server {target.Display}), then cut over.");
            var lag = Math.Max(0, position.Value.Current - position.Value.Confirmed);
            if (lag > request.MaxLagBytes)
                throw new PgBackupException("MigrationLagging", ErrorKind.LimitsExceeded,
                    $"The target is {lag} bytes behind the source (at most {request.MaxLagBytes} allowed): stopping writes now would keep them stopped while it catches up. Nothing was changed.", name,
                    "Wait until it catches up (Wait-PgReplication on the source), or raise -MaxLagBytes.");
            var tables = await MigrationProbes.PublishedTablesAsync(s, name, ct).ConfigureAwait(false);
            return new LogicalCutoverPlan(request, name, tables, lag);
        }
        catch (NpgsqlException ex) when (!ct.IsCancellationRequested) { throw ServerSession.Translate(ex, source); }
    }

    public static async Task<LogicalCutover> ExecuteAsync(LogicalCutoverPlan plan, IOperationReporter reporter, CancellationToken ct)
    {
        var request = plan.Request;
        var source = request.Source;
        var target = request.Target;
        var clock = Stopwatch.StartNew();
        var activity = $"Cutting over {source.Database} from {source.Display} to {target.Display}";
        await using var s = await ServerSession.OpenAsync(source, ct).ConfigureAwait(false);
        await using var t = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
        try
        {
            TimeSpan writesStopped;
            if (!request.LeaveSourceWritable)
            {
                reporter.Progress(activity, "Stopping writes on the source", 10);
                await MigrationProbes.StopWritesAsync(s, source, plan.Name, ct).ConfigureAwait(false);
                // This session started before the database became read-only; it keeps writing what the cutover needs.
                writesStopped = clock.Elapsed;
                reporter.Milestone($"Writes on {source.Database} are stopped (default_transaction_read_only; Stop-PgLogicalMigration undoes it).");
            }
            else writesStopped = clock.Elapsed;

            reporter.Progress(activity, "Waiting until the target confirmed everything", 30);
            var final = await ConfirmedAsync(s, plan, ct).ConfigureAwait(false);
            reporter.Verbose($"The target confirmed {final} {(clock.Elapsed - writesStopped).TotalSeconds:0.00}s after writes stopped.");

            reporter.Progress(activity, "Copying the sequences", 50);
            var sequences = new List<SequenceCopy>();
            var targetSequences = await MigrationProbes.SequencesAsync(t, ct).ConfigureAwait(false);
            foreach (var (sequence, value) in await MigrationProbes.SequencesAsync(s, ct).ConfigureAwait(false))
            {
                if (!targetSequences.TryGetValue(sequence, out var targetValue)) continue;
                // Never backwards: a target value above the source's was handed out on the target already.
                if (value != null && (targetValue == null || targetValue < value))
                    targetValue = await ServerSession.ScalarAsync<long>(t, "select setval($1::regclass, $2, true)", ct, sequence, value.Value).ConfigureAwait(false);
                sequences.Add(new SequenceCopy { Sequence = sequence, SourceValue = value, TargetValue = targetValue });
            }

            reporter.Verbose($"Sequences set {(clock.Elapsed - writesStopped).TotalSeconds:0.00}s after writes stopped.");
            reporter.Progress(activity, $"Comparing {plan.Tables.Count} table(s)", 70);
            var verified = new List<TableVerification>();
            foreach (var table in plan.Tables)
            {
                // Both sides count at once: the writes stay stopped while they do.
                var onSource = MigrationProbes.TableDigestAsync(s, table, request.VerifyData, ct);
                var onTarget = MigrationProbes.TableDigestAsync(t, table, request.VerifyData, ct);
                await Task.WhenAll(onSource, onTarget).ConfigureAwait(false);
                var (sourceRows, sourceSum) = onSource.Result;
                var (targetRows, targetSum) = onTarget.Result;
                verified.Add(new TableVerification
                {
                    Table = table.Display, SourceRows = sourceRows, TargetRows = targetRows, SourceChecksum = sourceSum, TargetChecksum = targetSum,
                    Match = sourceRows == targetRows && sourceSum == targetSum,
                });
            }
            var allMatch = verified.All(v => v.Match);
            reporter.Verbose($"Tables compared {(clock.Elapsed - writesStopped).TotalSeconds:0.00}s after writes stopped.");
            if (allMatch)
            {
                reporter.Progress(activity, "Dropping the subscription, slot and publication", 90);
                await MigrationProbes.DropSubscriptionAsync(t, target, plan.Name, ct).ConfigureAwait(false);
                await MigrationProbes.DropSourceSideAsync(s, source, plan.Name, allowWrites: false, ct).ConfigureAwait(false);
                await MigrationPassFile.RemoveAsync(t, target, plan.Name, ct).ConfigureAwait(false);
            }
            reporter.ProgressCompleted(activity);
            var result = new LogicalCutover
            {
                Name = plan.Name, Source = source.Display, Target = target.Display, Database = source.Database, TargetDatabase = target.Database,
                SourceReadOnly = !request.LeaveSourceWritable, FinalLsn = final, Tables = [.. verified], Sequences = [.. sequences], Verified = allMatch, DataCompared = request.VerifyData,
                WriteDowntime = clock.Elapsed - writesStopped, Duration = clock.Elapsed,
            };
            reporter.Milestone(allMatch
                ? $"{target.Database} on {target.Display} holds everything {source.Database} had; writes were stopped for {result.WriteDowntime.TotalSeconds:0.00}s. Point the applications at the target."
                : $"{verified.Count(v => !v.Match)} table(s) differ; the migration is kept and {source.Database} stays read-only.");
            return result;
        }
        catch (NpgsqlException ex) when (!ct.IsCancellationRequested) { throw ServerSession.Translate(ex, source); }
    }

    /// <summary>The error to write after a cutover whose tables differ; null when every table matched.</summary>
    public static PgBackupException? FailureOf(LogicalCutover cutover) => cutover.Verified ? null
        : new PgBackupException("CutoverVerificationFailed", ErrorKind.InvalidData,
            $"{cutover.Tables.Count(v => !v.Match)} table(s) differ between source and target: {string.Join(", ", cutover.Tables.Where(v => !v.Match).Select(v => $"{v.Table} ({v.SourceRows} rows on the source, {v.TargetRows} on the target)"))}. The subscription, slot and publication were kept, and the source stays read-only{(cutover.SourceReadOnly ? "" : " as you left it")}.",
            cutover.Name, "Look for writes to the target or to the source that bypassed the replication (the target's tables must not be written during a migration); Stop-PgLogicalMigration makes the source writable again and removes the migration.");

    /// <summary>The source's WAL position once writes stopped, after the target confirmed it.</summary>
    private static async Task<Lsn> ConfirmedAsync(NpgsqlConnection s, LogicalCutoverPlan plan, CancellationToken ct)
    {
        var request = plan.Request;
        var final = Lsn.Parse(await ServerSession.ScalarAsync<string>(s, "select pg_current_wal_lsn()::text", ct).ConfigureAwait(false) ?? "0/0");
        var deadline = DateTime.UtcNow + request.Timeout;
        while (true)
        {
            var position = await MigrationProbes.SlotPositionAsync(s, plan.Name, ct).ConfigureAwait(false)
                ?? throw new PgBackupException("MigrationNotFound", ErrorKind.ObjectNotFound, $"The slot {plan.Name} disappeared from {request.Source.Display} during the cutover.", plan.Name,
                    "Something else dropped it; the target cannot be shown to hold everything. Stop-PgLogicalMigration makes the source writable again.");
            if (position.Confirmed >= final) return final;
            if (DateTime.UtcNow > deadline)
                throw new PgBackupException("CutoverTimeout", ErrorKind.OperationTimeout,
                    $"The target confirmed only {position.Confirmed} of the source's {final} within {request.Timeout}. The source stays read-only and the migration is kept.", plan.Name,
                    $"Check the subscription on {request.Target.Display} (Get-PgReplicationStatus, its server log) and run Complete-PgLogicalMigration again; Stop-PgLogicalMigration makes the source writable again.");
            await Task.Delay(20, ct).ConfigureAwait(false);
        }
    }
}
