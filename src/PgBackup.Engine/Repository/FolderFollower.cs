using System.Collections.Concurrent;
using System.Security.Cryptography;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Repository.Encryption;

namespace PgBackup.Engine.Repository;

/// <summary>
/// What a followed file became: a fast hash (XxHash128) of what was read, to compare with the finished file, and the
/// SHA-256 and size of what was stored (the encrypted bytes, in an encrypted repository).
/// </summary>
public sealed record FollowedFile(string ReadHash, string StoredSha256, long StoredBytes)
{
    /// <summary>The same fast hash of a finished file, by name, for every file of <paramref name="folder"/> that <paramref name="include"/> takes.</summary>
    public static async Task<Dictionary<string, string>> HashFilesAsync(string folder, Func<string, bool> include, CancellationToken ct)
    {
        var hashes = new ConcurrentDictionary<string, string>(StringComparer.Ordinal);
        await Parallel.ForEachAsync(Directory.GetFiles(folder).Where(f => include(Path.GetFileName(f))), ct, async (path, token) =>
        {
            var hash = new System.IO.Hashing.XxHash128();
            var buffer = new byte[1 << 20];
            await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan | FileOptions.Asynchronous);
            int n;
            while ((n = await file.ReadAsync(buffer, token).ConfigureAwait(false)) > 0) hash.Append(buffer.AsSpan(0, n));
            hashes[Path.GetFileName(path)] = Convert.ToHexString(hash.GetCurrentHash());
        }).ConfigureAwait(false);
        return new Dictionary<string, string>(hashes, StringComparer.Ordinal);
    }
}

/// <summary>
/// One followed file's destination in the repository: a block blob, or a file in a partial backup folder, each through the
/// repository's encryption when it has one. Nothing is visible until <see cref="CommitAsync"/> (a blob's block list) or
/// until the backup is committed (a file in a partial folder).
/// </summary>
public abstract class FollowedFileTarget : IAsyncDisposable
{
    private EncryptingStream? _encrypting;

    /// <summary>Where the file's bytes go, encrypted on the way when <paramref name="encryption"/> is given.</summary>
    protected void Open(Stream stored, RepositoryEncryption? encryption, string name)
    {
        _encrypting = encryption?.Encrypt(stored, name, leaveOpen: true);
        Input = (Stream?)_encrypting ?? stored;
    }

    public Stream Input { get; private set; } = Stream.Null;
    public abstract long BytesStored { get; }

    /// <summary>After the last byte: seals the encryption and finishes storing; returns the SHA-256 of what was stored.</summary>
    public async Task<string> CompleteAsync()
    {
        if (_encrypting != null) await _encrypting.FinishAsync().ConfigureAwait(false);
        return await CompleteStoredAsync().ConfigureAwait(false);
    }

    protected abstract Task<string> CompleteStoredAsync();
    public abstract Task CommitAsync();

    public virtual async ValueTask DisposeAsync()
    {
        // Sealing an abandoned file writes into storage that may be what failed; the file is discarded either way.
        try { if (_encrypting != null) await _encrypting.DisposeAsync().ConfigureAwait(false); }
        catch (Exception ex) when (ex is IOException or PgBackupException or ObjectDisposedException or OperationCanceledException) { System.Diagnostics.Debug.WriteLine(ex); }
        GC.SuppressFinalize(this);
    }

    /// <summary>A block blob, staged block by block and committed by <see cref="CommitAsync"/>.</summary>
    public sealed class ToBlob : FollowedFileTarget
    {
        private readonly BlockUploadStream _upload;

        public ToBlob(BlobStore store, string key, RepositoryEncryption? encryption, CancellationToken ct)
        {
            _upload = new BlockUploadStream(store, key, ct);
            Open(_upload, encryption, RepositoryEncryption.NameIn(store.Address, key));
        }

        public override long BytesStored => _upload.BytesWritten;
        protected override Task<string> CompleteStoredAsync() => _upload.CompleteAsync();
        public override Task CommitAsync() => _upload.CommitAsync();

        public override async ValueTask DisposeAsync()
        {
            await base.DisposeAsync().ConfigureAwait(false);
            await _upload.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>A file in a partial backup folder (hashed as it is written, synced when complete), made visible by the backup's commit.</summary>
    public sealed class ToFile : FollowedFileTarget
    {
        private readonly FileStream _file;
        private readonly Tools.HashingWriteStream _hashing;

        /// <param name="name">The file's name in the repository, bound into its encryption.</param>
        public ToFile(string path, RepositoryEncryption? encryption, string name)
        {
            _file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
            _hashing = new Tools.HashingWriteStream(new Tools.WritebackStream(_file));
            Open(_hashing, encryption, name);
        }

        public override long BytesStored => _hashing.Length;

        protected override async Task<string> CompleteStoredAsync()
        {
            await _file.FlushAsync().ConfigureAwait(false);
            _file.Flush(flushToDisk: true);
            return _hashing.Sha256();
        }

        public override Task CommitAsync() => Task.CompletedTask;

        public override async ValueTask DisposeAsync()
        {
            await base.DisposeAsync().ConfigureAwait(false);
            await _file.DisposeAsync().ConfigureAwait(false);
            await _hashing.DisposeAsync().ConfigureAwait(false);
        }
    }
}

/// <summary>
/// Copies the files of a local folder into the repository while a tool is still writing them (pg_basebackup's tar files
/// grow by appending): each file is read as it grows and written to its <see cref="FollowedFileTarget"/> (a blob, or a
/// file of an encrypted backup folder), so storing and encrypting run alongside the tool instead of after it. What was
/// read of each file is hashed (<see cref="FollowedFile.HashFilesAsync"/>), for the caller to compare with the finished,
/// verified files before anything is committed.
/// </summary>
public sealed class FolderFollower : IAsyncDisposable
{
    private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(50);

    private readonly string _folder;
    private readonly Func<string, bool> _include;
    private readonly Func<string, bool> _follow;
    private readonly Func<string, CancellationToken, FollowedFileTarget> _open;
    private readonly CancellationTokenSource _cancel;
    private readonly TaskCompletionSource _writerDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ConcurrentDictionary<string, (Task<string> Read, FollowedFileTarget Target)> _files = new(StringComparer.Ordinal);
    private readonly Task _watching;

    private FolderFollower(string folder, Func<string, bool> include, Func<string, bool> follow, Func<string, CancellationToken, FollowedFileTarget> open, CancellationToken ct)
    {
        _folder = folder;
        _include = include;
        _follow = follow;
        _open = open;
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(ct);
        _watching = Task.Run(WatchAsync);
    }

    /// <param name="include">Which files (by name) to copy.</param>
    /// <param name="follow">Which of those grow only by appending, so they can be copied while they are written; the others
    /// (pg_basebackup goes back to rewrite the tar headers of pg_wal.tar) are copied once the writer has finished.</param>
    /// <param name="open">The destination of a file, by name.</param>
    public static FolderFollower Start(string folder, Func<string, bool> include, Func<string, bool> follow, Func<string, CancellationToken, FollowedFileTarget> open, CancellationToken ct) =>
        new(folder, include, follow, open, ct);

    /// <summary>The writer has finished: every file is complete. Waits until all of them are stored and says what each became.</summary>
    public async Task<Dictionary<string, FollowedFile>> FinishAsync()
    {
        _writerDone.TrySetResult();
        await _watching.ConfigureAwait(false);
        await Task.WhenAll(_files.Values.Select(f => f.Read)).ConfigureAwait(false);
        var result = new Dictionary<string, FollowedFile>(StringComparer.Ordinal);
        foreach (var (name, file) in _files)
        {
            var stored = await file.Target.CompleteAsync().ConfigureAwait(false);
            result[name] = new FollowedFile(await file.Read.ConfigureAwait(false), stored, file.Target.BytesStored);
        }
        return result;
    }

    /// <summary>Commits every stored file (a blob's block list).</summary>
    public async Task CommitAsync() =>
        await Parallel.ForEachAsync(_files.Values, _cancel.Token, async (file, _) => await file.Target.CommitAsync().ConfigureAwait(false)).ConfigureAwait(false);

    private async Task WatchAsync()
    {
        while (true)
        {
            var finished = _writerDone.Task.IsCompleted;
            foreach (var path in Directory.EnumerateFiles(_folder))
            {
                var name = Path.GetFileName(path);
                if (!_include(name) || (!finished && !_follow(name)) || _files.ContainsKey(name)) continue;
                var target = _open(name, _cancel.Token);
                _files[name] = (Task.Run(() => FollowAsync(path, target.Input)), target);
            }
            if (finished) return;
            try { await Task.WhenAny(_writerDone.Task, Task.Delay(Poll * 4, _cancel.Token)).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            _cancel.Token.ThrowIfCancellationRequested();
        }
    }

    /// <summary>Reads a file that may still grow until the writer has finished and its end is reached, writing what it reads.</summary>
    /// <returns>The fast hash of what was read.</returns>
    private async Task<string> FollowAsync(string path, Stream output)
    {
        var buffer = new byte[1 << 20];
        var hash = new System.IO.Hashing.XxHash128();
        await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.SequentialScan | FileOptions.Asynchronous);
        while (true)
        {
            var finished = _writerDone.Task.IsCompleted;
            var n = await file.ReadAsync(buffer, _cancel.Token).ConfigureAwait(false);
            if (n > 0)
            {
                hash.Append(buffer.AsSpan(0, n));
                await output.WriteAsync(buffer.AsMemory(0, n), _cancel.Token).ConfigureAwait(false);
                continue;
            }
            // At the end of what is written so far: done when the writer had already finished before this read.
            if (finished) return Convert.ToHexString(hash.GetCurrentHash());
            await Task.WhenAny(_writerDone.Task, Task.Delay(Poll, _cancel.Token)).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _cancel.CancelAsync().ConfigureAwait(false);
        try { await _watching.ConfigureAwait(false); } catch (Exception ex) when (ex is OperationCanceledException or PgBackupException) { }
        foreach (var (read, target) in _files.Values)
        {
            try { await read.ConfigureAwait(false); } catch (Exception ex) when (ex is OperationCanceledException or PgBackupException or IOException) { }
            await target.DisposeAsync().ConfigureAwait(false);
        }
        _cancel.Dispose();
    }
}
