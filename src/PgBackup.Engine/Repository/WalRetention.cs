namespace PgBackup.Engine.Repository;

/// <summary>Archived WAL of one cluster that no kept base backup needs any more.</summary>
public sealed record WalPrunePlan(string ArchiveFolder, string SystemIdentifier, WalSegmentName KeepFrom, IReadOnlyList<string> Files, long Bytes);

/// <summary>
/// Which archived WAL retention may delete: everything before the start segment of the oldest base backup that is kept
/// (it needs WAL from there to reach consistency and to roll forward to now). Timeline history files are always kept,
/// and nothing is pruned for a cluster that has no kept base backup, since then nothing says what is still needed.
/// (Gaps in what is kept are found by Wal.WalArchiveInspector.GapsAfterOldestKept.)
/// </summary>
public static class WalRetention
{
    public const string SidecarSuffix = Repository.WalInventory.SidecarSuffix;

    public static IReadOnlyList<WalPrunePlan> Plan(string repository, IEnumerable<BaseBackup> keptBaseBackups)
    {
        var plans = new List<WalPrunePlan>();
        foreach (var cluster in keptBaseBackups.Where(b => !string.IsNullOrEmpty(b.SystemIdentifier) && !string.IsNullOrEmpty(b.StartSegment)).GroupBy(b => b.SystemIdentifier))
        {
            var folder = RepositoryLayout.ArchiveFolder(repository, cluster.Key);
            if (!Directory.Exists(folder)) continue;
            var oldest = cluster.OrderBy(b => b.StartLsn).First();
            var segmentSize = oldest.WalSegmentSize;
            var keepFrom = WalSegmentName.Parse(oldest.StartSegment);
            var files = new List<string>();
            long bytes = 0;
            foreach (var file in Directory.EnumerateFiles(folder))
            {
                var name = Path.GetFileName(file);
                var walName = name.EndsWith(SidecarSuffix, StringComparison.Ordinal) ? name[..^SidecarSuffix.Length] : name;
                if (walName.EndsWith(".history", StringComparison.Ordinal)) continue;
                if (walName.Length < 24 || !WalSegmentName.TryParse(walName[..24], out var segment)) continue;
                if (segment.Number(segmentSize) >= keepFrom.Number(segmentSize)) continue;
                files.Add(file);
                bytes += new FileInfo(file).Length;
            }
            if (files.Count > 0) plans.Add(new WalPrunePlan(folder, cluster.Key, keepFrom, files.Order(StringComparer.Ordinal).ToList(), bytes));
        }
        return plans;
    }

    /// <summary>Deletes the oldest files first, so an interrupted prune never leaves a hole in the WAL that stays.</summary>
    public static void Execute(WalPrunePlan plan)
    {
        foreach (var file in plan.Files)
        {
            try { File.Delete(file); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new PgBackupException("RemoveFailed", ErrorKind.PermissionDenied, $"Archived WAL '{file}' could not be removed: {ex.Message}", file,
                    "Check that the repository is writable by this account; the files before it were removed, the rest are still there.", ex);
            }
        }
    }
}
