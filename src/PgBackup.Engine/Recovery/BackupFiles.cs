using System.Collections.Concurrent;
using System.Formats.Tar;
using PgBackup.Engine.Physical;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Recovery;

/// <summary>
/// Puts the files of a base backup into a data directory: a copy of a Plain backup, or the extracted tar files. Every
/// file is checked against the backup's manifest as it is copied (the bytes are read once), and global/pg_control goes
/// in last: a data directory that was not finished (a damaged file, a full disk, a killed process) has no pg_control,
/// so no server can be started from it by mistake.
/// </summary>
public static class BackupFiles
{
    private const string ControlFile = "global/pg_control";
    private const int BufferSize = 1 << 20;

    /// <summary>An error, before anything is written, for backups PgBackup cannot lay out as a data directory here.</summary>
    public static void EnsureRestorable(BaseBackup backup)
    {
        if (!Directory.Exists(backup.Path))
            throw new PgBackupException("BackupNotFound", ErrorKind.ObjectNotFound, $"The base backup folder '{backup.Path}' does not exist.", backup.Path,
                "Check the path, or list the repository's backups with Get-PgBackup -Kind Base.");
        var tablespace = backup.Format == BaseBackupFormat.Plain
            ? (Directory.Exists(Path.Combine(backup.Path, "pg_tblspc")) ? Directory.EnumerateFileSystemEntries(Path.Combine(backup.Path, "pg_tblspc")).FirstOrDefault() : null)
            : Directory.EnumerateFiles(backup.Path, "*.tar*").FirstOrDefault(f => !IsBaseArchive(Path.GetFileName(f)) && !IsWalArchive(Path.GetFileName(f)));
        if (tablespace != null)
            throw new PgBackupException("TablespacesNotSupported", ErrorKind.InvalidOperation,
                $"The backup holds a tablespace ({Path.GetFileName(tablespace)}); PgBackup cannot yet remap tablespaces when it restores a base backup.", tablespace,
                "Restore this backup by hand (pg_basebackup's tablespace mapping) or keep tablespaces out of clusters restored with PgBackup.");
        if (backup.Format == BaseBackupFormat.Tar &&
            Directory.EnumerateFiles(backup.Path, "*.tar*").FirstOrDefault(f => !CompressedTar.CanRead(Path.GetFileName(f))) is { } unknown)
            throw new PgBackupException("CompressionNotSupported", ErrorKind.InvalidOperation,
                $"'{Path.GetFileName(unknown)}' is not a tar file PgBackup can read (.tar, .tar.gz, .tar.lz4 or .tar.zst).", unknown,
                "Take base backups with -Compress gzip, lz4, zstd or none when PgBackup should restore them.");
    }

    /// <summary>Total bytes <see cref="Restore"/> reads, for progress.</summary>
    public static long SourceBytes(BaseBackup backup) =>
        Directory.EnumerateFiles(backup.Path, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);

    /// <param name="onBytes">Called with each chunk of bytes read, from worker threads.</param>
    /// <param name="verify">Check every file against the manifest (PgBackup.BackupFileDamaged names the first that does
    /// not match); false only when the caller has just verified the whole backup.</param>
    /// <param name="openArchive">For an encrypted Tar backup: the plaintext of a tar file (by path) read from its file, decrypted
    /// and authenticated as it is extracted.</param>
    public static void Restore(BaseBackup backup, string dataDirectory, Action<long>? onBytes, CancellationToken ct, bool verify = true,
        Func<string, Stream, Stream>? openArchive = null)
    {
        EnsureRestorable(backup);
        var check = verify ? ManifestCheck.Load(backup) : null;
        Directory.CreateDirectory(dataDirectory);
        string? controlFile;
        if (backup.Format == BaseBackupFormat.Plain) controlFile = CopyTree(backup.Path, dataDirectory, check, onBytes, ct);
        else
        {
            controlFile = null;
            foreach (var archive in Directory.GetFiles(backup.Path, "*.tar*").Order(StringComparer.Ordinal))
            {
                var name = Path.GetFileName(archive);
                if (openArchive == null && IsEncrypted(archive))
                    throw new PgBackupException("EncryptionKeyRequired", ErrorKind.PermissionDenied, $"'{archive}' is encrypted, and no key to read it was given.", archive,
                        "Restore it through Restore-PgPointInTime with -Passphrase or -Certificate (or PGBACKUP_PASSPHRASE), which decrypts it.");
                var destination = IsWalArchive(name) ? Path.Combine(dataDirectory, "pg_wal") : dataDirectory;
                Directory.CreateDirectory(destination);
                var extracted = Extract(archive, destination, IsWalArchive(name) ? null : check, CompressedTar.ManifestPrefix(name), onBytes, ct, openArchive);
                controlFile ??= extracted;
            }
        }
        check?.ThrowIfIncomplete();
        if (controlFile == null)
            throw Damaged(backup.Path, $"The base backup in '{backup.Path}' holds no {ControlFile}");
        File.Move(controlFile, Path.Combine(dataDirectory, ControlFile), overwrite: true);
        // pg_basebackup leaves these out of a backup, and a server cannot start without them.
        foreach (var folder in new[] { "pg_wal", "pg_replslot", "pg_stat_tmp", Path.Combine("pg_wal", "archive_status") })
            Directory.CreateDirectory(Path.Combine(dataDirectory, folder));
    }

    private static bool IsEncrypted(string path)
    {
        var start = new byte[8];
        using (var file = File.OpenRead(path)) file.ReadAtLeast(start, start.Length, throwOnEndOfStream: false);
        return Repository.Encryption.EncryptedContent.LooksEncrypted(start);
    }

    private static bool IsBaseArchive(string name) => name.StartsWith("base.tar", StringComparison.Ordinal);
    private static bool IsWalArchive(string name) => name.StartsWith("pg_wal.tar", StringComparison.Ordinal);

    /// <summary>Copies every file, largest first on a few threads (one thread cannot keep a fast disk busy); pg_control under a temporary name.</summary>
    private static string? CopyTree(string from, string to, ManifestCheck? check, Action<long>? onBytes, CancellationToken ct)
    {
        foreach (var dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        var files = new DirectoryInfo(from).GetFiles("*", SearchOption.AllDirectories).OrderByDescending(f => f.Length).ToList();
        string? controlFile = null;
        try
        {
            Parallel.ForEach(files, new ParallelOptions { CancellationToken = ct, MaxDegreeOfParallelism = Math.Clamp(Environment.ProcessorCount, 2, 4) }, file =>
            {
                var relative = Path.GetRelativePath(from, file.FullName).Replace('\\', '/');
                var destination = Path.Combine(to, relative);
                if (relative == ControlFile) destination = controlFile = destination + ".pgbackup-restoring";
                // The kernel copies (copy_file_range) while this thread hashes the same bytes from the backup: a copy
                // written through user space made the replay that follows slower, and in sequence the two took twice as long.
                var copying = Task.Run(() => File.Copy(file.FullName, destination), ct);
                FileDigest digest;
                try
                {
                    using var input = new FileStream(file.FullName, FileMode.Open, FileAccess.Read, FileShare.Read, 0, FileOptions.SequentialScan);
                    using var digester = FileDigester.For(check?.Entry(relative));
                    if (check != null) digester.AppendAll(input);
                    digest = digester.Finish();
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    try { copying.Wait(ct); } catch (AggregateException) { }
                    throw Damaged(file.FullName, $"'{file.FullName}' cannot be read: {ex.Message}", ex);
                }
                copying.GetAwaiter().GetResult();
                onBytes?.Invoke(file.Length);
                check?.Record(relative, digest, file.FullName);
            });
        }
        catch (AggregateException ex)
        {
            // The first damaged file, else the first write error (a full disk), as if the copy had been serial.
            var first = ex.InnerExceptions.FirstOrDefault(e => e is PgBackupException) ?? ex.InnerExceptions[0];
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
        }
        return controlFile;
    }

    /// <summary>Extracts one tar file (decompressed as its name says); returns where pg_control went, if it was in it.</summary>
    private static string? Extract(string archive, string destination, ManifestCheck? check, string manifestPrefix, Action<long>? onBytes, CancellationToken ct,
        Func<string, Stream, Stream>? openArchive)
    {
        var root = Path.GetFullPath(destination);
        string? controlFile = null;
        try
        {
            using var input = CompressedTar.OpenRead(archive, file => new CountingStream(openArchive == null ? file : openArchive(archive, file), onBytes, ct));
            using var reader = new TarReader(input);
            while (ReadSource(() => reader.GetNextEntry()) is { } entry)
            {
                ct.ThrowIfCancellationRequested();
                var relative = entry.Name.Replace('\\', '/');
                if (relative.StartsWith("./", StringComparison.Ordinal)) relative = relative[2..];
                relative = relative.TrimStart('/');
                if (relative.Length == 0) continue;
                var path = Path.GetFullPath(Path.Combine(root, relative));
                if (!path.StartsWith(root.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                    throw Damaged(archive, $"'{archive}' holds '{entry.Name}', which points outside the data directory");
                switch (entry.EntryType)
                {
                    case TarEntryType.Directory:
                        Directory.CreateDirectory(path);
                        break;
                    case TarEntryType.RegularFile or TarEntryType.V7RegularFile:
                        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                        if (manifestPrefix + relative == ControlFile) path = controlFile = path + ".pgbackup-restoring";
                        var digest = CopyDigested(entry.DataStream ?? Stream.Null, path, OperatingSystem.IsWindows() ? null : (UnixFileMode)entry.Mode, check?.Entry(manifestPrefix + relative), null, ct);
                        check?.Record(manifestPrefix + relative, digest, $"{archive} ({relative})");
                        break;
                    case TarEntryType.SymbolicLink:
                        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                        File.CreateSymbolicLink(path, entry.LinkName);
                        break;
                }
            }
        }
        catch (SourceUnreadable ex)
        {
            // A truncated or damaged tar, gzip, lz4 or zstd stream fails inside the decompressor or the tar reader.
            throw Damaged(archive, $"'{archive}' cannot be read to its end: {ex.InnerException!.Message}", ex.InnerException);
        }
        return controlFile;
    }

    /// <summary>Runs a read from the backup; what fails there (not a write into the data directory) is the backup's damage.</summary>
    private static T ReadSource<T>(Func<T> read)
    {
        try { return read(); }
        catch (Exception ex) when (ex is not (OperationCanceledException or PgBackupException or UnauthorizedAccessException)) { throw new SourceUnreadable(ex); }
    }

    private sealed class SourceUnreadable(Exception inner) : Exception(inner.Message, inner);

    /// <summary>Writes <paramref name="input"/> to a new file, computing in the same pass its size and the checksum its manifest entry has.</summary>
    private static FileDigest CopyDigested(Stream input, string destination, UnixFileMode? mode, ManifestFile? entry, Action<long>? onBytes, CancellationToken ct)
    {
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None, BufferSize = 0 };
        if (mode is { } m && !OperatingSystem.IsWindows()) options.UnixCreateMode = m & (UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
        using var output = new FileStream(destination, options);
        using var digester = FileDigester.For(entry);
        // Pooled: a data directory holds thousands of small files, and a new 1 MB buffer for each made the copy slow.
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(BufferSize);
        try
        {
            int read;
            while ((read = ReadSource(() => input.Read(buffer, 0, BufferSize))) > 0)
            {
                ct.ThrowIfCancellationRequested();
                digester.Append(buffer.AsSpan(0, read));
                output.Write(buffer, 0, read);
                onBytes?.Invoke(read);
            }
            return digester.Finish();
        }
        finally { System.Buffers.ArrayPool<byte>.Shared.Return(buffer); }
    }

    internal static PgBackupException Damaged(string file, string problem, Exception? inner = null) =>
        new("BackupFileDamaged", ErrorKind.InvalidData, $"{problem}; the base backup is damaged, so nothing was restored from it.", file,
            "Recover from another base backup (Get-PgBackup -Kind Base), and check the storage that holds the repository; Test-PgBackup lists every file that does not match.", inner);

    /// <summary>The files the manifest lists, checked off as they are copied; the first one that does not match is an error at once.</summary>
    private sealed class ManifestCheck
    {
        private readonly string _backupPath;
        private readonly Dictionary<string, ManifestFile> _expected;
        private readonly ConcurrentDictionary<string, byte> _seen = new(StringComparer.Ordinal);

        private ManifestCheck(string backupPath, Dictionary<string, ManifestFile> expected)
        {
            _backupPath = backupPath;
            _expected = expected;
        }

        public static ManifestCheck Load(BaseBackup backup)
        {
            var path = string.IsNullOrEmpty(backup.ManifestPath) ? Path.Combine(backup.Path, "backup_manifest") : backup.ManifestPath;
            if (!File.Exists(path)) throw Damaged(path, $"'{path}' is missing, so the backup's files cannot be checked");
            BackupManifest manifest;
            try { manifest = BackupManifest.Read(path); }
            catch (Exception ex) when (ex is System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
            {
                throw Damaged(path, $"'{path}' is not a backup manifest PgBackup can read ({ex.Message})", ex);
            }
            if (manifest.ChecksumProblem() is { } problem) throw Damaged(path, $"'{path}': {problem}");
            return new ManifestCheck(backup.Path, manifest.CheckedFiles.ToDictionary(f => f.Path, StringComparer.Ordinal));
        }

        public ManifestFile? Entry(string manifestPath) => _expected.GetValueOrDefault(manifestPath);

        public void Record(string manifestPath, FileDigest digest, string where)
        {
            if (!_expected.TryGetValue(manifestPath, out var entry))
            {
                if (!BackupManifest.IgnoredFiles.Contains(manifestPath) && !manifestPath.StartsWith("pg_wal/", StringComparison.Ordinal))
                    throw Damaged(where, $"'{where}' is in the backup but not in its manifest");
                return;
            }
            _seen[manifestPath] = 0;
            if (digest.Matches(entry)) return;
            throw Damaged(where, digest.Length != entry.Size
                ? $"'{where}' has {digest.Length} bytes, the manifest says {entry.Size}"
                : $"'{where}' does not match its {entry.ChecksumAlgorithm} checksum in the manifest");
        }

        public void ThrowIfIncomplete()
        {
            if (_expected.Keys.FirstOrDefault(k => !_seen.ContainsKey(k)) is { } missing)
                throw Damaged(Path.Combine(_backupPath, missing), $"'{missing}' is in the manifest but missing from the backup");
        }
    }

    private sealed class CountingStream(Stream inner, Action<long>? onBytes, CancellationToken ct) : ForwardReadStream(inner)
    {
        public override int Read(byte[] buffer, int offset, int count)
        {
            ct.ThrowIfCancellationRequested();
            var n = Inner.Read(buffer, offset, count);
            if (n > 0) onBytes?.Invoke(n);
            return n;
        }
    }
}
