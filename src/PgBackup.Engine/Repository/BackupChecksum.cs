using System.Security.Cryptography;
using System.Text;

namespace PgBackup.Engine.Repository;

/// <summary>Where a dump differs from what was recorded when it was made: the damaged file (or the dump) and how.</summary>
public sealed record DumpDamage(string File, string Problem, string ActualSha256);

/// <summary>
/// SHA-256 of a dump: of the file itself, or for a Directory-format dump of its manifest
/// (one "hash  relative/path" line per file, sorted by path), so a changed, added or removed file shows.
/// </summary>
public static class BackupChecksum
{
    public static async Task<string> ComputeAsync(string path, CancellationToken ct) => (await ComputeWithFilesAsync(path, ct).ConfigureAwait(false)).Sha256;

    /// <summary>The dump's SHA-256 and, for a Directory-format dump, the SHA-256 of each file by relative path.</summary>
    public static async Task<(string Sha256, Dictionary<string, string>? Files)> ComputeWithFilesAsync(string path, CancellationToken ct)
    {
        if (File.Exists(path)) return (await HashFileAsync(path, ct).ConfigureAwait(false), null);
        if (!Directory.Exists(path))
            throw new PgBackupException("BackupNotFound", ErrorKind.ObjectNotFound, $"The backup '{path}' does not exist.", path,
                "Check the path, or list what the repository holds with Get-PgBackup.");
        var files = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var file in Directory.GetFiles(path, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(path, f).Replace('\\', '/')).Order(StringComparer.Ordinal))
            files[file] = await HashFileAsync(Path.Combine(path, file), ct).ConfigureAwait(false);
        return (Combine(files), files);
    }

    /// <summary>
    /// Null when the dump's bytes are the ones its metadata recorded. Otherwise the first damaged file: for a
    /// Directory-format dump made with per-file checksums the file inside it that is changed, missing or added,
    /// else the dump itself.
    /// </summary>
    public static async Task<DumpDamage?> CheckAsync(DumpBackup dump, CancellationToken ct)
    {
        var (actual, files) = await ComputeWithFilesAsync(dump.Path, ct).ConfigureAwait(false);
        return FirstDamage(dump, actual, files, name => Path.Combine(dump.Path, name), path => File.Exists(path) ? new FileInfo(path).Length : null);
    }

    /// <summary>
    /// What differs between a dump as read now (<paramref name="actual"/>, and for a Directory dump the SHA-256 of each
    /// file) and as recorded, wherever it is kept: <paramref name="locate"/> names a file inside the dump for messages,
    /// <paramref name="lengthNow"/> gives a file's present size when the storage can tell cheaply.
    /// </summary>
    public static DumpDamage? FirstDamage(DumpBackup dump, string actual, IReadOnlyDictionary<string, string>? files, Func<string, string> locate, Func<string, long?> lengthNow)
    {
        if (string.Equals(actual, dump.Sha256, StringComparison.OrdinalIgnoreCase)) return null;
        if (files != null && dump.FileChecksums is { Count: > 0 } recorded)
        {
            foreach (var (name, sha) in recorded.OrderBy(f => f.Key, StringComparer.Ordinal))
            {
                var full = locate(name);
                if (!files.TryGetValue(name, out var found))
                    return new DumpDamage(full, $"'{full}' is missing from the dump", actual);
                if (!string.Equals(found, sha, StringComparison.OrdinalIgnoreCase))
                    return new DumpDamage(full, $"'{full}' has SHA-256 {found}, recorded {sha}{(lengthNow(full) is { } n ? $" ({n} bytes now)" : "")}", actual);
            }
            if (files.Keys.FirstOrDefault(f => !recorded.ContainsKey(f)) is { } added)
                return new DumpDamage(locate(added), $"'{locate(added)}' was added to the dump after it was made", actual);
        }
        var size = lengthNow(dump.Path) is { } now ? $" ({now} bytes now, {dump.SizeBytes} when it was made)" : "";
        return new DumpDamage(dump.Path, $"'{dump.Path}' has SHA-256 {actual}, recorded {dump.Sha256}{size}", actual);
    }

    public static long SizeOf(string path) =>
        File.Exists(path) ? new FileInfo(path).Length
        : Directory.Exists(path) ? Directory.GetFiles(path, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length) : 0;

    /// <summary>The SHA-256 of a Directory dump: of its manifest of per-file checksums.</summary>
    public static string Combine(IReadOnlyDictionary<string, string> files)
    {
        var manifest = new StringBuilder();
        foreach (var (file, sha) in files.OrderBy(f => f.Key, StringComparer.Ordinal)) manifest.Append(sha).Append("  ").Append(file).Append('\n');
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(manifest.ToString()))).ToLowerInvariant();
    }

    private static async Task<string> HashFileAsync(string file, CancellationToken ct)
    {
        await using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan | FileOptions.Asynchronous);
        return Convert.ToHexString(await SHA256.HashDataAsync(stream, ct).ConfigureAwait(false)).ToLowerInvariant();
    }
}
