using PgBackup.Engine.Connection;
using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Logical;

/// <summary>
/// "Test your restores" for dumps: verifies the dump's SHA-256 (naming a damaged file) and, when asked, restores it into a
/// throwaway database, checks that every table came back, and drops the database again whatever happened.
/// </summary>
public static class DumpTester
{
    public static async Task<BackupTestResult> TestAsync(BackupTestRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var backup = (DumpBackup)request.Backup;
        var test = new BackupTest(request);
        var result = test.Result;
        var failures = test.Failures;
        reporter.Progress(test.Activity, "Verifying SHA-256", 0);
        if (!request.HasMetadata)
        {
            result.ActualSha256 = await BackupChecksum.ComputeAsync(backup.Path, ct).ConfigureAwait(false);
            failures.Add("The dump has no PgBackup metadata, so there is no recorded SHA-256 to compare with.");
        }
        else if (await (request.Repository is { IsBlob: true } repository
                     ? Repository.Blob.BlobCatalog.CheckDumpAsync(Repository.Blob.BlobStore.Open(repository), backup, ct)
                     : BackupChecksum.CheckAsync(backup, ct)).ConfigureAwait(false) is { } damage)
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
        return await test.CompleteAsync(reporter, ct).ConfigureAwait(false);
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
                Repository = request.Repository,
                Keys = request.Keys,
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
