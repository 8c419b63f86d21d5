namespace PgBackup.Engine.Tools;

/// <summary>
/// A stream that reads another one from start to end and nothing else (no seeking, no writing): the base of the wrappers
/// that count, report or wait for bytes as they pass. Disposing it disposes the inner stream unless told to leave it open.
/// </summary>
internal abstract class ForwardReadStream(Stream inner, bool leaveOpen = false) : Stream
{
    protected Stream Inner { get; } = inner;

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => Inner.Length;
    public override long Position { get => Inner.Position; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing && !leaveOpen) Inner.Dispose();
        base.Dispose(disposing);
    }
}
