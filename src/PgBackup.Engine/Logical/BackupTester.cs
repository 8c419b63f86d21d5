using System.Diagnostics;
using PgBackup.Engine.Catalog;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Physical;
using PgBackup.Engine.Recovery;

namespace PgBackup.Engine.Logical;

public sealed record BackupTestRequest
{
    public required PgBackupItem Backup { get; init; }
    public bool HasMetadata { get; init; } = true;
    /// <summary>Where to test-restore a dump; null checks the checksum only.</summary>
    public ConnectionTarget? RestoreTarget { get; init; }
    /// <summary>For base backups: start the backup as a throwaway local instance.</summary>
    public bool StartInstance { get; init; }
    public int Jobs { get; init; } = 1;
    public string? ToolPath { get; init; }
}

/// <summary>
/// "Test your restores": verifies a dump's SHA-256 (a base backup's manifest) and, when asked, restores the dump into a
/// throwaway database and checks that every table came back (starts the base backup as a throwaway instance and queries
/// it), then removes what it made whatever happened.
/// </summary>
public static class BackupTester
{
    public static async Task<BackupTestResult> TestAsync(BackupTestRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var backup = request.Backup;
        var started = Stopwatch.StartNew();
        var result = new BackupTestResult
        {
            Path = backup.Path,
            Kind = backup.Kind,
            SourceServer = string.IsNullOrEmpty(backup.Server) ? "" : $"{backup.Server}:{backup.Port}",
            Database = backup.Database,
            Format = backup switch { DumpBackup d => d.Format.ToString(), BaseBackup b => b.Format.ToString(), _ => "" },
            ExpectedSha256 = (backup as DumpBackup)?.Sha256 ?? "",
            TestedAt = DateTimeOffset.UtcNow,
        };
        var failures = new List<string>();

        if (backup is BaseBackup baseBackup)
            await TestBaseBackupAsync(request, baseBackup, result, failures, reporter, ct).ConfigureAwait(false);
        else
            await TestDumpAsync(request, (DumpBackup)backup, result, failures, reporter, ct).ConfigureAwait(false);
        reporter.ProgressCompleted("Testing " + backup.Path);

        result.Failures = [.. failures];
        result.Success = failures.Count == 0;
        result.Duration = started.Elapsed;
        if (request.HasMetadata)
        {
            try { BackupMetadata.RecordVerification(backup, result.Success, result.TestedAt); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                reporter.Warning($"The test result could not be recorded in '{backup.MetadataPath}': {ex.Message}");
            }
        }
        reporter.Milestone($"Test of {backup.Path}: {(result.Success ? "passed" : "FAILED: " + string.Join(" ", failures))}");
        return result;
    }

    private static async Task TestDumpAsync(BackupTestRequest request, DumpBackup backup, BackupTestResult result, List<string> failures,
        IOperationReporter reporter, CancellationToken ct)
    {
        reporter.Progress("Testing " + backup.Path, "Verifying SHA-256", 0);
        if (!request.HasMetadata)
        {
            result.ActualSha256 = await BackupChecksum.ComputeAsync(backup.Path, ct).ConfigureAwait(false);
            failures.Add("The dump has no PgBackup metadata, so there is no recorded SHA-256 to compare with.");
        }
        else if (await BackupChecksum.CheckAsync(backup, ct).ConfigureAwait(false) is { } damage)
        {
            result.ActualSha256 = damage.ActualSha256;
            failures.Add($"SHA-256 mismatch (PgBackup.ChecksumMismatch): {damage.Problem}.");
        }
        else
        {
            result.ActualSha256 = backup.Sha256;
            result.ChecksumValid = true;
        }

        if (request.RestoreTarget is { } server && failures.Count == 0)
        {
            if (backup.Kind == BackupKind.Globals)
                reporter.Warning("A globals dump is not test-restored: it would create roles and tablespaces on the server. Only its checksum was verified.");
            else
                await TestRestoreAsync(request, backup, server, result, failures, reporter, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Checks the backup against its manifest and, when asked, starts it as a throwaway instance and queries it.</summary>
    private static async Task TestBaseBackupAsync(BackupTestRequest request, BaseBackup backup, BackupTestResult result, List<string> failures,
        IOperationReporter reporter, CancellationToken ct)
    {
        reporter.Progress("Testing " + backup.Path, "Verifying the backup manifest", 0);
        var problems = await BaseBackupVerifier.VerifyAsync(backup, backup.Path, request.ToolPath, reporter, ct).ConfigureAwait(false);
        result.ChecksumValid = problems.Count == 0;
        failures.AddRange(problems.Select(p => "Manifest check: " + p));
        if (!request.StartInstance || failures.Count > 0) return;

        result.RestoreTested = true;
        var started = Stopwatch.StartNew();
        try
        {
            reporter.Progress("Testing " + backup.Path, "Starting the backup as a throwaway instance", 30);
            await using var instance = await LocalInstance.CreateFromBackupAsync(backup, request.ToolPath, reporter, ct).ConfigureAwait(false);
            result.RestoreServer = instance.SocketDirectory;
            result.RestorePort = instance.Port;
            await instance.StartAsync(TimeSpan.FromMinutes(10), ct).ConfigureAwait(false);
            await using var connection = await ServerSession.OpenAsync(instance.Connection(string.IsNullOrEmpty(backup.User) ? LocalInstance.DefaultServiceUser : backup.User), ct).ConfigureAwait(false);
            if (await ServerSession.ScalarAsync<bool>(connection, "select pg_is_in_recovery()", ct).ConfigureAwait(false))
                failures.Add("The restored instance is still in recovery.");
            result.TablesRestored = (int)await ServerSession.ScalarAsync<long>(connection, "select count(*) from pg_database where datallowconn", ct).ConfigureAwait(false);
            result.RestoreDuration = started.Elapsed;
        }
        catch (PgBackupException ex)
        {
            failures.Add($"Test start failed ({ex.ErrorId}): {ex.Message}");
        }
    }

    private static async Task TestRestoreAsync(BackupTestRequest request, DumpBackup backup, ConnectionTarget server, BackupTestResult result, List<string> failures,
        IOperationReporter reporter, CancellationToken ct)
    {
        var testDatabase = "pgbackup_test_" + Guid.NewGuid().ToString("N")[..12];
        var target = server.WithDatabase(testDatabase);
        result.RestoreTested = true;
        result.RestoreServer = server.Host;
        result.RestorePort = server.Port;
        result.TestDatabase = testDatabase;
        result.TablesExpected = backup.TableCount;
        RestorePlan? plan = null;
        try
        {
            plan = await RestoreService.PlanAsync(new RestoreRequest
            {
                Target = target,
                Source = backup,
                HasMetadata = false, // the checksum was verified above
                Create = true,
                NoOwner = true,
                Jobs = backup.Format is DumpFormat.Custom or DumpFormat.Directory ? request.Jobs : 1,
                ToolPath = request.ToolPath,
            }, reporter, ct).ConfigureAwait(false);
            var restored = await RestoreService.ExecuteAsync(plan, reporter, ct).ConfigureAwait(false);
            result.RestoreDuration = restored.Duration;

            await using var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
            result.TablesRestored = (int)await ServerSession.ScalarAsync<long>(connection, """
                select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
                where c.relkind = 'r' and n.nspname not in ('pg_catalog','information_schema') and n.nspname !~ '^pg_(toast|temp)'
                  and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')
                """, ct).ConfigureAwait(false);
            if (result.TablesRestored < result.TablesExpected)
                failures.Add($"The test restore holds {result.TablesRestored} tables, but the dump recorded data for {result.TablesExpected}.");
        }
        catch (PgBackupException ex)
        {
            failures.Add($"Test restore failed ({ex.ErrorId}): {ex.Message}");
        }
        finally
        {
            if (plan != null) await RestoreService.DropQuietlyAsync(target, plan.Server, reporter).ConfigureAwait(false);
        }
    }
}
