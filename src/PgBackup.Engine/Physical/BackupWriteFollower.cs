using System.Formats.Tar;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Physical;

/// <summary>
/// Checksums a base backup while pg_basebackup is still writing it, in CPU time the backup leaves idle, so checking it
/// afterwards costs only what it had not reached yet. pg_basebackup writes one file at a time from start to end and never goes back
/// (its tar extractor appends to a file, closes it and opens the next; a Tar backup is the same for its tar files), so a file
/// whose last change is older than another file's is complete, and the file still being written can be read up to where it
/// has got. WAL (pg_wal, pg_wal.tar) is streamed alongside and is not in the manifest's file list, so it is left alone.
/// Each file it has finished is handed to the disk at once (pg_basebackup runs with --no-sync), so the final sync has little
/// left to wait for; not in a spool, whose files are stored (encrypted, uploaded) elsewhere and thrown away. The digests
/// are a head start, not the verdict: anything missed or not matching is read again once
/// pg_basebackup is done.
/// </summary>
public sealed class BackupWriteFollower : IAsyncDisposable
{
    private static readonly TimeSpan Idle = TimeSpan.FromMilliseconds(25);
    private const long ReadAheadBeforeListing = 16 << 20;

    private readonly string _root;
    private readonly bool _handToDisk;
    private readonly FollowingEncryption? _copies;
    private readonly bool _sha256;
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _writerFinished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task<Dictionary<string, FileDigest>> _run;
    private volatile IdleCpu? _idle;
    // Hand-off of an uncompressed tar file's rest once pg_basebackup has exited (see FinishAsync).
    private readonly object _handOff = new();
    private (string Archive, long NextHeader)? _resumeAt;
    private (string Archive, Task<Dictionary<string, FileDigest>> Digests)? _rest;

    private BackupWriteFollower(string root, BaseBackupFormat format, bool handToDisk, FollowingEncryption? copies, bool sha256)
    {
        _root = root;
        _handToDisk = handToDisk;
        _copies = copies;
        _sha256 = sha256;
        _run = Task.Factory.StartNew(() =>
        {
            // pg_basebackup and the server's WAL sender keep both cores of a small machine busy but for short waits on
            // each other; at idle priority the checksums fill those gaps instead of slowing the backup. Encrypting copies
            // runs at normal priority: the disk must get their bytes while pg_basebackup runs, not all at the end.
            if (copies == null) _idle = IdleCpu.Enter();
            if (WriterFinished) _idle?.Leave();
            try { return format == BaseBackupFormat.Plain ? FollowFolder() : FollowTarFiles(); }
            finally { _idle?.Leave(); }
        }, _stop.Token, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    /// <summary>Starts following <paramref name="root"/>, which pg_basebackup has not necessarily created yet.</summary>
    /// <param name="handToDisk">False for a spool that is thrown away once its files are stored elsewhere: writing it to disk would be wasted.</param>
    /// <param name="copies">For a Plain backup into an encrypted repository: where every byte read is also encrypted.</param>
    /// <param name="sha256">Whether the digests include the SHA-256 that seals the manifest, or only the CRC-32C that checks it.</param>
    public static BackupWriteFollower Start(string root, BaseBackupFormat format, bool handToDisk, FollowingEncryption? copies = null, bool sha256 = true) =>
        new(root, format, handToDisk, format == BaseBackupFormat.Plain ? copies : null, sha256);

    private FileDigester NewDigester() => new(crc32C: true, _sha256);

    /// <summary>
    /// Call once pg_basebackup has exited successfully: every file is then complete, so the rest is read to its end.
    /// Returns the digests by manifest path; a file the follower could not read is simply absent.
    /// </summary>
    public async Task<IReadOnlyDictionary<string, FileDigest>> FinishAsync()
    {
        _writerFinished.TrySetResult();
        // What is left is now all there is to wait for.
        _idle?.Leave();
        // A tar file can only be read in order, but an uncompressed one can be indexed: the members after the one the
        // follower is reading are read on the other cores while it finishes that one.
        lock (_handOff)
        {
            if (_resumeAt is { } at) _rest = (at.Archive, Task.Run(() => ReadTarFrom(at.Archive, at.NextHeader, _stop.Token, _sha256)));
        }
        try
        {
            var digests = await _run.ConfigureAwait(false);
            if (_rest is { } rest)
                foreach (var (name, digest) in await rest.Digests.ConfigureAwait(false)) digests[name] = digest;
            return digests;
        }
        // A damaged or vanished file stops the head start; the verifier then reads what is missing itself and reports it.
        catch (Exception)
        {
            return new Dictionary<string, FileDigest>();
        }
    }

    private bool WriterFinished => _writerFinished.Task.IsCompleted;

    private void WaitForMore()
    {
        try { _writerFinished.Task.Wait(Idle, _stop.Token); }
        catch (OperationCanceledException) { }
        _stop.Token.ThrowIfCancellationRequested();
    }

    private Dictionary<string, FileDigest> FollowFolder()
    {
        var done = new Dictionary<string, FileDigest>(StringComparer.Ordinal);
        var inProgress = new Dictionary<string, FileDigester>(StringComparer.Ordinal);
        var skip = new HashSet<string>(StringComparer.Ordinal) { "pg_wal", "pg_xlog", "pg_tblspc" };
        try
        {
            while (true)
            {
                // Read before looking at the files: if pg_basebackup had finished by then, every file seen is complete.
                if (WriterFinished) return FinishInParallel(done, inProgress, skip);
                if (inProgress.Count > 0)
                {
                    // While the file being written grows, pg_basebackup has not moved on: no need to list the folder.
                    long grown = 0;
                    foreach (var (path, digester) in inProgress) grown += ReadOnFrom(path, digester);
                    if (grown > 0)
                    {
                        if (grown < ReadAheadBeforeListing) WaitForMore();
                        continue;
                    }
                }
                var files = Directory.Exists(_root) ? ListFiles(skip) : [];
                var newest = files.Count == 0 ? DateTime.MinValue : files.Max(f => f.Modified);
                long read = 0;
                foreach (var (path, modified, _) in files.OrderBy(f => f.Modified))
                {
                    _stop.Token.ThrowIfCancellationRequested();
                    if (done.ContainsKey(path)) continue;
                    if (!inProgress.TryGetValue(path, out var digester)) inProgress[path] = digester = NewDigester();
                    read += ReadOnFrom(path, digester);
                    if (modified >= newest) continue;
                    done[path] = digester.Finish();
                    _copies?.Finish(path, done[path]);
                    digester.Dispose();
                    inProgress.Remove(path);
                    // pg_basebackup was told not to sync (PgBackup does that once it is done); starting the disk on each
                    // finished file now leaves almost nothing for that final sync to wait for.
                    if (_handToDisk) DurableFiles.StartWriting(Path.Combine(_root, path));
                }
                // Listing the folder again for a few new bytes would only take CPU from pg_basebackup.
                if (read < ReadAheadBeforeListing) WaitForMore();
            }
        }
        finally
        {
            foreach (var digester in inProgress.Values) digester.Dispose();
        }
    }

    /// <summary>
    /// pg_basebackup has exited, so nothing competes for the CPU any more: whatever is left (usually the tail of the
    /// largest files) is read on every core, the files begun during the backup from where the follower had got.
    /// </summary>
    private Dictionary<string, FileDigest> FinishInParallel(Dictionary<string, FileDigest> done, Dictionary<string, FileDigester> inProgress, HashSet<string> skip)
    {
        var remaining = (Directory.Exists(_root) ? ListFiles(skip) : [])
            .Where(f => !done.ContainsKey(f.Path))
            .OrderByDescending(f => f.Length - (inProgress.TryGetValue(f.Path, out var begun) ? begun.Length : 0))
            .Select(f => f.Path)
            .ToList();
        var finished = new System.Collections.Concurrent.ConcurrentDictionary<string, FileDigest>(done, StringComparer.Ordinal);
        Parallel.ForEach(remaining, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount, CancellationToken = _stop.Token }, path =>
        {
            var digester = inProgress.GetValueOrDefault(path);
            var owned = digester == null;
            digester ??= NewDigester();
            try
            {
                ReadOnFrom(path, digester);
                finished[path] = digester.Finish();
                _copies?.Finish(path, finished[path]);
            }
            finally
            {
                if (owned) digester.Dispose();
            }
        });
        return new Dictionary<string, FileDigest>(finished, StringComparer.Ordinal);
    }

    private List<(string Path, DateTime Modified, long Length)> ListFiles(HashSet<string> skip)
    {
        var options = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint, IgnoreInaccessible = true };
        var files = new List<(string, DateTime, long)>();
        foreach (var info in new DirectoryInfo(_root).EnumerateFiles("*", options))
        {
            var relative = Path.GetRelativePath(_root, info.FullName).Replace('\\', '/');
            var top = relative.Split('/')[0];
            if (skip.Contains(top) || relative.StartsWith("backup_manifest", StringComparison.Ordinal)) continue;
            files.Add((relative, info.LastWriteTimeUtc, info.Length));
        }
        return files;
    }

    private long ReadOnFrom(string relative, FileDigester digester)
    {
        try
        {
            using var stream = new FileStream(Path.Combine(_root, relative), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.SequentialScan);
            stream.Position = digester.Length;
            if (_copies == null) return digester.AppendAll(stream);
            return digester.AppendAll(stream, data => _copies.Append(relative, data));
        }
        // Gone, or held open without sharing (Windows): left unmatched, so the verifier reads it when the backup is done.
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return 0; }
    }

    /// <summary>A Tar backup: each tar file except pg_wal's, in the order pg_basebackup writes them, read as it grows.</summary>
    private Dictionary<string, FileDigest> FollowTarFiles()
    {
        var done = new Dictionary<string, FileDigest>(StringComparer.Ordinal);
        var finished = new HashSet<string>(StringComparer.Ordinal);
        while (true)
        {
            var writerFinished = WriterFinished;
            var archives = Directory.Exists(_root) ? TarFiles().Where(a => !finished.Contains(a.Name)).OrderBy(a => a.Modified).ToList() : [];
            if (archives.Count == 0)
            {
                if (writerFinished) return done;
                WaitForMore();
                continue;
            }
            var current = archives[0].Name;
            // This tar file is complete once pg_basebackup has started another one, or has exited.
            bool Complete() => WriterFinished || TarFiles().Any(a => a.Name != current && !finished.Contains(a.Name));
            var path = Path.Combine(_root, current);
            using (var file = new GrowingFileStream(path, Complete, WaitForMore, _handToDisk))
            using (var tar = CompressedTar.Open(file, current))
            using (var reader = new TarReader(tar))
            {
                var prefix = CompressedTar.ManifestPrefix(current);
                var indexable = ReferenceEquals(tar, file);
                lock (_handOff) if (_rest == null) _resumeAt = indexable ? (path, 0) : null;
                while (reader.GetNextEntry() is { } entry)
                {
                    lock (_handOff)
                    {
                        // From this member on, the archive is being read elsewhere.
                        if (_rest?.Archive == path) break;
                        // Read without seeking, the header leaves the position at the member's data.
                        if (_rest == null && indexable) _resumeAt = (path, TarBlocks(file.Position + entry.Length));
                    }
                    if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile)) continue;
                    using var digester = NewDigester();
                    if (entry.DataStream != null) digester.AppendAll(entry.DataStream);
                    done[prefix + entry.Name.TrimStart('.', '/')] = digester.Finish();
                }
                lock (_handOff) if (_rest == null) _resumeAt = null;
            }
            finished.Add(current);
        }
    }

    private static long TarBlocks(long bytes) => (bytes + 511) / 512 * 512;

    /// <summary>
    /// The regular members of a complete, uncompressed tar file from the header at <paramref name="offset"/> on: indexed
    /// in one pass that seeks over their data, then read on every core.
    /// </summary>
    internal static Dictionary<string, FileDigest> ReadTarFrom(string archive, long offset, CancellationToken ct, bool sha256 = true)
    {
        var prefix = CompressedTar.ManifestPrefix(Path.GetFileName(archive));
        var members = new List<(string Name, long Data, long Length)>();
        using (var stream = new FileStream(archive, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 4096))
        {
            stream.Position = offset;
            using var reader = new TarReader(stream, leaveOpen: true);
            // On a seekable stream the reader has already seeked past the member's data (padded to 512 bytes) to the next header.
            while (reader.GetNextEntry() is { } entry)
                if (entry.EntryType is TarEntryType.RegularFile or TarEntryType.V7RegularFile)
                    members.Add((prefix + entry.Name.TrimStart('.', '/'), stream.Position - TarBlocks(entry.Length), entry.Length));
        }
        var digests = new System.Collections.Concurrent.ConcurrentDictionary<string, FileDigest>(StringComparer.Ordinal);
        Parallel.ForEach(members.OrderByDescending(m => m.Length), new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount, CancellationToken = ct }, member =>
        {
            using var stream = new FileStream(archive, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.SequentialScan);
            stream.Position = member.Data;
            using var digester = new FileDigester(crc32C: true, sha256);
            digester.AppendAll(stream, member.Length);
            digests[member.Name] = digester.Finish();
        });
        return new Dictionary<string, FileDigest>(digests, StringComparer.Ordinal);
    }

    private IEnumerable<(string Name, DateTime Modified)> TarFiles() =>
        new DirectoryInfo(_root).EnumerateFiles("*.tar*")
            .Where(f => CompressedTar.CanRead(f.Name) && !f.Name.StartsWith("pg_wal.tar", StringComparison.Ordinal))
            .Select(f => (f.Name, f.LastWriteTimeUtc));

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        try { await _run.ConfigureAwait(false); }
        catch (Exception) { /* the follower's result is not wanted any more */ }
        _stop.Dispose();
    }

    /// <summary>
    /// A file another process is still appending to: at its current end, waits for more until it is complete. What has
    /// been read is complete, so it is handed to the disk as it goes (see <see cref="DurableFiles.StartWriting"/>).
    /// </summary>
    private sealed class GrowingFileStream(string path, Func<bool> complete, Action waitForMore, bool handToDisk)
        : ForwardReadStream(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1 << 20, FileOptions.SequentialScan))
    {
        private const long StartWritingEvery = 64 << 20;
        private long _writingFrom;

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            while (true)
            {
                var read = Inner.Read(buffer);
                if (handToDisk && Inner.Position - _writingFrom >= StartWritingEvery)
                {
                    DurableFiles.StartWriting(path, _writingFrom, Inner.Position - _writingFrom);
                    _writingFrom = Inner.Position;
                }
                if (read > 0 || buffer.Length == 0) return read;
                // Decide "complete" before the last read, so bytes written just before completion are not missed.
                if (complete()) return Inner.Read(buffer);
                waitForMore();
            }
        }

        // Still growing: its length is not known until it is complete.
        public override long Length => throw new NotSupportedException();
    }
}
