using System.IO.Compression;
using K4os.Compression.LZ4.Streams;
using ZstdSharp;

namespace PgBackup.Engine.Physical;

/// <summary>The tar files of a Tar-format base backup, as pg_basebackup names them: .tar, .tar.gz, .tar.lz4 or .tar.zst.</summary>
public static class CompressedTar
{
    private static readonly string[] Extensions = [".tar", ".tar.gz", ".tar.lz4", ".tar.zst"];

    public static bool CanRead(string fileName) => Extensions.Any(e => fileName.EndsWith(e, StringComparison.Ordinal));

    /// <summary>The tar stream inside the file, decompressed as it is read; disposing it closes the file.</summary>
    public static Stream OpenRead(string path, Func<Stream, Stream>? wrapFile = null)
    {
        Stream file = File.OpenRead(path);
        if (wrapFile != null) file = wrapFile(file);
        return Open(file, path);
    }

    /// <summary>The tar stream inside <paramref name="file"/>, decompressed as <paramref name="path"/>'s name says; disposing it disposes the file.</summary>
    public static Stream Open(Stream file, string path)
    {
        var name = Path.GetFileName(path);
        if (name.EndsWith(".tar.gz", StringComparison.Ordinal)) return new GZipStream(file, CompressionMode.Decompress);
        if (name.EndsWith(".tar.lz4", StringComparison.Ordinal)) return LZ4Stream.Decode(file);
        if (name.EndsWith(".tar.zst", StringComparison.Ordinal)) return new DecompressionStream(file);
        if (name.EndsWith(".tar", StringComparison.Ordinal)) return file;
        file.Dispose();
        throw new PgBackupException("CompressionNotSupported", ErrorKind.InvalidOperation, $"'{name}' is not a tar file PgBackup can read (.tar, .tar.gz, .tar.lz4 or .tar.zst).", path,
            "Take base backups with -Compress gzip, lz4, zstd or none.");
    }

    /// <summary>
    /// Where a tar file's members sit in the manifest: base.tar holds the data directory, &lt;oid&gt;.tar the tablespace
    /// that pg_tblspc/&lt;oid&gt; points to.
    /// </summary>
    public static string ManifestPrefix(string archiveName) =>
        archiveName.StartsWith("base.tar", StringComparison.Ordinal) ? "" : "pg_tblspc/" + archiveName[..archiveName.IndexOf(".tar", StringComparison.Ordinal)] + "/";
}
