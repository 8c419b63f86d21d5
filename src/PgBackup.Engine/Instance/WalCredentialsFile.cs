using System.Security.Cryptography;
using System.Text;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Instance;

/// <summary>
/// The file pgbackup-wal reads its blob credentials from, as the database server's OS user:
/// ~&lt;user&gt;/.pgbackup/&lt;system identifier&gt;-&lt;purpose&gt;.json, in a folder (0700) and file (0600) owned by that user, outside the
/// data directory so that no base backup carries it. Its path goes into archive_command or restore_command; the secret
/// never does. A standby's file is named after its data directory, so removing the instance removes its credential too.
/// </summary>
public static class WalCredentialsFile
{
    /// <summary>
    /// The purpose part of an archive_command's file: the cluster's data directory (a primary and a standby or a copy on
    /// this machine share a system identifier, never a file) and the credential itself, hashed. A new credential gets a new
    /// file, so the one the running archive_command reads is never rewritten before the new command has proved itself.
    /// </summary>
    public static string ArchivePurpose(string dataDirectory, string content) =>
        "archive-" + DataDirectoryKey(dataDirectory) + "-" + Hash(content)[..8];

    /// <summary>The purpose part of an archive_command's key file (an encrypted repository's public key), named like <see cref="ArchivePurpose"/>.</summary>
    public static string ArchiveKeyPurpose(string dataDirectory, string content) =>
        "archive-key-" + DataDirectoryKey(dataDirectory) + "-" + Hash(content)[..8];

    /// <summary>The purpose part of a standby's key file (with the private key it decrypts fetched WAL with).</summary>
    public static string StandbyKeyPurpose(string dataDirectory) => "standby-key-" + DataDirectoryKey(dataDirectory);

    /// <summary>A data directory in a file or record name: 16 hex characters of the SHA-256 of its full path.</summary>
    public static string DataDirectoryKey(string dataDirectory) => Hash(Path.GetFullPath(dataDirectory))[..16];

    private static string Hash(string text) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text))).ToLowerInvariant();

    /// <summary>The purpose part of a standby's file name: its data directory, hashed.</summary>
    public static string StandbyPurpose(string dataDirectory) => "standby-" + DataDirectoryKey(dataDirectory);
    private const string FolderName = ".pgbackup";

    /// <summary>The path for <paramref name="serverUser"/>, without writing anything.</summary>
    public static async Task<string> PathForAsync(string serverUser, string systemIdentifier, string purpose, CancellationToken ct, string extension = ".json")
    {
        if (OperatingSystem.IsWindows())
            throw new PgBackupException("BlobArchivingNotSupported", ErrorKind.InvalidOperation,
                "WAL archiving and restoring from Azure Blob Storage or an encrypted repository through pgbackup-wal is supported for database servers on Linux and other Unix systems; on Windows its credentials or key file cannot be restricted to the service account yet.",
                serverUser, "Archive into a folder (an SMB share the service account can write), and copy it to Blob Storage with Invoke-PgDump/Start-PgBaseBackup repositories, or run the database server on Linux.");
        var home = await HomeOfAsync(serverUser, ct).ConfigureAwait(false);
        return Path.Combine(home, FolderName, $"{systemIdentifier}-{purpose}{extension}");
    }

    /// <summary>
    /// Writes the file so that only <paramref name="serverUser"/> can read it, unless it holds that content already; it
    /// replaces an older one atomically. The folder is the server user's (its home), so as root nothing there is trusted:
    /// a folder that is a symbolic link or belongs to someone else is refused, the file is created new (never through an
    /// existing name or link), and ownership is handed over with chown -h.
    /// </summary>
    /// <param name="content">The serialized credential (Repository.Blob.WalStorageCredentials).</param>
    /// <returns>True when the file was written now, false when it held that content already.</returns>
    public static async Task<bool> WriteAsync(string path, string content, string serverUser, CancellationToken ct)
    {
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("The credentials file is written for Unix servers only; PathForAsync refuses Windows first.");
        var folder = Path.GetDirectoryName(path)!;
        var asRoot = Environment.IsPrivilegedProcess && serverUser != "root";
        if (!asRoot && serverUser != Environment.UserName)
            throw new PgBackupException("CredentialsFileNotWritable", ErrorKind.PermissionDenied,
                $"The credentials file for pgbackup-wal must belong to the server's OS user '{serverUser}', and this account ('{Environment.UserName}') cannot write files for it.", path,
                $"Run the command as root (sudo pwsh) or as '{serverUser}'.");
        PgBackupException Unsafe(string why) => new("CredentialsFileNotWritable", ErrorKind.PermissionDenied,
            $"The credentials file {path} is not written: {why}.", path, $"Remove {folder} (or make it a folder of '{serverUser}' with mode 0700) and run the command again.");
        var temporary = path + ".tmp." + Guid.NewGuid().ToString("N");
        try
        {
            const UnixFileMode ownerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
            if (!Directory.Exists(folder) && !File.Exists(folder))
            {
                Directory.CreateDirectory(folder, ownerOnly);
                if (asRoot && !(await DataDirectoryOwner.GiveEntryToAsync(folder, serverUser, ct).ConfigureAwait(false)).Succeeded)
                    throw Unsafe($"the folder {folder} could not be given to '{serverUser}'");
            }
            var info = new DirectoryInfo(folder);
            if (!info.Exists || info.LinkTarget != null) throw Unsafe($"{folder} is not a folder but a link or a file");
            var folderOwner = await DataDirectoryOwner.FindAsync(folder, ct).ConfigureAwait(false);
            if (folderOwner != serverUser) throw Unsafe($"{folder} belongs to '{folderOwner}', not to '{serverUser}'");
            if ((File.GetUnixFileMode(folder) & (UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute)) != 0)
                File.SetUnixFileMode(folder, ownerOnly);
            var existing = new FileInfo(path);
            if (existing.Exists && existing.LinkTarget == null && await File.ReadAllTextAsync(path, ct).ConfigureAwait(false) == content) return false;

            await using (var stream = new FileStream(temporary, new FileStreamOptions
            {
                Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            }))
            {
                await stream.WriteAsync(Encoding.UTF8.GetBytes(content), ct).ConfigureAwait(false);
                stream.Flush(flushToDisk: true);
            }
            if (asRoot && !(await DataDirectoryOwner.GiveEntryToAsync(temporary, serverUser, ct).ConfigureAwait(false)).Succeeded)
                throw Unsafe($"it could not be given to '{serverUser}'");
            File.Move(temporary, path, overwrite: true);
            DurableFiles.SyncDirectory(folder);
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new PgBackupException("CredentialsFileNotWritable", ErrorKind.PermissionDenied, $"The credentials file {path} could not be written: {ex.Message}", path,
                "Check that the server's OS user has a home folder on a writable local file system.", ex);
        }
        finally { File.Delete(temporary); }
    }

    /// <summary>Removes a credentials file PgBackup wrote (and nothing else): its name and folder must be ours.</summary>
    public static bool Remove(string? path)
    {
        if (path == null || !IsInOurFolder(path) || !File.Exists(path) ||
            !(path.EndsWith(".json", StringComparison.Ordinal) || path.EndsWith(StandbyPassFile.Extension, StringComparison.Ordinal))) return false;
        File.Delete(path);
        return true;
    }

    /// <summary>Whether <paramref name="path"/> is in a ~/.pgbackup folder, where PgBackup writes these files.</summary>
    public static bool IsInOurFolder(string path) => Path.GetFileName(Path.GetDirectoryName(path)) == FolderName;

    /// <summary>The credential a standby in <paramref name="dataDirectory"/> was given, if any, removed with the instance; never fails the removal.</summary>
    public static async Task RemoveStandbysAsync(string dataDirectory, IOperationReporter reporter, CancellationToken ct)
    {
        if (OperatingSystem.IsWindows()) return;
        try
        {
            if (!File.Exists(Path.Combine(dataDirectory, "global", "pg_control"))) return;
            var systemIdentifier = await SystemIdentifierOfAsync(dataDirectory, ct).ConfigureAwait(false);
            var owner = await DataDirectoryOwner.FindAsync(dataDirectory, ct).ConfigureAwait(false);
            if (owner == null) return;
            var path = await PathForAsync(owner, systemIdentifier, StandbyPurpose(dataDirectory), ct).ConfigureAwait(false);
            if (Remove(path)) reporter.Verbose($"Removed the standby's credentials file {path}.");
            var key = await PathForAsync(owner, systemIdentifier, StandbyKeyPurpose(dataDirectory), ct).ConfigureAwait(false);
            if (Remove(key)) reporter.Verbose($"Removed the standby's key file {key}.");
            var passfile = await PathForAsync(owner, systemIdentifier, StandbyPassFile.Purpose(dataDirectory), ct, StandbyPassFile.Extension).ConfigureAwait(false);
            if (Remove(passfile)) reporter.Verbose($"Removed the standby's pass file {passfile}.");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or PgBackupException)
        {
            reporter.Warning($"The credentials file of the standby in '{dataDirectory}' (under ~/.pgbackup of its OS user) could not be checked or removed: {ex.Message}");
        }
    }

    /// <summary>The system identifier of the cluster in <paramref name="dataDirectory"/>, from its pg_control.</summary>
    public static async Task<string> SystemIdentifierOfAsync(string dataDirectory, CancellationToken ct)
    {
        var bytes = new byte[8];
        await using (var stream = File.OpenRead(Path.Combine(dataDirectory, "global", "pg_control"))) await stream.ReadExactlyAsync(bytes, ct).ConfigureAwait(false);
        // pg_control starts with the system identifier, a uint64 in the machine's byte order.
        return BitConverter.ToUInt64(bytes).ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    private static async Task<string> HomeOfAsync(string user, CancellationToken ct)
    {
        if (user == Environment.UserName && Environment.GetFolderPath(Environment.SpecialFolder.UserProfile) is { Length: > 0 } mine) return mine;
        var entry = await ToolRunner.RunAsync(new PgTool("getent", "getent", "", 0), ["passwd", user], new Dictionary<string, string?>(), null, ct, captureOutput: true).ConfigureAwait(false);
        var fields = entry.Succeeded ? entry.StandardOutput.Trim().Split(':') : [];
        if (fields.Length >= 6 && fields[5].StartsWith('/') && Directory.Exists(fields[5])) return fields[5];
        throw new PgBackupException("CredentialsFileNotWritable", ErrorKind.ObjectNotFound,
            $"The server's OS user '{user}' has no home folder that PgBackup can find (getent passwd {user}), where pgbackup-wal's credentials file goes.", user,
            $"Give '{user}' a home folder (usermod -d <folder> -m {user}), then run the command again.");
    }
}
