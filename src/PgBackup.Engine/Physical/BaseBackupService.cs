using System.Globalization;
using System.Text.RegularExpressions;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Repository.Encryption;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Physical;

/// <summary>
/// Runs pg_basebackup into a ".partial" folder, checks every file against the manifest's checksums while and after it is
/// written, gives the manifest SHA-256 checksums, writes everything to disk, and only then commits it (the metadata that
/// makes it part of the catalog, then the rename; <see cref="PartialBackup"/>). A failed, cancelled or hung backup leaves
/// nothing behind. In a repository, one base backup of a server runs at a time. Into an encrypted repository (folder or
/// blob) an uncompressed Tar backup is read from pg_basebackup's standard output and encrypted on the way
/// (<see cref="StreamedBaseTar"/>); otherwise pg_basebackup writes into a local spool, whose tar files are stored
/// (encrypted, uploaded) while they grow. Either way they are verified as usual, and the SHA-256 of every encrypted file is
/// recorded so the backup can be checked without the key.
/// </summary>
public static class BaseBackupService
{
    private static readonly Regex ProgressLine = new(@"(?<done>\d+)/(?<total>\d+) kB \((?<pct>\d+)%\)", RegexOptions.Compiled);
    private static readonly Regex StartLine = new(@"write-ahead log start point: (?<lsn>[0-9A-F]+/[0-9A-F]+) on timeline (?<tli>\d+)", RegexOptions.Compiled);
    private static readonly Regex EndLine = new(@"write-ahead log end point: (?<lsn>[0-9A-F]+/[0-9A-F]+)", RegexOptions.Compiled);
    private static readonly Regex CompressSpec = new(@"^((client|server)-)?(none|gzip|lz4|zstd)(:\d+)?$|^\d$", RegexOptions.Compiled | RegexOptions.IgnoreCase);

    /// <summary>
    /// The format a base backup takes when none is asked for: Plain into a folder or to a path; Tar into a container (blobs
    /// hold files, not a data directory) and into an encrypted folder, where a Plain backup's one advantage, a data
    /// directory that starts where it lies, is gone and encrypting its files one by one costs more.
    /// </summary>
    public static async Task<BaseBackupFormat> DefaultFormatAsync(RepositoryAddress? repository, CancellationToken ct)
    {
        if (repository == null) return BaseBackupFormat.Plain;
        if (repository.IsBlob) return BaseBackupFormat.Tar;
        using var encryption = await RepositoryEncryption.LoadAsync(repository, ct).ConfigureAwait(false);
        return encryption == null ? BaseBackupFormat.Plain : BaseBackupFormat.Tar;
    }

    public static async Task<BaseBackup> BackupAsync(BaseBackupRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        Validate(request);
        var target = request.Target;
        var activity = $"Base backup of {target.Display}";
        reporter.Progress(activity, "Connecting", 0);

        ServerInfo info;
        string systemIdentifier;
        bool inRecovery;
        long segmentSize;
        await using (var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false))
        {
            info = await ServerSession.GetInfoAsync(connection, ct).ConfigureAwait(false);
            systemIdentifier = (await ServerSession.ScalarAsync<long>(connection, "select system_identifier from pg_control_system()", ct).ConfigureAwait(false)).ToString(CultureInfo.InvariantCulture);
            inRecovery = await ServerSession.ScalarAsync<bool>(connection, "select pg_is_in_recovery()", ct).ConfigureAwait(false);
            segmentSize = await ServerSession.ScalarAsync<long>(connection, "select setting::bigint * (case unit when 'B' then 1 when 'kB' then 1024 when 'MB' then 1048576 else 1 end) from pg_settings where name = 'wal_segment_size'", ct).ConfigureAwait(false);
            // A backup without WAL can only ever be restored from the archive, so the archive must be running.
            if (request.WalMethod == WalMethod.None) await Wal.ArchivingService.EnsureArchivingAsync(connection, target, ct).ConfigureAwait(false);
        }
        if (info.Major < 13)
            throw new PgBackupException("ServerTooOld", ErrorKind.NotInstalled, $"Base backups with manifests need PostgreSQL 13 or later; {target.Display} runs {info.Version}.", target.Display,
                "Upgrade the server, or take logical backups with Invoke-PgDump.");

        var tool = new ToolLocator(request.ToolPath).Find("pg_basebackup", info.Major, info.Major, reporter);
        var start = DateTimeOffset.UtcNow;
        var id = RepositoryLayout.BaseBackupId(start);
        // An encrypted repository's marker decides, on every write: nothing goes into it in clear.
        using var encryption = request.Path == null ? await RepositoryEncryption.LoadAsync(request.Repository!, ct).ConfigureAwait(false) : null;
        // Into a blob or an encrypted repository, pg_basebackup writes into a local spool folder whose tar files are stored
        // (uploaded, encrypted) while they grow; the spool is removed afterwards. A Plain backup is encrypted once verified.
        var blob = request.Path == null && request.Repository is { IsBlob: true } address ? BlobStore.Open(address) : null;
        var spool = blob == null && encryption == null ? null : System.IO.Path.Combine(System.IO.Path.GetTempPath(), "pgbackup-base-" + Guid.NewGuid().ToString("N"));
        var finalPath = System.IO.Path.GetFullPath(request.Path ?? (spool != null ? System.IO.Path.Combine(spool, id) : RepositoryLayout.BaseBackupPath(request.Repository!.Folder!, target.Host, target.Port, id)));
        var encryptedPath = encryption != null && blob == null ? RepositoryLayout.BaseBackupPath(request.Repository!.Folder!, target.Host, target.Port, id) : null;
        var blobKey = blob == null ? null : blob.Address.Prefix + RepositoryLayout.BaseBackupKey(target.Host, target.Port, id);
        PartialBackup.PrepareTarget(finalPath, request.Force);
        if (encryptedPath != null) PartialBackup.PrepareTarget(encryptedPath, request.Force);
        using var spoolRemoval = spool == null ? null : new FolderRemoval(spool);
        using var serverLock = request.Path == null && blob == null ? LockServer(System.IO.Path.GetDirectoryName(encryptedPath ?? finalPath)!, target) : null;
        await using var blobServerLock = blob == null ? null : await LockServerAsync(blob, blobKey!, target, ct).ConfigureAwait(false);
        await using var blobWriter = blob == null ? null : await BlobBackupWriter.BeginAsync(blob, blobKey!, $"Start-PgBaseBackup of {target.Display}", reporter, ct).ConfigureAwait(false);
        using var encryptedWriting = encryptedPath == null ? null : PartialBackup.Begin(encryptedPath, $"Start-PgBaseBackup of {target.Display}", reporter);
        using var writing = PartialBackup.Begin(finalPath, $"Start-PgBaseBackup of {target.Display}", reporter);
        var partial = writing.PartialPath;
        // Where a tar file goes when it is stored from this machine: a blob, or an (encrypted) file of the partial folder.
        FollowedFileTarget OpenStored(string name, CancellationToken token) => blob != null
            ? new FollowedFileTarget.ToBlob(blob, blobKey! + "/" + name, encryption, token)
            : new FollowedFileTarget.ToFile(System.IO.Path.Combine(Directory.CreateDirectory(encryptedWriting!.PartialPath).FullName, name), encryption,
                RepositoryEncryption.NameIn(request.Repository!, encryptedWriting.FinalPath) + "/" + name);
        // An encrypted Tar backup is taken from pg_basebackup's standard output where the server allows it, so it is written
        // once (encrypted) instead of into a spool first; the spool folder then holds only the manifest.
        await using var streamed = encryption != null && request.Format == BaseBackupFormat.Tar && request.Compress == null
            ? await StreamedBaseTar.TryStartAsync(target, info.Major, request.WalMethod != WalMethod.None, reporter, ct).ConfigureAwait(false)
            : null;
        await using var streamedTarget = streamed == null ? null : OpenStored(StreamedBaseTar.ArchiveName, ct);

        var label = request.Label ?? $"PgBackup {id}";
        var args = new List<string>(streamed?.Arguments(request.WalMethod) ??
        [
            "--pgdata=" + partial,
            "--format=" + (request.Format == BaseBackupFormat.Plain ? "plain" : "tar"),
            "--wal-method=" + request.WalMethod.ToString().ToLowerInvariant(),
        ])
        {
            "--checkpoint=" + request.CheckpointMode.ToString().ToLowerInvariant(),
            "--label=" + label,
            // The server's CRC-32C costs it next to nothing (a SHA-256 manifest made pg_basebackup 1.4 to 1.7 times as
            // slow in the benchmark); PgBackup checks each file against it as it lands and writes the SHA-256 into the manifest itself.
            "--manifest-checksums=CRC32C",
            // PgBackup writes the backup to disk itself, while it checksums the files pg_basebackup has left in memory.
            "--no-sync",
            "--progress",
            "--verbose",
            "--no-password",
        };
        if (request.Compress != null) args.Add("--compress=" + request.Compress);
        if (request.MaxRate != null) args.Add("--max-rate=" + request.MaxRate);

        Lsn startLsn = default, stopLsn = default;
        uint timeline = 0;
        reporter.Milestone($"Starting {tool.Name} {tool.VersionText} for {target.Display} into {finalPath}");
        ToolResult result;
        // A Plain backup into an encrypted folder is encrypted from what the follower reads as pg_basebackup writes it.
        using var copies = encryptedWriting != null && request.Format == BaseBackupFormat.Plain
            ? new FollowingEncryption(encryption!, encryptedWriting.PartialPath, RepositoryEncryption.NameIn(request.Repository!, encryptedWriting.FinalPath))
            : null;
        // An encrypted backup's files are authenticated by AES-GCM and the SHA-256 of each stored file is recorded, so its
        // manifest keeps the server's CRC-32C: a SHA-256 of the plaintext would cost a pass and protect nothing more.
        var follower = streamed != null ? null : BackupWriteFollower.Start(partial, request.Format, handToDisk: spool == null, copies, sha256: encryption == null);
        async Task StopFollowerAsync()
        {
            if (follower != null) await follower.DisposeAsync().ConfigureAwait(false);
        }
        // Tar files are stored while pg_basebackup writes them into the spool: uploaded into blobs, or encrypted into the partial folder.
        await using var storing = spool == null || request.Format != BaseBackupFormat.Tar || streamed != null ? null : FolderFollower.Start(Directory.CreateDirectory(partial).FullName,
            IsArchive, name => !name.StartsWith("pg_wal.tar", StringComparison.Ordinal), OpenStored, ct);
        // The partial folder goes when `writing` is disposed without a commit, on every way out.
        void Discard() => reporter.ProgressCompleted(activity);
        using var stall = new StallWatch(target, request.StallTimeout, reporter, ct);
        try
        {
            result = await ToolRunner.RunAsync(tool, args, target.ToolEnvironment(), line =>
            {
                stall.Received();
                if (ProgressLine.Match(line) is { Success: true } p)
                {
                    reporter.Progress(activity, $"{long.Parse(p.Groups["done"].Value, CultureInfo.InvariantCulture) / 1024} of {long.Parse(p.Groups["total"].Value, CultureInfo.InvariantCulture) / 1024} MB",
                        Math.Min(99, int.Parse(p.Groups["pct"].Value, CultureInfo.InvariantCulture)));
                    return;
                }
                if (StartLine.Match(line) is { Success: true } s)
                {
                    startLsn = Lsn.Parse(s.Groups["lsn"].Value);
                    timeline = uint.Parse(s.Groups["tli"].Value, CultureInfo.InvariantCulture);
                }
                else if (EndLine.Match(line) is { Success: true } e) stopLsn = Lsn.Parse(e.Groups["lsn"].Value);
                reporter.Verbose(line);
            }, stall.Token, reporter: reporter, consumeOutput: streamed == null ? null : stdout =>
            {
                streamed.Copy(stdout, streamedTarget!.Input, System.IO.Path.Combine(Directory.CreateDirectory(partial).FullName, "backup_manifest"), sha256: encryption == null, stall.Token);
                return Task.CompletedTask;
            }).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stall.Stalled)
        {
            await StopFollowerAsync().ConfigureAwait(false);
            Discard();
            throw new PgBackupException("BackupStalled", ErrorKind.OperationTimeout,
                $"The base backup of {target.Display} received nothing for {request.StallTimeout}, and the server did not answer a query either: it hangs, or the network to it does. pg_basebackup was stopped and nothing was kept.",
                target.Display, "Find out why the server does not respond (its log, its host's load and disks, the network), then take the backup again; raise -StallTimeout if it is only very slow.");
        }
        // Storing pg_basebackup's standard output failed: the repository's disk, most likely.
        catch (IOException ex) when (streamed != null)
        {
            Discard();
            throw PartialBackup.WriteFailure(System.IO.Path.GetDirectoryName(encryptedWriting?.FinalPath ?? finalPath)!, ex.Message, ex);
        }
        catch (InvalidDataException ex) when (streamed != null)
        {
            Discard();
            throw new PgBackupException("BaseBackupFailed", ErrorKind.ToolFailed, $"pg_basebackup's output for {target.Display} could not be read as a tar archive ({ex.Message}); nothing was kept.",
                target.Display, "Check that pg_basebackup is PostgreSQL's own (ToolPath), then take the backup again with -Verbose and report its output if it happens again.", ex);
        }
        catch
        {
            await StopFollowerAsync().ConfigureAwait(false);
            Discard();
            throw;
        }
        finally { stall.Stop(); }
        if (!result.Succeeded)
        {
            await StopFollowerAsync().ConfigureAwait(false);
            Discard();
            throw Failure(tool, result, finalPath, target);
        }
        if (streamed is { Complete: false })
        {
            Discard();
            throw new PgBackupException("BaseBackupFailed", ErrorKind.ToolFailed,
                $"pg_basebackup reported success for {target.Display}, but its output ended before the end of its tar archive; nothing was kept.", target.Display,
                "Take the backup again; if it happens again, run it with -Verbose and report pg_basebackup's output.");
        }
        // pg_basebackup is done, so every file is complete: the follower reads the rest on every core while the disk
        // writes what pg_basebackup (told --no-sync) left in memory and the manifest is read. Both must finish before the
        // backup is kept, exactly as pg_basebackup's own sync would.
        await using var finishedFollower = follower;
        var followed = follower?.FinishAsync() ?? Task.FromResult(streamed!.Digests);
        var uploaded = streamed != null ? CompleteStreamedAsync(streamedTarget!) : storing?.FinishAsync();
        // The finished tar files are read back while the manifest is checked, not after: from a spool, to prove that what
        // was stored is them; in place, for the SHA-256 the catalog records. What was streamed was stored as it was read.
        var finishedHashes = streamed != null ? Task.FromResult(new Dictionary<string, string>()) : storing == null ? null : FollowedFile.HashFilesAsync(partial, IsArchive, ct);
        var archiveHashes = spool == null && request.Format == BaseBackupFormat.Tar ? BaseBackupVerifier.HashArchivesAsync(partial, ct) : null;
        foreach (var reading in new Task?[] { finishedHashes, archiveHashes })
            _ = reading?.ContinueWith(t => t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        // A spool is thrown away, so only what is stored from it needs to reach the disk.
        var durable = uploaded != null ? (Task)uploaded : spool != null ? Task.CompletedTask : Task.Run(() =>
        {
            var files = 0;
            foreach (var folder in TablespaceFolders(partial).Append(partial)) files += DurableFiles.SyncTree(folder, ct).Files;
            reporter.Verbose($"All {files} files of the backup are on disk");
        }, ct);

        // The manifest's WAL-Ranges say where the backup starts and stops; pg_basebackup prints them only when it streams WAL.
        var startTimeline = timeline;
        if (ReadWalRange(System.IO.Path.Combine(partial, "backup_manifest")) is { } range) (startTimeline, startLsn, timeline, stopLsn) = range;

        var backup = new BaseBackup
        {
            Id = id,
            Server = target.Host,
            Port = target.Port,
            ServerProfile = target.Profile,
            SystemIdentifier = systemIdentifier,
            User = target.User,
            Label = label,
            Path = finalPath,
            Repository = request.Path == null ? request.Repository!.Display : null,
            Format = request.Format,
            // A streamed backup fetches its WAL at the end, held by a slot, instead of streaming it alongside.
            WalMethod = streamed != null && request.WalMethod != WalMethod.None ? WalMethod.Fetch : request.WalMethod,
            WalIncluded = request.WalMethod != WalMethod.None,
            Timeline = timeline,
            StartLsn = startLsn,
            StopLsn = stopLsn,
            StartSegment = WalSegmentName.FromLsn(startTimeline, startLsn, segmentSize).ToString(),
            StopSegment = WalSegmentName.FromLsn(timeline, stopLsn, segmentSize).ToString(),
            WalSegmentSize = segmentSize,
            Compression = request.Compress,
            ManifestPath = System.IO.Path.Combine(finalPath, "backup_manifest"),
            FromStandby = inRecovery,
            ServerVersion = info.Version,
            ToolVersion = tool.VersionText,
            StartTime = start,
        };

        reporter.Progress(activity, "Verifying the backup manifest", 99);
        IReadOnlyList<string> problems;
        try
        {
            problems = await BaseBackupVerifier.VerifyAndSealAsync(backup, partial, followed, request.ToolPath, reporter, ct, seal: encryption == null).ConfigureAwait(false);
        }
        catch
        {
            await durable.ContinueWith(_ => { }, CancellationToken.None).ConfigureAwait(false);
            Discard();
            throw;
        }
        try { await durable.ConfigureAwait(false); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            Discard();
            throw PartialBackup.WriteFailure(System.IO.Path.GetDirectoryName(finalPath)!, ex.Message, ex);
        }
        catch
        {
            Discard();
            throw;
        }
        if (problems.Count > 0)
        {
            Discard();
            throw new PgBackupException("BackupVerificationFailed", ErrorKind.InvalidData,
                $"The base backup of {target.Display} does not match its own manifest, so it was discarded: {string.Join("; ", problems.Take(5))}", finalPath,
                "Check the disk that holds the repository (a full or failing disk corrupts files), then take the backup again.");
        }

        if (storing != null || streamedTarget != null)
            return await CommitFollowedAsync(backup, storing != null ? storing.CommitAsync : streamedTarget!.CommitAsync, await uploaded!.ConfigureAwait(false), await finishedHashes!.ConfigureAwait(false), partial, blobWriter, encryptedWriting, encryption, request.Repository!, start, activity, reporter, ct).ConfigureAwait(false);
        if (encryption != null)
            return await CommitEncryptedPlainAsync(backup, copies!, partial, encryptedWriting!, start, activity, reporter, ct).ConfigureAwait(false);
        if (archiveHashes != null) backup.ArchiveChecksums = await archiveHashes.ConfigureAwait(false);
        DurableFiles.SyncDirectory(partial);
        var end = DateTimeOffset.UtcNow;
        backup.EndTime = end;
        backup.Duration = end - start;
        backup.SizeBytes = BackupChecksum.SizeOf(partial);
        backup.VerificationState = VerificationState.Verified;
        backup.LastVerified = end;
        try { writing.Commit(backup, request.Force); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            Discard();
            throw PartialBackup.WriteFailure(System.IO.Path.GetDirectoryName(finalPath)!, ex.Message, ex);
        }
        reporter.ProgressCompleted(activity);
        reporter.Milestone($"Base backup of {target.Display}: {backup.SizeBytes} bytes in {backup.Duration.TotalSeconds:0.0}s, WAL {startLsn} to {stopLsn} on timeline {timeline}, manifest verified");
        return backup;
    }

    /// <summary>
    /// One base backup of a server at a time in a repository, as pgBackRest's backup lock does: two would load the server
    /// twice for nothing, and overlapping schedules are a mistake to report, not to run. The lock file stays (it is
    /// never deleted, so no one can lock a file that is going away); the operating system releases the lock itself.
    /// </summary>
    private static FileLock LockServer(string baseFolder, ConnectionTarget target)
    {
        var path = System.IO.Path.Combine(baseFolder, "backup.lock");
        return FileLock.TryAcquire(path, $"Start-PgBaseBackup of {target.Display}", deleteOnRelease: false)
            ?? throw new PgBackupException("BackupInProgress", ErrorKind.ResourceBusy,
                $"A base backup of {target.Display} into this repository is already running ({FileLock.Owner(path)}).", target.Display,
                "Wait until it has finished (a second one would only load the server twice), or stop it; the lock goes with the process that holds it.");
    }

    /// <summary>
    /// Makes a verified Tar backup in the spool a backup in the repository: the tar files, stored while pg_basebackup wrote
    /// them (uploaded into blobs, or encrypted into the partial folder), must be the verified files byte for byte; then
    /// the sealed manifest is stored (encrypted in an encrypted repository), then the metadata that makes it part of the
    /// catalog. In an encrypted repository the checksums recorded are of the encrypted files, so the backup can be checked
    /// without the key.
    /// </summary>
    private static async Task<BaseBackup> CommitFollowedAsync(BaseBackup backup, Func<Task> commitStored, Dictionary<string, FollowedFile> followed,
        Dictionary<string, string> finished, string partial,
        BlobBackupWriter? blobWriter, PartialBackup? folderWriting, RepositoryEncryption? encryption, RepositoryAddress repository, DateTimeOffset start, string activity,
        IOperationReporter reporter, CancellationToken ct)
    {
        reporter.Progress(activity, "Committing the backup", 99);
        foreach (var (name, hash) in finished)
            if (!followed.TryGetValue(name, out var stored) || !string.Equals(stored.ReadHash, hash, StringComparison.Ordinal))
                throw new PgBackupException("BackupChangedDuringUpload", ErrorKind.InvalidData,
                    $"'{name}' of the base backup of {backup.Server}:{backup.Port} was stored while it was written, and what was stored is not the finished file; nothing was kept.", name,
                    "Take the backup again; if it happens again, report it: pg_basebackup wrote that file other than by appending.");
        var manifest = System.IO.Path.Combine(partial, "backup_manifest");
        // The SHA-256 of what was stored: of the tar files themselves, or of their encrypted form.
        var checksums = followed.ToDictionary(f => f.Key, f => f.Value.StoredSha256, StringComparer.Ordinal);
        var size = encryption == null ? BackupChecksum.SizeOf(partial) : followed.Values.Sum(f => f.StoredBytes);
        if (blobWriter != null)
        {
            await commitStored().ConfigureAwait(false);
            var manifestKey = blobWriter.Key + "/backup_manifest";
            if (encryption == null)
                await blobWriter.Store.WriteSmallAsync(manifestKey, await File.ReadAllBytesAsync(manifest, ct).ConfigureAwait(false), ct).ConfigureAwait(false);
            else
            {
                await using var target = new FollowedFileTarget.ToBlob(blobWriter.Store, manifestKey, encryption, ct);
                (checksums["backup_manifest"], var bytes) = await StoreAsync(manifest, target, ct).ConfigureAwait(false);
                await target.CommitAsync().ConfigureAwait(false);
                size += bytes;
            }
            backup.Path = blobWriter.Url;
            backup.ManifestPath = blobWriter.Store.Address.UrlOf(manifestKey);
        }
        else
        {
            var folder = folderWriting!;
            await using (var target = new FollowedFileTarget.ToFile(System.IO.Path.Combine(folder.PartialPath, "backup_manifest"), encryption,
                RepositoryEncryption.NameIn(repository, folder.FinalPath) + "/backup_manifest"))
            {
                (checksums["backup_manifest"], var bytes) = await StoreAsync(manifest, target, ct).ConfigureAwait(false);
                size += bytes;
            }
            DurableFiles.SyncDirectory(folder.PartialPath);
            backup.Path = folder.FinalPath;
            backup.ManifestPath = System.IO.Path.Combine(folder.FinalPath, "backup_manifest");
        }
        return await CommitMetadataAsync(backup, checksums, size, encryption != null, blobWriter, folderWriting, start, activity, reporter, ct).ConfigureAwait(false);
    }

    /// <summary>The one tar file of a streamed backup, stored as it was read: its SHA-256 and size as stored.</summary>
    private static async Task<Dictionary<string, FollowedFile>> CompleteStreamedAsync(FollowedFileTarget target)
    {
        var sha256 = await target.CompleteAsync().ConfigureAwait(false);
        return new(StringComparer.Ordinal) { [StreamedBaseTar.ArchiveName] = new FollowedFile("", sha256, target.BytesStored) };
    }

    private static bool IsArchive(string name) => name.Contains(".tar", StringComparison.Ordinal);

    private static async Task<(string Sha256, long Bytes)> StoreAsync(string file, FollowedFileTarget target, CancellationToken ct)
    {
        await using (var input = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan | FileOptions.Asynchronous))
            await input.CopyToAsync(target.Input, 1 << 20, ct).ConfigureAwait(false);
        return (await target.CompleteAsync().ConfigureAwait(false), target.BytesStored);
    }

    /// <summary>
    /// A verified Plain backup in the spool into an encrypted folder repository: the files encrypted while pg_basebackup
    /// wrote them are kept where they are the verified bytes, the rest (the manifest too) are encrypted now, with
    /// the SHA-256 of each encrypted file recorded.
    /// </summary>
    private static async Task<BaseBackup> CommitEncryptedPlainAsync(BaseBackup backup, FollowingEncryption copies, string partial, PartialBackup folderWriting,
        DateTimeOffset start, string activity, IOperationReporter reporter, CancellationToken ct)
    {
        reporter.Progress(activity, "Encrypting into the repository", 99);
        var checksums = await copies.CompleteAsync(partial, reporter, ct).ConfigureAwait(false);
        backup.Path = folderWriting.FinalPath;
        backup.ManifestPath = System.IO.Path.Combine(folderWriting.FinalPath, "backup_manifest");
        return await CommitMetadataAsync(backup, checksums, BackupChecksum.SizeOf(folderWriting.PartialPath), true, null, folderWriting, start, activity, reporter, ct).ConfigureAwait(false);
    }

    /// <summary>Records what the backup became and writes the metadata that makes it part of the catalog (after the rename, for a folder).</summary>
    private static async Task<BaseBackup> CommitMetadataAsync(BaseBackup backup, Dictionary<string, string> checksums, long size, bool encrypted, BlobBackupWriter? blobWriter,
        PartialBackup? folderWriting, DateTimeOffset start, string activity, IOperationReporter reporter, CancellationToken ct)
    {
        var end = DateTimeOffset.UtcNow;
        backup.ArchiveChecksums = checksums;
        backup.Encrypted = encrypted;
        backup.SizeBytes = size;
        backup.EndTime = end;
        backup.Duration = end - start;
        backup.VerificationState = VerificationState.Verified;
        backup.LastVerified = end;
        if (blobWriter != null) await blobWriter.CommitAsync(backup, ct).ConfigureAwait(false);
        else
        {
            try { folderWriting!.Commit(backup, replaceExisting: false); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw PartialBackup.WriteFailure(System.IO.Path.GetDirectoryName(folderWriting!.FinalPath)!, ex.Message, ex);
            }
        }
        reporter.ProgressCompleted(activity);
        reporter.Milestone($"Base backup of {backup.Server}:{backup.Port} into {backup.Path}{(encrypted ? ", encrypted" : "")}: {backup.SizeBytes} bytes in {backup.Duration.TotalSeconds:0.0}s, WAL {backup.StartLsn} to {backup.StopLsn} on timeline {backup.Timeline}, manifest verified");
        return backup;
    }

    /// <summary>The blob form of <see cref="LockServer"/>: a leased lock blob beside the server's base backups.</summary>
    private static async Task<BlobWriteLock> LockServerAsync(BlobStore store, string backupKey, ConnectionTarget target, CancellationToken ct)
    {
        await store.EnsureContainerAsync(ct).ConfigureAwait(false);
        var key = backupKey[..(backupKey.LastIndexOf('/') + 1)] + "backup";
        return await BlobWriteLock.TryAcquireAsync(store, key, $"Start-PgBaseBackup of {target.Display}", ct).ConfigureAwait(false)
            ?? throw new PgBackupException("BackupInProgress", ErrorKind.ResourceBusy,
                $"A base backup of {target.Display} into this repository is already running ({await BlobWriteLock.OwnerAsync(store, key, ct).ConfigureAwait(false)}).", target.Display,
                "Wait until it has finished (a second one would only load the server twice), or stop it; its lock expires a minute after its process is gone.");
    }

    /// <summary>Removes a folder when disposed (the spool of a backup into blob storage).</summary>
    private sealed class FolderRemoval(string folder) : IDisposable
    {
        public void Dispose() => PartialBackup.DeletePath(folder);
    }

    /// <summary>Where a Plain backup's tablespaces went: pg_basebackup writes them outside the backup and links them from pg_tblspc.</summary>
    internal static IEnumerable<string> TablespaceFolders(string backupFolder)
    {
        var links = System.IO.Path.Combine(backupFolder, "pg_tblspc");
        if (!Directory.Exists(links)) return [];
        return new DirectoryInfo(links).EnumerateFileSystemInfos()
            .Where(l => l.LinkTarget != null)
            .Select(l => System.IO.Path.GetFullPath(l.LinkTarget!, links))
            .Where(Directory.Exists)
            .ToList();
    }

    private static (uint StartTimeline, Lsn Start, uint StopTimeline, Lsn Stop)? ReadWalRange(string manifestPath)
    {
        if (!File.Exists(manifestPath)) return null;
        try
        {
            using var manifest = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(manifestPath));
            if (!manifest.RootElement.TryGetProperty("WAL-Ranges", out var ranges) || ranges.GetArrayLength() == 0) return null;
            var first = ranges[0];
            var last = ranges[ranges.GetArrayLength() - 1];
            return (first.GetProperty("Timeline").GetUInt32(), Lsn.Parse(first.GetProperty("Start-LSN").GetString()!),
                last.GetProperty("Timeline").GetUInt32(), Lsn.Parse(last.GetProperty("End-LSN").GetString()!));
        }
        // An unreadable manifest fails the verification that follows, which discards the backup and says why.
        catch (Exception ex) when (ex is System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException or FormatException) { return null; }
    }

    private static void Validate(BaseBackupRequest r)
    {
        if (r.Path == null && r.Repository == null)
            throw new PgBackupException("NoDestination", ErrorKind.InvalidArgument, "No destination was given for the base backup.", null,
                "Pass -Repository (a folder; backups are filed by server) or -Path, or set the Repository setting (PGBACKUP_REPOSITORY or pgbackup.json).");
        if (r.Path == null && r.Repository is { IsBlob: true } && r.Format == BaseBackupFormat.Plain)
            throw new PgBackupException("PlainNeedsFolder", ErrorKind.InvalidArgument,
                $"A Plain base backup is a data directory of files and links, which PgBackup keeps in folders only; '{r.Repository.Display}' is in Azure Blob Storage.", r.Format,
                "Use -Format Tar (the default for a blob repository), which is uploaded while pg_basebackup writes it, or give a folder as -Repository.");
        if (r.Compress != null && !CompressSpec.IsMatch(r.Compress))
            throw new PgBackupException("InvalidCompression", ErrorKind.InvalidArgument, $"'{r.Compress}' is not a compression pg_basebackup understands.", r.Compress,
                "Use a level 0-9 (gzip) or [client-|server-]gzip|lz4|zstd[:level], for example client-gzip:5 or server-lz4.");
        if (r.Compress != null && r.Format == BaseBackupFormat.Plain && !r.Compress.StartsWith("server-", StringComparison.OrdinalIgnoreCase) && !r.Compress.StartsWith("none", StringComparison.OrdinalIgnoreCase))
            throw new PgBackupException("PlainNotCompressible", ErrorKind.InvalidArgument, "A Plain-format base backup is written as files and cannot be compressed on the client.", r.Compress,
                "Use -Format Tar with -Compress, or server-side compression (server-gzip, server-lz4, server-zstd) to save network bandwidth.");
    }

    private static PgBackupException Failure(PgTool tool, ToolResult result, string finalPath, ConnectionTarget target)
    {
        var all = string.Join("\n", result.ErrorLines);
        var summary = result.ErrorSummary();
        if (all.Contains("No space left", StringComparison.OrdinalIgnoreCase) || all.Contains("could not create directory", StringComparison.OrdinalIgnoreCase) ||
            all.Contains("Permission denied", StringComparison.OrdinalIgnoreCase) || all.Contains("Read-only file system", StringComparison.OrdinalIgnoreCase) ||
            all.Contains("could not write", StringComparison.OrdinalIgnoreCase))
            return PartialBackup.WriteFailure(System.IO.Path.GetDirectoryName(finalPath)!, summary);
        if (all.Contains("no pg_hba.conf entry for replication", StringComparison.OrdinalIgnoreCase) || all.Contains("must have REPLICATION", StringComparison.OrdinalIgnoreCase) ||
            all.Contains("permission denied to start WAL sender", StringComparison.OrdinalIgnoreCase))
            return new PgBackupException("ReplicationNotAllowed", ErrorKind.PermissionDenied,
                $"{target.Display} does not allow '{target.User}' a replication connection, which pg_basebackup needs: {summary}", target.Display,
                "Give the role REPLICATION (ALTER ROLE name REPLICATION) and add a 'host replication name <client address> scram-sha-256' line to pg_hba.conf, then reload the server.");
        if (all.Contains("number of requested standby connections exceeds max_wal_senders", StringComparison.OrdinalIgnoreCase))
            return new PgBackupException("NoWalSenders", ErrorKind.InvalidOperation, $"{target.Display} has no free WAL sender for pg_basebackup: {summary}", target.Display,
                "Raise max_wal_senders (restart needed) or wait until other base backups and standbys disconnect.");
        return new PgBackupException("BaseBackupFailed", ErrorKind.ToolFailed,
            $"pg_basebackup failed (exit code {result.ExitCode}) for {target.Display}; nothing was kept. pg_basebackup said:{Environment.NewLine}{summary}", target.Display,
            "Read the tool's message above (run with -Verbose for its full output).");
    }
}
