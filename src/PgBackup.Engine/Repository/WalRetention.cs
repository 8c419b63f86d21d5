namespace PgBackup.Engine.Repository;

/// <summary>Archived WAL of one cluster that no kept base backup needs any more.</summary>
public sealed record WalPrunePlan(IWalArchiveStore Archive, string SystemIdentifier, WalSegmentName KeepFrom, IReadOnlyList<string> Files, long Bytes)
{
    /// <summary>The archive folder, or a blob archive's URL.</summary>
    public string ArchiveFolder => Archive.Location;
}

/// <summary>
/// Which archived WAL retention may delete: everything before the start segment of the oldest base backup that is kept
/// (it needs WAL from there to reach consistency and to roll forward to now). Timeline history files are always kept,
/// and nothing is pruned for a cluster that has no kept base backup, since then nothing says what is still needed.
/// (Gaps in what is kept are found by Wal.WalArchiveInspector.GapsAfterOldestKept.)
/// </summary>
public static class WalRetention
{
    public static IReadOnlyList<WalPrunePlan> Plan(RepositoryAddress repository, IEnumerable<BaseBackup> keptBaseBackups)
    {
        var plans = new List<WalPrunePlan>();
        foreach (var cluster in keptBaseBackups.Where(b => !string.IsNullOrEmpty(b.SystemIdentifier) && !string.IsNullOrEmpty(b.StartSegment)).GroupBy(b => b.SystemIdentifier))
        {
            var archive = RepositoryLayout.ArchiveStore(repository, cluster.Key);
            if (!archive.Exists) continue;
            var oldest = cluster.OrderBy(b => b.StartLsn).First();
            var segmentSize = oldest.WalSegmentSize;
            var keepFrom = WalSegmentName.Parse(oldest.StartSegment);
            var files = new List<WalStoreEntry>();
            foreach (var file in archive.List())
            {
                if (file.Name.EndsWith(".history", StringComparison.Ordinal)) continue;
                if (file.Name.Length < 24 || !WalSegmentName.TryParse(file.Name[..24], out var segment)) continue;
                if (segment.Number(segmentSize) >= keepFrom.Number(segmentSize)) continue;
                files.Add(file);
            }
            if (files.Count > 0)
                plans.Add(new WalPrunePlan(archive, cluster.Key, keepFrom, files.Select(f => f.Name).Order(StringComparer.Ordinal).ToList(), files.Sum(f => f.SizeBytes)));
        }
        return plans;
    }

    /// <summary>Deletes the oldest files first, so an interrupted prune never leaves a hole in the WAL that stays.</summary>
    public static void Execute(WalPrunePlan plan) => plan.Archive.Delete(plan.Files);
}
