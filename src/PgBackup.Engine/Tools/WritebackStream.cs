namespace PgBackup.Engine.Tools;

/// <summary>
/// Writes through to a file and asks the kernel to start putting it on disk every 64 MB
/// (<see cref="DurableFiles.StartWriting(Microsoft.Win32.SafeHandles.SafeFileHandle, long, long)"/>), so a large file's
/// final fsync waits for its last few megabytes instead of for all of it.
/// </summary>
public sealed class WritebackStream(FileStream file) : Stream
{
    private const long StartWritingEvery = 64 << 20;
    private long _length;
    private long _writingFrom;

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => _length;
    public override long Position { get => _length; set => throw new NotSupportedException(); }
    public override void Flush() => file.Flush();
    public override Task FlushAsync(CancellationToken cancellationToken) => file.FlushAsync(cancellationToken);
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        file.Write(buffer);
        Written(buffer.Length);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        await file.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
        Written(buffer.Length);
    }

    private void Written(int count)
    {
        _length += count;
        if (_length - _writingFrom < StartWritingEvery) return;
        // From there to whatever the file's buffer has handed to the kernel so far.
        DurableFiles.StartWriting(file.SafeFileHandle, _writingFrom);
        _writingFrom = _length - (1 << 16);
    }
}
