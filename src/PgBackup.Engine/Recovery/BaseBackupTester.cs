using System.Diagnostics;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Physical;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Encryption;

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
        var backup = (BaseBackup)request.Backup;
        var blobRepository = request.Repository is { IsBlob: true } ? request.Repository : null;
        // An encrypted backup without a key can only be checked against the checksums of its encrypted files.
        if (request.Keys.IsEmpty && !request.StartInstance && backup.Encrypted)
            return await TestEncryptedFilesAsync(backup, blobRepository, test, reporter, ct).ConfigureAwait(false);
        using var encryption = RepositoryEncryption.RootOf(backup, blobRepository) is { } root
            ? await RepositoryEncryption.OpenForReadingAsync(root, request.Keys, ct).ConfigureAwait(false) : null;
        // A backup in blob storage, or an encrypted one, is read into a temporary folder, checked and started from there, and the folder removed.
        var spool = blobRepository != null || encryption != null ? BlobBaseBackups.NewSpool() : null;
        try
        {
            if (spool != null)
            {
                reporter.Progress(test.Activity, encryption != null ? "Decrypting the backup" : "Downloading the backup", 0);
                try { backup = await BlobBaseBackups.LocalCopyAsync(backup, blobRepository, encryption, spool, ct).ConfigureAwait(false); }
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

    /// <summary>Without the key: the SHA-256 of every encrypted file against what was recorded when the backup was taken.</summary>
    private static async Task<BackupTestResult> TestEncryptedFilesAsync(BaseBackup backup, RepositoryAddress? blobRepository, BackupTest test, IOperationReporter reporter, CancellationToken ct)
    {
        reporter.Warning($"{backup.Path} is encrypted and no key was given: only the checksums of its encrypted files are checked. Give -Passphrase or -Certificate to check its content against its manifest.");
        var spool = blobRepository != null ? BlobBaseBackups.NewSpool() : null;
        try
        {
            var folder = backup.Path;
            if (spool != null)
            {
                await Repository.Blob.BlobCatalog.DownloadTreeAsync(Repository.Blob.BlobStore.Open(blobRepository!), backup, spool, ct).ConfigureAwait(false);
                folder = spool;
            }
            var (_, files) = await BackupChecksum.ComputeWithFilesAsync(folder, ct).ConfigureAwait(false);
            foreach (var (name, sha) in (backup.ArchiveChecksums ?? []).OrderBy(r => r.Key, StringComparer.Ordinal))
                if (files == null || !files.TryGetValue(name, out var found)) test.Failures.Add($"'{backup.Path}/{name}' is missing from the backup");
                else if (!string.Equals(found, sha, StringComparison.OrdinalIgnoreCase)) test.Failures.Add($"'{backup.Path}/{name}' has SHA-256 {found}, recorded {sha} when the backup was taken");
            if (backup.ArchiveChecksums is not { Count: > 0 }) test.Failures.Add("The backup's metadata records no checksums of its encrypted files.");
            test.Result.ChecksumValid = test.Failures.Count == 0;
            return await test.CompleteAsync(reporter, ct).ConfigureAwait(false);
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
