using System.Text;

namespace PgBackup.Engine.Repository;

/// <summary>
/// Where everything lives in a repository, in one place: dumps under &lt;host_port&gt;/&lt;database&gt;/ (globals under
/// &lt;host_port&gt;/_globals/), base backups under &lt;host_port&gt;/base/, archived WAL under wal/&lt;system identifier&gt;/, and
/// each backup's metadata beside it (<see cref="BackupMetadata"/>). Existing repositories have exactly this layout.
/// </summary>
public static class RepositoryLayout
{
    public const string BaseFolder = "base";
    public const string WalFolder = "wal";
    public const string GlobalsFolder = "_globals";

    public static string Extension(DumpFormat format) => format switch
    {
        DumpFormat.Plain => ".sql",
        DumpFormat.Custom => ".dump",
        DumpFormat.Tar => ".tar",
        DumpFormat.Directory => ".dir",
        _ => throw new ArgumentOutOfRangeException(nameof(format)),
    };

    /// <summary>The folder of one server's backups: &lt;repository&gt;/&lt;host_port&gt;.</summary>
    public static string ServerFolder(string repository, string host, int port) => Path.Combine(repository, SafeName($"{host}_{port}"));

    /// <summary>A dump started at <paramref name="startUtc"/>; a null database means the globals (roles, tablespaces).</summary>
    public static string DumpPath(string repository, string host, int port, string? database, DumpFormat format, DateTimeOffset startUtc) =>
        Path.Combine(repository, DumpKey(host, port, database, format, startUtc).Replace('/', Path.DirectorySeparatorChar));

    /// <summary>The same place as <see cref="DumpPath"/>, relative to the repository with '/' between parts: a blob's key.</summary>
    public static string DumpKey(string host, int port, string? database, DumpFormat format, DateTimeOffset startUtc)
    {
        var name = database == null ? "globals" : SafeName(database);
        return $"{SafeName($"{host}_{port}")}/{(database == null ? GlobalsFolder : name)}/{name}_{Stamp(startUtc)}{Extension(format)}";
    }

    /// <summary>The identifier of a base backup started at <paramref name="startUtc"/>, which is also its folder's name.</summary>
    public static string BaseBackupId(DateTimeOffset startUtc) => $"base_{Stamp(startUtc)}";

    public static string BaseBackupPath(string repository, string host, int port, string id) => Path.Combine(ServerFolder(repository, host, port), BaseFolder, id);

    /// <summary>The same place as <see cref="BaseBackupPath"/>, relative to the repository with '/' between parts: a blob's key.</summary>
    public static string BaseBackupKey(string host, int port, string id) => $"{SafeName($"{host}_{port}")}/{BaseFolder}/{id}";

    /// <summary>The WAL archive of one cluster, by its system identifier (a cluster keeps it across failovers and ports).</summary>
    public static string ArchiveFolder(string repository, string systemIdentifier) => Path.Combine(Path.GetFullPath(repository), WalFolder, systemIdentifier);

    /// <summary>The same place as <see cref="ArchiveFolder"/>, relative to the repository: a blob archive's key prefix.</summary>
    public static string ArchiveKey(string systemIdentifier) => $"{WalFolder}/{systemIdentifier}";

    /// <summary>The WAL archive of one cluster in a repository of either kind.</summary>
    public static IWalArchiveStore ArchiveStore(RepositoryAddress repository, string systemIdentifier) => repository.IsBlob
        ? new Blob.BlobWalArchiveStore(repository, systemIdentifier)
        : new FolderWalArchiveStore(ArchiveFolder(repository.Folder!, systemIdentifier));

    /// <summary>A file-name-safe form of a database or host name; non-ASCII letters are kept, path characters are not.</summary>
    public static string SafeName(string name)
    {
        var invalid = Path.GetInvalidFileNameChars().Concat(['/', '\\', ':', '*', '?', '"', '<', '>', '|']).ToHashSet();
        var sb = new StringBuilder(name.Length);
        foreach (var c in name) sb.Append(invalid.Contains(c) || char.IsControl(c) ? '_' : c);
        var s = sb.ToString().Trim('.', ' ');
        return s.Length == 0 ? "_" : s;
    }

    private static string Stamp(DateTimeOffset utc) => utc.ToString("yyyyMMdd'T'HHmmssfff'Z'", System.Globalization.CultureInfo.InvariantCulture);
}
