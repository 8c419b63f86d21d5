using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using PgBackup.Engine.Tools;

namespace PgBackup.WalArchive;

/// <summary>
/// pgbackup-wal push &lt;sourcePath&gt; &lt;archiveFolder&gt;             (archive_command, with %p)
/// pgbackup-wal fetch &lt;archiveFolder&gt; &lt;fileName&gt; &lt;destinationPath&gt; (restore_command, with %f %p)
/// pgbackup-wal push &lt;sourcePath&gt; &lt;archiveUrl&gt; --credentials &lt;file&gt;
/// pgbackup-wal fetch &lt;archiveUrl&gt; &lt;fileName&gt; &lt;destinationPath&gt; --credentials &lt;file&gt; [--standby]
/// pgbackup-wal check &lt;archiveUrl&gt; --credentials &lt;file&gt;       (proves write, read and delete)
/// push also takes --drop-backlog-above &lt;bytes&gt;: see <see cref="DropGuard"/>.
/// In an encrypted repository push takes --encrypt &lt;key file&gt; and fetch --decrypt &lt;key file&gt;: see <see cref="WalEncryption"/>.
///
/// A folder archive holds &lt;fileName&gt; and &lt;fileName&gt;.sha256 ("&lt;hex&gt;  &lt;fileName&gt;\n", as sha256sum writes); a blob
/// archive holds one blob per file with the SHA-256 in its metadata (<see cref="BlobArchive"/>).
/// Every failure prints one line starting with "pgbackup-wal:" on stderr, which PostgreSQL copies into its log.
/// </summary>
internal static class Program
{
    private const int Ok = 0;
    /// <summary>push: PostgreSQL keeps the segment and retries. fetch: "not in the archive".</summary>
    private const int Failed = 1;
    private const int Usage = 2;
    /// <summary>push: the archive holds other content under the segment's name. Never dropped by the guard: two servers, or a damaged copy.</summary>
    private const int Conflict = 4;
    /// <summary>
    /// fetch of a file that is there but damaged or unreadable. PostgreSQL treats exit codes up to 125 as "file not in the
    /// archive" and would end recovery early (promoting at the wrong point); above 125 it aborts recovery, which is what a
    /// damaged archive needs.
    /// </summary>
    private const int AbortRecovery = 200;
    private const string SidecarSuffix = ".sha256";
    private const int BufferSize = 1 << 20;

    private const string PlainPrefix = "plain-sha256 ";
    private const string LineagePrefix = "lineage ";
    /// <summary>Each thread its own key object: pushes and fetches run on several threads with --parallel.</summary>
    [ThreadStatic] private static WalEncryption? threadEncryption;
    private static Func<WalEncryption>? loadEncryption;
    private static WalEncryption? Encryption => loadEncryption == null ? null : threadEncryption ??= loadEncryption();

    /// <summary>Set on threads that fetch ahead: their failures are not PostgreSQL's to read.</summary>
    [ThreadStatic] internal static bool Quiet;

    private static int Main(string[] args)
    {
        string? keyFile, encryptKey, decryptKey, degree;
        try
        {
            encryptKey = TakeOption(ref args, WalEncryption.EncryptOption);
            decryptKey = TakeOption(ref args, WalEncryption.DecryptOption);
            degree = TakeOption(ref args, ParallelOption);
        }
        catch (ArgumentException ex) { return Error(UsageFor(args), ex.Message); }
        var compressAt = Array.IndexOf(args, Engine.Repository.WalCompression.Option);
        if (compressAt > 0)
        {
            if (args[0] is not ("push" or AheadPusher.WorkerCommand)) return Error(UsageFor(args), $"{Engine.Repository.WalCompression.Option} belongs to push");
            Compress = true;
            args = [.. args[..compressAt], .. args[(compressAt + 1)..]];
        }
        keyFile = encryptKey ?? decryptKey;
        if (keyFile != null)
        {
            var decrypt = decryptKey != null;
            if (encryptKey != null && decryptKey != null || decrypt != args is ["fetch", ..])
                return Error(UsageFor(args), $"{WalEncryption.EncryptOption} belongs to push and {WalEncryption.DecryptOption} to fetch");
            try
            {
                using var probe = WalEncryption.Load(keyFile, decrypt);
                loadEncryption = () => WalEncryption.Load(keyFile, decrypt);
            }
            catch (Exception ex) { return Error(decrypt ? AbortRecovery : Failed, ex.Message); }
        }
        var parallel = 1;
        if (degree != null &&
            (!int.TryParse(degree, NumberStyles.None, CultureInfo.InvariantCulture, out parallel) || parallel is < 1 or > 32))
            return Error(UsageFor(args), $"{ParallelOption} needs a number from 1 to 32, not '{degree}'");
        // The guard against a full pg_wal is an option of push only, in either form.
        long? dropAbove = null;
        if (args is ["push", ..] && args.Length >= 2 && args[^2] == DropGuard.Option)
        {
            if (!long.TryParse(args[^1], NumberStyles.None, CultureInfo.InvariantCulture, out var limit))
                return Error(Usage, $"{DropGuard.Option} needs a number of bytes, not '{args[^1]}'");
            dropAbove = limit;
            args = args[..^2];
        }
        if (dropAbove is { } above && args is ["push", var guarded, ..])
            return DropGuard.Apply(guarded, above, Push(args, parallel, keyFile), Error);
        return args switch
        {
            ["push", ..] => Push(args, parallel, keyFile),
            [AheadPusher.WorkerCommand, var walFolder, var location, .. var rest] when rest is [] or [CredentialsOption, _] =>
                Run(() => AheadPusher.Work(walFolder, location, parallel, Pusher(location, rest.Length > 0 ? rest[1] : null)), Failed, $"the background pusher for '{walFolder}' stopped"),
            ["fetch", var location, var name, var destination, .. var rest] when rest is [] or [CredentialsOption, _] or [CredentialsOption, _, "--standby"] =>
                Fetch(location, name, destination, rest.Length > 0 ? rest[1] : null, standby: rest.Length > 2, parallel),
            ["fetch", ..] => Error(AbortRecovery, "fetch needs three arguments: <archiveFolder> <fileName> <destinationPath>"),
            ["check", var url, CredentialsOption, var file] => Run(() => { using var blob = new BlobArchive(url, file); blob.Check(); return Ok; }, Failed, $"{WithoutQuery(url)} is not usable"),
            ["--version"] => Version(),
            _ => Error(Usage, "usage: pgbackup-wal push <sourcePath> <archiveFolder|archiveUrl --credentials <file>> [--parallel <n>] | " +
                              "pgbackup-wal fetch <archiveFolder|archiveUrl> <fileName> <destinationPath> [--credentials <file> [--standby]] [--parallel <n>] | pgbackup-wal check <archiveUrl> --credentials <file>"),
        };
    }

    /// <summary>A usage error; for fetch one that aborts recovery, since a low exit code would read as "not in the archive".</summary>
    private static int UsageFor(string[] args) => args is ["fetch", ..] ? AbortRecovery : Usage;

    private const string CredentialsOption = "--credentials";
    private const string ParallelOption = "--parallel";

    /// <summary>Removes "option value" from the arguments and returns the value; null when the option is not there.</summary>
    private static string? TakeOption(ref string[] args, string option)
    {
        var at = Array.IndexOf(args, option);
        if (at < 1) return null;
        if (at + 1 >= args.Length) throw new ArgumentException($"{option} needs a value");
        var value = args[at + 1];
        args = [.. args[..at], .. args[(at + 2)..]];
        return value;
    }

    private static int Push(string[] args, int parallel, string? keyFile)
    {
        if (args is not ["push", var source, var location, .. var rest] || rest is not ([] or [CredentialsOption, _]))
            return Error(Usage, "push needs <sourcePath> <archiveFolder>, or <sourcePath> <archiveUrl> --credentials <file>");
        var credentials = rest.Length > 0 ? rest[1] : null;
        var what = credentials == null ? $"could not archive '{source}' into '{location}'" : $"could not archive '{source}' into {WithoutQuery(location)}";
        return Run(() =>
        {
            var walFolder = Path.GetDirectoryName(Path.GetFullPath(source))!;
            Prefetcher.RemoveLeftovers(walFolder);
            var push = Pusher(location, credentials);
            if (parallel <= 1) return push(source);
            string[] worker = [AheadPusher.WorkerCommand, walFolder, location, .. rest, ParallelOption, parallel.ToString(CultureInfo.InvariantCulture)];
            if (keyFile != null) worker = [.. worker, WalEncryption.EncryptOption, keyFile];
            if (Compress) worker = [.. worker, Engine.Repository.WalCompression.Option];
            return AheadPusher.Push(source, location, () => push(source), worker);
        }, Failed, what);
    }

    /// <summary>Pushes one file into a folder or a blob archive (one client for all of a process's pushes).</summary>
    private static Func<string, int> Pusher(string location, string? credentialsFile)
    {
        if (credentialsFile == null) return source => PushToFolder(source, location);
        var blob = new Lazy<BlobArchive>(() => new BlobArchive(location, credentialsFile));
        return source => PushToBlob(source, blob.Value);
    }

    /// <summary>
    /// From a blob archive a storage failure aborts a recovery (exit 200), since "not found" would end it early at the
    /// wrong point; with --standby it is "not found" (exit 1) instead, so a standby goes back to streaming rather than
    /// shutting down.
    /// </summary>
    private static int Fetch(string location, string name, string destination, string? credentialsFile, bool standby, int parallel)
    {
        if (name.Length == 0 || name != Path.GetFileName(name) || name is "." or "..")
            return Error(AbortRecovery, $"'{name}' is not a file name");
        var what = credentialsFile == null ? $"could not fetch '{name}' from '{location}' to '{destination}'" : $"could not fetch '{name}' from {WithoutQuery(location)} to '{destination}'";
        return Run(() =>
        {
            Func<string, string, int> fetch;
            if (credentialsFile == null) fetch = (file, to) => FetchFromFolder(location, file, to);
            else
            {
                var blob = new BlobArchive(location, credentialsFile);
                fetch = (file, to) => blob.Fetch(file, to, AbortRecovery, Error, Encryption);
            }
            return parallel <= 1 ? fetch(name, destination) : Prefetcher.Fetch(name, destination, parallel, fetch);
        }, standby ? Failed : AbortRecovery, what);
    }

    private static int Run(Func<int> command, int failureCode, string what)
    {
        try { return command(); }
        catch (Exception ex) { return Error(failureCode, what + ": " + ex.Message); }
    }

    private static int PushToFolder(string source, string folder)
    {
        var name = Path.GetFileName(source);
        if (name.Length == 0) return Error(Failed, $"'{source}' does not name a file");
        var sourceInfo = new FileInfo(source);
        if (!sourceInfo.Exists) return Error(Failed, $"the file to archive, '{source}', does not exist");
        Directory.CreateDirectory(folder);
        var destination = Path.Combine(folder, name);
        var sidecar = destination + SidecarSuffix;
        var encryption = Encryption;
        var compress = Compress && Engine.Repository.WalCompression.Applies(name);
        // What is archived decides how to compare, not how this push would write: the setting may have changed since.
        int Compare() => IsTransformed(destination) ? AlreadyArchivedTransformed(source, sidecar, name, folder) : AlreadyArchived(source, sourceInfo.Length, destination, sidecar, name, folder);
        var replace = false;
        if (File.Exists(destination))
        {
            var compared = Compare();
            if (compared != Uncommitted) return compared;
            replace = true;
        }

        // The temporary names carry our pid, so a leftover from a crashed push never blocks this one.
        var temporary = destination + ".tmp." + Environment.ProcessId;
        var sidecarTemporary = sidecar + ".tmp." + Environment.ProcessId;
        try
        {
            if (encryption == null && !compress) WriteDurably(sidecarTemporary, SidecarLine(CopyHashed(source, temporary, flushToDisk: true), name));
            else
            {
                string plain, hash;
                using (var output = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0))
                {
                    (plain, hash) = Transform(source, output, encryption, compress);
                    output.Flush(flushToDisk: true);
                }
                var lineage = encryption != null ? WalEncryption.LineageOf(source) : null;
                WriteDurably(sidecarTemporary, SidecarLine(hash, name) + PlainPrefix + plain + "\n" + (lineage != null ? LineagePrefix + lineage + "\n" : ""));
            }
            // The segment goes into place before its sidecar, and never over a file that is there (unless it is the
            // uncommitted leftover of a push that died): of several pushes of one name at the same moment exactly one puts
            // its file in place, and the others compare with it.
            if (replace) File.Move(temporary, destination, overwrite: true);
            else if (!DurableFiles.TryMoveNew(temporary, destination))
            {
                var compared = Compare();
                if (compared != Uncommitted) return compared;
                File.Move(temporary, destination, overwrite: true);
            }
            File.Move(sidecarTemporary, sidecar, overwrite: true);
            DurableFiles.SyncDirectory(folder);
            return Ok;
        }
        finally
        {
            File.Delete(temporary);
            File.Delete(sidecarTemporary);
        }
    }

    /// <summary>
    /// An encrypted (or compressed) segment without its sidecar: the push that put it there died before committing it (it
    /// writes the sidecar right after), so it was never acknowledged, and since it cannot be compared without the private
    /// key (or decompressing it), it is replaced. A push that is merely slow gets <see cref="UncommittedAfter"/> to finish.
    /// </summary>
    private const int Uncommitted = -1;
    private static readonly TimeSpan UncommittedAfter = TimeSpan.FromSeconds(10);

    /// <summary>
    /// PostgreSQL may archive a segment again after a crash between archiving and recording it: the same content is
    /// success; different content means two servers, or a damaged copy, and must stop archiving loudly.
    /// </summary>
    private static int AlreadyArchived(string source, long sourceLength, string destination, string sidecar, string name, string folder)
    {
        var sourceHash = HashFile(source);
        var archived = new FileInfo(destination);
        var hasSidecar = TryReadSidecar(sidecar, out var recorded);
        var archivedHash = recorded != null && archived.Length == sourceLength ? recorded : HashFile(destination);
        if (archivedHash == sourceHash)
        {
            if (!hasSidecar || recorded != sourceHash)
            {
                var temporary = sidecar + ".tmp." + Environment.ProcessId;
                try
                {
                    WriteDurably(temporary, SidecarLine(sourceHash, name));
                    File.Move(temporary, sidecar, overwrite: true);
                    DurableFiles.SyncDirectory(folder);
                }
                finally { File.Delete(temporary); }
            }
            return Ok;
        }
        return Error(Conflict, $"{name} is already archived in '{folder}' with different content (sha256 {archivedHash}, new {sourceHash}); refusing to overwrite");
    }

    /// <summary>
    /// In an encrypted archive the same segment encrypts to other bytes every time, so a repeated push is compared by the
    /// SHA-256 of the plaintext recorded beside it. A push racing this one may not have written its sidecar yet: wait briefly.
    /// </summary>
    private static int AlreadyArchivedTransformed(string source, string sidecar, string name, string folder)
    {
        var sourceHash = WalEncryption.PlainSha256Of(source);
        string? recorded = null;
        var sidecarThere = false;
        var archived = new FileInfo(Path.Combine(folder, name));
        for (var attempt = 0; recorded == null; attempt++)
        {
            try
            {
                recorded = File.ReadAllLines(sidecar).FirstOrDefault(l => l.StartsWith(PlainPrefix, StringComparison.Ordinal))?[PlainPrefix.Length..].Trim();
                sidecarThere = true;
            }
            catch (FileNotFoundException) { }
            if (recorded != null || (sidecarThere && attempt >= 50)) break;
            archived.Refresh();
            if (!sidecarThere && archived.Exists && DateTime.UtcNow - archived.LastWriteTimeUtc > UncommittedAfter) return Uncommitted;
            Thread.Sleep(100);
        }
        if (recorded == sourceHash) return Ok;
        return Error(Conflict, recorded == null
            ? $"{name} is already archived in '{folder}' without a record of its plaintext's SHA-256, so it cannot be compared; refusing to overwrite"
            : $"{name} is already archived in '{folder}' with different content (plaintext sha256 {recorded}, new {sourceHash}); refusing to overwrite");
    }

    private static int PushToBlob(string source, BlobArchive blob)
    {
        var name = Path.GetFileName(source);
        if (name.Length == 0) return Error(Failed, $"'{source}' does not name a file");
        if (!File.Exists(source)) return Error(Failed, $"the file to archive, '{source}', does not exist");
        var compress = Compress && Engine.Repository.WalCompression.Applies(name);
        return Encryption is { } encryption || compress ? blob.PushTransformed(source, name, Encryption, compress, Error) : blob.Push(source, name, Error);
    }

    private static int FetchFromFolder(string folder, string name, string destination)
    {
        var source = Path.Combine(folder, name);
        if (!File.Exists(source)) return Failed; // PostgreSQL asks for files that do not exist (the next segment, .history files) all the time.

        // No fsync: if the machine crashes during recovery, PostgreSQL fetches the file again.
        var temporary = destination + ".tmp";
        try
        {
            var hash = CopyHashed(source, temporary, flushToDisk: false);
            if (TryReadSidecar(source + SidecarSuffix, out var recorded) && recorded != hash)
                return Error(AbortRecovery, recorded == null
                    ? $"DAMAGED ARCHIVE: the checksum file '{source}{SidecarSuffix}' does not hold a SHA-256; not handing an unverified {name} to PostgreSQL"
                    : $"DAMAGED ARCHIVE: '{source}' does not match its recorded checksum (sha256 {recorded}, file {hash}); not handing it to PostgreSQL");
            return Deliver(temporary, name, destination, $"'{source}'");
        }
        finally { File.Delete(temporary); }
    }

    /// <summary>
    /// Puts a fetched, checked file where PostgreSQL wants it: decrypted (and authenticated) first in an encrypted archive,
    /// then decompressed when it was stored compressed.
    /// </summary>
    internal static int Deliver(string fetched, string name, string destination, string what)
    {
        var encryption = Encryption;
        var plain = destination + ".plain.tmp";
        var expanded = destination + ".expanded.tmp";
        try
        {
            if (encryption == null)
            {
                // An encrypted file handed to PostgreSQL as WAL would fail in confusing ways; it needs the standby's key file.
                var start = new byte[8];
                using (var peek = File.OpenRead(fetched)) peek.ReadAtLeast(start, start.Length, throwOnEndOfStream: false);
                if (Engine.Repository.Encryption.EncryptedContent.LooksEncrypted(start))
                    return Error(AbortRecovery, $"{what} is encrypted and restore_command gives no key file ({WalEncryption.DecryptOption}); New-PgStandby -Passphrase or -Certificate writes one");
                plain = fetched;
            }
            else encryption.Decrypt(fetched, name, plain);
            if (Engine.Repository.WalCompression.IsCompressed(plain))
            {
                Engine.Repository.WalCompression.DecompressFile(plain, expanded);
                plain = expanded;
            }
            File.Move(plain, destination, overwrite: true);
            return Ok;
        }
        catch (Engine.Repository.Encryption.EncryptedContentException ex)
        {
            return Error(AbortRecovery, $"TAMPERED ARCHIVE: {what} {ex.Detail}; not handing it to PostgreSQL");
        }
        catch (InvalidDataException ex)
        {
            return Error(AbortRecovery, $"DAMAGED ARCHIVE: {what} does not decompress ({ex.Message}); not handing it to PostgreSQL");
        }
        finally
        {
            File.Delete(destination + ".plain.tmp");
            File.Delete(expanded);
        }
    }

    /// <summary>Set by push --compress: segments are stored compressed (<see cref="Engine.Repository.WalCompression"/>).</summary>
    private static bool Compress;

    /// <summary>Writes what an encrypted or compressing archive stores of <paramref name="source"/>.</summary>
    /// <returns>The SHA-256 of the plaintext and of the bytes written.</returns>
    internal static (string PlainSha256, string Sha256) Transform(string source, Stream output, WalEncryption? encryption, bool compress)
    {
        if (encryption != null) return encryption.Encrypt(source, output, compress);
        using var hashing = new HashingWriteStream(output);
        var plain = CopyInto(source, hashing, compress);
        return (plain, hashing.Sha256());
    }

    /// <summary>Copies a file into <paramref name="output"/>, compressed when asked; returns the SHA-256 of what was read.</summary>
    internal static string CopyInto(string source, Stream output, bool compress)
    {
        using var plainHash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using (var input = new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0, FileOptions.SequentialScan))
        using (var compressing = compress ? Engine.Repository.WalCompression.Compressing(output) : null)
        {
            var target = compressing ?? output;
            var buffer = new byte[BufferSize];
            int read;
            while ((read = input.Read(buffer, 0, buffer.Length)) > 0)
            {
                plainHash.AppendData(buffer, 0, read);
                target.Write(buffer, 0, read);
            }
        }
        return Convert.ToHexString(plainHash.GetHashAndReset()).ToLowerInvariant();
    }

    /// <summary>True when an archived file holds other bytes than the plaintext (encrypted or compressed).</summary>
    private static bool IsTransformed(string path)
    {
        var start = new byte[8];
        try
        {
            using var peek = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, bufferSize: 1);
            peek.ReadAtLeast(start, start.Length, throwOnEndOfStream: false);
        }
        catch (FileNotFoundException) { return false; }
        return Engine.Repository.Encryption.EncryptedContent.LooksEncrypted(start) || Engine.Repository.WalCompression.LooksCompressed(start);
    }

    private static string CopyHashed(string source, string destination, bool flushToDisk)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using (var input = new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0, FileOptions.SequentialScan))
        // No preallocation: on ext4 it made each push ~25 ms slower (unwritten extents converted again at fsync).
        using (var output = new FileStream(destination, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0))
        {
            var buffer = new byte[BufferSize];
            int read;
            while ((read = input.Read(buffer, 0, buffer.Length)) > 0)
            {
                hash.AppendData(buffer, 0, read);
                output.Write(buffer, 0, read);
            }
            if (flushToDisk) output.Flush(flushToDisk: true);
        }
        return Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant();
    }

    private static string HashFile(string path)
    {
        using var input = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0, FileOptions.SequentialScan);
        return Convert.ToHexString(SHA256.HashData(input)).ToLowerInvariant();
    }

    private static string SidecarLine(string hash, string name) => hash + "  " + name + "\n";

    /// <returns>False when there is no sidecar; <paramref name="hash"/> is null when there is one that does not hold a SHA-256.</returns>
    private static bool TryReadSidecar(string path, out string? hash)
    {
        hash = null;
        string text;
        try { text = File.ReadAllText(path); }
        catch (FileNotFoundException) { return false; }
        if (text.Length >= 64 && !text.AsSpan(0, 64).ContainsAnyExcept(HexDigits) && (text.Length == 64 || char.IsWhiteSpace(text[64])))
            hash = text[..64].ToLowerInvariant();
        return true;
    }

    private static readonly System.Buffers.SearchValues<char> HexDigits = System.Buffers.SearchValues.Create("0123456789abcdefABCDEF");

    private static void WriteDurably(string path, string content)
    {
        using var output = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
        output.Write(Encoding.UTF8.GetBytes(content));
        output.Flush(flushToDisk: true);
    }

    /// <summary>A URL as it may be shown in the server log: without a query, which could hold a SAS token.</summary>
    internal static string WithoutQuery(string url) => url.Contains('?', StringComparison.Ordinal) ? url[..url.IndexOf('?', StringComparison.Ordinal)] + "?<query removed>" : url;

    private static int Version()
    {
        Console.Out.WriteLine("pgbackup-wal " + typeof(Program).Assembly.GetName().Version);
        return Ok;
    }

    /// <summary>The last failure reported on this thread, which the background pusher hands to the call that waits for its file.</summary>
    [ThreadStatic] internal static string? LastError;

    internal static int Error(int code, string message)
    {
        LastError = message.ReplaceLineEndings(" ");
        if (!Quiet) Console.Error.WriteLine("pgbackup-wal: " + LastError);
        return code;
    }
}
