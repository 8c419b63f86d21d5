using PgBackup.Engine.Connection;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Repository.Encryption;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Logical;

/// <summary>
/// Dumps into a blob repository: Custom, Tar and Plain stream from pg_dump's standard output into a block blob that is
/// committed only once pg_dump succeeded (no local copy); a Directory dump is written to a temporary folder, then its
/// files are uploaded several at once and the folder is removed. The metadata blob, written last, makes it a backup.
/// </summary>
internal static class BlobDumps
{
    private const int ParallelFileUploads = 4;

    /// <param name="what">What is dumped, as DumpService names it in progress and messages.</param>
    /// <param name="encryption">The repository's encryption: every blob is written through it; null when the repository is not encrypted.</param>
    public static async Task<DumpBackup> DumpAsync(DumpRequest request, RepositoryAddress address, RepositoryEncryption? encryption, ServerInfo info, PgTool tool, int tablesToDump, DateTimeOffset start,
        string what, IOperationReporter reporter, CancellationToken ct)
    {
        var target = request.Target;
        var format = request.Globals ? DumpFormat.Plain : request.Format;
        var activity = $"Dumping {what}";
        var store = BlobStore.Open(address);
        reporter.Verbose($"Writing to {address.Display} with the {store.CredentialKind}.");
        var key = address.Prefix + RepositoryLayout.DumpKey(target.Host, target.Port, request.Globals ? null : target.Database, format, start);
        await using var writer = await BlobBackupWriter.BeginAsync(store, key, $"Invoke-PgDump of {what}", reporter, ct).ConfigureAwait(false);
        reporter.Milestone($"Starting {tool.Name} {tool.VersionText} for {what} into {writer.Url}");

        string sha;
        Dictionary<string, string>? files = null;
        long size;
        if (format != DumpFormat.Directory)
        {
            var args = request.Globals ? DumpService.GlobalsArguments(null, target) : DumpService.DumpArguments(request, format, null);
            await using var upload = new BlockUploadStream(store, key, ct);
            var dumped = await DumpService.RunToolAsync(tool, args, target, activity, tablesToDump, reporter, ct, async stdout =>
            {
                if (encryption == null) { await stdout.CopyToAsync(upload, 1 << 20, ct).ConfigureAwait(false); return; }
                await using var encrypting = encryption.Encrypt(upload, RepositoryEncryption.NameIn(address, key), leaveOpen: true);
                await stdout.CopyToAsync(encrypting, 1 << 20, ct).ConfigureAwait(false);
            }, result => DumpService.ToolFailure(tool, result, null, what)).ConfigureAwait(false);
            reporter.Progress(activity, "Committing the upload", 99);
            sha = await upload.CommitAsync().ConfigureAwait(false);
            size = upload.BytesWritten;
            var backup = DumpService.Describe(request, info, tool, format, start, writer.Url, dumped, sha, null, size);
            backup.Encrypted = encryption != null;
            return await CommitAsync(writer, backup, activity, what, reporter, ct).ConfigureAwait(false);
        }

        var temp = Path.Combine(Path.GetTempPath(), "pgbackup-dump-" + Guid.NewGuid().ToString("N"));
        try
        {
            var local = Path.Combine(temp, Path.GetFileName(key));
            Directory.CreateDirectory(temp);
            var dumped = await DumpService.RunToolAsync(tool, DumpService.DumpArguments(request, format, local), target, activity, tablesToDump, reporter, ct,
                null, result => DumpService.ToolFailure(tool, result, null, what)).ConfigureAwait(false);
            if (encryption != null)
            {
                // The files are encrypted into a second local folder first: the checksums recorded are of the bytes at rest.
                reporter.Progress(activity, "Encrypting", 93);
                var encrypted = Path.Combine(temp, "encrypted");
                Directory.CreateDirectory(encrypted);
                (sha, files) = await encryption.EncryptTreeAsync(local, encrypted, RepositoryEncryption.NameIn(address, key), durable: false, ct).ConfigureAwait(false);
                PartialBackup.DeletePath(local);
                local = encrypted;
            }
            else
            {
                reporter.Progress(activity, "Computing SHA-256", 95);
                (sha, files) = await BackupChecksum.ComputeWithFilesAsync(local, ct).ConfigureAwait(false);
            }
            size = BackupChecksum.SizeOf(local);
            var uploaded = 0;
            await Parallel.ForEachAsync(files!.Keys, new ParallelOptions { MaxDegreeOfParallelism = ParallelFileUploads, CancellationToken = ct }, async (name, token) =>
            {
                await using (var upload = new BlockUploadStream(store, key + "/" + name, token, parallel: 2))
                {
                    await using (var file = new FileStream(Path.Combine(local, name), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan | FileOptions.Asynchronous))
                        await file.CopyToAsync(upload, 1 << 20, token).ConfigureAwait(false);
                    var sent = await upload.CommitAsync().ConfigureAwait(false);
                    if (!string.Equals(sent, files[name], StringComparison.Ordinal))
                        throw new PgBackupException("BackupChangedDuringUpload", ErrorKind.InvalidData, $"'{name}' of the dump changed while it was uploaded; nothing was kept.", name,
                            "Make sure nothing else writes into the temporary folder, then run the dump again.");
                }
                var n = Interlocked.Increment(ref uploaded);
                reporter.Progress(activity, $"Uploaded file {n} of {files.Count}", 95 + n * 4 / Math.Max(1, files.Count));
            }).ConfigureAwait(false);
            var backup = DumpService.Describe(request, info, tool, format, start, writer.Url, dumped, sha, files, size);
            backup.Encrypted = encryption != null;
            return await CommitAsync(writer, backup, activity, what, reporter, ct).ConfigureAwait(false);
        }
        finally { PartialBackup.DeletePath(temp); }
    }

    private static async Task<DumpBackup> CommitAsync(BlobBackupWriter writer, DumpBackup backup, string activity, string what, IOperationReporter reporter, CancellationToken ct)
    {
        backup.Repository = writer.Store.Address.Display;
        await writer.CommitAsync(backup, ct).ConfigureAwait(false);
        reporter.ProgressCompleted(activity);
        reporter.Milestone($"Dumped {what} into {writer.Url}: {backup.SizeBytes} bytes in {backup.Duration.TotalSeconds:0.0}s, SHA-256 {backup.Sha256}");
        return backup;
    }
}
