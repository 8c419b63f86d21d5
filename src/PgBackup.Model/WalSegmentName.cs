using System.Globalization;

namespace PgBackup;

/// <summary>
/// A WAL segment file name, 24 hex digits: timeline, then the log and segment numbers ("000000010000000000000003").
/// Segment arithmetic depends on the cluster's wal_segment_size (16 MB unless initdb was told otherwise).
/// </summary>
public readonly record struct WalSegmentName(uint Timeline, uint Log, uint Segment) : IComparable<WalSegmentName>, IComparable
{
    public const long DefaultSegmentSize = 16 * 1024 * 1024;

    public static WalSegmentName Parse(string name) =>
        TryParse(name, out var segment) ? segment : throw new FormatException($"'{name}' is not a WAL segment name (24 hexadecimal digits).");

    public static bool TryParse(string? name, out WalSegmentName segment)
    {
        segment = default;
        if (name is not { Length: 24 } || !name.All(Uri.IsHexDigit)) return false;
        segment = new WalSegmentName(Hex(name, 0), Hex(name, 8), Hex(name, 16));
        return true;
    }

    /// <summary>The segment that holds <paramref name="lsn"/> on <paramref name="timeline"/>.</summary>
    public static WalSegmentName FromLsn(uint timeline, Lsn lsn, long segmentSize = DefaultSegmentSize) =>
        FromNumber(timeline, lsn.Value / (ulong)segmentSize, segmentSize);

    public static WalSegmentName FromNumber(uint timeline, ulong number, long segmentSize = DefaultSegmentSize)
    {
        var perLog = SegmentsPerLog(segmentSize);
        return new WalSegmentName(timeline, (uint)(number / perLog), (uint)(number % perLog));
    }

    /// <summary>The position of this segment in the WAL, counting from 0, regardless of timeline.</summary>
    public ulong Number(long segmentSize = DefaultSegmentSize) => Log * SegmentsPerLog(segmentSize) + Segment;

    public WalSegmentName Next(long segmentSize = DefaultSegmentSize) => FromNumber(Timeline, Number(segmentSize) + 1, segmentSize);

    /// <summary>The first LSN inside this segment.</summary>
    public Lsn StartLsn(long segmentSize = DefaultSegmentSize) => new(Number(segmentSize) * (ulong)segmentSize);

    public int CompareTo(WalSegmentName other) =>
        (Timeline, Log, Segment).CompareTo((other.Timeline, other.Log, other.Segment));

    int IComparable.CompareTo(object? other) =>
        other is WalSegmentName segment ? CompareTo(segment) : throw new ArgumentException("A WalSegmentName can only be compared with a WalSegmentName.", nameof(other));

    public override string ToString() => $"{Timeline:X8}{Log:X8}{Segment:X8}";

    private static ulong SegmentsPerLog(long segmentSize) => 0x1_0000_0000UL / (ulong)segmentSize;

    private static uint Hex(string s, int start) => uint.Parse(s.AsSpan(start, 8), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
}
