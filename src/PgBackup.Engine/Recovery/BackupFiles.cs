using System.Formats.Tar;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Recovery;

/// <summary>Puts the files of a base backup into a data directory: a copy of a Plain backup, or the extracted tar files.</summary>
public static class BackupFiles
{
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
            Directory.EnumerateFiles(backup.Path, "*.tar*").FirstOrDefault(f => !Physical.CompressedTar.CanRead(Path.GetFileName(f))) is { } unknown)
            throw new PgBackupException("CompressionNotSupported", ErrorKind.InvalidOperation,
                $"'{Path.GetFileName(unknown)}' is not a tar file PgBackup can read (.tar, .tar.gz, .tar.lz4 or .tar.zst).", unknown,
                "Take base backups with -Compress gzip, lz4, zstd or none when PgBackup should restore them.");
    }

    /// <summary>Total bytes <see cref="Restore"/> reads, for progress.</summary>
    public static long SourceBytes(BaseBackup backup) =>
        Directory.EnumerateFiles(backup.Path, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);

    /// <param name="onBytes">Called with each chunk of bytes read, from worker threads.</param>
    public static void Restore(BaseBackup backup, string dataDirectory, Action<long>? onBytes, CancellationToken ct)
    {
        EnsureRestorable(backup);
        Directory.CreateDirectory(dataDirectory);
        if (backup.Format == BaseBackupFormat.Plain) CopyTree(backup.Path, dataDirectory, onBytes, ct);
        else
            foreach (var archive in Directory.GetFiles(backup.Path, "*.tar*"))
            {
                var name = Path.GetFileName(archive);
                var destination = IsWalArchive(name) ? Path.Combine(dataDirectory, "pg_wal") : dataDirectory;
                Directory.CreateDirectory(destination);
                using var input = Physical.CompressedTar.OpenRead(archive, file => new CountingStream(file, onBytes, ct));
                TarFile.ExtractToDirectory(input, destination, overwriteFiles: true);
            }
        // pg_basebackup leaves these out of a backup, and a server cannot start without them.
        foreach (var folder in new[] { "pg_wal", "pg_replslot", "pg_stat_tmp", Path.Combine("pg_wal", "archive_status") })
            Directory.CreateDirectory(Path.Combine(dataDirectory, folder));
    }

    private static bool IsBaseArchive(string name) => name.StartsWith("base.tar", StringComparison.Ordinal);
    private static bool IsWalArchive(string name) => name.StartsWith("pg_wal.tar", StringComparison.Ordinal);

    /// <summary>Copies every file, largest first on a few threads: one thread cannot keep a fast disk busy.</summary>
    private static void CopyTree(string from, string to, Action<long>? onBytes, CancellationToken ct)
    {
        foreach (var dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        var files = new DirectoryInfo(from).GetFiles("*", SearchOption.AllDirectories).OrderByDescending(f => f.Length).ToList();
        Parallel.ForEach(files, new ParallelOptions { CancellationToken = ct, MaxDegreeOfParallelism = Math.Clamp(Environment.ProcessorCount, 2, 4) }, file =>
        {
            File.Copy(file.FullName, Path.Combine(to, Path.GetRelativePath(from, file.FullName)));
            onBytes?.Invoke(file.Length);
        });
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
