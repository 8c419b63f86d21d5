using System.Collections.Concurrent;

namespace PgBackup.Engine.Repository.Blob;

/// <summary>
/// Uploads the files of a local folder into blobs under one key while a tool is still writing them (pg_basebackup's tar
/// files grow by appending): each file is read as it grows and staged block by block, so the upload runs alongside the
/// tool instead of after it. Nothing is committed until <see cref="CommitAsync"/>, which the caller calls only once the
/// files have been verified; without it the staged blocks stay invisible and the writer's cleanup drops them.
/// </summary>
public sealed class FolderUpload : IAsyncDisposable
{
    private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(50);

    private readonly BlobStore _store;
    private readonly string _folder;
    private readonly string _key;
    private readonly Func<string, bool> _include;
    private readonly Func<string, bool> _follow;
    private readonly CancellationTokenSource _cancel;
    private readonly TaskCompletionSource _writerDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ConcurrentDictionary<string, (Task Upload, BlockUploadStream Stream)> _files = new(StringComparer.Ordinal);
    private readonly Task _watching;

    private FolderUpload(BlobStore store, string folder, string key, Func<string, bool> include, Func<string, bool> follow, CancellationToken ct)
    {
        _store = store;
        _folder = folder;
        _key = key;
        _include = include;
        _follow = follow;
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(ct);
        _watching = Task.Run(WatchAsync);
    }

    /// <param name="include">Which files (by name) to upload.</param>
    /// <param name="follow">Which of those grow only by appending, so they can be uploaded while they are written; the others
    /// (pg_basebackup goes back to rewrite the tar headers of pg_wal.tar) are uploaded once the writer has finished.</param>
    public static FolderUpload Start(BlobStore store, string folder, string key, Func<string, bool> include, Func<string, bool> follow, CancellationToken ct) =>
        new(store, folder, key, include, follow, ct);

    /// <summary>Bytes staged so far, for progress.</summary>
    public long BytesUploaded => _files.Values.Sum(f => f.Stream.BytesWritten);

    /// <summary>
    /// The writer has finished: every file is complete. Waits until all of them are staged and returns the SHA-256 of
    /// what was staged of each, by file name, for the caller to compare with the files before anything is committed.
    /// </summary>
    public async Task<Dictionary<string, string>> FinishAsync()
    {
        _writerDone.TrySetResult();
        await _watching.ConfigureAwait(false);
        await Task.WhenAll(_files.Values.Select(f => f.Upload)).ConfigureAwait(false);
        var hashes = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, file) in _files) hashes[name] = await file.Stream.CompleteAsync().ConfigureAwait(false);
        return hashes;
    }

    /// <summary>Commits every staged file.</summary>
    public async Task CommitAsync() =>
        await Parallel.ForEachAsync(_files.Values, _cancel.Token, async (file, _) => await file.Stream.CommitAsync().ConfigureAwait(false)).ConfigureAwait(false);

    private async Task WatchAsync()
    {
        while (true)
        {
            var finished = _writerDone.Task.IsCompleted;
            foreach (var path in Directory.EnumerateFiles(_folder))
            {
                var name = Path.GetFileName(path);
                if (!_include(name) || (!finished && !_follow(name)) || _files.ContainsKey(name)) continue;
                var stream = new BlockUploadStream(_store, _key + "/" + name, _cancel.Token);
                _files[name] = (Task.Run(() => FollowAsync(path, stream)), stream);
            }
            if (finished) return;
            try { await Task.WhenAny(_writerDone.Task, Task.Delay(Poll * 4, _cancel.Token)).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            _cancel.Token.ThrowIfCancellationRequested();
        }
    }

    /// <summary>Reads a file that may still grow until the writer has finished and its end is reached, staging what it reads.</summary>
    private async Task FollowAsync(string path, BlockUploadStream upload)
    {
        var buffer = new byte[1 << 20];
        await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.SequentialScan | FileOptions.Asynchronous);
        while (true)
        {
            var finished = _writerDone.Task.IsCompleted;
            var n = await file.ReadAsync(buffer, _cancel.Token).ConfigureAwait(false);
            if (n > 0)
            {
                await upload.WriteAsync(buffer.AsMemory(0, n), _cancel.Token).ConfigureAwait(false);
                continue;
            }
            // At the end of what is written so far: done when the writer had already finished before this read.
            if (finished) return;
            await Task.WhenAny(_writerDone.Task, Task.Delay(Poll, _cancel.Token)).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _cancel.CancelAsync().ConfigureAwait(false);
        try { await _watching.ConfigureAwait(false); } catch (Exception ex) when (ex is OperationCanceledException or PgBackupException) { }
        foreach (var (upload, stream) in _files.Values)
        {
            try { await upload.ConfigureAwait(false); } catch (Exception ex) when (ex is OperationCanceledException or PgBackupException or IOException) { }
            await stream.DisposeAsync().ConfigureAwait(false);
        }
        _cancel.Dispose();
    }
}
