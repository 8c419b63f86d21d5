using PgBackup.Engine.Repository.Blob;

namespace PgBackup.Engine.Repository;

public sealed record CatalogFilter(string? Server = null, int? Port = null, Func<string, bool>? DatabaseMatches = null, BackupKind? Kind = null,
    DateTimeOffset? After = null, DateTimeOffset? Before = null);

/// <summary>A backup the retention plan removes, or keeps although asked to remove, and why.</summary>
public sealed record RetentionDecision(PgBackupItem Backup, bool Remove, string Reason);

/// <summary>
/// The repository seen as a catalog: every backup that has a metadata file beside it; partial backups are never listed
/// (<see cref="PartialBackup"/>). Retention never removes the last valid backup of a database unless forced.
/// </summary>
public static class BackupCatalog
{
    /// <summary>The backups of a repository on either backend, filtered and ordered the same way.</summary>
    public static async Task<IReadOnlyList<PgBackupItem>> ListAsync(RepositoryAddress repository, CatalogFilter? filter, Action<string>? warn, Action<string>? verbose, CancellationToken ct)
    {
        if (!repository.IsBlob) return List(repository.Folder!, filter, warn, verbose);
        var all = await BlobCatalog.ListAsync(BlobStore.Open(repository), warn, verbose, ct).ConfigureAwait(false);
        return Ordered(all.Where(b => Matches(b, filter)));
    }

    /// <summary>Removes a backup from either backend; <paramref name="repository"/> is where it was listed from.</summary>
    public static async Task DeleteAsync(RepositoryAddress? repository, PgBackupItem backup, CancellationToken ct)
    {
        if (repository is { IsBlob: true }) await BlobCatalog.DeleteAsync(BlobStore.Open(repository), backup, ct).ConfigureAwait(false);
        else Delete(backup);
    }

    /// <summary>Records a test's outcome in the backup's metadata, on either backend.</summary>
    public static async Task RecordVerificationAsync(RepositoryAddress? repository, PgBackupItem backup, bool passed, DateTimeOffset when, CancellationToken ct)
    {
        if (repository is { IsBlob: true }) await BlobCatalog.RecordVerificationAsync(BlobStore.Open(repository), backup, passed, when, ct).ConfigureAwait(false);
        else BackupMetadata.RecordVerification(backup, passed, when);
    }

    public static IReadOnlyList<PgBackupItem> List(string repository, CatalogFilter? filter, Action<string>? warn, Action<string>? verbose = null)
    {
        if (!Directory.Exists(repository))
            throw new PgBackupException("RepositoryNotFound", ErrorKind.ObjectNotFound, $"The repository folder '{repository}' does not exist.", repository,
                "Check the path given to -Repository (or the Repository setting), or create a backup into it first with Invoke-PgDump.");
        var options = new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true };
        if (warn != null || verbose != null)
            foreach (var leftover in PartialBackup.Find(repository, recursive: true))
            {
                if (leftover.InProgress) verbose?.Invoke($"'{leftover.Path}' is being written ({leftover.Owner}); it is listed once it is finished.");
                else warn?.Invoke(File.Exists(leftover.Path + ".lock")
                    ? $"'{leftover.Path}' is not a backup: an operation that was interrupted left it ({leftover.Owner}). The next Invoke-PgDump or Start-PgBaseBackup into its folder removes it; you may also delete it."
                    : $"'{leftover.Path}' is not a backup: an interrupted dump or base backup left it. Delete it when no backup is being written into its folder.");
            }
        var backups = new List<PgBackupItem>();
        foreach (var metadata in Directory.EnumerateFiles(repository, "*" + BackupMetadata.Suffix, options))
        {
            var backup = BackupMetadata.Read(metadata, repository, warn);
            if (backup == null) continue;
            if (!File.Exists(backup.Path) && !Directory.Exists(backup.Path))
            {
                warn?.Invoke($"The metadata '{metadata}' names '{backup.Path}', which is missing; that backup is not listed.");
                continue;
            }
            if (Matches(backup, filter)) backups.Add(backup);
        }
        return Ordered(backups);
    }

    private static List<PgBackupItem> Ordered(IEnumerable<PgBackupItem> backups) =>
        backups.OrderBy(b => b.Server, StringComparer.OrdinalIgnoreCase).ThenBy(b => b.Port).ThenBy(b => b.Database, StringComparer.Ordinal)
            .ThenByDescending(b => b.StartTime).ToList();

    private static bool Matches(PgBackupItem b, CatalogFilter? f) =>
        f == null ||
        ((f.Server == null || string.Equals(f.Server, b.Server, StringComparison.OrdinalIgnoreCase)) &&
         (f.Port == null || f.Port == b.Port) &&
         (f.DatabaseMatches == null || f.DatabaseMatches(b.Database)) &&
         (f.Kind == null || f.Kind == b.Kind) &&
         (f.After == null || b.StartTime >= f.After) &&
         (f.Before == null || b.StartTime <= f.Before));

    /// <summary>Which backups go, by -KeepLast and/or -OlderThan, for every server/database group.</summary>
    public static IReadOnlyList<RetentionDecision> PlanRetention(IEnumerable<PgBackupItem> backups, int? keepLast, TimeSpan? olderThan, DateTimeOffset now, bool force)
    {
        var decisions = new List<RetentionDecision>();
        foreach (var group in backups.GroupBy(GroupKey))
        {
            var newestFirst = group.OrderByDescending(b => b.StartTime).ToList();
            var wanted = new List<(PgBackupItem Backup, string Reason)>();
            for (var i = 0; i < newestFirst.Count; i++)
            {
                var b = newestFirst[i];
                // With both rules, a backup goes only when both let it go: keep at least N, and everything newer than the age.
                var beyondKept = keepLast is not { } n || i >= n;
                var tooOld = olderThan is not { } age || b.StartTime < now - age;
                if (beyondKept && tooOld)
                    wanted.Add((b, string.Join(" and ", new[] { keepLast is { } k ? $"beyond the newest {k}" : null, olderThan is { } a ? $"older than {a}" : null }.OfType<string>())));
            }
            decisions.AddRange(ProtectLastValid(wanted, newestFirst, force));
        }
        return decisions;
    }

    /// <summary>Removal of explicitly chosen backups (piped in): the same guard for the last valid backup of each group.</summary>
    public static IReadOnlyList<RetentionDecision> PlanRemoval(IEnumerable<PgBackupItem> requested, Func<PgBackupItem, IEnumerable<PgBackupItem>> siblingsOf, bool force)
    {
        var decisions = new List<RetentionDecision>();
        foreach (var group in requested.GroupBy(GroupKey))
        {
            var first = group.First();
            var all = siblingsOf(first).Where(s => GroupKey(s) == group.Key).ToList();
            foreach (var b in group)
                if (!all.Any(a => SamePath(a, b))) all.Add(b);
            decisions.AddRange(ProtectLastValid(group.Select(b => (b, "requested")).ToList(), all.OrderByDescending(b => b.StartTime).ToList(), force));
        }
        return decisions;
    }

    private static IEnumerable<RetentionDecision> ProtectLastValid(List<(PgBackupItem Backup, string Reason)> wanted, List<PgBackupItem> group, bool force)
    {
        var remaining = group.Where(g => !wanted.Any(w => SamePath(w.Backup, g)) && g.VerificationState != VerificationState.Failed).ToList();
        // Remove the newest of the wanted ones last: if all would go, the newest valid one is the one kept.
        var keep = !force && remaining.Count == 0
            ? wanted.Select(w => w.Backup).Where(b => b.VerificationState != VerificationState.Failed).OrderByDescending(b => b.StartTime).FirstOrDefault()
            : null;
        foreach (var (backup, reason) in wanted)
            yield return backup == keep
                ? new RetentionDecision(backup, false, "it is the only valid backup left of this database (use -Force to remove it anyway)")
                : new RetentionDecision(backup, true, reason);
    }

    /// <summary>Deletes the metadata first, so a backup that is half deleted is never listed as valid.</summary>
    public static void Delete(PgBackupItem backup)
    {
        var metadata = string.IsNullOrEmpty(backup.MetadataPath) ? BackupMetadata.PathFor(backup.Path) : backup.MetadataPath;
        try
        {
            if (File.Exists(metadata)) File.Delete(metadata);
            if (Directory.Exists(backup.Path)) Directory.Delete(backup.Path, recursive: true);
            else if (File.Exists(backup.Path)) File.Delete(backup.Path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new PgBackupException("RemoveFailed", ErrorKind.PermissionDenied, $"The backup '{backup.Path}' could not be removed: {ex.Message}", backup,
                "Check that the repository is writable by this account and that no other process holds the files open.", ex);
        }
    }

    private static string GroupKey(PgBackupItem b) => $"{b.Server.ToLowerInvariant()}\u0001{b.Port}\u0001{b.Kind}\u0001{b.Database}";

    private static bool SamePath(PgBackupItem a, PgBackupItem b) =>
        RepositoryAddress.LooksLikeUrl(a.Path) || RepositoryAddress.LooksLikeUrl(b.Path)
            ? string.Equals(a.Path, b.Path, StringComparison.Ordinal)
            : string.Equals(Path.GetFullPath(a.Path), Path.GetFullPath(b.Path), StringComparison.Ordinal);
}
