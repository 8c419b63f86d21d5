using System.Globalization;
using System.Text.RegularExpressions;

namespace PgBackup.Engine.Repository;

public enum WalFileKind { Segment, PartialSegment, BackupHistory, TimelineHistory }

/// <summary>One WAL file in an archive folder. <see cref="Segment"/> is the segment it is or belongs to (none for a timeline history file).</summary>
public sealed record WalArchiveFile(string Name, WalFileKind Kind, uint Timeline, WalSegmentName? Segment, long SizeBytes, bool HasSidecar);

/// <summary>
/// A stretch of a timeline's ancestry: <see cref="Timeline"/> holds the WAL from <see cref="Begin"/> up to <see cref="End"/>,
/// where the next timeline branched off (null for the timeline itself, which runs on).
/// </summary>
public sealed record WalTimelineSpan(uint Timeline, Lsn Begin, Lsn? End);

/// <summary>
/// The WAL files of one archive folder, by kind, and the timeline arithmetic over them: for each position in the WAL,
/// which timeline's segment recovery reads, following the history files.
/// </summary>
public sealed class WalInventory
{
    public const string SidecarSuffix = FolderWalArchiveStore.SidecarSuffix;

    private static readonly Regex HistoryName = new("^(?<tli>[0-9A-F]{8})\\.history$", RegexOptions.Compiled | RegexOptions.IgnoreCase);
    private static readonly Regex PartialName = new("^(?<seg>[0-9A-F]{24})\\.partial$", RegexOptions.Compiled | RegexOptions.IgnoreCase);
    private static readonly Regex BackupHistoryName = new("^(?<seg>[0-9A-F]{24})\\.[0-9A-F]{8}\\.backup$", RegexOptions.Compiled | RegexOptions.IgnoreCase);

    private readonly Dictionary<WalSegmentName, WalArchiveFile> _segments;

    private WalInventory(IWalArchiveStore store, long segmentSize, List<WalArchiveFile> files)
    {
        Store = store;
        SegmentSize = segmentSize;
        Files = files;
        _segments = files.Where(f => f.Kind == WalFileKind.Segment).ToDictionary(f => f.Segment!.Value);
        Timelines = files.Select(f => f.Timeline).Distinct().Order().ToList();
    }

    public IWalArchiveStore Store { get; }
    /// <summary>The archive folder, or a blob archive's URL.</summary>
    public string Folder => Store.Location;
    public long SegmentSize { get; }
    /// <summary>Every WAL file, ordered by name; temporary files, sidecars and foreign files are left out.</summary>
    public IReadOnlyList<WalArchiveFile> Files { get; }
    /// <summary>Timelines that have any file in the archive, segments or only a history file.</summary>
    public IReadOnlyList<uint> Timelines { get; }

    public bool HasSegment(WalSegmentName segment) => _segments.ContainsKey(segment);

    public bool HasFile(string name) => Files.Any(f => f.Name == name);

    public static WalInventory Read(string folder, long segmentSize, Action<string>? warn) => Read(new FolderWalArchiveStore(folder), segmentSize, warn);

    public static WalInventory Read(IWalArchiveStore store, long segmentSize, Action<string>? warn)
    {
        ValidateSegmentSize(segmentSize);
        if (!store.Exists)
            throw new PgBackupException("WalArchiveNotFound", ErrorKind.ObjectNotFound, $"The WAL archive '{store.Location}' does not exist.", store.Location,
                "Check the repository: a cluster's WAL is archived into <Repository>/wal/<system identifier>.");

        var perLog = SegmentsPerLog(segmentSize);
        var files = new List<WalArchiveFile>();
        foreach (var entry in store.List().OrderBy(e => e.Name, StringComparer.Ordinal))
        {
            var name = entry.Name;
            WalArchiveFile? file = null;
            if (WalSegmentName.TryParse(name, out var segment))
                file = new(name, WalFileKind.Segment, segment.Timeline, segment, entry.SizeBytes, entry.HasChecksum);
            else if (PartialName.Match(name) is { Success: true } partial)
                file = SegmentFile(WalFileKind.PartialSegment, partial.Groups["seg"].Value, entry);
            else if (BackupHistoryName.Match(name) is { Success: true } backup)
                file = SegmentFile(WalFileKind.BackupHistory, backup.Groups["seg"].Value, entry);
            else if (HistoryName.Match(name) is { Success: true } history)
                file = new(name, WalFileKind.TimelineHistory, uint.Parse(history.Groups["tli"].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture),
                    null, entry.SizeBytes, entry.HasChecksum);

            if (file == null || file.Timeline == 0)
                warn?.Invoke($"Ignoring '{name}' in the WAL archive {store.Location}: it is not named as PostgreSQL names WAL files.");
            else if (file.Segment is { } s && s.Segment >= perLog)
                warn?.Invoke($"Ignoring '{name}' in the WAL archive {store.Location}: it cannot be a segment of a cluster with {segmentSize}-byte WAL segments.");
            else
                files.Add(file);
        }
        return new WalInventory(store, segmentSize, files);
    }

    /// <summary>
    /// The ancestry of <paramref name="timeline"/>, oldest first, from its history file in the archive. Without a readable
    /// history file the timeline is taken to stand alone, so its own segments are still checked (and a warning says why).
    /// </summary>
    public IReadOnlyList<WalTimelineSpan> Lineage(uint timeline, Action<string>? warn)
    {
        WalTimelineSpan[] alone = [new(timeline, Lsn.Zero, null)];
        if (timeline == 1) return alone;
        var name = HistoryFileName(timeline);
        var text = HasFile(name) ? Store.ReadText(name) : null;
        if (text == null)
        {
            warn?.Invoke($"The WAL archive {Folder} has no {name}: recovery cannot follow timeline {timeline} without it, and segments of earlier timelines are not checked for it.");
            return alone;
        }
        try
        {
            return ParseHistory(timeline, text);
        }
        catch (FormatException ex)
        {
            warn?.Invoke($"The timeline history file {name} in {Folder} is damaged ({ex.Message}); segments of earlier timelines are not checked for timeline {timeline}.");
            return alone;
        }
    }

    /// <summary>
    /// Parses a timeline history file: one "parentTLI switchLSN reason" line per ancestor, oldest first (the TLI is decimal),
    /// each saying where the next timeline branched off.
    /// </summary>
    public static IReadOnlyList<WalTimelineSpan> ParseHistory(uint timeline, string text)
    {
        var spans = new List<WalTimelineSpan>();
        var begin = Lsn.Zero;
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var fields = line.Split((char[]?)null, 3, StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 2 || !uint.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var parent) || !Lsn.TryParse(fields[1], out var end))
                throw new FormatException($"'{line}' is not a 'timeline switchpoint reason' line");
            if (parent >= timeline || (spans.Count > 0 && parent <= spans[^1].Timeline) || end < begin)
                throw new FormatException($"the line '{line}' is out of order");
            spans.Add(new(parent, begin, end));
            begin = end;
        }
        spans.Add(new(timeline, begin, null));
        return spans;
    }

    public static string HistoryFileName(uint timeline) => $"{timeline:X8}.history";

    /// <summary>
    /// The timeline whose segment recovery reads at segment position <paramref name="number"/>: the newest one in the lineage
    /// that had begun by then. A child begins in the segment holding its switch point (PostgreSQL copies the parent's WAL up to
    /// that point into the child's first segment), so the parent's segment at that position is not needed.
    /// </summary>
    public static uint TimelineAt(IReadOnlyList<WalTimelineSpan> lineage, ulong number, long segmentSize)
    {
        for (var i = lineage.Count - 1; i > 0; i--)
            if (lineage[i].Begin.Value / (ulong)segmentSize <= number) return lineage[i].Timeline;
        return lineage[0].Timeline;
    }

    /// <summary>Whether replaying from <paramref name="segment"/> onwards can lead into the last timeline of the lineage.</summary>
    public static bool IsOnLineage(IReadOnlyList<WalTimelineSpan> lineage, WalSegmentName segment, long segmentSize)
    {
        var span = lineage.FirstOrDefault(s => s.Timeline == segment.Timeline);
        if (span == null) return false;
        var start = segment.StartLsn(segmentSize);
        return span.Begin.Value / (ulong)segmentSize <= segment.Number(segmentSize) && (span.End is not { } end || start < end);
    }

    /// <summary>The positions (segment numbers) at which the archive holds the segment recovery along the lineage reads.</summary>
    internal SortedSet<ulong> PositionsOnLineage(IReadOnlyList<WalTimelineSpan> lineage) =>
        new(_segments.Keys.Where(s => TimelineAt(lineage, s.Number(SegmentSize), SegmentSize) == s.Timeline).Select(s => s.Number(SegmentSize)));

    /// <summary>
    /// The runs of segments that replaying positions <paramref name="from"/> to <paramref name="to"/> along the lineage needs and
    /// the archive lacks, each run on one timeline.
    /// </summary>
    internal List<(WalSegmentName From, WalSegmentName To, ulong Count)> MissingRuns(IReadOnlyList<WalTimelineSpan> lineage, ulong from, ulong to)
    {
        var runs = new List<(WalSegmentName, WalSegmentName, ulong)>();
        if (from > to) return runs;
        var expected = from;
        foreach (var present in PositionsOnLineage(lineage).GetViewBetween(from, to))
        {
            if (present > expected) AddSplitByTimeline(runs, lineage, expected, present - 1);
            expected = present + 1;
        }
        if (expected <= to) AddSplitByTimeline(runs, lineage, expected, to);
        return runs;
    }

    private void AddSplitByTimeline(List<(WalSegmentName, WalSegmentName, ulong)> runs, IReadOnlyList<WalTimelineSpan> lineage, ulong first, ulong last)
    {
        var timelineStarts = lineage.Skip(1).Select(s => s.Begin.Value / (ulong)SegmentSize).Where(b => b > first && b <= last).Distinct().Order();
        foreach (var next in timelineStarts.Append(last + 1))
        {
            var timeline = TimelineAt(lineage, first, SegmentSize);
            runs.Add((WalSegmentName.FromNumber(timeline, first, SegmentSize), WalSegmentName.FromNumber(timeline, next - 1, SegmentSize), next - first));
            first = next;
        }
    }

    internal static void ValidateSegmentSize(long segmentSize)
    {
        // PostgreSQL allows powers of two from 1 MB to 1 GB (initdb --wal-segsize).
        if (segmentSize < 1 << 20 || segmentSize > 1 << 30 || (segmentSize & (segmentSize - 1)) != 0)
            throw new PgBackupException("InvalidWalSegmentSize", ErrorKind.InvalidArgument,
                $"{segmentSize} bytes is not a WAL segment size PostgreSQL allows (a power of two from 1 MB to 1 GB).", segmentSize,
                "Pass the server's wal_segment_size in bytes (SHOW wal_segment_size; 16 MB unless initdb was given --wal-segsize).");
    }

    private static ulong SegmentsPerLog(long segmentSize) => 0x1_0000_0000UL / (ulong)segmentSize;

    private static WalArchiveFile SegmentFile(WalFileKind kind, string segmentName, WalStoreEntry entry)
    {
        var segment = WalSegmentName.Parse(segmentName);
        return new(entry.Name, kind, segment.Timeline, segment, entry.SizeBytes, entry.HasChecksum);
    }
}
