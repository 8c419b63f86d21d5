using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Physical;

/// <summary>
/// Checks a base backup against its backup_manifest: pg_verifybackup for Plain backups; for Tar backups, which
/// pg_verifybackup cannot read, PgBackup reads the tar files itself and compares every file's size and SHA-256.
/// </summary>
public static class BaseBackupVerifier
{
    // pg_verifybackup ignores these too: they are written or changed after the manifest was made.
    private static readonly string[] Ignored = ["backup_manifest", "postgresql.auto.conf", "standby.signal", "recovery.signal"];

    /// <returns>The problems found; empty when the backup matches its manifest.</returns>
    public static async Task<IReadOnlyList<string>> VerifyAsync(BaseBackup backup, string path, string? toolPath, IOperationReporter reporter, CancellationToken ct)
    {
        var manifestPath = Path.Combine(path, "backup_manifest");
        if (!File.Exists(manifestPath)) return [$"'{manifestPath}' is missing"];
        if (backup.Format == BaseBackupFormat.Plain) return await VerifyPlainAsync(backup, path, toolPath, reporter, ct).ConfigureAwait(false);
        return await Task.Run(() => VerifyTar(path, manifestPath, ct), ct).ConfigureAwait(false);
    }

    /// <summary>
    /// pg_verifybackup checks that no file is missing or extra, every size, and the WAL; its checksum pass is single-threaded,
    /// so PgBackup hashes the files itself on every core at the same time and pg_verifybackup skips that part.
    /// </summary>
    private static async Task<IReadOnlyList<string>> VerifyPlainAsync(BaseBackup backup, string path, string? toolPath, IOperationReporter reporter, CancellationToken ct)
    {
        var tool = new ToolLocator(toolPath).Find("pg_verifybackup", MajorOf(backup.ToolVersion), MajorOf(backup.ToolVersion), reporter);
        var args = new List<string> { "--quiet", "--skip-checksums" };
        if (!backup.WalIncluded) args.Add("--no-parse-wal");
        args.Add(path);
        var structure = ToolRunner.RunAsync(tool, args, new Dictionary<string, string?>(), reporter.Verbose, ct, reporter: reporter);
        var checksums = Task.Run(() => VerifyChecksums(path, Path.Combine(path, "backup_manifest"), ct), ct);
        var result = await structure.ConfigureAwait(false);
        var problems = await checksums.ConfigureAwait(false);
        if (!result.Succeeded)
            problems.InsertRange(0, result.ErrorLines.Where(l => l.Trim().Length > 0).DefaultIfEmpty($"pg_verifybackup failed with exit code {result.ExitCode}"));
        return problems;
    }

    private static List<string> VerifyChecksums(string path, string manifestPath, CancellationToken ct)
    {
        var problems = new System.Collections.Concurrent.ConcurrentBag<string>();
        var manifestBytes = File.ReadAllBytes(manifestPath);
        var list = new List<string>();
        CheckManifestChecksum(manifestBytes, list);
        foreach (var p in list) problems.Add(p);
        // Largest first, so the last file to finish is a small one and the cores stay busy to the end.
        var files = ReadManifestFiles(manifestBytes).Where(f => f.Value.Checksum != null && !Ignored.Contains(f.Key))
            .OrderByDescending(f => f.Value.Size).ToList();
        Parallel.ForEach(files, new ParallelOptions { CancellationToken = ct, MaxDegreeOfParallelism = Environment.ProcessorCount }, file =>
        {
            var full = Path.Combine(path, file.Key);
            if (!File.Exists(full)) return; // pg_verifybackup reports missing files
            using var stream = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
            var actual = Convert.ToHexString(SHA256.HashData(stream));
            if (!string.Equals(actual, file.Value.Checksum, StringComparison.OrdinalIgnoreCase))
                problems.Add($"'{file.Key}' has SHA-256 {actual.ToLowerInvariant()}, the manifest says {file.Value.Checksum}");
        });
        return [.. problems];
    }

    private static Dictionary<string, (long Size, string? Checksum)> ReadManifestFiles(byte[] manifestBytes)
    {
        using var manifest = JsonDocument.Parse(manifestBytes);
        var expected = new Dictionary<string, (long Size, string? Checksum)>(StringComparer.Ordinal);
        foreach (var file in manifest.RootElement.GetProperty("Files").EnumerateArray())
        {
            var name = file.TryGetProperty("Path", out var p) ? p.GetString()! : Encoding.UTF8.GetString(Convert.FromHexString(file.GetProperty("Encoded-Path").GetString()!));
            var checksum = file.TryGetProperty("Checksum", out var c) ? c.GetString() : null;
            expected[name] = (file.GetProperty("Size").GetInt64(), checksum);
        }
        return expected;
    }

    private static List<string> VerifyTar(string path, string manifestPath, CancellationToken ct)
    {
        var problems = new List<string>();
        var manifestBytes = File.ReadAllBytes(manifestPath);
        CheckManifestChecksum(manifestBytes, problems);
        var expected = ReadManifestFiles(manifestBytes);

        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var archive in Directory.GetFiles(path).Where(f => Path.GetFileName(f).Contains(".tar", StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            var archiveName = Path.GetFileName(archive);
            if (archiveName.StartsWith("pg_wal.tar", StringComparison.Ordinal)) continue; // WAL is not in the manifest's file list
            var prefix = archiveName.StartsWith("base.tar", StringComparison.Ordinal) ? "" : "pg_tblspc/" + archiveName[..archiveName.IndexOf(".tar", StringComparison.Ordinal)] + "/";
            if (!CompressedTar.CanRead(archiveName)) { problems.Add($"'{archiveName}' is not a tar file PgBackup can read back to verify"); continue; }
            try
            {
                using var stream = CompressedTar.OpenRead(archive);
                using var reader = new TarReader(stream);
                while (reader.GetNextEntry() is { } entry)
                {
                    ct.ThrowIfCancellationRequested();
                    if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile)) continue;
                    var name = prefix + entry.Name.TrimStart('.', '/');
                    if (Ignored.Contains(name) || name.StartsWith("pg_wal/", StringComparison.Ordinal)) continue;
                    seen.Add(name);
                    if (!expected.TryGetValue(name, out var want)) { problems.Add($"'{name}' is in {archiveName} but not in the manifest"); continue; }
                    if (entry.Length != want.Size) { problems.Add($"'{name}' has {entry.Length} bytes, the manifest says {want.Size}"); continue; }
                    if (want.Checksum == null) continue;
                    var actual = entry.DataStream == null ? Convert.ToHexString(SHA256.HashData(Array.Empty<byte>())) : Convert.ToHexString(SHA256.HashData(entry.DataStream));
                    if (!string.Equals(actual, want.Checksum, StringComparison.OrdinalIgnoreCase)) problems.Add($"'{name}' has SHA-256 {actual.ToLowerInvariant()}, the manifest says {want.Checksum}");
                }
            }
            // A damaged gzip, lz4 or zstd stream, or a truncated tar, fails inside the decompressor or the tar reader.
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                problems.Add($"'{archiveName}' cannot be read to the end: {ex.Message}");
            }
        }
        foreach (var name in expected.Keys.Where(n => !seen.Contains(n) && !Ignored.Contains(n)))
            problems.Add($"'{name}' is in the manifest but missing from the backup");
        return problems;
    }

    /// <summary>The manifest's last line holds the SHA-256 of everything before that line.</summary>
    private static void CheckManifestChecksum(byte[] manifest, List<string> problems)
    {
        var marker = Encoding.ASCII.GetBytes("\"Manifest-Checksum\"");
        var at = manifest.AsSpan().LastIndexOf(marker);
        if (at < 0) { problems.Add("backup_manifest has no Manifest-Checksum"); return; }
        var text = Encoding.ASCII.GetString(manifest, at, manifest.Length - at);
        var recorded = System.Text.RegularExpressions.Regex.Match(text, "\"Manifest-Checksum\"\\s*:\\s*\"([0-9a-fA-F]+)\"").Groups[1].Value;
        var actual = Convert.ToHexString(SHA256.HashData(manifest.AsSpan(0, at)));
        if (!string.Equals(recorded, actual, StringComparison.OrdinalIgnoreCase)) problems.Add("backup_manifest does not match its own checksum");
    }

    private static int? MajorOf(string version) =>
        int.TryParse(System.Text.RegularExpressions.Regex.Match(version ?? "", @"^\d+").Value, out var m) ? m : null;
}
