using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using Azure.Storage;
using Azure.Storage.Blobs.Models;

namespace PgBackup.Engine.Repository.Blob;

/// <summary>
/// A write-only stream into one block blob: what is written is cut into blocks that are staged several at once (each
/// checked by the service against its MD5 on arrival) while the SHA-256 of the whole is computed, and nothing is
/// visible until <see cref="CommitAsync"/> commits the block list. Without a commit the staged blocks stay invisible,
/// and <see cref="BlobStore.DiscardUncommittedAsync"/> drops them.
/// </summary>
public sealed class BlockUploadStream : Stream
{
    public const int DefaultBlockSize = 8 << 20;

    private readonly BlobStore _store;
    private readonly string _key;
    private readonly int _blockSize;
    private readonly SemaphoreSlim _inFlight;
    private readonly List<Task> _staging = [];
    private readonly List<string> _blockIds = [];
    private readonly IncrementalHash _sha256 = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private readonly string _uploadId = Guid.NewGuid().ToString("N")[..12];
    private readonly CancellationToken _ct;
    private byte[] _buffer;
    private int _filled;
    private long _length;
    private Exception? _failure;
    private string? _sha;

    public BlockUploadStream(BlobStore store, string key, CancellationToken ct, int blockSize = DefaultBlockSize, int parallel = 4)
    {
        _store = store;
        _key = key;
        _blockSize = blockSize;
        _inFlight = new SemaphoreSlim(parallel);
        _ct = ct;
        _buffer = ArrayPool<byte>.Shared.Rent(blockSize);
    }

    /// <summary>Bytes written so far.</summary>
    public long BytesWritten => _length;

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => _length;
    public override long Position { get => _length; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken ct) => WriteAsync(buffer.AsMemory(offset, count), ct).AsTask();

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken ct = default)
    {
        while (data.Length > 0)
        {
            if (_failure != null) throw _failure;
            var n = Math.Min(data.Length, _blockSize - _filled);
            data[..n].CopyTo(_buffer.AsMemory(_filled));
            _sha256.AppendData(data.Span[..n]);
            _filled += n;
            _length += n;
            data = data[n..];
            if (_filled == _blockSize) await StageCurrentAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Stages what is left and waits for every block; returns the SHA-256 (hex) of all that was written. Nothing is visible yet.</summary>
    public async Task<string> CompleteAsync()
    {
        if (_sha != null) return _sha;
        if (_filled > 0) await StageCurrentAsync().ConfigureAwait(false); // an empty list commits an empty blob
        await Task.WhenAll(_staging).ConfigureAwait(false);
        if (_failure != null) throw _failure;
        _sha = Convert.ToHexString(_sha256.GetHashAndReset()).ToLowerInvariant();
        return _sha;
    }

    /// <summary>Completes the staging and commits the block list: only now does the blob exist. Returns the SHA-256 (hex).</summary>
    public async Task<string> CommitAsync(IDictionary<string, string>? metadata = null, string contentType = "application/octet-stream")
    {
        var sha = await CompleteAsync().ConfigureAwait(false);
        var meta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>()) { ["sha256"] = sha };
        await _store.Call(() => _store.Block(_key).CommitBlockListAsync(_blockIds, new CommitBlockListOptions
        {
            Metadata = meta,
            HttpHeaders = new BlobHttpHeaders { ContentType = contentType },
        }, _ct), $"commit '{_key}' in").ConfigureAwait(false);
        return sha;
    }

    private async Task StageCurrentAsync()
    {
        var id = Convert.ToBase64String(Encoding.ASCII.GetBytes($"{_uploadId}-{_blockIds.Count:D6}"));
        _blockIds.Add(id);
        var block = _buffer;
        var length = _filled;
        _buffer = ArrayPool<byte>.Shared.Rent(_blockSize);
        _filled = 0;
        await _inFlight.WaitAsync(_ct).ConfigureAwait(false);
        _staging.Add(Task.Run(async () =>
        {
            try
            {
                using var content = new MemoryStream(block, 0, length, writable: false);
                await _store.Call(() => _store.Block(_key).StageBlockAsync(id, content, new BlockBlobStageBlockOptions
                {
                    TransferValidation = new UploadTransferValidationOptions { ChecksumAlgorithm = StorageChecksumAlgorithm.MD5 },
                }, _ct), $"upload '{_key}' into").ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                _failure ??= ex;
                throw;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(block);
                _inFlight.Release();
            }
        }, CancellationToken.None));
    }

    /// <summary>Waits for blocks still being staged (so no buffer is returned while in use), then frees the buffers.</summary>
    public override async ValueTask DisposeAsync()
    {
        try { await Task.WhenAll(_staging).ConfigureAwait(false); }
        catch (Exception ex) { System.Diagnostics.Debug.WriteLine(ex); } // the upload's own error was thrown where it happened
        Release();
        GC.SuppressFinalize(this);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            try { Task.WhenAll(_staging).Wait(); } catch (AggregateException) { }
            Release();
        }
        base.Dispose(disposing);
    }

    private void Release()
    {
        if (_buffer.Length == 0) return;
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = [];
        _sha256.Dispose();
        _inFlight.Dispose();
    }
}
