using System.Diagnostics;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Physical;
using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Recovery;

/// <summary>
/// "Test your restores" for base backups: checks every file against the backup's manifest and, when asked, starts the
/// backup as a throwaway local instance, checks that it is out of recovery and counts its databases, then removes it.
/// </summary>
public static class BaseBackupTester
{
    public static async Task<BackupTestResult> TestAsync(BackupTestRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var test = new BackupTest(request);
        // A backup in blob storage is read into a temporary folder, checked and started from there, and the folder removed.
        var spool = request.Repository is { IsBlob: true } ? BlobBaseBackups.NewSpool() : null;
        try
        {
            var backup = (BaseBackup)request.Backup;
            if (spool != null)
            {
                reporter.Progress(test.Activity, "Downloading the backup", 0);
                try { backup = await BlobBaseBackups.DownloadAsync(request.Repository!, backup, spool, ct).ConfigureAwait(false); }
                catch (PgBackupException ex)
                {
                    test.Failures.Add($"The backup could not be read ({ex.ErrorId}): {ex.Message}");
                    return await test.CompleteAsync(reporter, ct).ConfigureAwait(false);
                }
            }
            return await TestAsync(request, backup, test, reporter, ct).ConfigureAwait(false);
        }
        finally { if (spool != null) PartialBackup.DeletePath(spool); }
    }

    private static async Task<BackupTestResult> TestAsync(BackupTestRequest request, BaseBackup backup, BackupTest test, IOperationReporter reporter, CancellationToken ct)
    {
        var result = test.Result;
        var failures = test.Failures;
        reporter.Progress(test.Activity, "Verifying the backup manifest", 0);
        var problems = await BaseBackupVerifier.VerifyAsync(backup, backup.Path, request.ToolPath, reporter, ct).ConfigureAwait(false);
        result.ChecksumValid = problems.Count == 0;
        failures.AddRange(problems.Select(p => "Manifest check: " + p));
        if (!request.StartInstance || failures.Count > 0) return await test.CompleteAsync(reporter, ct).ConfigureAwait(false);

        result.RestoreTested = true;
        var started = Stopwatch.StartNew();
        try
        {
            reporter.Progress(test.Activity, "Starting the backup as a throwaway instance", 30);
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
        return await test.CompleteAsync(reporter, ct).ConfigureAwait(false);
    }
}
