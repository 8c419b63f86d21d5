using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace PgBackup.Engine.Repository.Encryption;

/// <summary>
/// The format of every file in an encrypted repository, compiled into pgbackup-wal too (BCL only):
/// a clear header (magic "PGBKENC1", the repository key's id, the chunk size, and a fresh 256-bit file key wrapped with
/// RSA-OAEP-SHA256 to the repository's public key), then AES-256-GCM chunks of <see cref="ChunkSize"/> bytes, each
/// followed by its 16-byte tag, and a last chunk shorter than that (possibly empty) sealed as the last one.
/// Every chunk's nonce holds its index and a last-chunk flag, and its associated data is a hash of the header and of the
/// file's name in the repository, so a flipped bit, a cut-off end, reordered chunks, and a file put in another file's
/// place (in this or another backup) all fail authentication. Writers need only the public key.
/// </summary>
public static class EncryptedContent
{
    public static ReadOnlySpan<byte> Magic => "PGBKENC1"u8;
    public const int ChunkSize = 64 * 1024;
    public const int TagSize = 16;
    public const int KeyIdSize = 16;
    private const int FileKeySize = 32;

    /// <summary>The identifier of a repository key: the first 16 bytes of the SHA-256 of its public key (SubjectPublicKeyInfo).</summary>
    public static byte[] KeyId(byte[] publicKeyInfo) => SHA256.HashData(publicKeyInfo)[..KeyIdSize];

    /// <summary>The bytes one file of <paramref name="plainLength"/> bytes takes when encrypted to a key of <paramref name="rsaBytes"/>.</summary>
    public static long EncryptedLength(long plainLength, int rsaBytes) =>
        HeaderLength(rsaBytes) + plainLength + (plainLength / ChunkSize + 1) * TagSize;

    private static int HeaderLength(int wrappedLength) => 8 + KeyIdSize + 4 + 2 + wrappedLength;

    internal static byte[] Associated(ReadOnlySpan<byte> header, string name)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name);
        var all = new byte[header.Length + 1 + nameBytes.Length];
        header.CopyTo(all);
        nameBytes.CopyTo(all.AsSpan(header.Length + 1));
        return SHA256.HashData(all);
    }

    internal static void Nonce(Span<byte> nonce, long index, bool last)
    {
        nonce.Clear();
        BinaryPrimitives.WriteInt64LittleEndian(nonce, index);
        nonce[11] = last ? (byte)1 : (byte)0;
    }

    internal static byte[] Header(byte[] keyId, byte[] wrappedFileKey)
    {
        var header = new byte[HeaderLength(wrappedFileKey.Length)];
        Magic.CopyTo(header);
        keyId.CopyTo(header.AsSpan(8));
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8 + KeyIdSize), ChunkSize);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(8 + KeyIdSize + 4), (ushort)wrappedFileKey.Length);
        wrappedFileKey.CopyTo(header.AsSpan(HeaderLength(0)));
        return header;
    }

    /// <summary>A stream that encrypts what is written into <paramref name="output"/> as the file <paramref name="name"/>; disposing it writes the last chunk.</summary>
    public static EncryptingStream Encrypt(Stream output, RSA publicKey, byte[] keyId, string name, bool leaveOpen = false)
    {
        var fileKey = RandomNumberGenerator.GetBytes(FileKeySize);
        var header = Header(keyId, publicKey.Encrypt(fileKey, RSAEncryptionPadding.OaepSHA256));
        return new EncryptingStream(output, fileKey, header, Associated(header, name), leaveOpen);
    }

    /// <summary>
    /// A stream that reads the plaintext of the file <paramref name="name"/> from <paramref name="input"/>. The header is
    /// read and the file key unwrapped here, so a file of another key, or one that is not encrypted, fails before any
    /// plaintext is returned; a damaged chunk fails when it is reached, before its bytes are returned.
    /// </summary>
    public static DecryptingStream Decrypt(Stream input, RSA privateKey, byte[] keyId, string name, bool leaveOpen = false)
    {
        var fixedPart = new byte[HeaderLength(0)];
        var got = ReadFull(input, fixedPart);
        if (got < 8 || !fixedPart.AsSpan(0, 8).SequenceEqual(Magic)) throw new EncryptedContentException(EncryptedContentProblem.NotEncrypted, name);
        if (got < fixedPart.Length) throw new EncryptedContentException(EncryptedContentProblem.Truncated, name);
        if (!fixedPart.AsSpan(8, KeyIdSize).SequenceEqual(keyId))
            throw new EncryptedContentException(EncryptedContentProblem.OtherKey, name);
        var chunkSize = BinaryPrimitives.ReadInt32LittleEndian(fixedPart.AsSpan(8 + KeyIdSize));
        var wrappedLength = BinaryPrimitives.ReadUInt16LittleEndian(fixedPart.AsSpan(8 + KeyIdSize + 4));
        if (chunkSize != ChunkSize || wrappedLength is 0 or > 1024) throw new EncryptedContentException(EncryptedContentProblem.Tampered, name);
        var wrapped = new byte[wrappedLength];
        if (ReadFull(input, wrapped) < wrapped.Length) throw new EncryptedContentException(EncryptedContentProblem.Truncated, name);
        byte[] fileKey;
        try { fileKey = privateKey.Decrypt(wrapped, RSAEncryptionPadding.OaepSHA256); }
        catch (CryptographicException) { throw new EncryptedContentException(EncryptedContentProblem.Tampered, name); }
        if (fileKey.Length != FileKeySize) throw new EncryptedContentException(EncryptedContentProblem.Tampered, name);
        var header = Header(keyId, wrapped);
        return new DecryptingStream(input, fileKey, Associated(header, name), name, leaveOpen);
    }

    /// <summary>True when <paramref name="start"/> (a file's first bytes) begins like an encrypted file.</summary>
    public static bool LooksEncrypted(ReadOnlySpan<byte> start) => start.Length >= 8 && start[..8].SequenceEqual(Magic);

    internal static int ReadFull(Stream input, Span<byte> buffer)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var n = input.Read(buffer[total..]);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    internal static async ValueTask<int> ReadFullAsync(Stream input, Memory<byte> buffer, CancellationToken ct)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var n = await input.ReadAsync(buffer[total..], ct).ConfigureAwait(false);
            if (n == 0) break;
            total += n;
        }
        return total;
    }
}

public enum EncryptedContentProblem
{
    /// <summary>The file does not start with an encrypted file's header (written in clear, or not a PgBackup file).</summary>
    NotEncrypted,
    /// <summary>The file was encrypted to another repository key.</summary>
    OtherKey,
    /// <summary>A chunk, the header or the wrapped key failed authentication: changed, reordered, or a file put in another's place.</summary>
    Tampered,
    /// <summary>The file ends before its last chunk.</summary>
    Truncated,
}

/// <summary>A file of an encrypted repository failed its checks; <see cref="Name"/> is its name in the repository.</summary>
public sealed class EncryptedContentException(EncryptedContentProblem problem, string name)
    : Exception($"'{name}' {Describe(problem)}.")
{
    public EncryptedContentProblem Problem { get; } = problem;
    public string Name { get; } = name;
    /// <summary>What is wrong, without the file's name: "was encrypted with another repository's key".</summary>
    public string Detail => Describe(Problem);

    private static string Describe(EncryptedContentProblem problem) => problem switch
    {
        EncryptedContentProblem.NotEncrypted => "is not encrypted, though its repository is",
        EncryptedContentProblem.OtherKey => "was encrypted with another repository's key",
        EncryptedContentProblem.Truncated => "ends before its last encrypted chunk: it was cut off",
        _ => "failed authentication: it was changed or cut short, or another file was put in its place",
    };
}

/// <summary>Encrypts into the stream below in chunks; <see cref="Stream.Dispose()"/> (or <see cref="FinishAsync"/>) seals the last chunk.</summary>
public sealed class EncryptingStream : Stream
{
    private readonly Stream _output;
    private readonly AesGcm _aes;
    private readonly byte[] _associated;
    private readonly byte[] _plain = new byte[EncryptedContent.ChunkSize];
    private readonly byte[] _sealed = new byte[EncryptedContent.ChunkSize + EncryptedContent.TagSize];
    private readonly bool _leaveOpen;
    private byte[]? _header;
    private int _filled;
    private long _index;
    private bool _finished;

    internal EncryptingStream(Stream output, byte[] fileKey, byte[] header, byte[] associated, bool leaveOpen)
    {
        _output = output;
        _aes = new AesGcm(fileKey, EncryptedContent.TagSize);
        CryptographicOperations.ZeroMemory(fileKey);
        _header = header;
        _associated = associated;
        _leaveOpen = leaveOpen;
    }

    /// <summary>Plaintext bytes taken so far.</summary>
    public long PlainLength { get; private set; }

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => !_finished;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => PlainLength; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_finished, this);
        while (buffer.Length > 0)
        {
            var n = Math.Min(buffer.Length, _plain.Length - _filled);
            buffer[..n].CopyTo(_plain.AsSpan(_filled));
            _filled += n;
            PlainLength += n;
            buffer = buffer[n..];
            if (_filled == _plain.Length)
            {
                WriteHeader();
                _output.Write(Seal(last: false).Span);
            }
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_finished, this);
        while (buffer.Length > 0)
        {
            var n = Math.Min(buffer.Length, _plain.Length - _filled);
            buffer[..n].CopyTo(_plain.AsMemory(_filled));
            _filled += n;
            PlainLength += n;
            buffer = buffer[n..];
            if (_filled == _plain.Length)
            {
                if (_header != null) { await _output.WriteAsync(_header, cancellationToken).ConfigureAwait(false); _header = null; }
                await _output.WriteAsync(Seal(last: false), cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Seals the last chunk and flushes the stream below; afterwards nothing more can be written.</summary>
    public async Task FinishAsync(CancellationToken ct = default)
    {
        if (_finished) return;
        if (_header != null) { await _output.WriteAsync(_header, ct).ConfigureAwait(false); _header = null; }
        await _output.WriteAsync(Seal(last: true), ct).ConfigureAwait(false);
        await _output.FlushAsync(ct).ConfigureAwait(false);
        _finished = true;
    }

    private void WriteHeader()
    {
        if (_header == null) return;
        _output.Write(_header);
        _header = null;
    }

    private Memory<byte> Seal(bool last)
    {
        Span<byte> nonce = stackalloc byte[12];
        EncryptedContent.Nonce(nonce, _index++, last);
        _aes.Encrypt(nonce, _plain.AsSpan(0, _filled), _sealed.AsSpan(0, _filled), _sealed.AsSpan(_filled, EncryptedContent.TagSize), _associated);
        var length = _filled + EncryptedContent.TagSize;
        _filled = 0;
        return _sealed.AsMemory(0, length);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            if (!_finished)
            {
                WriteHeader();
                _output.Write(Seal(last: true).Span);
                _output.Flush();
                _finished = true;
            }
            _aes.Dispose();
            if (!_leaveOpen) _output.Dispose();
        }
        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        await FinishAsync().ConfigureAwait(false);
        _aes.Dispose();
        if (!_leaveOpen) await _output.DisposeAsync().ConfigureAwait(false);
        GC.SuppressFinalize(this);
        await base.DisposeAsync().ConfigureAwait(false);
    }
}

/// <summary>Returns the plaintext of an encrypted file chunk by chunk, each only after it authenticated.</summary>
public sealed class DecryptingStream : Stream
{
    private readonly Stream _input;
    private readonly AesGcm _aes;
    private readonly byte[] _associated;
    private readonly string _name;
    private readonly bool _leaveOpen;
    private readonly byte[] _sealed = new byte[EncryptedContent.ChunkSize + EncryptedContent.TagSize];
    private readonly byte[] _plain = new byte[EncryptedContent.ChunkSize];
    private int _available;
    private int _offset;
    private long _index;
    private bool _ended;

    internal DecryptingStream(Stream input, byte[] fileKey, byte[] associated, string name, bool leaveOpen)
    {
        _input = input;
        _aes = new AesGcm(fileKey, EncryptedContent.TagSize);
        CryptographicOperations.ZeroMemory(fileKey);
        _associated = associated;
        _name = name;
        _leaveOpen = leaveOpen;
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        if (_available == _offset && !_ended) Open(EncryptedContent.ReadFull(_input, _sealed), trailing: () => EncryptedContent.ReadFull(_input, new byte[1]) > 0);
        return Take(buffer);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_available == _offset && !_ended)
        {
            var got = await EncryptedContent.ReadFullAsync(_input, _sealed, cancellationToken).ConfigureAwait(false);
            var extra = got < _sealed.Length && await EncryptedContent.ReadFullAsync(_input, new byte[1], cancellationToken).ConfigureAwait(false) > 0;
            Open(got, () => extra);
        }
        return Take(buffer.Span);
    }

    /// <summary>Reads the rest and authenticates it, discarding the plaintext: proves the whole file intact.</summary>
    public async Task VerifyToEndAsync(CancellationToken ct)
    {
        var buffer = new byte[EncryptedContent.ChunkSize];
        while (await ReadAsync(buffer, ct).ConfigureAwait(false) > 0) { }
    }

    private int Take(Span<byte> buffer)
    {
        var n = Math.Min(buffer.Length, _available - _offset);
        _plain.AsSpan(_offset, n).CopyTo(buffer);
        _offset += n;
        return n;
    }

    /// <param name="got">How many bytes of a whole sealed chunk were read; fewer means this is the last chunk.</param>
    private void Open(int got, Func<bool> trailing)
    {
        var last = got < _sealed.Length;
        if (got < EncryptedContent.TagSize)
            throw new EncryptedContentException(EncryptedContentProblem.Truncated, _name);
        if (last && trailing()) throw new EncryptedContentException(EncryptedContentProblem.Tampered, _name);
        var length = got - EncryptedContent.TagSize;
        Span<byte> nonce = stackalloc byte[12];
        EncryptedContent.Nonce(nonce, _index++, last);
        try { _aes.Decrypt(nonce, _sealed.AsSpan(0, length), _sealed.AsSpan(length, EncryptedContent.TagSize), _plain.AsSpan(0, length), _associated); }
        catch (CryptographicException) { throw new EncryptedContentException(EncryptedContentProblem.Tampered, _name); }
        _available = length;
        _offset = 0;
        _ended = last;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _aes.Dispose();
            if (!_leaveOpen) _input.Dispose();
        }
        base.Dispose(disposing);
    }
}
