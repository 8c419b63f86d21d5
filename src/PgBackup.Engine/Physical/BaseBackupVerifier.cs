using System.Collections.Concurrent;
using System.Formats.Tar;
using System.Text.Json;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Physical;

/// <summary>
/// Checks a base backup against its backup_manifest: every file's size and checksum (read by PgBackup, on every core for
/// Plain backups and through the tar files for Tar backups, which pg_verifybackup cannot read), and for Plain backups
/// pg_verifybackup's checks that no file is missing or extra and that the WAL the backup needs is there and parses.
/// </summary>
public static class BaseBackupVerifier
{
    /// <summary>Reads the whole backup again, as Test-PgBackup does long after it was taken.</summary>
    /// <returns>The problems found; empty when the backup matches its manifest.</returns>
    public static async Task<IReadOnlyList<string>> VerifyAsync(BaseBackup backup, string path, string? toolPath, IOperationReporter reporter, CancellationToken ct)
    {
        if (ReadManifest(path, out var problems) is not { } manifest) return problems;
        if (backup.Format == BaseBackupFormat.Plain)
        {
            // pg_verifybackup's own checksum pass is single-threaded, so PgBackup hashes on every core meanwhile and it skips that part.
            var structure = RunPgVerifyBackupAsync(backup, path, toolPath, reporter, ct);
            var digests = await Task.Run(() => ReadPlainFiles(path, manifest.CheckedFiles, new Dictionary<string, FileDigest>(), ct), ct).ConfigureAwait(false);
            problems.AddRange(await structure.ConfigureAwait(false));
            problems.AddRange(Compare(manifest.CheckedFiles, digests, reportMissing: false));
        }
        else
        {
            if (backup.ArchiveChecksums is { Count: > 0 } recorded)
            {
                var actual = await HashArchivesAsync(path, ct).ConfigureAwait(false);
                foreach (var (name, sha) in recorded.OrderBy(r => r.Key, StringComparer.Ordinal))
                    if (!actual.TryGetValue(name, out var found)) problems.Add($"'{Path.Combine(path, name)}' is missing from the backup");
                    else if (!string.Equals(found, sha, StringComparison.OrdinalIgnoreCase))
                        problems.Add($"'{Path.Combine(path, name)}' has SHA-256 {found}, recorded {sha} when the backup was taken");
            }
            var digests = await Task.Run(() => ReadTarFiles(path, problems, ct), ct).ConfigureAwait(false);
            problems.AddRange(Compare(manifest.CheckedFiles, digests, reportMissing: true));
            problems.AddRange(ExtraTarMembers(manifest, digests));
        }
        return problems;
    }

    /// <summary>
    /// Checks a backup pg_basebackup has just written against the manifest the server sent (whose CRC-32C checksums the
    /// server computed as it read each file), starting from what a <see cref="BackupWriteFollower"/> read while it was
    /// written, and when it matches, replaces the manifest by one with the SHA-256 of every file so later checks use SHA-256
    /// (unless <paramref name="seal"/> is false: an encrypted backup's files are authenticated by their encryption, so it
    /// keeps the server's CRC-32C).
    /// </summary>
    public static async Task<IReadOnlyList<string>> VerifyAndSealAsync(BaseBackup backup, string path, Task<IReadOnlyDictionary<string, FileDigest>> followed,
        string? toolPath, IOperationReporter reporter, CancellationToken ct, bool seal = true)
    {
        if (ReadManifest(path, out var problems) is not { } manifest) return problems;
        // pg_verifybackup checks for missing and extra files, sizes and the WAL while the last files are read; checksums are PgBackup's.
        var structure = backup.Format == BaseBackupFormat.Plain ? RunPgVerifyBackupAsync(backup, path, toolPath, reporter, ct) : Task.FromResult(new List<string>());
        var known = await followed.ConfigureAwait(false);
        // All files, the ones later checks skip included: nothing has changed them yet, and each needs its SHA-256.
        var digests = backup.Format == BaseBackupFormat.Plain
            ? await Task.Run(() => ReadPlainFiles(path, manifest.Files, known, ct), ct).ConfigureAwait(false)
            : manifest.Files.All(f => known.TryGetValue(f.Path, out var d) && d.Matches(f))
                ? new Dictionary<string, FileDigest>(known)
                : await Task.Run(() => ReadTarFiles(path, problems, ct), ct).ConfigureAwait(false);
        problems.AddRange(Compare(manifest.Files, digests, reportMissing: true));
        if (backup.Format == BaseBackupFormat.Tar) problems.AddRange(ExtraTarMembers(manifest, digests));
        problems.AddRange(await structure.ConfigureAwait(false));
        if (problems.Count > 0 || !seal) return problems;

        var sealedManifest = manifest.WithSha256(digests);
        if (BackupManifest.Parse(sealedManifest).ChecksumProblem() is { } problem) return [problem];
        var manifestPath = Path.Combine(path, "backup_manifest");
        var rewritten = manifestPath + ".sha256";
        await using (var output = new FileStream(rewritten, FileMode.Create, FileAccess.Write, FileShare.None, 1))
        {
            await output.WriteAsync(sealedManifest, ct).ConfigureAwait(false);
            output.Flush(flushToDisk: true);
        }
        File.Move(rewritten, manifestPath, overwrite: true);
        return problems;
    }

    /// <summary>The SHA-256 of each tar file of a Tar backup (compressed or not), by file name, read on every core.</summary>
    public static async Task<Dictionary<string, string>> HashArchivesAsync(string path, CancellationToken ct)
    {
        var archives = Directory.GetFiles(path).Where(f => Path.GetFileName(f).Contains(".tar", StringComparison.Ordinal)).ToList();
        var hashes = new ConcurrentDictionary<string, string>(StringComparer.Ordinal);
        await Parallel.ForEachAsync(archives, ct, async (archive, token) =>
        {
            await using var stream = new FileStream(archive, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan | FileOptions.Asynchronous);
            hashes[Path.GetFileName(archive)] = Convert.ToHexString(await System.Security.Cryptography.SHA256.HashDataAsync(stream, token).ConfigureAwait(false)).ToLowerInvariant();
        }).ConfigureAwait(false);
        return new Dictionary<string, string>(hashes, StringComparer.Ordinal);
    }

    private static BackupManifest? ReadManifest(string path, out List<string> problems)
    {
        problems = [];
        var manifestPath = Path.Combine(path, "backup_manifest");
        if (!File.Exists(manifestPath)) { problems.Add($"'{manifestPath}' is missing"); return null; }
        try
        {
            var manifest = BackupManifest.Read(manifestPath);
            if (manifest.ChecksumProblem() is { } problem) problems.Add(problem);
            return manifest;
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            problems.Add($"'{manifestPath}' is not a backup manifest PgBackup can read: {ex.Message}");
            return null;
        }
    }

    private static async Task<List<string>> RunPgVerifyBackupAsync(BaseBackup backup, string path, string? toolPath, IOperationReporter reporter, CancellationToken ct)
    {
        var major = int.TryParse(System.Text.RegularExpressions.Regex.Match(backup.ToolVersion ?? "", @"^\d+").Value, out var m) ? m : (int?)null;
        var tool = new ToolLocator(toolPath).Find("pg_verifybackup", major, major, reporter);
        var args = new List<string> { "--quiet", "--skip-checksums" };
        if (!backup.WalIncluded) args.Add("--no-parse-wal");
        args.Add(path);
        var result = await ToolRunner.RunAsync(tool, args, new Dictionary<string, string?>(), reporter.Verbose, ct, reporter: reporter).ConfigureAwait(false);
        return result.Succeeded ? [] : [.. result.ErrorLines.Where(l => l.Trim().Length > 0).DefaultIfEmpty($"pg_verifybackup failed with exit code {result.ExitCode}")];
    }

    /// <summary>The <paramref name="files"/> of a Plain backup, taking <paramref name="known"/> digests that match and reading the rest.</summary>
    private static Dictionary<string, FileDigest> ReadPlainFiles(string path, IEnumerable<ManifestFile> files, IReadOnlyDictionary<string, FileDigest> known, CancellationToken ct)
    {
        var digests = new ConcurrentDictionary<string, FileDigest>(known, StringComparer.Ordinal);
        // Largest first, so the last file to finish is a small one and the cores stay busy to the end.
        var toRead = files.Where(f => !(known.TryGetValue(f.Path, out var d) && d.Matches(f))).OrderByDescending(f => f.Size).ToList();
        Parallel.ForEach(toRead, new ParallelOptions { CancellationToken = ct, MaxDegreeOfParallelism = Environment.ProcessorCount }, file =>
        {
            var full = Path.Combine(path, file.Path);
            if (File.Exists(full)) digests[file.Path] = FileDigest.Of(full);
            else digests.TryRemove(file.Path, out _);
        });
        return new Dictionary<string, FileDigest>(digests, StringComparer.Ordinal);
    }

    /// <summary>Every regular file in a Tar backup's tar files (pg_wal's aside), by manifest path; unreadable tar files go to <paramref name="problems"/>.</summary>
    private static Dictionary<string, FileDigest> ReadTarFiles(string path, List<string> problems, CancellationToken ct)
    {
        var digests = new Dictionary<string, FileDigest>(StringComparer.Ordinal);
        foreach (var archive in Directory.GetFiles(path).Where(f => Path.GetFileName(f).Contains(".tar", StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            var archiveName = Path.GetFileName(archive);
            if (archiveName.StartsWith("pg_wal.tar", StringComparison.Ordinal)) continue; // WAL is not in the manifest's file list
            if (!CompressedTar.CanRead(archiveName)) { problems.Add($"'{archiveName}' is not a tar file PgBackup can read back to verify"); continue; }
            var prefix = CompressedTar.ManifestPrefix(archiveName);
            try
            {
                using var stream = CompressedTar.OpenRead(archive);
                using var reader = new TarReader(stream);
                while (reader.GetNextEntry() is { } entry)
                {
                    ct.ThrowIfCancellationRequested();
                    if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile)) continue;
                    digests[prefix + entry.Name.TrimStart('.', '/')] = FileDigest.Of(entry.DataStream ?? Stream.Null);
                }
            }
            // A damaged gzip, lz4 or zstd stream, or a truncated tar, fails inside the decompressor or the tar reader.
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                problems.Add($"'{archiveName}' cannot be read to the end: {ex.Message}");
            }
        }
        return digests;
    }

    private static IEnumerable<string> Compare(IEnumerable<ManifestFile> files, IReadOnlyDictionary<string, FileDigest> digests, bool reportMissing)
    {
        foreach (var file in files)
        {
            if (!digests.TryGetValue(file.Path, out var digest))
            {
                if (reportMissing) yield return $"'{file.Path}' is in the manifest but missing from the backup";
                continue;
            }
            if (digest.Matches(file)) continue;
            if (digest.Length != file.Size) yield return $"'{file.Path}' has {digest.Length} bytes, the manifest says {file.Size}";
            else if (string.Equals(file.ChecksumAlgorithm, "CRC32C", StringComparison.OrdinalIgnoreCase)) yield return $"'{file.Path}' has CRC-32C {digest.Crc32C}, the manifest says {file.Checksum}";
            else if (string.Equals(file.ChecksumAlgorithm, "SHA256", StringComparison.OrdinalIgnoreCase)) yield return $"'{file.Path}' has SHA-256 {digest.Sha256}, the manifest says {file.Checksum}";
            else yield return $"'{file.Path}' has a {file.ChecksumAlgorithm} checksum, which PgBackup cannot check";
        }
    }

    private static IEnumerable<string> ExtraTarMembers(BackupManifest manifest, IReadOnlyDictionary<string, FileDigest> digests)
    {
        var listed = manifest.Files.Select(f => f.Path).ToHashSet(StringComparer.Ordinal);
        return digests.Keys.Where(n => !listed.Contains(n) && !BackupManifest.IgnoredFiles.Contains(n) && !n.StartsWith("pg_wal/", StringComparison.Ordinal))
            .Select(n => $"'{n}' is in the backup but not in the manifest");
    }
}
