using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Repository;

/// <summary>
/// The write-then-commit protocol of one backup: the tool writes "&lt;name&gt;.partial" while the writing process holds
/// "&lt;name&gt;.partial.lock"; only <see cref="Commit"/> makes it a backup, by writing its metadata and then renaming it
/// into place. Nothing partial is ever listed. A process that died (killed, a crash, the machine lost power) can no
/// longer hold its lock, so what it left is known to be abandoned: the next backup written into the same folder removes
/// it, and until then Get-PgBackup names it (<see cref="Find"/>).
/// </summary>
public sealed class PartialBackup : IDisposable
{
    public const string Suffix = ".partial";
    public const string LockSuffix = ".partial.lock";

    private readonly FileLock _lock;
    private bool _committed;

    private PartialBackup(string finalPath, FileLock held)
    {
        FinalPath = finalPath;
        _lock = held;
    }

    public string FinalPath { get; }
    public string PartialPath => FinalPath + Suffix;

    /// <summary>What an interrupted backup left: the partial file or folder, whether its writer still runs, and who that was.</summary>
    public sealed record Leftover(string Path, bool InProgress, string Owner);

    /// <summary>
    /// Starts writing the backup that is to end up at <paramref name="finalPath"/>: removes what interrupted backups left
    /// in its folder, then takes the lock of its name. <paramref name="purpose"/> says who writes it ("Invoke-PgDump of ...").
    /// </summary>
    public static PartialBackup Begin(string finalPath, string purpose, IOperationReporter reporter)
    {
        var folder = Path.GetDirectoryName(finalPath)!;
        Directory.CreateDirectory(folder);
        RemoveAbandoned(folder, reporter);
        var held = FileLock.TryAcquire(finalPath + LockSuffix, purpose, deleteOnRelease: true)
            ?? throw new PgBackupException("BackupInProgress", ErrorKind.ResourceBusy,
                $"'{finalPath}' is being written by another operation ({DescribeOwner(finalPath + LockSuffix)}).", finalPath,
                "Wait until that operation has finished, or write this backup under another name (-Path).");
        DeletePath(finalPath + Suffix); // left under this very name by a process that died
        return new PartialBackup(finalPath, held);
    }

    /// <summary>
    /// Makes the partial the backup: the metadata (which names the final path) reaches the disk first, then the rename,
    /// so an interruption between them leaves metadata of a missing backup, which the catalog skips and the next backup
    /// into the folder removes; never a backup without its checksum. <paramref name="replaceExisting"/> (-Force) first
    /// removes a backup already at the final path.
    /// </summary>
    public void Commit(PgBackupItem backup, bool replaceExisting)
    {
        if (!string.Equals(Path.GetFullPath(backup.Path), Path.GetFullPath(FinalPath), StringComparison.Ordinal))
            throw new InvalidOperationException($"The backup describes '{backup.Path}', not '{FinalPath}'.");
        if (replaceExisting) RemoveExisting(FinalPath);
        BackupMetadata.Write(backup);
        if (Directory.Exists(PartialPath)) Directory.Move(PartialPath, FinalPath);
        else File.Move(PartialPath, FinalPath);
        DurableFiles.SyncDirectory(Path.GetDirectoryName(FinalPath)!);
        _committed = true;
    }

    /// <summary>Without a commit, removes the partial; always releases the lock.</summary>
    public void Dispose()
    {
        if (!_committed) DeletePath(PartialPath);
        _lock.Dispose();
    }

    /// <summary>Every partial backup under <paramref name="folder"/>: in progress (its writer holds the lock) or abandoned.</summary>
    public static IReadOnlyList<Leftover> Find(string folder, bool recursive)
    {
        if (!Directory.Exists(folder)) return [];
        var options = new EnumerationOptions { RecurseSubdirectories = recursive, IgnoreInaccessible = true };
        return Directory.EnumerateFileSystemEntries(folder, "*" + Suffix, options)
            .Select(path => new Leftover(path, FileLock.IsHeld(path + ".lock"), DescribeOwner(path + ".lock")))
            .ToList();
    }

    /// <summary>
    /// Removes, in one folder, what backups whose writer died left: the partial, a metadata file half written, and
    /// metadata written just before the writer died ahead of its rename. A partial without a lock file (written by a
    /// PgBackup before locks, or by hand) is left alone: nobody can tell whether it is still being written.
    /// </summary>
    public static void RemoveAbandoned(string folder, IOperationReporter reporter)
    {
        if (!Directory.Exists(folder)) return;
        foreach (var lockPath in Directory.EnumerateFiles(folder, "*" + LockSuffix))
        {
            if (FileLock.IsHeld(lockPath)) continue;
            var finalPath = lockPath[..^LockSuffix.Length];
            var owner = DescribeOwner(lockPath);
            var partial = finalPath + Suffix;
            if (File.Exists(partial) || Directory.Exists(partial))
            {
                DeletePath(partial);
                reporter.Milestone($"Removed '{partial}', which an interrupted operation left ({owner}).");
            }
            File.Delete(BackupMetadata.PathFor(finalPath) + ".tmp");
            if (File.Exists(BackupMetadata.PathFor(finalPath)) && !File.Exists(finalPath) && !Directory.Exists(finalPath))
                File.Delete(BackupMetadata.PathFor(finalPath));
            FileLock.RemoveAbandoned(lockPath);
        }
    }

    /// <summary>
    /// Before anything is written: an existing backup at <paramref name="finalPath"/> is refused without -Force, and its
    /// folder must exist (or be created) and take a file, so a read-only or missing volume is an error up front.
    /// </summary>
    public static void PrepareTarget(string finalPath, bool force)
    {
        if ((File.Exists(finalPath) || Directory.Exists(finalPath)) && !force)
            throw new PgBackupException("TargetExists", ErrorKind.ResourceExists, $"'{finalPath}' already exists.", finalPath,
                "Choose another -Path, or pass -Force to replace it once the new dump has succeeded.");
        var folder = Path.GetDirectoryName(finalPath)!;
        try
        {
            FolderProbe.EnsureWritable(folder);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw WriteFailure(folder, ex.Message, ex);
        }
    }

    public static PgBackupException WriteFailure(string folder, string detail, Exception? inner = null) =>
        IsDiskFull(detail)
            ? new PgBackupException("TargetFull", ErrorKind.WriteFailed, $"The target folder '{folder}' is full: {detail}", folder,
                "Free space there (for example with Remove-PgBackup -KeepLast), or write to a bigger volume with -Repository or -Path.", inner)
            : new PgBackupException("TargetNotWritable", ErrorKind.PermissionDenied, $"Cannot write into '{folder}': {detail}", folder,
                "Check that the folder exists or can be created, that this account may write there, and that the volume is not read-only.", inner);

    public static bool IsDiskFull(string text) =>
        text.Contains("No space left", StringComparison.OrdinalIgnoreCase) || text.Contains("not enough space", StringComparison.OrdinalIgnoreCase) ||
        text.Contains("disk full", StringComparison.OrdinalIgnoreCase) || text.Contains("quota", StringComparison.OrdinalIgnoreCase);

    /// <summary>Deletes a backup's file or folder and its metadata (metadata first, so it is never listed half deleted).</summary>
    public static void RemoveExisting(string path)
    {
        var metadata = BackupMetadata.PathFor(path);
        if (File.Exists(metadata)) File.Delete(metadata);
        DeletePath(path);
    }

    /// <summary>Deletes a file or a folder if it is there; what cannot be deleted stays for the next cleanup.</summary>
    public static void DeletePath(string path)
    {
        try
        {
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
            else if (File.Exists(path)) File.Delete(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { System.Diagnostics.Debug.WriteLine(ex); }
    }

    private static string DescribeOwner(string lockPath) => FileLock.Owner(lockPath) is { Length: > 0 } owner ? owner : "no record of who wrote it";
}
