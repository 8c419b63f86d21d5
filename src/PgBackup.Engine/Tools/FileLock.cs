using System.Globalization;
using System.Text;

namespace PgBackup.Engine.Tools;

/// <summary>
/// An exclusive lock on a file that the operating system releases when the holding process ends, however it ends (a
/// flock on Unix, which .NET takes for FileShare.None; a share mode on Windows), so a lock is never stale. Who holds it
/// (process, host, command, since when) is written beside it as "&lt;lock&gt;.owner" while it is held, since the locked
/// file itself cannot be opened by anyone else.
/// </summary>
public sealed class FileLock : IDisposable
{
    public const string OwnerSuffix = ".owner";
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(50);

    private readonly FileStream _stream;
    private readonly bool _deleteOnRelease;
    private int _released;

    private FileLock(string path, FileStream stream, bool deleteOnRelease)
    {
        Path = path;
        _stream = stream;
        _deleteOnRelease = deleteOnRelease;
    }

    public string Path { get; }

    /// <summary>
    /// Takes the lock, waiting up to <paramref name="patience"/> for it (another process may only be looking whether it
    /// is held); null when someone else holds it. <paramref name="deleteOnRelease"/> removes the file on release: right for
    /// a lock of one backup's name, never for a lock many operations take in turn (a waiter could then lock a deleted file).
    /// </summary>
    public static FileLock? TryAcquire(string path, string purpose, bool deleteOnRelease, TimeSpan? patience = null)
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
        var deadline = DateTime.UtcNow + (patience ?? TimeSpan.FromSeconds(2));
        while (true)
        {
            try
            {
                var stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None);
                var held = new FileLock(path, stream, deleteOnRelease);
                held.WriteOwner(purpose);
                return held;
            }
            catch (IOException ex) when (ex is not (FileNotFoundException or DirectoryNotFoundException or PathTooLongException))
            {
                if (DateTime.UtcNow >= deadline) return null;
            }
            Thread.Sleep(PollInterval);
        }
    }

    /// <summary>Whether a live process holds the lock. Looks without waiting; a missing file is not held.</summary>
    public static bool IsHeld(string path)
    {
        try
        {
            using var probe = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.None);
            return false;
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException) { return false; }
        catch (IOException) { return true; }
    }

    /// <summary>Who holds or last held the lock, as written when it was taken ("" when nothing was written).</summary>
    public static string Owner(string path)
    {
        try { return File.ReadAllText(path + OwnerSuffix).Trim(); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return ""; }
    }

    /// <summary>Removes a lock file and its owner note that no one holds (a process that died left them).</summary>
    public static void RemoveAbandoned(string path)
    {
        File.Delete(path + OwnerSuffix);
        File.Delete(path);
    }

    private void WriteOwner(string purpose)
    {
        var text = string.Create(CultureInfo.InvariantCulture,
            $"{purpose} by process {Environment.ProcessId} on {Environment.MachineName} since {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm:ss} UTC\n");
        var temporary = Path + OwnerSuffix + ".tmp" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
        File.WriteAllText(temporary, text, new UTF8Encoding(false));
        File.Move(temporary, Path + OwnerSuffix, overwrite: true);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) != 0) return;
        try
        {
            // Deleted while still held, so nobody can take the lock of a file that is about to disappear.
            File.Delete(Path + OwnerSuffix);
            if (_deleteOnRelease) File.Delete(Path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { }
        finally { _stream.Dispose(); }
    }
}
