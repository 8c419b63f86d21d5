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
        var name = Path.GetFileName(path);
        if (name.EndsWith(".tar.gz", StringComparison.Ordinal)) return new GZipStream(file, CompressionMode.Decompress);
        if (name.EndsWith(".tar.lz4", StringComparison.Ordinal)) return LZ4Stream.Decode(file);
        if (name.EndsWith(".tar.zst", StringComparison.Ordinal)) return new DecompressionStream(file);
        if (name.EndsWith(".tar", StringComparison.Ordinal)) return file;
        file.Dispose();
        throw new PgBackupException("CompressionNotSupported", ErrorKind.InvalidOperation, $"'{name}' is not a tar file PgBackup can read (.tar, .tar.gz, .tar.lz4 or .tar.zst).", path,
            "Take base backups with -Compress gzip, lz4, zstd or none.");
    }
}
