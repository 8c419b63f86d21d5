using System.IO.Compression;
using K4os.Compression.LZ4;
using K4os.Compression.LZ4.Streams;

namespace PgBackup.Engine.Repository;

/// <summary>
/// WAL segments compressed by pgbackup-wal push --compress (Enable-PgWalArchiving -CompressWal): "PGBKWZ2\n", then an
/// LZ4 frame at its fastest level, which costs a busy server's archiver a fraction of what zlib did. Segments written
/// before it ("PGBKWZ1\n", then a zlib stream) are still read. Segments only: timeline history files stay text, since
/// timelines are followed by reading them. In an encrypted repository the segment is compressed first and then
/// encrypted. Compiled into pgbackup-wal too.
/// </summary>
public static class WalCompression
{
    /// <summary>The push option, a switch.</summary>
    public const string Option = "--compress";
    public const int MagicLength = 8;

    private static ReadOnlySpan<byte> ZlibMagic => "PGBKWZ1\n"u8;
    private static ReadOnlySpan<byte> Lz4Magic => "PGBKWZ2\n"u8;

    public static bool LooksCompressed(ReadOnlySpan<byte> start) => start.StartsWith(Lz4Magic) || start.StartsWith(ZlibMagic);

    /// <summary>Only segments (24 hex digits, and .partial ones) are compressed.</summary>
    public static bool Applies(string fileName) =>
        fileName.Length >= 24 && !fileName.AsSpan(0, 24).ContainsAnyExcept("0123456789ABCDEF") && (fileName.Length == 24 || fileName.EndsWith(".partial", StringComparison.Ordinal));

    /// <summary>Writes the marker into <paramref name="output"/> and returns the stream to write the segment into; dispose it to finish.</summary>
    public static Stream Compressing(Stream output)
    {
        output.Write(Lz4Magic);
        // Independent 4 MB blocks: a segment is four, each compressed without looking back into the one before. The
        // content checksum (xxHash32 of the plaintext) is checked when it is read back, so damage that still decodes is caught.
        return LZ4Stream.Encode(output, new LZ4EncoderSettings
        {
            CompressionLevel = LZ4Level.L00_FAST, BlockSize = 4 << 20, ChainBlocks = false, ContentChecksum = true,
        }, leaveOpen: true);
    }

    /// <summary>Reads a compressed file from its start; a damaged one throws <see cref="InvalidDataException"/>.</summary>
    public static Stream Decompressing(Stream input)
    {
        Span<byte> start = stackalloc byte[MagicLength];
        if (input.ReadAtLeast(start, MagicLength, throwOnEndOfStream: false) < MagicLength || !LooksCompressed(start))
            throw new InvalidDataException("it does not start with the mark of a compressed WAL file");
        if (start.StartsWith(ZlibMagic)) return new ZLibStream(input, CompressionMode.Decompress, leaveOpen: false);
        return new DamageAsInvalidData(LZ4Stream.Decode(input, extraMemory: 0, leaveOpen: false));
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

    /// <summary>The LZ4 decoder fails on damaged input with whatever its checks hit first; callers know InvalidDataException.</summary>
    private sealed class DamageAsInvalidData(Stream inner) : Tools.ForwardReadStream(inner)
    {
        // A frame cut short ends the stream early; a disk that fails to read is not damage in the file.
        private static bool IsDamage(Exception ex) =>
            ex is EndOfStreamException || ex is not (IOException or InvalidDataException or OperationCanceledException or ObjectDisposedException);

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            try { return Inner.Read(buffer); }
            catch (Exception ex) when (IsDamage(ex))
            {
                throw new InvalidDataException("the compressed WAL file is damaged: " + ex.Message, ex);
            }
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            try { return await Inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false); }
            catch (Exception ex) when (IsDamage(ex))
            {
                throw new InvalidDataException("the compressed WAL file is damaged: " + ex.Message, ex);
            }
        }
    }
}
