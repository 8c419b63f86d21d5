using PgBackup.Engine.Repository;
using PgBackup.Engine.Tools;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Repository.Encryption;

namespace PgBackup.Engine.Recovery;

/// <summary>
/// What a recovery runs from, on this machine: the candidate base backups and the repository folder whose
/// wal/&lt;system identifier&gt; holds the archived WAL. Recovery reads files (each checked against the manifest as it is
/// copied; WAL read by pg_waldump and restore_command), so whatever lives in blob storage is first copied into
/// <see cref="Spool"/>: the one base backup recovery will use, and the archived WAL from its start on, each segment
/// with the checksum recorded in the archive. What an encrypted repository holds is decrypted into the spool the same
/// way (folder or blob), so PostgreSQL and pg_waldump read plain files and never hold the key; a file that fails
/// authentication is BackupTampered before the server starts. The caller removes the spool afterwards (<see cref="Dispose"/>).
/// </summary>
public sealed class RecoverySource : IDisposable
{
    private RecoverySource(IReadOnlyList<BaseBackup> candidates, bool chosen, string? repository, string? spool)
    {
        Candidates = candidates;
        Chosen = chosen;
        Repository = repository;
        Spool = spool;
    }

    public IReadOnlyList<BaseBackup> Candidates { get; }
    public bool Chosen { get; }
    /// <summary>The local repository folder with the archived WAL, or null when there is none.</summary>
    public string? Repository { get; }
    public string? Spool { get; }
    /// <summary>Where the chosen backup lives in its repository (a downloaded copy's original), for the result.</summary>
    public string? BackupPath { get; private init; }
    /// <summary>From blob storage, chosen by server: the other candidates, to try when this one cannot reach the target.</summary>
    public IReadOnlyList<BaseBackup> Untried { get; private init; } = [];

    /// <summary>
    /// Prepares and plans the recovery. From blob storage with the backup chosen by server, a backup that by its metadata
    /// could reach the target may still start after it (a transaction id or restore point is only found in the WAL, from
    /// the backup's start on): then the next older one is downloaded and planned instead, as the planner does among local
    /// candidates, and the oldest one's answer is final.
    /// </summary>
    public static async Task<(RecoverySource Source, RecoveryPlan Plan)> PlanAsync(BaseBackup? chosen, RepositoryAddress? backupRepository, RepositoryAddress? walRepository,
        string? backupId, CatalogFilter? serverFilter, string? serverName, RecoveryTarget target, string? toolPath, RepositoryKeys keys, IOperationReporter reporter, CancellationToken ct)
    {
        var tried = new HashSet<string>(StringComparer.Ordinal);
        while (true)
        {
            var source = await PrepareAsync(chosen, backupRepository, walRepository, backupId, serverFilter, serverName, target, keys, reporter, ct, tried).ConfigureAwait(false);
            try
            {
                var plan = await RecoveryPlanner.PlanAsync(new RecoveryPlanRequest
                {
                    Candidates = source.Candidates, BackupChosen = source.Chosen, Target = target, Repository = source.Repository, ToolPath = toolPath,
                }, reporter, ct).ConfigureAwait(false);
                return (source, plan);
            }
            // A transaction or restore point not found in the WAL after this backup's start may lie before it.
            catch (PgBackupException ex) when (source.Untried.Count > 0 && (ex.ErrorId == "PgBackup.TargetBeforeBackupEnd" ||
                (ex.ErrorId == "PgBackup.TargetBeyondArchive" && target.Kind is RecoveryTargetKind.Xid or RecoveryTargetKind.Name)))
            {
                reporter.Verbose($"Base backup {source.Candidates[0].Id} cannot reach {target} ({ex.Message}); trying an older one.");
                tried.Add(source.Candidates[0].Id);
                source.Dispose();
            }
            catch
            {
                source.Dispose();
                throw;
            }
        }
    }

    /// <summary>
    /// For an encrypted Tar backup: its tar files stay encrypted (in the folder repository, or downloaded as they are
    /// stored) and this reads each one's plaintext, so the restore decrypts while it extracts instead of writing a
    /// decrypted copy first; null otherwise. Pass it to <see cref="PointInTimeRequest.OpenArchive"/>.
    /// </summary>
    public Func<string, Stream, Stream>? OpenArchive { get; private init; }
    private RepositoryEncryption? _archiveEncryption;

    public void Dispose()
    {
        if (Spool != null) PartialBackup.DeletePath(Spool);
        _archiveEncryption?.Dispose();
    }

    /// <param name="chosen">A backup the user picked (piped, or by id), from <paramref name="backupRepository"/>.</param>
    /// <param name="backupRepository">Where <paramref name="chosen"/> lives when that is blob storage; null for a folder.</param>
    /// <param name="walRepository">The repository whose archive the WAL comes from (and whose backups are the candidates without a chosen one).</param>
    /// <param name="serverFilter">Without a chosen backup: whose backups are candidates.</param>
    /// <param name="backupId">Without a chosen backup: the id of the one to use.</param>
    /// <param name="tried">Ids of candidates already tried by <see cref="PlanAsync"/>, left out.</param>
    /// <param name="keys">The keys of an encrypted repository; checked before anything is downloaded or written.</param>
    public static async Task<RecoverySource> PrepareAsync(BaseBackup? chosen, RepositoryAddress? backupRepository, RepositoryAddress? walRepository,
        string? backupId, CatalogFilter? serverFilter, string? serverName, RecoveryTarget target, RepositoryKeys keys, IOperationReporter reporter, CancellationToken ct,
        IReadOnlySet<string>? tried = null)
    {
        IReadOnlyList<BaseBackup> untried = [];
        var blobWal = walRepository is { IsBlob: true };
        if (chosen != null) chosen = RecoveryChoices.Chosen(chosen);
        // Keys are checked before anything is read: the WAL's repository, and the backup's when that is another one.
        var walRoot = walRepository ?? backupRepository ?? (chosen != null ? RepositoryEncryption.RootOf(chosen, null) : null);
        var backupRoot = backupRepository ?? (chosen != null ? RepositoryEncryption.RootOf(chosen, null) : walRepository);
        var walEncryption = walRoot == null ? null : await RepositoryEncryption.OpenForReadingAsync(walRoot, keys, ct).ConfigureAwait(false);
        var sameRepository = backupRoot == null || walRoot == null || string.Equals(backupRoot.Display, walRoot.Display, StringComparison.Ordinal);
        RepositoryEncryption? otherEncryption;
        try { otherEncryption = sameRepository ? null : await RepositoryEncryption.OpenForReadingAsync(backupRoot!, keys, ct).ConfigureAwait(false); }
        catch { walEncryption?.Dispose(); throw; }
        var backupEncryption = sameRepository ? walEncryption : otherEncryption;
        // Whichever the returned source reads its tar files with lives as long as the source; the others go at the end.
        RepositoryEncryption? kept = null;
        try
        {
            var encrypted = walEncryption != null || backupEncryption != null;
            if (chosen == null)
            {
                var repository = walRepository ?? throw new ArgumentException("Without a chosen backup a repository is needed.", nameof(walRepository));
                var listed = (await BackupCatalog.ListAsync(repository, (backupId != null ? new CatalogFilter() : serverFilter ?? new CatalogFilter()) with { Kind = BackupKind.Base },
                    reporter.Warning, null, ct).ConfigureAwait(false)).OfType<BaseBackup>().ToList();
                if (backupId != null)
                    chosen = RecoveryChoices.ById(listed, repository.Display, backupId);
                else
                {
                    var candidates = RecoveryChoices.OfServer(listed, repository.Display, serverName ?? "the server");
                    if (!repository.IsBlob && !encrypted && !HoldsCompressedWal(repository.Folder, candidates.Select(c => c.SystemIdentifier).FirstOrDefault()))
                        return new RecoverySource(candidates, false, repository.Folder, null);
                    // Only one backup is downloaded: the newest the metadata says can reach the target.
                    var left = candidates.Where(c => tried == null || !tried.Contains(c.Id)).ToList();
                    chosen = Likeliest(left, target);
                    untried = left.Where(c => c.StopLsn < chosen.StopLsn).ToList();
                    reporter.Verbose($"Recovering from base backup {chosen.Id}, the newest in {repository.Display} that can reach {target}.");
                }
                if (repository.IsBlob) backupRepository = repository;
            }
            // PostgreSQL and pg_waldump read WAL from a folder of plain files: compressed segments are expanded into the spool first.
            var compressedWal = !blobWal && HoldsCompressedWal(walRepository?.Folder ?? chosen.Repository, chosen.SystemIdentifier);
            if (backupRepository is not { IsBlob: true } && !blobWal && !encrypted && !compressedWal)
                return new RecoverySource([chosen], true, walRepository?.Folder ?? chosen.Repository, null) { BackupPath = chosen.Path };

            var spool = BlobBaseBackups.NewSpool();
            try
            {
                var backup = chosen;
                Func<string, Stream, Stream>? openArchive = null;
                if (backupEncryption != null && chosen.Format == BaseBackupFormat.Tar)
                {
                    // Only the manifest is decrypted here; the tar files are decrypted while the restore extracts them.
                    (backup, openArchive) = await BlobBaseBackups.EncryptedTarAsync(chosen, backupRepository is { IsBlob: true } ? backupRepository : null, backupEncryption, spool, ct).ConfigureAwait(false);
                    kept = backupEncryption;
                }
                else if (backupRepository is { IsBlob: true } || backupEncryption != null)
                {
                    reporter.Milestone($"{(backupEncryption != null ? "Decrypting" : "Downloading")} base backup {chosen.Id} from {backupRoot?.Display ?? chosen.Path} into {spool}.");
                    backup = await BlobBaseBackups.LocalCopyAsync(chosen, backupRepository is { IsBlob: true } ? backupRepository : null, backupEncryption, Path.Combine(spool, "backup"), ct).ConfigureAwait(false);
                }
                string? wal = walRepository?.Folder ?? (backupRepository is { IsBlob: true } ? null : chosen.Repository);
                if ((blobWal || walEncryption != null || compressedWal) && !string.IsNullOrEmpty(chosen.SystemIdentifier))
                {
                    await DownloadWalAsync(walRoot!, chosen, spool, walEncryption, reporter, ct).ConfigureAwait(false);
                    wal = spool;
                }
                return new RecoverySource([backup], true, wal, spool) { BackupPath = chosen.Path, Untried = untried, OpenArchive = openArchive, _archiveEncryption = kept };
            }
            catch
            {
                PartialBackup.DeletePath(spool);
                throw;
            }
        }
        finally
        {
            if (walEncryption != kept) walEncryption?.Dispose();
            if (otherEncryption != kept) otherEncryption?.Dispose();
        }
    }

    private static BaseBackup Likeliest(IReadOnlyList<BaseBackup> candidates, RecoveryTarget target)
    {
        var newestFirst = candidates.OrderByDescending(b => b.StopLsn).ToList();
        return target.Kind switch
        {
            RecoveryTargetKind.Time => newestFirst.FirstOrDefault(b => b.EndTime <= target.Time) ?? newestFirst[^1],
            RecoveryTargetKind.Lsn => newestFirst.FirstOrDefault(b => b.StopLsn <= target.Lsn) ?? newestFirst[^1],
            _ => newestFirst[0],
        };
    }

    /// <summary>
    /// Every history file, and every WAL file from the backup's start segment on, into &lt;spool&gt;/wal/&lt;system identifier&gt;:
    /// downloaded from blob storage, and from an encrypted archive decrypted, each with a checksum sidecar.
    /// </summary>
    private static async Task DownloadWalAsync(RepositoryAddress repository, BaseBackup backup, string spool, RepositoryEncryption? encryption, IOperationReporter reporter, CancellationToken ct)
    {
        var archive = RepositoryLayout.ArchiveStore(repository, backup.SystemIdentifier);
        var from = WalSegmentName.Parse(backup.StartSegment).Number(backup.WalSegmentSize);
        var files = await Task.Run(() => archive.List(), ct).ConfigureAwait(false);
        var wanted = files.Where(f => f.Name.EndsWith(".history", StringComparison.Ordinal) ||
                                      (f.Name.Length >= 24 && WalSegmentName.TryParse(f.Name[..24], out var s) && s.Number(backup.WalSegmentSize) >= from)).ToList();
        var names = wanted.Select(f => f.Name).ToList();
        var activity = $"Downloading archived WAL from {archive.Location}";
        var bytes = wanted.Sum(f => f.SizeBytes);
        reporter.Milestone($"{(encryption != null ? "Decrypting" : "Downloading")} {names.Count} archived WAL files ({bytes} bytes) from {archive.Location}.");
        var folder = RepositoryLayout.ArchiveFolder(spool, backup.SystemIdentifier);
        void Progress(int done) => reporter.Progress(activity, $"{done} of {names.Count} files", names.Count == 0 ? 100 : done * 100 / names.Count);
        if (encryption != null) await DecryptWalAsync(archive, names, folder, encryption, Progress, ct).ConfigureAwait(false);
        else if (archive is BlobWalArchiveStore blob) await blob.DownloadAsync(names, folder, Progress, ct).ConfigureAwait(false);
        else await CopyWalAsync(archive.Location, names, folder, Progress, ct).ConfigureAwait(false);
        await ExpandCompressedWalAsync(folder, names, ct).ConfigureAwait(false);
        reporter.ProgressCompleted(activity);
    }

    /// <summary>True when the archive folder of <paramref name="systemIdentifier"/> in a folder repository holds a compressed segment.</summary>
    private static bool HoldsCompressedWal(string? repositoryFolder, string? systemIdentifier)
    {
        if (string.IsNullOrEmpty(repositoryFolder) || string.IsNullOrEmpty(systemIdentifier)) return false;
        var archive = RepositoryLayout.ArchiveFolder(repositoryFolder, systemIdentifier);
        if (!Directory.Exists(archive)) return false;
        return Directory.EnumerateFiles(archive).Where(f => WalCompression.Applies(Path.GetFileName(f))).Any(WalCompression.IsCompressed);
    }

    /// <summary>Copies archived WAL files with their sidecars from a folder archive (their checksums are checked when they are expanded or replayed).</summary>
    private static async Task CopyWalAsync(string archive, IReadOnlyCollection<string> names, string folder, Action<int> progress, CancellationToken ct)
    {
        Directory.CreateDirectory(folder);
        var done = 0;
        await Parallel.ForEachAsync(names, new ParallelOptions { MaxDegreeOfParallelism = 4, CancellationToken = ct }, async (name, token) =>
        {
            await using (var input = new FileStream(Path.Combine(archive, name), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan | FileOptions.Asynchronous))
            await using (var output = new FileStream(Path.Combine(folder, name), FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous))
                await input.CopyToAsync(output, 1 << 20, token).ConfigureAwait(false);
            var sidecar = Path.Combine(archive, name + FolderWalArchiveStore.SidecarSuffix);
            if (File.Exists(sidecar)) File.Copy(sidecar, Path.Combine(folder, name + FolderWalArchiveStore.SidecarSuffix), overwrite: true);
            progress(Interlocked.Increment(ref done));
        }).ConfigureAwait(false);
    }

    /// <summary>
    /// Replaces every compressed segment in the spool by its plaintext, with a sidecar of the plaintext's SHA-256; the
    /// compressed bytes are checked against their recorded SHA-256 first, so a damaged file stops the recovery here.
    /// </summary>
    private static async Task ExpandCompressedWalAsync(string folder, IReadOnlyCollection<string> names, CancellationToken ct)
    {
        var damaged = new System.Collections.Concurrent.ConcurrentBag<string>();
        await Parallel.ForEachAsync(names.Where(WalCompression.Applies), new ParallelOptions { MaxDegreeOfParallelism = 2, CancellationToken = ct }, async (name, token) =>
        {
            var path = Path.Combine(folder, name);
            if (!WalCompression.IsCompressed(path)) return;
            if (FolderWalArchiveStore.ChecksumProblemOf(path, requireSidecar: true) is { } problem)
            {
                damaged.Add(problem);
                return;
            }
            var expanded = path + ".expanded";
            string sha;
            try
            {
                // The plaintext's SHA-256 is taken as it is written, for the sidecar the restore_command gate checks.
                await using var input = WalCompression.Decompressing(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan));
                await using var output = new FileStream(expanded, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
                await using var hashing = new HashingWriteStream(output);
                await input.CopyToAsync(hashing, 1 << 20, token).ConfigureAwait(false);
                sha = hashing.Sha256();
            }
            catch (InvalidDataException ex)
            {
                damaged.Add($"{path} does not decompress ({ex.Message})");
                File.Delete(expanded);
                return;
            }
            File.Move(expanded, path, overwrite: true);
            await FolderWalArchiveStore.WriteSidecarAsync(path, sha, token).ConfigureAwait(false);
        }).ConfigureAwait(false);
        if (!damaged.IsEmpty) throw ArchivedWalGate.Damaged(damaged, folder);
    }

    /// <summary>Decrypts archived WAL files into a folder archive, each with a sidecar of its plaintext's SHA-256, a few at a time.</summary>
    private static async Task DecryptWalAsync(IWalArchiveStore archive, IReadOnlyCollection<string> names, string folder, RepositoryEncryption encryption, Action<int> progress, CancellationToken ct)
    {
        Directory.CreateDirectory(folder);
        var done = 0;
        var prefix = RepositoryLayout.ArchiveKey(Path.GetFileName(folder)) + "/";
        await Parallel.ForEachAsync(names, new ParallelOptions { MaxDegreeOfParallelism = 4, CancellationToken = ct }, async (name, token) =>
        {
            var path = Path.Combine(folder, name);
            string sha;
            // The plaintext's SHA-256 is taken as it is written, as when compressed segments are expanded.
            await using (var input = archive.OpenRead(name))
            await using (var output = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous))
            await using (var hashing = new HashingWriteStream(output))
            {
                await encryption.DecryptToAsync(input, prefix + name, archive.Location.TrimEnd('/') + "/" + name, hashing, token).ConfigureAwait(false);
                sha = hashing.Sha256();
            }
            await FolderWalArchiveStore.WriteSidecarAsync(path, sha, token).ConfigureAwait(false);
            progress(Interlocked.Increment(ref done));
        }).ConfigureAwait(false);
    }
}
