using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace PgBackup.Engine.Physical;

/// <summary>The size, CRC-32C and SHA-256 of one file's bytes, with both checksums as hex the way a backup_manifest writes them.</summary>
public readonly record struct FileDigest(long Length, string Crc32C, string Sha256)
{
    public static FileDigest Of(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.SequentialScan);
        return Of(stream);
    }

    public static FileDigest Of(Stream stream)
    {
        using var digester = new FileDigester();
        digester.AppendAll(stream);
        return digester.Finish();
    }

    /// <summary>Whether these bytes are what a manifest entry describes (its size and, when it has one, its checksum).</summary>
    public bool Matches(ManifestFile entry) =>
        Length == entry.Size && (entry.ChecksumAlgorithm?.ToUpperInvariant() switch
        {
            null or "NONE" => true,
            "CRC32C" => string.Equals(Crc32C, entry.Checksum, StringComparison.OrdinalIgnoreCase),
            "SHA256" => string.Equals(Sha256, entry.Checksum, StringComparison.OrdinalIgnoreCase),
            _ => false,
        });
}

/// <summary>
/// Computes CRC-32C and SHA-256 in the same pass over the bytes, so a file read once can be checked against the CRC-32C
/// a server put in its manifest and given the SHA-256 that PgBackup's manifests carry.
/// </summary>
public sealed class FileDigester : IDisposable
{
    private const int BufferSize = 1 << 20;
    private readonly IncrementalHash? _sha256;
    private readonly bool _crc32C;
    private uint _crc = 0xFFFFFFFF;

    public FileDigester() : this(crc32C: true, sha256: true) { }

    /// <summary>A digester that computes only the checksums asked for; the others come out empty.</summary>
    public FileDigester(bool crc32C, bool sha256)
    {
        _crc32C = crc32C;
        _sha256 = sha256 ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
    }

    /// <summary>Just what checking bytes against a manifest entry needs: its algorithm's checksum, or none without an entry.</summary>
    public static FileDigester For(ManifestFile? entry) => entry?.ChecksumAlgorithm?.ToUpperInvariant() switch
    {
        "SHA256" => new FileDigester(crc32C: false, sha256: true),
        "CRC32C" => new FileDigester(crc32C: true, sha256: false),
        _ => new FileDigester(crc32C: false, sha256: false),
    };
    // One read buffer per thread, not per digester: the follower keeps a digester open for every file still being written.
    [ThreadStatic] private static byte[]? t_buffer;

    public long Length { get; private set; }

    // Optimised from the first call: this loop runs over every byte of a backup, often in a process that has just started.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Append(ReadOnlySpan<byte> data)
    {
        Length += data.Length;
        _sha256?.AppendData(data);
        if (!_crc32C) return;
        // PostgreSQL's COMP_CRC32C: the SSE 4.2 / ARMv8 crc32c instruction over little-endian words, which BitOperations uses.
        var crc = _crc;
        var words = MemoryMarshal.Cast<byte, ulong>(data);
        foreach (var word in words) crc = BitOperations.Crc32C(crc, BitConverter.IsLittleEndian ? word : BinaryPrimitives.ReverseEndianness(word));
        foreach (var b in data[(words.Length * sizeof(ulong))..]) crc = BitOperations.Crc32C(crc, b);
        _crc = crc;
    }

    /// <summary>Reads the stream from where it is to its current end, or at most <paramref name="limit"/> bytes; returns how many bytes that was.</summary>
    public long AppendAll(Stream stream, long limit = long.MaxValue) => AppendAll(stream, null, limit);

    /// <summary>As <see cref="AppendAll(Stream, long)"/>, handing each piece read to <paramref name="alsoTo"/> as well.</summary>
    public long AppendAll(Stream stream, ReadSpanAction? alsoTo, long limit = long.MaxValue)
    {
        var buffer = t_buffer ??= new byte[BufferSize];
        long total = 0;
        int read;
        while (total < limit && (read = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, limit - total))) > 0)
        {
            Append(buffer.AsSpan(0, read));
            alsoTo?.Invoke(buffer.AsSpan(0, read));
            total += read;
        }
        return total;
    }

    public delegate void ReadSpanAction(ReadOnlySpan<byte> data);

    public FileDigest Finish()
    {
        // The manifest holds the finished CRC (inverted) as its four bytes in memory order, i.e. little-endian.
        Span<byte> crcBytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(crcBytes, _crc ^ 0xFFFFFFFF);
        var digest = new FileDigest(Length, _crc32C ? Convert.ToHexString(crcBytes).ToLowerInvariant() : "",
            _sha256 != null ? Convert.ToHexString(_sha256.GetHashAndReset()).ToLowerInvariant() : "");
        _crc = 0xFFFFFFFF;
        Length = 0;
        return digest;
    }

    public void Dispose() => _sha256?.Dispose();
}
