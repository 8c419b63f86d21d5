using System.Runtime.InteropServices;

namespace PgBackup.Engine.Tools;

/// <summary>
/// Puts files and folders on disk (fsync), the way PostgreSQL's own tools do before they call a backup complete: first
/// asks the kernel to start writing every file, then waits for each, then for each folder, so the disk works on all of
/// them at once instead of one fsync at a time.
/// </summary>
public static class DurableFiles
{
    private const int ReadOnly = 0;
    private const int SyncFileRangeWrite = 2;
    private const int NoSuchFile = 2;
    private const int BadFileDescriptor = 9;
    private const int InvalidArgument = 22;
    private const int FileExists = 17;

    /// <summary>Every file and folder under <paramref name="root"/>, and <paramref name="root"/> itself; links are not followed.</summary>
    /// <returns>How many files and folders (<paramref name="root"/> included) were synced.</returns>
    public static (int Files, int Folders) SyncTree(string root, CancellationToken ct = default)
    {
        var options = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint, IgnoreInaccessible = false };
        var files = Directory.GetFiles(root, "*", options);
        var folders = Directory.GetDirectories(root, "*", options);
        foreach (var file in files)
        {
            ct.ThrowIfCancellationRequested();
            StartWriting(file);
        }
        foreach (var file in files)
        {
            ct.ThrowIfCancellationRequested();
            SyncFile(file);
        }
        // Deepest first, so a folder is synced after the entries it holds.
        foreach (var folder in folders.OrderByDescending(f => f.Length))
        {
            ct.ThrowIfCancellationRequested();
            SyncDirectory(folder);
        }
        SyncDirectory(root);
        return (files.Length, folders.Length + 1);
    }

    /// <summary>
    /// Asks Linux to start writing a file's dirty pages now (all of them, or <paramref name="length"/> bytes from
    /// <paramref name="offset"/>), without waiting; elsewhere it does nothing.
    /// </summary>
    public static void StartWriting(string file, long offset = 0, long length = 0)
    {
        if (!OperatingSystem.IsLinux()) return;
        var fd = Native.open(file, ReadOnly);
        if (fd < 0) return; // only a head start: SyncFile reports what cannot be opened
        try { _ = Native.sync_file_range(fd, offset, length, SyncFileRangeWrite); }
        finally { Native.close(fd); }
    }

    /// <summary>As <see cref="StartWriting(string, long, long)"/>, for a file this process holds open for writing.</summary>
    public static void StartWriting(Microsoft.Win32.SafeHandles.SafeFileHandle file, long offset, long length = 0)
    {
        if (!OperatingSystem.IsLinux()) return;
        _ = Native.sync_file_range((int)file.DangerousGetHandle(), offset, length, SyncFileRangeWrite);
    }

    public static void SyncFile(string file)
    {
        if (OperatingSystem.IsWindows())
        {
            // FlushFileBuffers needs a handle that may write.
            FileStream stream;
            try { stream = new FileStream(file, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete, 1); }
            catch (FileNotFoundException) { return; } // renamed or removed since it was listed, as on Unix below
            using (stream) stream.Flush(flushToDisk: true);
            return;
        }
        Sync(file, isFolder: false);
    }

    /// <summary>
    /// Moves a file to a name that must not exist yet, atomically: two processes that move different files to the same
    /// name at the same moment cannot both succeed, and the one that loses sees the winner's file. On Unix this is
    /// link(2), which fails when the name exists, then unlink(2) of the source (File.Move without overwrite checks and
    /// renames in two steps); where hard links are not supported it falls back to File.Move.
    /// </summary>
    /// <returns>False, leaving the source in place, when the destination exists already.</returns>
    public static bool TryMoveNew(string source, string destination)
    {
        if (!OperatingSystem.IsWindows())
        {
            if (Native.link(source, destination) == 0)
            {
                File.Delete(source);
                return true;
            }
            var error = Marshal.GetLastPInvokeError();
            if (error == FileExists) return false;
            if (error == NoSuchFile) throw new FileNotFoundException($"Could not move '{source}': it does not exist.", source);
            // EPERM, EXDEV, ENOTSUP and the like: a file system without hard links.
        }
        try
        {
            File.Move(source, destination, overwrite: false);
            return true;
        }
        catch (IOException) when (File.Exists(destination)) { return false; }
    }

    /// <summary>Makes a folder's entries (new files, renames) durable; on Unix they are on disk only once the folder is fsynced.</summary>
    public static void SyncDirectory(string folder)
    {
        // Windows has no way to flush a folder; NTFS journals its entries itself.
        if (OperatingSystem.IsWindows()) return;
        Sync(folder, isFolder: true);
    }

    private static void Sync(string path, bool isFolder)
    {
        var fd = Native.open(path, ReadOnly);
        if (fd < 0)
        {
            var error = Marshal.GetLastPInvokeError();
            // A file renamed or removed since its folder was listed (a manifest replaced by its sealed copy): nothing left to sync.
            if (error == NoSuchFile && !isFolder) return;
            throw new IOException($"Could not open '{path}' to write it to disk: {Marshal.GetPInvokeErrorMessage(error)}");
        }
        try
        {
            // As PostgreSQL does, accept file systems that cannot fsync a folder (EBADF, EINVAL).
            if (Native.fsync(fd) != 0 && Marshal.GetLastPInvokeError() is var errno && !(isFolder && errno is BadFileDescriptor or InvalidArgument))
                throw new IOException($"Could not write '{path}' to disk: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
        finally { Native.close(fd); }
    }

    private static class Native
    {
        [DllImport("libc", SetLastError = true)]
        public static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

        [DllImport("libc", SetLastError = true)]
        public static extern int fsync(int fd);

        [DllImport("libc", SetLastError = true)]
        public static extern int sync_file_range(int fd, long offset, long nbytes, uint flags);

        [DllImport("libc")]
        public static extern int close(int fd);

        [DllImport("libc", SetLastError = true)]
        public static extern int link([MarshalAs(UnmanagedType.LPUTF8Str)] string oldPath, [MarshalAs(UnmanagedType.LPUTF8Str)] string newPath);
    }
}
