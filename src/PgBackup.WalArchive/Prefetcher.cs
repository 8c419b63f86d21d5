using System.Globalization;

namespace PgBackup.WalArchive;

/// <summary>
/// Prefetch during recovery (fetch --parallel &lt;n&gt;): a fetch of a WAL segment that is not in the spool also fetches the
/// next n segments at once into pg_wal/pgbackup_prefetch, each checked (and decrypted) exactly as a fetch is, and only
/// then renamed into the spool; the calls for them take them from there. A segment that fails its check is not spooled,
/// so PostgreSQL's own call for it fetches it again and aborts recovery as before. Entries PostgreSQL has passed are
/// removed as it goes; the archive push of a promoted server removes the rest (<see cref="RemoveLeftovers"/>).
/// </summary>
internal static class Prefetcher
{
    public const string SpoolName = "pgbackup_prefetch";
    private const string SegmentSizeFile = "segment-size";
    private const long DefaultSegmentSize = 16L << 20;

    /// <param name="fetch">Fetches one file into a destination path, with fetch's result codes.</param>
    public static int Fetch(string name, string destination, int parallel, Func<string, string, int> fetch)
    {
        if (!IsSegmentName(name)) return fetch(name, destination);
        var spool = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(destination))!, SpoolName);
        var spooled = Path.Combine(spool, name);
        if (File.Exists(spooled))
        {
            File.Move(spooled, destination, overwrite: true);
            RemovePassed(spool, name);
            return 0;
        }
        try
        {
            Directory.CreateDirectory(spool);
            RemovePassed(spool, name);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return fetch(name, destination); }

        var segmentSize = ReadSegmentSize(spool);
        var ahead = Enumerable.Range(1, parallel).Select(i => Next(name, i, segmentSize)).OfType<string>()
            .Select(next => Task.Run(() => Prefetch(spool, next, fetch))).ToArray();
        var result = fetch(name, destination);
        if (result == 0 && new FileInfo(destination).Length is var size && size != segmentSize && size > 0 && (size & (size - 1)) == 0)
            File.WriteAllText(Path.Combine(spool, SegmentSizeFile), size.ToString(CultureInfo.InvariantCulture));
        Task.WaitAll(ahead);
        return result;
    }

    /// <summary>A promoted server's leftover prefetch spool: nothing will ask for its entries any more.</summary>
    public static void RemoveLeftovers(string walFolder)
    {
        var spool = Path.Combine(walFolder, SpoolName);
        if (!Directory.Exists(spool)) return;
        try { Directory.Delete(spool, recursive: true); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { }
    }

    private static void Prefetch(string spool, string name, Func<string, string, int> fetch)
    {
        Program.Quiet = true; // a miss or a damaged file ahead is PostgreSQL's business when it asks for that file
        try { fetch(name, Path.Combine(spool, name)); }
        catch (Exception) { /* not spooled: the call for this file fetches it itself and reports */ }
        finally { Program.Quiet = false; }
    }

    /// <summary>Entries before the file PostgreSQL asks for now (in name order, so earlier timelines too), and leftovers of cut-off fetches.</summary>
    private static void RemovePassed(string spool, string name)
    {
        foreach (var path in Directory.EnumerateFiles(spool))
        {
            var file = Path.GetFileName(path);
            if ((IsSegmentName(file) && string.CompareOrdinal(file, name) < 0) || file.EndsWith(".tmp", StringComparison.Ordinal))
                File.Delete(path);
        }
    }

    private static long ReadSegmentSize(string spool)
    {
        try
        {
            return long.TryParse(File.ReadAllText(Path.Combine(spool, SegmentSizeFile)), NumberStyles.None, CultureInfo.InvariantCulture, out var size) && size > 0
                ? size : DefaultSegmentSize;
        }
        catch (FileNotFoundException) { return DefaultSegmentSize; }
    }

    /// <summary>The name of the segment <paramref name="steps"/> after <paramref name="name"/> on the same timeline.</summary>
    internal static string? Next(string name, int steps, long segmentSize)
    {
        var timeline = name[..8];
        var log = ulong.Parse(name.AsSpan(8, 8), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        var segment = ulong.Parse(name.AsSpan(16, 8), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        var perLog = 0x1_0000_0000UL / (ulong)segmentSize;
        var number = log * perLog + segment + (ulong)steps;
        var nextLog = number / perLog;
        if (nextLog > uint.MaxValue) return null;
        return timeline + nextLog.ToString("X8", CultureInfo.InvariantCulture) + (number % perLog).ToString("X8", CultureInfo.InvariantCulture);
    }

    internal static bool IsSegmentName(string name) => name.Length == 24 && name.All(char.IsAsciiHexDigitUpper);
}
