using System.Diagnostics;
using PgBackup.Engine.Connection;

namespace PgBackup.Engine.Repository;

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
    /// <summary>The repository the backup is in when it is in blob storage (its credentials); null for a folder.</summary>
    public RepositoryAddress? Repository { get; init; }
    /// <summary>The keys that read the backup's repository when it is encrypted (for -Restore).</summary>
    public Encryption.RepositoryKeys Keys { get; init; } = Encryption.RepositoryKeys.None;
}

/// <summary>
/// What every backup test shares, whatever kind of backup it tests: the result it fills in, and at the end the verdict
/// recorded in the backup's metadata and reported. Dumps are tested by Logical.DumpTester, base backups by
/// Recovery.BaseBackupTester.
/// </summary>
public sealed class BackupTest
{
    private readonly BackupTestRequest _request;
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public BackupTest(BackupTestRequest request)
    {
        _request = request;
        var backup = request.Backup;
        Result = new BackupTestResult
        {
            Path = backup.Path,
            Kind = backup.Kind,
            SourceServer = string.IsNullOrEmpty(backup.Server) ? "" : $"{backup.Server}:{backup.Port}",
            Database = backup.Database,
            Format = backup switch { DumpBackup d => d.Format.ToString(), BaseBackup b => b.Format.ToString(), _ => "" },
            ExpectedSha256 = (backup as DumpBackup)?.Sha256 ?? "",
            TestedAt = DateTimeOffset.UtcNow,
        };
    }

    public BackupTestResult Result { get; }
    public List<string> Failures { get; } = [];
    public string Activity => "Testing " + _request.Backup.Path;

    /// <summary>The verdict: recorded in the backup's metadata (when it has one) and reported.</summary>
    public async Task<BackupTestResult> CompleteAsync(IOperationReporter reporter, CancellationToken ct)
    {
        var backup = _request.Backup;
        reporter.ProgressCompleted(Activity);
        Result.Failures = [.. Failures];
        Result.Success = Failures.Count == 0;
        Result.Duration = _clock.Elapsed;
        if (_request.HasMetadata)
        {
            try { await BackupCatalog.RecordVerificationAsync(_request.Repository, backup, Result.Success, Result.TestedAt, ct).ConfigureAwait(false); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or PgBackupException)
            {
                reporter.Warning($"The test result could not be recorded in '{backup.MetadataPath}': {ex.Message}");
            }
        }
        reporter.Milestone($"Test of {backup.Path}: {(Result.Success ? "passed" : "FAILED: " + string.Join(" ", Failures))}");
        return Result;
    }
}
