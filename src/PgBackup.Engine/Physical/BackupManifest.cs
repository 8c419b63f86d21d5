using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace PgBackup.Engine.Physical;

/// <summary>One file of a backup_manifest, by its path relative to the data directory.</summary>
public sealed record ManifestFile(string Path, long Size, string? ChecksumAlgorithm, string? Checksum);

/// <summary>
/// A backup_manifest as PostgreSQL writes it (version 1 or 2 JSON, one file per line, the last line holding the SHA-256 of
/// everything before it), read and written back with different checksums.
/// </summary>
public sealed class BackupManifest
{
    private const string ChecksumField = "\"Manifest-Checksum\"";

    // pg_verifybackup ignores these too: they are written or changed after the manifest was made.
    public static readonly IReadOnlyList<string> IgnoredFiles = ["backup_manifest", "postgresql.auto.conf", "standby.signal", "recovery.signal"];

    private readonly byte[] _bytes;

    private BackupManifest(byte[] bytes, IReadOnlyList<ManifestFile> files)
    {
        _bytes = bytes;
        Files = files;
    }

    public IReadOnlyList<ManifestFile> Files { get; }

    /// <summary>The files a backup's own check covers: all but those changed after the manifest was written.</summary>
    public IEnumerable<ManifestFile> CheckedFiles => Files.Where(f => !IgnoredFiles.Contains(f.Path));

    public static BackupManifest Read(string path) => Parse(File.ReadAllBytes(path));

    public static BackupManifest Parse(byte[] bytes)
    {
        using var document = JsonDocument.Parse(bytes);
        var files = new List<ManifestFile>();
        foreach (var file in document.RootElement.GetProperty("Files").EnumerateArray())
        {
            var name = file.TryGetProperty("Path", out var p) ? p.GetString()! : Encoding.UTF8.GetString(Convert.FromHexString(file.GetProperty("Encoded-Path").GetString()!));
            files.Add(new ManifestFile(name, file.GetProperty("Size").GetInt64(),
                file.TryGetProperty("Checksum-Algorithm", out var a) ? a.GetString() : null,
                file.TryGetProperty("Checksum", out var c) ? c.GetString() : null));
        }
        return new BackupManifest(bytes, files);
    }

    /// <summary>Null when the manifest's last line holds the SHA-256 of everything before that line; otherwise what is wrong.</summary>
    public string? ChecksumProblem()
    {
        var at = _bytes.AsSpan().LastIndexOf(Encoding.ASCII.GetBytes(ChecksumField));
        if (at < 0) return "backup_manifest has no Manifest-Checksum";
        var text = Encoding.ASCII.GetString(_bytes, at, _bytes.Length - at);
        var recorded = System.Text.RegularExpressions.Regex.Match(text, "\"Manifest-Checksum\"\\s*:\\s*\"([0-9a-fA-F]+)\"").Groups[1].Value;
        var actual = Convert.ToHexString(SHA256.HashData(_bytes.AsSpan(0, at)));
        return string.Equals(recorded, actual, StringComparison.OrdinalIgnoreCase) ? null : "backup_manifest does not match its own checksum";
    }

    /// <summary>
    /// The same manifest with every file's checksum replaced by the SHA-256 in <paramref name="digests"/> (which must cover
    /// every file that has a checksum) and a new Manifest-Checksum. Properties PgBackup does not know are kept as they are.
    /// </summary>
    public byte[] WithSha256(IReadOnlyDictionary<string, FileDigest> digests)
    {
        using var document = JsonDocument.Parse(_bytes);
        var options = new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        using var output = new MemoryStream(_bytes.Length + _bytes.Length / 4);
        void Write(string text) => output.Write(Encoding.UTF8.GetBytes(text));

        // The layout PostgreSQL uses: a line per file, and the checksum alone on the last line, which it requires.
        var first = true;
        Write("{ ");
        foreach (var property in document.RootElement.EnumerateObject())
        {
            if (property.NameEquals("Manifest-Checksum")) continue;
            if (!first) Write(",\n");
            first = false;
            Write(JsonSerializer.Serialize(property.Name) + ": ");
            if (!property.NameEquals("Files")) { Write(property.Value.GetRawText()); continue; }
            Write("[");
            var firstFile = true;
            foreach (var (file, entry) in property.Value.EnumerateArray().Zip(Files))
            {
                Write(firstFile ? "\n" : ",\n");
                firstFile = false;
                using (var writer = new Utf8JsonWriter(output, options))
                {
                    writer.WriteStartObject();
                    foreach (var field in file.EnumerateObject().Where(f => !f.NameEquals("Checksum-Algorithm") && !f.NameEquals("Checksum"))) field.WriteTo(writer);
                    if (entry.ChecksumAlgorithm != null && !string.Equals(entry.ChecksumAlgorithm, "NONE", StringComparison.OrdinalIgnoreCase))
                    {
                        if (!digests.TryGetValue(entry.Path, out var digest))
                            throw new InvalidOperationException($"No SHA-256 was computed for '{entry.Path}'.");
                        writer.WriteString("Checksum-Algorithm", "SHA256");
                        writer.WriteString("Checksum", digest.Sha256);
                    }
                    writer.WriteEndObject();
                }
            }
            Write(" ]");
        }
        Write(",\n");
        var body = output.ToArray();
        var checksum = Convert.ToHexString(SHA256.HashData(body)).ToLowerInvariant();
        return [.. body, .. Encoding.ASCII.GetBytes($"{ChecksumField}: \"{checksum}\"}}\n")];
    }
}
