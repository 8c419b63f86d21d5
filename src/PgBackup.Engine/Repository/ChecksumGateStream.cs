using System.Security.Cryptography;

namespace PgBackup.Engine.Repository;

/// <summary>
/// Reads a backup while computing its SHA-256, and holds back its last bytes until the whole of it has been read and
/// the checksum matches: a tool restoring from this stream cannot reach the end of its input, and so cannot commit,
/// before the backup is known to be the one recorded. On a mismatch the read fails with PgBackup.ChecksumMismatch.
/// </summary>
public sealed class ChecksumGateStream : Stream
{
    private const int HeldBack = 1 << 20;

    private readonly Stream _inner;
    private readonly string _expected;
    private readonly Func<string, PgBackupException> _mismatch;
    private readonly IncrementalHash _sha256 = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private byte[] _pending = new byte[HeldBack * 2];
    private int _start, _end;
    private bool _innerDone;

    /// <param name="mismatch">The error for a mismatch, given the SHA-256 actually read.</param>
    public ChecksumGateStream(Stream inner, string expectedSha256, Func<string, PgBackupException> mismatch)
    {
        _inner = inner;
        _expected = expectedSha256;
        _mismatch = mismatch;
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

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) => ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
    {
        if (buffer.Length == 0) return 0;
        // Keep more than HeldBack bytes pending (or reach the end) before giving any out.
        while (!_innerDone && _end - _start <= HeldBack)
        {
            if (_pending.Length - _end < HeldBack)
            {
                Array.Copy(_pending, _start, _pending, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }
            var n = await _inner.ReadAsync(_pending.AsMemory(_end, _pending.Length - _end), ct).ConfigureAwait(false);
            if (n == 0)
            {
                _innerDone = true;
                var actual = Convert.ToHexString(_sha256.GetHashAndReset()).ToLowerInvariant();
                if (!string.Equals(actual, _expected, StringComparison.OrdinalIgnoreCase)) throw _mismatch(actual);
                break;
            }
            _sha256.AppendData(_pending, _end, n);
            _end += n;
        }
        var available = _innerDone ? _end - _start : _end - _start - HeldBack;
        var take = Math.Min(available, buffer.Length);
        _pending.AsMemory(_start, take).CopyTo(buffer);
        _start += take;
        return take;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _inner.Dispose();
            _sha256.Dispose();
            _pending = [];
        }
        base.Dispose(disposing);
    }
}
