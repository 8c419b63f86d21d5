using System.Text.Json;
using System.Text.Json.Serialization;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Repository;

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
        Converters = { new JsonStringEnumConverter(), new LsnConverter() },
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
    };

    public static string PathFor(string backupPath) => backupPath.TrimEnd('/', '\\') + Suffix;

    public static void Write(PgBackupItem backup)
    {
        var metadataPath = PathFor(backup.Path);
        var temp = metadataPath + ".tmp";
        // The metadata is what makes a backup part of the catalog, so it reaches the disk, with the rename, before the cmdlet returns.
        using (var output = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1))
        {
            output.Write(Serialize(backup, Path.GetFileName(backup.Path.TrimEnd('/', '\\'))));
            output.Flush(flushToDisk: true);
        }
        File.Move(temp, metadataPath, overwrite: true);
        DurableFiles.SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(metadataPath))!);
        backup.MetadataPath = metadataPath;
    }

    /// <returns>The backup, or null when the metadata file is not PgBackup's or cannot be read.</returns>
    public static PgBackupItem? Read(string metadataPath, string? repository, Action<string>? warn = null)
    {
        try
        {
            var backup = Deserialize(File.ReadAllText(metadataPath));
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

    public static void RecordVerification(PgBackupItem backup, bool passed, DateTimeOffset when)
    {
        backup.VerificationState = passed ? VerificationState.Verified : VerificationState.Failed;
        backup.LastVerified = when;
        if (File.Exists(PathFor(backup.Path))) Write(backup);
    }

    /// <summary>
    /// The metadata as stored: the backup's path relative to the metadata (its name), so that a repository can be moved,
    /// mounted elsewhere or copied between a folder and a container; where the repository is, is not stored.
    /// </summary>
    public static byte[] Serialize(PgBackupItem backup, string relativeName)
    {
        var stored = Copy(backup);
        stored.Path = relativeName;
        stored.MetadataPath = "";
        stored.Repository = null;
        return JsonSerializer.SerializeToUtf8Bytes(stored, stored.GetType(), Options);
    }

    /// <summary>A metadata file's content; the caller sets Path, MetadataPath and Repository to where it was found.</summary>
    public static PgBackupItem? Parse(string json) => Deserialize(json);

    /// <summary>A copy of a backup's description (through its stored form, so every recorded property comes along).</summary>
    public static T Copy<T>(T backup) where T : PgBackupItem => (T)Deserialize(JsonSerializer.Serialize(backup, backup.GetType(), Options))!;

    /// <summary>The "kind" property says which type a metadata file holds: base backups and dumps share the catalog.</summary>
    private static PgBackupItem? Deserialize(string json)
    {
        using var document = JsonDocument.Parse(json);
        var isBase = document.RootElement.TryGetProperty("kind", out var kind) && kind.GetString() == nameof(BackupKind.Base);
        return isBase ? document.Deserialize<BaseBackup>(Options) : document.Deserialize<DumpBackup>(Options);
    }

    private sealed class LsnConverter : JsonConverter<Lsn>
    {
        public override Lsn Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => Lsn.Parse(reader.GetString() ?? "");
        public override void Write(Utf8JsonWriter writer, Lsn value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToString());
    }
}
