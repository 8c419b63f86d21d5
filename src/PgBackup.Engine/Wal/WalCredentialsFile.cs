using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Wal;

/// <summary>
/// The file pgbackup-wal reads its blob credentials from, as the database server's OS user:
/// ~&lt;user&gt;/.pgbackup/&lt;system identifier&gt;-&lt;purpose&gt;.json, in a folder (0700) and file (0600) owned by that user, outside the
/// data directory so that no base backup carries it. Its path goes into archive_command or restore_command; the secret
/// never does.
/// </summary>
public static class WalCredentialsFile
{
    public const string ArchivePurpose = "archive";
    private const string FolderName = ".pgbackup";

    /// <summary>The path for <paramref name="serverUser"/>, without writing anything.</summary>
    public static async Task<string> PathForAsync(string serverUser, string systemIdentifier, string purpose, CancellationToken ct)
    {
        if (OperatingSystem.IsWindows())
            throw new PgBackupException("BlobArchivingNotSupported", ErrorKind.InvalidOperation,
                "WAL archiving and restoring from Azure Blob Storage through pgbackup-wal is supported for database servers on Linux and other Unix systems; on Windows the credentials file cannot be restricted to the service account yet.",
                serverUser, "Archive into a folder (an SMB share the service account can write), and copy it to Blob Storage with Invoke-PgDump/Start-PgBaseBackup repositories, or run the database server on Linux.");
        var home = await HomeOfAsync(serverUser, ct).ConfigureAwait(false);
        return Path.Combine(home, FolderName, $"{systemIdentifier}-{purpose}.json");
    }

    /// <summary>Writes the file so that only <paramref name="serverUser"/> can read it; it replaces an older one atomically.</summary>
    public static async Task WriteAsync(string path, WalStorageCredentials credentials, string serverUser, CancellationToken ct)
    {
        var folder = Path.GetDirectoryName(path)!;
        var asRoot = Environment.IsPrivilegedProcess && serverUser != "root";
        if (!asRoot && serverUser != Environment.UserName)
            throw new PgBackupException("CredentialsFileNotWritable", ErrorKind.PermissionDenied,
                $"The credentials file for pgbackup-wal must belong to the server's OS user '{serverUser}', and this account ('{Environment.UserName}') cannot write files for it.", path,
                $"Run the command as root (sudo pwsh) or as '{serverUser}'.");
        var temporary = path + ".tmp." + Environment.ProcessId;
        try
        {
            Directory.CreateDirectory(folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            File.SetUnixFileMode(folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            await using (var stream = new FileStream(temporary, new FileStreamOptions
            {
                Mode = FileMode.Create, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            }))
            {
                await stream.WriteAsync(System.Text.Encoding.UTF8.GetBytes(credentials.Serialize()), ct).ConfigureAwait(false);
                stream.Flush(flushToDisk: true);
            }
            if (asRoot)
            {
                foreach (var owned in new[] { folder, temporary })
                {
                    var chown = await Instance.DataDirectoryOwner.GiveToAsync(owned, serverUser, recursive: false, ct).ConfigureAwait(false);
                    if (!chown.Succeeded)
                        throw new PgBackupException("CredentialsFileNotWritable", ErrorKind.PermissionDenied,
                            $"The credentials file {path} could not be given to '{serverUser}': {chown.ErrorSummary()}", path, "Check that the user exists and the folder is on a local file system.");
                }
            }
            File.Move(temporary, path, overwrite: true);
            DurableFiles.SyncDirectory(folder);
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
        if (path == null || Path.GetFileName(Path.GetDirectoryName(path)) != FolderName || !path.EndsWith(".json", StringComparison.Ordinal) || !File.Exists(path)) return false;
        File.Delete(path);
        return true;
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
