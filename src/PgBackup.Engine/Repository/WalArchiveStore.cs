using System.Security.Cryptography;

namespace PgBackup.Engine.Repository;

/// <summary>One file of a WAL archive as its store lists it.</summary>
public sealed record WalStoreEntry(string Name, long SizeBytes, bool HasChecksum);

/// <summary>
/// The files of one cluster's WAL archive, wherever they are: a folder (&lt;repository&gt;/wal/&lt;system identifier&gt;, each
/// file with a .sha256 sidecar) or a blob archive (one blob per file, its SHA-256 in the blob's metadata). What the
/// inventory, inspection, retention and recovery read, so they work the same on both.
/// </summary>
public interface IWalArchiveStore
{
    /// <summary>The folder, or the archive's URL (without a query).</summary>
    string Location { get; }
    bool Exists { get; }
    /// <summary>Every file, sidecars and temporary files left out.</summary>
    IReadOnlyList<WalStoreEntry> List();
    /// <summary>
    /// A small file (a timeline history file) as text; null when it is not there. In an encrypted archive, the switch
    /// points pgbackup-wal recorded in clear beside it (without the reasons), so timelines can be followed without the key.
    /// </summary>
    string? ReadText(string name);
    /// <summary>The file's content as stored (encrypted, in an encrypted repository).</summary>
    Stream OpenRead(string name);
    /// <returns>Null when the file matches its recorded SHA-256 (or has none and <paramref name="requireChecksum"/> is false), else the problem.</returns>
    string? ChecksumProblem(string name, bool requireChecksum);
    /// <summary>Deletes files (and their checksums) in the order given.</summary>
    void Delete(IEnumerable<string> names);
}

/// <summary>A WAL archive folder, as pgbackup-wal writes it.</summary>
public sealed class FolderWalArchiveStore(string folder) : IWalArchiveStore
{
    public const string SidecarSuffix = ".sha256";

    /// <summary>Writes the sidecar of the archived file at <paramref name="path"/>: its SHA-256 and its name, as sha256sum does.</summary>
    public static Task WriteSidecarAsync(string path, string sha256, CancellationToken ct) =>
        File.WriteAllTextAsync(path + SidecarSuffix, sha256 + "  " + Path.GetFileName(path) + "\n", ct);

    public string Location { get; } = Path.GetFullPath(folder);
    public bool Exists => Directory.Exists(Location);

    public IReadOnlyList<WalStoreEntry> List()
    {
        if (!Exists) return [];
        var entries = new DirectoryInfo(Location).EnumerateFiles().ToList();
        var sidecars = entries.Select(e => e.Name).Where(n => n.EndsWith(SidecarSuffix, StringComparison.Ordinal))
            .Select(n => n[..^SidecarSuffix.Length]).ToHashSet(StringComparer.Ordinal);
        // The archive tool writes "<file>.tmp.<id>" and renames it into place once complete.
        return entries.Where(e => !e.Name.Contains(".tmp.", StringComparison.Ordinal) && !e.Name.EndsWith(SidecarSuffix, StringComparison.Ordinal))
            .Select(e => new WalStoreEntry(e.Name, e.Length, sidecars.Contains(e.Name))).ToList();
    }

    public string? ReadText(string name)
    {
        byte[] content;
        try { content = File.ReadAllBytes(Path.Combine(Location, name)); }
        catch (FileNotFoundException) { return null; }
        if (!Encryption.EncryptedContent.LooksEncrypted(content)) return System.Text.Encoding.UTF8.GetString(content);
        try
        {
            var line = File.ReadAllLines(Path.Combine(Location, name + SidecarSuffix)).FirstOrDefault(l => l.StartsWith(LineagePrefix, StringComparison.Ordinal));
            return line == null ? null : HistoryFromLineage(line[LineagePrefix.Length..]);
        }
        catch (FileNotFoundException) { return null; }
    }

    public Stream OpenRead(string name) => new FileStream(Path.Combine(Location, name), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan | FileOptions.Asynchronous);

    private const string LineagePrefix = "lineage ";

    /// <summary>A history file's text from the switch points pgbackup-wal keeps in clear for an encrypted one ("1:0/3000000,2:0/5000000").</summary>
    public static string HistoryFromLineage(string lineage) =>
        string.Concat(lineage.Trim().Split(',', StringSplitOptions.RemoveEmptyEntries).Where(p => p != "none").Select(p => p.Replace(':', '\t') + "\t(encrypted)\n"));

    public string? ChecksumProblem(string name, bool requireChecksum) => ChecksumProblemOf(Path.Combine(Location, name), requireChecksum);

    public void Delete(IEnumerable<string> names)
    {
        foreach (var name in names)
        {
            foreach (var file in new[] { Path.Combine(Location, name), Path.Combine(Location, name + SidecarSuffix) })
            {
                try { File.Delete(file); }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    throw new PgBackupException("RemoveFailed", ErrorKind.PermissionDenied, $"Archived WAL '{file}' could not be removed: {ex.Message}", file,
                        "Check that the repository is writable by this account; the files before it were removed, the rest are still there.", ex);
                }
            }
        }
    }

    /// <returns>Null when the file matches its .sha256 sidecar (or has none and <paramref name="requireSidecar"/> is false), else the problem.</returns>
    public static string? ChecksumProblemOf(string path, bool requireSidecar)
    {
        // Looked for now rather than in the listing: the archive tool puts a file in place just before its sidecar.
        if (!File.Exists(path + SidecarSuffix))
            return requireSidecar ? $"{path} has no {SidecarSuffix} sidecar, so its content cannot be verified." : null;
        try
        {
            // sha256sum format: "<hex>  <file name>".
            var recorded = File.ReadAllText(path + SidecarSuffix).Split((char[]?)null, 2, StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? "";
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
            var actual = Convert.ToHexString(SHA256.HashData(stream));
            return string.Equals(recorded, actual, StringComparison.OrdinalIgnoreCase)
                ? null
                : $"{path} does not match its checksum: SHA-256 {actual.ToLowerInvariant()}, the sidecar records '{recorded}'.";
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return $"{path} or its sidecar cannot be read to verify it: {ex.Message}";
        }
    }
}
