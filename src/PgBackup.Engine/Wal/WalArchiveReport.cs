using System.Globalization;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Connection;

namespace PgBackup.Engine.Wal;

/// <summary>
/// Get-PgWalArchive for a server: gaps are checked from the start segment of the oldest base backup of that cluster kept
/// in the repository, since that is the WAL recovery needs; without a base backup, from the oldest archived segment.
/// </summary>
public static class WalArchiveReport
{
    /// <summary>
    /// Checks the backlog of the server's current timeline against the limits given, for a runbook that must fail before
    /// pg_wal fills: the first limit passed is PgBackup.WalBacklogExceeded; a limit that cannot be checked (the role may not
    /// list pg_wal, the disk is on another machine) is PgBackup.WalBacklogUnknown, never a silent pass.
    /// </summary>
    public static PgBackupException? CheckBacklog(WalArchiveStatus current, int? maxReadySegments, TimeSpan? maxReadyAge, long? minFreeBytes)
    {
        var server = $"{current.Server}:{current.Port}";
        PgBackupException Unknown(string what, string why) => new("WalBacklogUnknown", ErrorKind.PermissionDenied,
            $"The {what} of {server} cannot be checked against the limit: {why}.", current,
            "Connect as a member of pg_monitor (or a superuser) so that pg_wal can be listed, and run the check on the database server itself for the free disk space.");
        PgBackupException Exceeded(string what) => new("WalBacklogExceeded", ErrorKind.LimitsExceeded,
            $"The WAL backlog of {server} passed its limit: {what}. Segments wait in pg_wal until archive_command succeeds; when its disk is full the server stops.", current,
            $"Look at the server log for 'archive command failed' and at the archiver (LastFailedWal {current.LastFailedWal ?? "none"}); fix the repository or the network path, or add disk space to pg_wal.");

        if (maxReadySegments is { } maxReady)
        {
            if (current.ReadySegments is not { } ready) return Unknown("number of segments waiting", "pg_wal/archive_status could not be listed");
            if (ready > maxReady) return Exceeded($"{ready} segments wait to be archived (limit {maxReady}), the oldest {current.OldestReadySegment}");
        }
        if (maxReadyAge is { } maxAge)
        {
            if (current.ReadySegments == null) return Unknown("age of the oldest segment waiting", "pg_wal/archive_status could not be listed");
            if (current.OldestReadyAge is { } age && age > maxAge)
                return Exceeded($"{current.OldestReadySegment} has waited {age:g} to be archived (limit {maxAge:g})");
        }
        if (minFreeBytes is { } minFree)
        {
            if (current.PgWalDiskFreeBytes is not { } free) return Unknown("free space of the disk of pg_wal", "the data directory is not on this machine, or data_directory cannot be read");
            if (free < minFree) return Exceeded($"the disk of pg_wal has {free} bytes free (limit {minFree}); pg_wal holds {current.PgWalBytes?.ToString(CultureInfo.InvariantCulture) ?? "an unknown number of"} bytes");
        }
        return null;
    }

    public static async Task<IReadOnlyList<WalArchiveStatus>> ForServerAsync(ConnectionTarget target, RepositoryAddress repository, bool verifyChecksums,
        IOperationReporter reporter, CancellationToken ct)
    {
        string systemIdentifier;
        await using (var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false))
            systemIdentifier = (await ServerSession.ScalarAsync<long>(connection, "select system_identifier from pg_control_system()", ct).ConfigureAwait(false))
                .ToString(CultureInfo.InvariantCulture);

        BaseBackup? oldest = null;
        try
        {
            if (repository.IsBlob || Directory.Exists(repository.Folder))
                oldest = (await BackupCatalog.ListAsync(repository, new CatalogFilter(Kind: BackupKind.Base), reporter.Warning, null, ct).ConfigureAwait(false)).OfType<BaseBackup>()
                    .Where(b => b.SystemIdentifier == systemIdentifier && !string.IsNullOrEmpty(b.StartSegment)).MinBy(b => b.StartLsn);
        }
        catch (PgBackupException ex) when (ex.ErrorId is "PgBackup.StorageUnavailable" or "PgBackup.StorageFailed")
        {
            // The archive is out of reach too; the inspection still reports the server's side.
            reporter.Verbose($"The backups in {repository} cannot be listed now: {ex.Message}");
        }
        if (oldest != null) reporter.Verbose($"Checking the archive from {oldest.StartSegment}, where the oldest kept base backup ({oldest.Id}) starts.");
        return await WalArchiveInspector.InspectServerAsync(target, repository, oldest == null ? null : WalSegmentName.Parse(oldest.StartSegment),
            verifyChecksums, reporter, ct).ConfigureAwait(false);
    }
}
