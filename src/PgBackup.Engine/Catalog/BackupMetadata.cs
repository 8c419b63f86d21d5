using System.Text.Json;
using System.Text.Json.Serialization;

namespace PgBackup.Engine.Catalog;

/// <summary>
/// The "&lt;dump&gt;.pgbackup.json" file written beside every finished dump. Only a dump with this file is a backup
/// the catalog lists; it is written after the dump was renamed into place, so an interrupted dump never looks valid.
/// </summary>
public static class BackupMetadata
{
    public const string Suffix = ".pgbackup.json";

    private static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
    };

    public static string PathFor(string backupPath) => backupPath.TrimEnd('/', '\\') + Suffix;

    public static void Write(DumpBackup backup)
    {
        var metadataPath = PathFor(backup.Path);
        var stored = Clone(backup);
        // Paths are stored relative to the metadata file so that a repository can be moved or mounted elsewhere.
        stored.Path = Path.GetFileName(backup.Path.TrimEnd('/', '\\'));
        stored.MetadataPath = "";
        stored.Repository = null;
        var temp = metadataPath + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(stored, Options));
        File.Move(temp, metadataPath, overwrite: true);
        backup.MetadataPath = metadataPath;
    }

    /// <returns>The backup, or null when the metadata file is not PgBackup's or cannot be read.</returns>
    public static DumpBackup? Read(string metadataPath, string? repository, Action<string>? warn = null)
    {
        try
        {
            var backup = JsonSerializer.Deserialize<DumpBackup>(File.ReadAllText(metadataPath), Options);
            if (backup == null || string.IsNullOrEmpty(backup.Path)) return null;
            backup.Path = Path.Combine(Path.GetDirectoryName(metadataPath)!, backup.Path);
            backup.MetadataPath = metadataPath;
            backup.Repository = repository;
            return backup;
        }
        catch (Exception ex) when (ex is JsonException or IOException or UnauthorizedAccessException)
        {
            warn?.Invoke($"Skipped '{metadataPath}': it is not a readable PgBackup metadata file ({ex.Message}).");
            return null;
        }
    }

    public static void RecordVerification(DumpBackup backup, bool passed, DateTimeOffset when)
    {
        backup.VerificationState = passed ? VerificationState.Verified : VerificationState.Failed;
        backup.LastVerified = when;
        if (File.Exists(PathFor(backup.Path))) Write(backup);
    }

    private static DumpBackup Clone(DumpBackup b) => JsonSerializer.Deserialize<DumpBackup>(JsonSerializer.Serialize(b, Options), Options)!;
}
