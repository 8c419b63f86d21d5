using System.Diagnostics;
using System.Globalization;

namespace PgBackup.Testing;

/// <summary>
/// Folders for one test run, under &lt;temp&gt;/&lt;suite&gt;/&lt;process id&gt;/. Backups and restored data directories
/// add up to about a gigabyte a run, and the test host ends without a chance to clean up, so each run first removes the
/// folders of the runs of its suite that are no longer running: only the last run's files stay, to look at.
/// </summary>
public static class TestFolders
{
    private static readonly Lock Gate = new();
    private static readonly Dictionary<string, string> RunRoots = [];

    /// <summary>A new, empty folder.</summary>
    public static string New(string suite, string prefix = "")
    {
        var path = NewPath(suite, prefix);
        Directory.CreateDirectory(path);
        return path;
    }

    /// <summary>A path nothing exists at yet, for a folder the code under test must create itself.</summary>
    public static string NewPath(string suite, string prefix) => Path.Combine(RunRoot(suite), prefix + Guid.NewGuid().ToString("N")[..8]);

    private static string RunRoot(string suite)
    {
        lock (Gate)
        {
            if (RunRoots.TryGetValue(suite, out var root)) return root;
            var suiteRoot = Path.Combine(Path.GetTempPath(), suite);
            Directory.CreateDirectory(suiteRoot);
            foreach (var stale in Directory.GetDirectories(suiteRoot).Where(d => !IsRunning(Path.GetFileName(d)))) TryDelete(stale);
            root = Path.Combine(suiteRoot, Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
            Directory.CreateDirectory(root);
            RunRoots[suite] = root;
            return root;
        }
    }

    private static bool IsRunning(string folderName)
    {
        if (!int.TryParse(folderName, NumberStyles.None, CultureInfo.InvariantCulture, out var processId)) return false;
        if (processId == Environment.ProcessId) return true;
        try
        {
            using var process = Process.GetProcessById(processId);
            return !process.HasExited;
        }
        catch (ArgumentException) { return false; }
    }

    private static void TryDelete(string folder)
    {
        try { Directory.Delete(folder, recursive: true); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { /* in use or not ours: a later run tries again */ }
    }
}
