using System.Collections.Concurrent;
using PgBackup.Engine.Repository.Encryption;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Physical;

/// <summary>
/// A Plain backup into an encrypted folder repository, encrypted from the bytes the <see cref="BackupWriteFollower"/>
/// reads while pg_basebackup writes them into the spool, so encrypting costs no pass of its own after the backup. Each
/// copy remembers the size and checksum of the plaintext it was made from; once the backup is verified, only a copy of
/// the verified file (its size and checksum in the manifest) is kept, and every other file is encrypted from the spool.
/// </summary>
public sealed class FollowingEncryption(RepositoryEncryption encryption, string destination, string name) : IDisposable
{
    private readonly ConcurrentDictionary<string, Copy> _open = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (FileDigest Plain, string StoredSha256)> _done = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, bool> _failed = new(StringComparer.Ordinal);

    /// <summary>The next bytes of <paramref name="relative"/>, as the follower read them.</summary>
    internal void Append(string relative, ReadOnlySpan<byte> data)
    {
        if (_failed.ContainsKey(relative)) return;
        try { _open.GetOrAdd(relative, Open).Write(data); }
        // A copy that could not be written is left to the encryption after the backup, which reports the error if it persists.
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { Fail(relative); }
    }

    /// <summary>The follower has read all of <paramref name="relative"/>, whose plaintext is <paramref name="plain"/>.</summary>
    internal void Finish(string relative, FileDigest plain)
    {
        if (_failed.ContainsKey(relative)) return;
        try
        {
            var copy = _open.GetOrAdd(relative, Open);
            _done[relative] = (plain, copy.Complete());
            _open.TryRemove(relative, out _);
            copy.Dispose();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { Fail(relative); }
    }

    /// <summary>
    /// After the spool's backup has been verified and its manifest sealed: keeps the copies of verified bytes, encrypts
    /// every other file (and the sealed manifest, and the streamed WAL) from <paramref name="spool"/>, and puts it all on disk.
    /// </summary>
    /// <returns>The SHA-256 of every encrypted file by relative path.</returns>
    public async Task<Dictionary<string, string>> CompleteAsync(string spool, IOperationReporter reporter, CancellationToken ct)
    {
        foreach (var relative in _open.Keys) Fail(relative);
        var verified = BackupManifest.Read(Path.Combine(spool, "backup_manifest")).Files
            .Where(f => f.ChecksumAlgorithm is { } algorithm && !algorithm.Equals("NONE", StringComparison.OrdinalIgnoreCase))
            .ToDictionary(f => f.Path, StringComparer.Ordinal);
        var kept = _done.Where(d => verified.TryGetValue(d.Key, out var entry) && d.Value.Plain.Matches(entry))
            .ToDictionary(d => d.Key, d => d.Value.StoredSha256, StringComparer.Ordinal);
        if (Directory.Exists(destination))
            foreach (var file in Directory.GetFiles(destination, "*", SearchOption.AllDirectories))
                if (!kept.ContainsKey(Path.GetRelativePath(destination, file).Replace('\\', '/'))) File.Delete(file);
        var (_, rest) = await encryption.EncryptTreeAsync(spool, destination, name, durable: true, ct, skip: kept.ContainsKey).ConfigureAwait(false);
        reporter.Verbose($"{kept.Count} files were encrypted as pg_basebackup wrote them, {rest!.Count} afterwards");
        foreach (var (relative, sha) in rest!) kept[relative] = sha;
        return kept;
    }

    private void Fail(string relative)
    {
        _failed[relative] = true;
        if (_open.TryRemove(relative, out var copy)) copy.Dispose();
    }

    private Copy Open(string relative)
    {
        var path = Path.Combine(destination, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        return new Copy(path, encryption, name + "/" + relative);
    }

    public void Dispose()
    {
        foreach (var relative in _open.Keys) Fail(relative);
    }

    /// <summary>One file being encrypted into the backup, hashed as it is written and handed to the disk as it grows.</summary>
    private sealed class Copy : IDisposable
    {
        private readonly FileStream _file;
        private readonly HashingWriteStream _hashing;
        private readonly Stream _encrypting;

        public Copy(string path, RepositoryEncryption encryption, string name)
        {
            _file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
            _hashing = new HashingWriteStream(new WritebackStream(_file));
            _encrypting = encryption.Encrypt(_hashing, name, leaveOpen: true);
        }

        public void Write(ReadOnlySpan<byte> data) => _encrypting.Write(data);

        /// <returns>The SHA-256 of the encrypted file.</returns>
        public string Complete()
        {
            _encrypting.Dispose();
            _file.Flush();
            DurableFiles.StartWriting(_file.SafeFileHandle, 0);
            return _hashing.Sha256();
        }

        public void Dispose()
        {
            // Sealing an abandoned copy can fail where writing it did; it is deleted or replaced either way.
            try { _encrypting.Dispose(); } catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ObjectDisposedException) { }
            _hashing.Dispose();
            _file.Dispose();
        }
    }
}
