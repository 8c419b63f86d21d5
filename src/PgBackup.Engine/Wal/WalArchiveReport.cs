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
    public static async Task<IReadOnlyList<WalArchiveStatus>> ForServerAsync(ConnectionTarget target, RepositoryAddress repository, bool verifyChecksums,
        IOperationReporter reporter, CancellationToken ct)
    {
        string systemIdentifier;
        await using (var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false))
            systemIdentifier = (await ServerSession.ScalarAsync<long>(connection, "select system_identifier from pg_control_system()", ct).ConfigureAwait(false))
                .ToString(CultureInfo.InvariantCulture);

        var oldest = repository.IsBlob || Directory.Exists(repository.Folder)
            ? (await BackupCatalog.ListAsync(repository, new CatalogFilter(Kind: BackupKind.Base), reporter.Warning, null, ct).ConfigureAwait(false)).OfType<BaseBackup>()
                .Where(b => b.SystemIdentifier == systemIdentifier && !string.IsNullOrEmpty(b.StartSegment)).MinBy(b => b.StartLsn)
            : null;
        if (oldest != null) reporter.Verbose($"Checking the archive from {oldest.StartSegment}, where the oldest kept base backup ({oldest.Id}) starts.");
        return await WalArchiveInspector.InspectServerAsync(target, repository, oldest == null ? null : WalSegmentName.Parse(oldest.StartSegment),
            verifyChecksums, reporter, ct).ConfigureAwait(false);
    }
}
