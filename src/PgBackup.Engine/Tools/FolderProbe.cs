namespace PgBackup.Engine.Tools;

/// <summary>Proves that this account can write a folder before anything depends on it: a read-only or missing volume fails up front.</summary>
public static class FolderProbe
{
    /// <summary>Creates <paramref name="folder"/> when missing, then writes and deletes a small file there.</summary>
    /// <exception cref="IOException">The folder cannot be created or written.</exception>
    /// <exception cref="UnauthorizedAccessException">This account may not create or write it.</exception>
    public static void EnsureWritable(string folder)
    {
        Directory.CreateDirectory(folder);
        var probe = Path.Combine(folder, ".pgbackup-write-test-" + Guid.NewGuid().ToString("N"));
        File.WriteAllBytes(probe, [0]);
        File.Delete(probe);
    }

    public static bool IsWritable(string folder)
    {
        try
        {
            EnsureWritable(folder);
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return false; }
    }
}
