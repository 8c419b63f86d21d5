using System.Globalization;

namespace PgBackup;

/// <summary>A PostgreSQL write-ahead log position ("16/B374D848"): ordered, and subtracting two gives the bytes between them.</summary>
public readonly record struct Lsn(ulong Value) : IComparable<Lsn>, IComparable
{
    public static readonly Lsn Zero = new(0);

    public static Lsn Parse(string text) =>
        TryParse(text, out var lsn) ? lsn : throw new FormatException($"'{text}' is not a PostgreSQL LSN such as 0/16B3748.");

    public static bool TryParse(string? text, out Lsn lsn)
    {
        lsn = Zero;
        if (string.IsNullOrWhiteSpace(text)) return false;
        var slash = text.IndexOf('/');
        if (slash <= 0 || slash == text.Length - 1) return false;
        if (!uint.TryParse(text.AsSpan(0, slash), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var high) ||
            !uint.TryParse(text.AsSpan(slash + 1), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var low))
            return false;
        lsn = new Lsn(((ulong)high << 32) | low);
        return true;
    }

    public int CompareTo(Lsn other) => Value.CompareTo(other.Value);

    // PowerShell's -lt, -gt and Sort-Object use the non-generic interface; without it they would compare the text.
    int IComparable.CompareTo(object? other) => other is Lsn lsn ? CompareTo(lsn) : throw new ArgumentException("An Lsn can only be compared with an Lsn.", nameof(other));
    public static bool operator <(Lsn a, Lsn b) => a.Value < b.Value;
    public static bool operator >(Lsn a, Lsn b) => a.Value > b.Value;
    public static bool operator <=(Lsn a, Lsn b) => a.Value <= b.Value;
    public static bool operator >=(Lsn a, Lsn b) => a.Value >= b.Value;

    /// <summary>The number of WAL bytes from <paramref name="b"/> to <paramref name="a"/> (negative when a is behind b).</summary>
    public static long operator -(Lsn a, Lsn b) => (long)(a.Value - b.Value);
    public static Lsn operator +(Lsn a, long bytes) => new((ulong)((long)a.Value + bytes));

    public override string ToString() => $"{Value >> 32:X}/{Value & 0xFFFFFFFF:X}";
}
