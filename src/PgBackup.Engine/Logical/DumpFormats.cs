using System.Text;

namespace PgBackup.Engine.Logical;

/// <summary>How a dump's format is recognised from its bytes (where dumps live is <see cref="Repository.RepositoryLayout"/>).</summary>
public static class DumpFormats
{
    /// <summary>Recognises a dump that has no metadata file: PGDMP header (custom), toc.dat (directory), ustar header (tar), else SQL text.</summary>
    public static DumpFormat Detect(string path)
    {
        if (Directory.Exists(path))
            return File.Exists(System.IO.Path.Combine(path, "toc.dat")) ? DumpFormat.Directory
                : throw new PgBackupException("UnknownDumpFormat", ErrorKind.InvalidData, $"'{path}' is a folder without toc.dat, so it is not a Directory-format dump.", path,
                    "Give the path of a dump file, or of a folder written by pg_dump --format=directory.");
        if (!File.Exists(path))
            throw new PgBackupException("BackupNotFound", ErrorKind.ObjectNotFound, $"The dump '{path}' does not exist.", path,
                "Check the path, or list the backups with Get-PgBackup.");
        var header = new byte[512];
        int read;
        using (var f = File.OpenRead(path)) read = f.ReadAtLeast(header, header.Length, throwOnEndOfStream: false);
        if (read >= 5 && Encoding.ASCII.GetString(header, 0, 5) == "PGDMP") return DumpFormat.Custom;
        if (read >= 262 && Encoding.ASCII.GetString(header, 257, 5) == "ustar") return DumpFormat.Tar;
        // Anything else is taken as SQL text; a gzip-compressed one (pg_dump --format=plain --compress) is decompressed on restore.
        return DumpFormat.Plain;
    }
}
