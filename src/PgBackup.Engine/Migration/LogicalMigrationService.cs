using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Npgsql;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Instance;
using PgBackup.Engine.Replication;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Migration;

/// <summary>A logical replication to set up: the source database (in Source.Database) and the target database (in Target.Database).</summary>
public sealed record LogicalMigrationRequest
{
    public required ConnectionTarget Source { get; init; }
    public required ConnectionTarget Target { get; init; }
    /// <summary>Table patterns (as Invoke-PgDump's -Table); empty for every table.</summary>
    public string[] Tables { get; init; } = [];
    /// <summary>Schema patterns; empty for every schema.</summary>
    public string[] Schemas { get; init; } = [];
    /// <summary>Empty the target's tables first when they hold rows (otherwise refused).</summary>
    public bool Force { get; init; }
    /// <summary>Set wal_level = logical on the source and restart it when it is not (only a source on this machine).</summary>
    public bool Restart { get; init; }
    /// <summary>Return once replication runs, without waiting for the initial copy.</summary>
    public bool NoWait { get; init; }
    /// <summary>How long to wait for the initial copy; null for as long as it takes.</summary>
    public TimeSpan? Timeout { get; init; }
    public string? ToolPath { get; init; }
}

/// <summary>One replicated table as the set-up found it.</summary>
public sealed record MigrationTable(string Schema, string Name, bool Partitioned)
{
    public string Qualified => ServerSession.QuoteIdentifier(Schema) + "." + ServerSession.QuoteIdentifier(Name);
    public string Display => Schema + "." + Name;
}

/// <summary>What Start-PgLogicalMigration will do, checked without changing anything (what -WhatIf shows).</summary>
public sealed record LogicalMigrationPlan(LogicalMigrationRequest Request, string Name, IReadOnlyList<MigrationTable> Tables, int SourceMajor, int TargetMajor)
{
    public bool WalLevelChange { get; init; }
    public bool TargetDatabaseExists { get; init; }
    /// <summary>The tables the target lacks: their schema is copied.</summary>
    public IReadOnlyList<MigrationTable> MissingOnTarget { get; init; } = [];
    /// <summary>Target tables that hold rows (only with -Force: they are emptied).</summary>
    public IReadOnlyList<MigrationTable> NonEmptyOnTarget { get; init; } = [];
    /// <summary>The whole schema is copied (every table, into a database the set-up creates).</summary>
    public bool WholeSchema => Request.Tables.Length == 0 && Request.Schemas.Length == 0 && !TargetDatabaseExists;
    public IReadOnlyList<string> NotCarried { get; init; } = [];
    public string SourceDataDirectory { get; init; } = "";
    public string? SourceOwner { get; init; }
    public string TargetDataDirectory { get; init; } = "";
    public string? TargetOwner { get; init; }

    public IReadOnlyList<string> Steps =>
    [
        .. WalLevelChange ? new[] { $"Set wal_level = logical on {Request.Source.Display} (ALTER SYSTEM) and restart it (pg_ctl restart -m fast)" } : [],
        .. TargetDatabaseExists ? Array.Empty<string>() : [$"Create the database {Request.Target.Database} on {Request.Target.Display}"],
        .. MissingOnTarget.Count == 0 ? Array.Empty<string>()
            : [WholeSchema ? $"Copy the schema of {Request.Source.Database} to the target (pg_dump --schema-only)" : $"Copy the schema of {MissingOnTarget.Count} table(s) to the target (pg_dump --schema-only --table)"],
        .. NonEmptyOnTarget.Count == 0 ? Array.Empty<string>() : [$"Empty {string.Join(", ", NonEmptyOnTarget.Select(t => t.Display))} on the target (TRUNCATE; -Force)"],
        $"Create the publication {Name} for {Tables.Count} table(s) and the logical slot {Name} on {Request.Source.Display}",
        $"Create the subscription {Name} in {Request.Target.Database} on {Request.Target.Display}: it copies every table, then follows the changes",
        .. Request.NoWait ? Array.Empty<string>() : ["Wait until every table has been copied and follows the stream"],
    ];
}

/// <summary>
/// Logical replication for moving a database to another server or major version: set-up with every pre-check first
/// (wal_level, slots and WAL senders, replica identities, versions, privileges, an empty target), the schema copied with
/// pg_dump, and a publication, slot and subscription under one name PgBackup owns; and clean-up that leaves none of them.
/// </summary>
public static class LogicalMigrationService
{
    public const string NamePrefix = LogicalLinks.OwnedPrefix;

    /// <summary>The one name of a migration's publication, slot and subscription: the same for the same source and target databases.</summary>
    public static string NameOf(string sourceSystem, string sourceDatabase, string targetSystem, string targetDatabase) =>
        NamePrefix + Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes($"{sourceSystem}/{sourceDatabase}->{targetSystem}/{targetDatabase}")))[..12].ToLowerInvariant();

    /// <summary>The name of the migration between two databases, read from the two servers' system identifiers.</summary>
    public static async Task<string> NameOfAsync(ConnectionTarget source, ConnectionTarget target, CancellationToken ct)
    {
        await using var s = await ServerSession.OpenAsync(source with { Database = "postgres" }, ct).ConfigureAwait(false);
        await using var t = await ServerSession.OpenAsync(target with { Database = "postgres" }, ct).ConfigureAwait(false);
        return await NameOfAsync(s, source.Database, t, target.Database, ct).ConfigureAwait(false);
    }

    /// <summary>The same, over sessions already open on the two servers.</summary>
    internal static async Task<string> NameOfAsync(NpgsqlConnection source, string sourceDatabase, NpgsqlConnection target, string targetDatabase, CancellationToken ct) =>
        NameOf(await ServerSession.SystemIdentifierAsync(source, ct).ConfigureAwait(false), sourceDatabase, await ServerSession.SystemIdentifierAsync(target, ct).ConfigureAwait(false), targetDatabase);

    public static async Task<LogicalMigrationPlan> PlanAsync(LogicalMigrationRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var source = request.Source;
        var target = request.Target;
        await using var s = await ServerSession.OpenAsync(source, ct).ConfigureAwait(false);
        await using var t = await ServerSession.OpenAsync(target with { Database = "postgres" }, ct).ConfigureAwait(false);
        try
        {
            var sourceFacts = await MigrationProbes.ServerAsync(s, ct).ConfigureAwait(false);
            var targetFacts = await MigrationProbes.ServerAsync(t, ct).ConfigureAwait(false);
            if (sourceFacts.InRecovery)
                throw Refuse("SourceIsStandby", $"{source.Display} is a standby; logical replication is published from a primary.", source.Display, "Give the primary as -Source.");
            if (targetFacts.Major < sourceFacts.Major)
                throw Refuse("TargetVersionOlder", $"The target {target.Display} runs PostgreSQL {targetFacts.Major}, older than the source's {sourceFacts.Major}; a migration goes to the same or a newer major version.",
                    target.Display, "Migrate to a server of PostgreSQL " + sourceFacts.Major + " or newer.");
            if (sourceFacts.SystemIdentifier == targetFacts.SystemIdentifier && source.Port == target.Port && source.Database == target.Database)
                throw Refuse("SameDatabase", $"The source and the target are the same database ({source.Database} on {source.Display}).", target.Database, "Give another -Target or -TargetDatabase.");
            var name = NameOf(sourceFacts.SystemIdentifier, source.Database, targetFacts.SystemIdentifier, target.Database);

            var problems = new List<string>();
            if (!sourceFacts.Superuser && !sourceFacts.Replication) problems.Add($"'{source.User}' on the source has neither SUPERUSER nor REPLICATION (ALTER ROLE {source.User} REPLICATION)");
            if (!targetFacts.Superuser && !(targetFacts.Major >= 16 && targetFacts.CreateSubscription))
                problems.Add($"'{target.User}' on the target may not create subscriptions ({(targetFacts.Major >= 16 ? "GRANT pg_create_subscription, or " : "")}a superuser)");

            var all = await MigrationProbes.TablesAsync(s, ct).ConfigureAwait(false);
            var chosen = all.Where(x => (request.Schemas.Length == 0 || request.Schemas.Any(p => NamePattern.MatchesSchema(p, x.Schema)))
                                     && (request.Tables.Length == 0 || request.Tables.Any(p => NamePattern.MatchesTable(p, x.Schema, x.Name)))).ToList();
            var unlogged = chosen.Where(x => !x.Logged).ToList();
            chosen = chosen.Where(x => x.Logged).ToList();
            if (chosen.Count == 0)
                throw new PgBackupException("NoTablesChosen", ErrorKind.ObjectNotFound,
                    $"No table of {source.Database} on {source.Display} matches{(request.Tables.Length > 0 ? " -Table " + string.Join(", ", request.Tables) : "")}{(request.Schemas.Length > 0 ? " -Schema " + string.Join(", ", request.Schemas) : "")}. Nothing was changed.",
                    string.Join(", ", request.Tables.Concat(request.Schemas)), "Check the patterns (schema.table, * and ?) against the source's tables.");
            var withoutIdentity = chosen.Where(x => !x.HasIdentity).ToList();
            if (withoutIdentity.Count > 0)
                throw new PgBackupException("NoReplicaIdentity", ErrorKind.InvalidData,
                    $"{withoutIdentity.Count} table(s) have no primary key and no replica identity, so their updates and deletes would not replicate: {string.Join(", ", withoutIdentity.Select(x => x.Schema + "." + x.Name))}. Nothing was changed.",
                    withoutIdentity.Select(x => x.Schema + "." + x.Name).ToArray(),
                    "Add a primary key, or ALTER TABLE ... REPLICA IDENTITY USING INDEX <unique index> (or FULL, slow for large tables); or leave the table out with -Table.");
            if (!sourceFacts.Superuser && chosen.FirstOrDefault(x => x.Owner != source.User) is { } foreign)
                problems.Add($"'{source.User}' does not own {foreign.Schema}.{foreign.Name} (owner {foreign.Owner}), so it cannot publish it");
            if (problems.Count > 0)
                throw new PgBackupException("InsufficientPrivilege", ErrorKind.PermissionDenied, "The logins cannot set up logical replication: " + string.Join("; ", problems) + ". Nothing was changed.",
                    source.User, "Use a superuser on both sides, or grant what is named.");

            // The main slot and a sync worker per table copied at a time (a temporary slot and a WAL sender each).
            var syncs = Math.Min(chosen.Count, targetFacts.SyncWorkers);
            if (sourceFacts.FreeSlots < 1 + syncs || sourceFacts.FreeWalSenders < 1 + syncs)
                throw Refuse("NotEnoughSlots",
                    $"{source.Display} has {sourceFacts.FreeSlots} free replication slot(s) (max_replication_slots) and {sourceFacts.FreeWalSenders} free WAL sender(s) (max_wal_senders); the migration needs {1 + syncs} of each while it copies.",
                    source.Display, $"Raise max_replication_slots and max_wal_senders on the source (restart needed), or drop slots nobody uses (Get-PgReplicationStatus -IncludeSlots).");
            if (targetFacts.FreeOrigins < 1 + syncs || targetFacts.LogicalWorkers < 1 + syncs)
                throw Refuse("NotEnoughWorkers",
                    $"{target.Display} has {targetFacts.FreeOrigins} free replication origin(s) (max_replication_slots) and max_logical_replication_workers = {targetFacts.LogicalWorkers}; the subscription needs {1 + syncs} of each.",
                    target.Display, "Raise max_replication_slots and max_logical_replication_workers on the target (restart needed).");
            if (await MigrationProbes.ExistsAsync(s, t, name, ct).ConfigureAwait(false) is { } existing)
                throw Refuse("MigrationExists", $"A migration from {source.Database} to {target.Database} exists already ({existing}).", name,
                    "Look at it with Get-PgReplicationStatus; finish it with Complete-PgLogicalMigration or remove it with Stop-PgLogicalMigration.");

            var walLevelChange = sourceFacts.WalLevel != "logical";
            if (walLevelChange && !request.Restart)
                throw Refuse("WalLevelNotLogical",
                    $"wal_level is '{sourceFacts.WalLevel}' on {source.Display}; logical replication needs 'logical', which takes a restart of the source.", source.Display,
                    "Run again with -Restart (PgBackup sets wal_level = logical with ALTER SYSTEM and restarts the source, a server on this machine), or set it yourself (ALTER SYSTEM SET wal_level = logical) and restart the source in a maintenance window.");

            var targetExists = await ServerSession.ScalarAsync<bool>(t, "select exists (select 1 from pg_database where datname = $1)", ct, target.Database).ConfigureAwait(false);
            var missing = chosen.Select(x => new MigrationTable(x.Schema, x.Name, x.Partitioned)).ToList();
            var nonEmpty = new List<MigrationTable>();
            if (targetExists)
            {
                await using var td = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
                var present = await MigrationProbes.ExistingTablesAsync(td, missing, ct).ConfigureAwait(false);
                missing = missing.Where(m => !present.ContainsKey(m.Display)).ToList();
                nonEmpty = present.Where(p => p.Value).Select(p => chosen.First(c => c.Schema + "." + c.Name == p.Key)).Select(c => new MigrationTable(c.Schema, c.Name, c.Partitioned)).ToList();
                if (nonEmpty.Count > 0 && !request.Force)
                    throw new PgBackupException("TargetNotEmpty", ErrorKind.ResourceExists,
                        $"{nonEmpty.Count} table(s) on the target already hold rows: {string.Join(", ", nonEmpty.Select(x => x.Display))}. The initial copy would add the source's rows to them. Nothing was changed.",
                        string.Join(", ", nonEmpty.Select(x => x.Display)), "Migrate into an empty or a new database (-TargetDatabase), or pass -Force to empty those tables first (their rows are deleted).");
            }

            var notCarried = new List<string> { "schema changes (DDL) made after the set-up: apply them to the target too", "sequences: their values are copied at the cutover (Complete-PgLogicalMigration)" };
            if (sourceFacts.LargeObjects > 0) notCarried.Add($"{sourceFacts.LargeObjects} large object(s) (pg_largeobject): copy them with pg_dump --large-objects");
            if (unlogged.Count > 0) notCarried.Add($"unlogged table(s), which logical replication cannot publish: {string.Join(", ", unlogged.Select(x => x.Schema + "." + x.Name))}");
            var left = all.Count - chosen.Count - unlogged.Count;
            if (left > 0) notCarried.Add($"{left} table(s) outside the chosen -Table/-Schema");

            var sourceData = await ServerSession.ScalarAsync<string>(s, "show data_directory", ct).ConfigureAwait(false) ?? "";
            var targetData = await ServerSession.ScalarAsync<string>(t, "show data_directory", ct).ConfigureAwait(false) ?? "";
            return new LogicalMigrationPlan(request, name, chosen.Select(x => new MigrationTable(x.Schema, x.Name, x.Partitioned)).ToList(), sourceFacts.Major, targetFacts.Major)
            {
                WalLevelChange = walLevelChange, TargetDatabaseExists = targetExists, MissingOnTarget = missing, NonEmptyOnTarget = nonEmpty, NotCarried = notCarried,
                SourceDataDirectory = sourceData, TargetDataDirectory = targetData,
                SourceOwner = await OwnerAsync(source, sourceData, ct).ConfigureAwait(false), TargetOwner = await OwnerAsync(target, targetData, ct).ConfigureAwait(false),
            };
        }
        catch (NpgsqlException ex) when (!ct.IsCancellationRequested) { throw ServerSession.Translate(ex, source); }
    }

    /// <summary>
    /// Sets the migration up as planned. A failure undoes what this call created (subscription, slot, publication, and
    /// the target database when it created it); a cancellation while it waits for the initial copy leaves the running
    /// replication in place for Complete- or Stop-PgLogicalMigration.
    /// </summary>
    public static async Task<LogicalMigration> StartAsync(LogicalMigrationPlan plan, IOperationReporter reporter, CancellationToken ct)
    {
        var request = plan.Request;
        var source = request.Source;
        var target = request.Target;
        var clock = Stopwatch.StartNew();
        var createdDatabase = false;
        var replicating = false;
        try
        {
            if (plan.WalLevelChange)
            {
                await using (var s = await ServerSession.OpenAsync(source, ct).ConfigureAwait(false))
                    await ServerSession.ExecuteAsync(s, "alter system set wal_level = logical", source, ct).ConfigureAwait(false);
                if (!await ServerRestart.RestartAsync(source, plan.SourceDataDirectory, "wal_level = logical", "logical replication cannot start before", plan.SourceOwner, request.ToolPath, plan.SourceMajor, reporter, ct).ConfigureAwait(false))
                    throw new PgBackupException("RestartNeeded", ErrorKind.InvalidOperation,
                        $"wal_level = logical is written on {source.Display} but takes effect only after a restart, which PgBackup could not do here (see the warning). Nothing else was changed.", source.Display,
                        "Restart the source, then run Start-PgLogicalMigration again.");
            }
            if (!plan.TargetDatabaseExists)
            {
                reporter.Milestone($"Creating the database {target.Database} on {target.Display}");
                await MigrationProbes.CreateDatabaseLikeAsync(source, target, ct).ConfigureAwait(false);
                createdDatabase = true;
            }
            if (plan.MissingOnTarget.Count > 0)
            {
                reporter.Milestone($"Copying the schema of {(plan.WholeSchema ? source.Database : plan.MissingOnTarget.Count + " table(s)")} to {target.Display}");
                await SchemaCopy.CopyAsync(plan, reporter, ct).ConfigureAwait(false);
            }
            await using var td = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
            if (plan.NonEmptyOnTarget.Count > 0)
                await ServerSession.ExecuteAsync(td, "truncate " + string.Join(", ", plan.NonEmptyOnTarget.Select(x => x.Qualified)), target, ct).ConfigureAwait(false);

            reporter.Milestone($"Creating the publication and slot {plan.Name} on {source.Display}");
            await using (var s = await ServerSession.OpenAsync(source, ct).ConfigureAwait(false))
            {
                replicating = true;
                await ServerSession.ExecuteAsync(s, $"create publication {plan.Name} for table {string.Join(", ", plan.Tables.Select(x => x.Qualified))} with (publish_via_partition_root = true)", source, ct).ConfigureAwait(false);
                await ServerSession.ExecuteAsync(s, $"select pg_create_logical_replication_slot('{plan.Name}', 'pgoutput')", source, ct).ConfigureAwait(false);
            }
            reporter.Milestone($"Creating the subscription {plan.Name} in {target.Database} on {target.Display}");
            var conninfo = await SubscriptionConnInfoAsync(plan, reporter, ct).ConfigureAwait(false);
            await ServerSession.ExecuteAsync(td,
                $"create subscription {plan.Name} connection '{conninfo.Replace("'", "''")}' publication {plan.Name} with (create_slot = false, slot_name = '{plan.Name}', copy_data = true)", target, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is PgBackupException or NpgsqlException or IOException or OperationCanceledException)
        {
            reporter.Warning($"The set-up of {plan.Name} failed; removing what it created.");
            if (replicating) await RemoveAsync(plan.Name, source, target, reporter, CancellationToken.None).ConfigureAwait(false);
            if (createdDatabase) await MigrationProbes.DropDatabaseAsync(target, reporter).ConfigureAwait(false);
            if (ex is NpgsqlException) throw ServerSession.Translate(ex, target);
            throw;
        }

        var tables = Array.Empty<LogicalTableSync>();
        if (!request.NoWait)
        {
            try { tables = await WaitForCopyAsync(plan, reporter, ct).ConfigureAwait(false); }
            catch (OperationCanceledException)
            {
                reporter.Warning($"Stopped waiting; the migration {plan.Name} goes on copying. Follow it with Get-PgReplicationStatus -Server {target.Display}, finish it with Complete-PgLogicalMigration or remove it with Stop-PgLogicalMigration.");
                throw;
            }
        }
        else tables = await ReadTablesAsync(target, plan.Name, ct).ConfigureAwait(false);
        return new LogicalMigration
        {
            Name = plan.Name, Source = source.Display, Target = target.Display, Database = source.Database, TargetDatabase = target.Database, SourceMajor = plan.SourceMajor, TargetMajor = plan.TargetMajor,
            Tables = [.. plan.Tables.Select(x => x.Display)], TableStates = tables, Synchronized = tables.Length > 0 && tables.All(x => x.State == "Ready"),
            CreatedTargetDatabase = createdDatabase, NotCarried = [.. plan.NotCarried], Duration = clock.Elapsed,
        };
    }

    /// <summary>How the target server reaches the source: the password in a pass file of the target server's OS user when it runs here.</summary>
    private static async Task<string> SubscriptionConnInfoAsync(LogicalMigrationPlan plan, IOperationReporter reporter, CancellationToken ct)
    {
        var source = plan.Request.Source;
        var conninfo = $"host={ConnectionTarget.QuoteConnInfoValue(source.Host)} port={source.Port} dbname={ConnectionTarget.QuoteConnInfoValue(source.Database)} user={ConnectionTarget.QuoteConnInfoValue(source.User)}";
        if (source.SslMode != null) conninfo += " sslmode=" + ConnectionTarget.QuoteConnInfoValue(source.SslMode);
        if (source.Password == null) return conninfo;
        if (!OperatingSystem.IsWindows() && plan.Request.Target.ServesFromHere(plan.TargetDataDirectory) && plan.TargetOwner != null)
        {
            var path = await MigrationPassFile.WriteAsync(plan.TargetDataDirectory, plan.TargetOwner, plan.Name, source.User, source.Password, ct).ConfigureAwait(false);
            return conninfo + " passfile=" + ConnectionTarget.QuoteConnInfoValue(path);
        }
        reporter.Warning($"The target {plan.Request.Target.Display} does not run on this machine, so the source's password goes into the subscription's connection string (pg_subscription, readable by superusers only). A .pgpass file of the target server's OS user avoids that.");
        return conninfo + " password=" + ConnectionTarget.QuoteConnInfoValue(source.Password);
    }

    private static async Task<string?> OwnerAsync(ConnectionTarget server, string dataDirectory, CancellationToken ct) =>
        !OperatingSystem.IsWindows() && server.ServesFromHere(dataDirectory) ? await DataDirectoryOwner.FindAsync(dataDirectory, ct).ConfigureAwait(false) : null;

    /// <summary>Waits until every table is copied and follows the stream, with each table's state as progress.</summary>
    private static async Task<LogicalTableSync[]> WaitForCopyAsync(LogicalMigrationPlan plan, IOperationReporter reporter, CancellationToken ct)
    {
        var target = plan.Request.Target;
        var activity = $"Copying {plan.Tables.Count} table(s) from {plan.Request.Source.Display} to {target.Display}";
        var deadline = plan.Request.Timeout is { } limit ? DateTime.UtcNow + limit : DateTime.MaxValue;
        long? errorsBefore = null;
        await using var t = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
        while (true)
        {
            var tables = await LogicalLinks.TableStatesAsync(t, plan.Name, ct).ConfigureAwait(false);
            var ready = tables.Count(x => x.State == "Ready");
            var copying = tables.Where(x => x.State is "Copying" or "Init").Select(x => x.Table).ToArray();
            reporter.Progress(activity, copying.Length > 0 ? $"{ready} of {tables.Length} ready; copying {string.Join(", ", copying.Take(3))}{(copying.Length > 3 ? "..." : "")}" : $"{ready} of {tables.Length} ready",
                tables.Length == 0 ? 0 : ready * 100 / tables.Length);
            if (tables.Length == plan.Tables.Count && ready == tables.Length)
            {
                reporter.ProgressCompleted(activity);
                return tables;
            }
            var errors = await MigrationProbes.SyncErrorsAsync(t, plan.Name, ct).ConfigureAwait(false);
            errorsBefore ??= errors;
            if (errors > errorsBefore)
                throw new PgBackupException("InitialCopyFailed", ErrorKind.InvalidOperation,
                    $"The subscription {plan.Name} failed to copy a table ({errors} error(s) in pg_stat_subscription_stats); it retries, but the cause usually stays. The migration is left in place.", plan.Name,
                    $"Read the target's server log for the error (a missing column, a conflicting row), fix it, and wait again (Get-PgReplicationStatus -Server {target.Display}); or remove the migration with Stop-PgLogicalMigration.");
            if (DateTime.UtcNow > deadline)
                throw new PgBackupException("InitialCopyTimeout", ErrorKind.OperationTimeout,
                    $"The initial copy of {plan.Name} did not finish within {plan.Request.Timeout} ({ready} of {tables.Length} tables ready). It goes on copying.", plan.Name,
                    $"Follow it with Get-PgReplicationStatus -Server {target.Display}; finish with Complete-PgLogicalMigration once every table is ready, or remove it with Stop-PgLogicalMigration.");
            await Task.Delay(500, ct).ConfigureAwait(false);
        }
    }

    private static async Task<LogicalTableSync[]> ReadTablesAsync(ConnectionTarget target, string name, CancellationToken ct)
    {
        await using var t = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
        return await LogicalLinks.TableStatesAsync(t, name, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Removes a migration: the subscription (detached from its slot first, so the source need not answer), the slot
    /// (its WAL sender ended first), the publication, the pass file, and the read-only setting a cutover put on the
    /// source database. What is not there is skipped, so it can run again after any failure.
    /// </summary>
    public static async Task<IReadOnlyList<string>> RemoveAsync(string name, ConnectionTarget source, ConnectionTarget? target, IOperationReporter reporter, CancellationToken ct)
    {
        var removed = new List<string>();
        if (target != null)
        {
            try
            {
                await using var t = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
                if (await MigrationProbes.DropSubscriptionAsync(t, target, name, ct).ConfigureAwait(false)) removed.Add($"subscription {name} on {target.Display}");
                if (await MigrationPassFile.RemoveAsync(t, target, name, ct).ConfigureAwait(false)) removed.Add("the subscription's pass file");
            }
            catch (PgBackupException ex) when (ex.ErrorId == "PgBackup.DatabaseNotFound") { reporter.Verbose($"{target.Database} does not exist on {target.Display}: no subscription to remove."); }
        }
        await using var s = await ServerSession.OpenAsync(source, ct).ConfigureAwait(false);
        removed.AddRange(await MigrationProbes.DropSourceSideAsync(s, source, name, allowWrites: true, ct).ConfigureAwait(false));
        foreach (var what in removed) reporter.Verbose("Removed " + what);
        return removed;
    }

    private static PgBackupException Refuse(string id, string message, object target, string action) =>
        new(id, ErrorKind.InvalidOperation, message + " Nothing was changed.", target, action);
}
