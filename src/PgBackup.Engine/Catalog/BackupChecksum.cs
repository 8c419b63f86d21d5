using System.Security.Cryptography;
using System.Text;

namespace PgBackup.Engine.Catalog;

/// <summary>
/// SHA-256 of a dump: of the file itself, or for a Directory-format dump of its manifest
/// (one "hash  relative/path" line per file, sorted by path), so a changed, added or removed file shows.
/// </summary>
public static class BackupChecksum
{
    public static async Task<string> ComputeAsync(string path, CancellationToken ct)
    {
        if (File.Exists(path)) return await HashFileAsync(path, ct).ConfigureAwait(false);
        if (!Directory.Exists(path))
            throw new PgBackupException("BackupNotFound", ErrorKind.ObjectNotFound, $"The backup '{path}' does not exist.", path,
                "Check the path, or list what the repository holds with Get-PgBackup.");
        var manifest = new StringBuilder();
        foreach (var file in Directory.GetFiles(path, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(path, f).Replace('\\', '/')).Order(StringComparer.Ordinal))
            manifest.Append(await HashFileAsync(Path.Combine(path, file), ct).ConfigureAwait(false)).Append("  ").Append(file).Append('\n');
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(manifest.ToString()))).ToLowerInvariant();
    }

    public static long SizeOf(string path) =>
        File.Exists(path) ? new FileInfo(path).Length
        : Directory.Exists(path) ? Directory.GetFiles(path, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length) : 0;

    private static async Task<string> HashFileAsync(string file, CancellationToken ct)
    {
        await using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan | FileOptions.Asynchronous);
        return Convert.ToHexString(await SHA256.HashDataAsync(stream, ct).ConfigureAwait(false)).ToLowerInvariant();
    }
}
