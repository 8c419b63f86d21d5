using System.IO.Compression;

namespace PgBackup.Engine.Repository;

/// <summary>
/// WAL segments compressed by pgbackup-wal push --compress (Enable-PgWalArchiving -CompressWal): "PGBKWZ1\n", then a
/// zlib stream (its Adler-32 ends it), at zlib's fastest level, which keeps pace with a busy server on one core. Segments
/// only: timeline history files stay text, since timelines are followed by reading them. In an encrypted repository the
/// segment is compressed first and then encrypted. Compiled into pgbackup-wal too.
/// </summary>
public static class WalCompression
{
    /// <summary>The push option, a switch.</summary>
    public const string Option = "--compress";
    public const int MagicLength = 8;

    private static ReadOnlySpan<byte> Magic => "PGBKWZ1\n"u8;

    public static bool LooksCompressed(ReadOnlySpan<byte> start) => start.StartsWith(Magic);

    /// <summary>Only segments (24 hex digits, and .partial ones) are compressed.</summary>
    public static bool Applies(string fileName) =>
        fileName.Length >= 24 && !fileName.AsSpan(0, 24).ContainsAnyExcept("0123456789ABCDEF") && (fileName.Length == 24 || fileName.EndsWith(".partial", StringComparison.Ordinal));

    /// <summary>Writes the marker into <paramref name="output"/> and returns the stream to write the segment into; dispose it to finish.</summary>
    public static Stream Compressing(Stream output)
    {
        output.Write(Magic);
        return new ZLibStream(output, CompressionLevel.Fastest, leaveOpen: true);
    }

    /// <summary>Reads a compressed file from its start; a damaged one throws <see cref="InvalidDataException"/>.</summary>
    public static Stream Decompressing(Stream input)
    {
        Span<byte> start = stackalloc byte[MagicLength];
        if (input.ReadAtLeast(start, MagicLength, throwOnEndOfStream: false) < MagicLength || !LooksCompressed(start))
            throw new InvalidDataException("it does not start with the mark of a compressed WAL file");
        return new ZLibStream(input, CompressionMode.Decompress, leaveOpen: false);
    }

    /// <summary>True when the file at <paramref name="path"/> starts with the mark.</summary>
    public static bool IsCompressed(string path)
    {
        Span<byte> start = stackalloc byte[MagicLength];
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        return file.ReadAtLeast(start, MagicLength, throwOnEndOfStream: false) == MagicLength && LooksCompressed(start);
    }

    /// <summary>Decompresses <paramref name="source"/> into <paramref name="destination"/>; a damaged file throws <see cref="InvalidDataException"/>.</summary>
    public static void DecompressFile(string source, string destination)
    {
        using var input = Decompressing(new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan));
        using var output = new FileStream(destination, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
        input.CopyTo(output, 1 << 20);
    }
}
