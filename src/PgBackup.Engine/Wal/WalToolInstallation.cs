using System.Security.Cryptography;
using System.Text;

namespace PgBackup.Engine.Wal;

/// <summary>
/// pgbackup-wal installed where every database server on this machine can run it, apart from the module: a module
/// installed for root (Install-Module -Scope CurrentUser) or checked out under a private folder is out of the server
/// OS user's reach, and a module update would otherwise pull the tool from under a running archive_command.
/// Each build gets its own folder, &lt;root&gt;/&lt;version&gt;-&lt;content hash&gt;/ (the portable files, and the native build in
/// &lt;rid&gt;/), which is never changed once written. A small record per user of a folder (&lt;root&gt;/uses/&lt;cluster&gt;) says
/// which folder an archive_command names, so that Disable-PgWalArchiving can remove a folder no cluster uses any more.
/// The root is /usr/local/lib/pgbackup/wal on Linux and other Unix systems, %ProgramFiles%\PgBackup\wal on Windows, or
/// PGBACKUP_WAL_TOOL_ROOT.
/// </summary>
public static class WalToolInstallation
{
    public const string RootVariable = "PGBACKUP_WAL_TOOL_ROOT";
    private const string UsesFolder = "uses";

    public static string Root => Environment.GetEnvironmentVariable(RootVariable) is { Length: > 0 } root ? Path.GetFullPath(root)
        : OperatingSystem.IsWindows() ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.ProgramFiles), "PgBackup", "wal")
        : "/usr/local/lib/pgbackup/wal";

    private const string PendingSuffix = ".next";

    /// <summary>
    /// The key of a cluster's archive_command among the records: its system identifier and data directory (a primary and
    /// a standby or a copy on this machine share the identifier, never the record).
    /// </summary>
    public static string ArchiveUse(string systemIdentifier, string dataDirectory) =>
        "archive-" + systemIdentifier + "-" + Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(Path.GetFullPath(dataDirectory))))[..16].ToLowerInvariant();

    /// <summary>Whether this process may install there: root (or an administrator), or a root it can write.</summary>
    public static bool CanInstall(string root)
    {
        if (Environment.IsPrivilegedProcess) return true;
        var existing = root;
        while (existing.Length > 0 && !Directory.Exists(existing)) existing = Path.GetDirectoryName(existing) ?? "";
        if (existing.Length == 0) return false;
        try
        {
            var probe = Path.Combine(existing, ".pgbackup-write-test-" + Guid.NewGuid().ToString("N"));
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>The folder <paramref name="tool"/>'s build goes to (whether it is there yet or not).</summary>
    public static string FolderFor(WalArchiveTool tool, string root)
    {
        var files = Files(tool);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (source, relative) in files.OrderBy(f => f.Relative, StringComparer.Ordinal))
        {
            hash.AppendData(Encoding.UTF8.GetBytes(relative + "\n"));
            hash.AppendData(File.ReadAllBytes(source));
        }
        var version = System.Reflection.AssemblyName.GetAssemblyName(tool.ToolPath).Version is { } v ? $"{v.Major}.{v.Minor}.{v.Build}" : "0.0.0";
        return Path.Combine(root, $"{version}-{Convert.ToHexString(hash.GetHashAndReset())[..12].ToLowerInvariant()}");
    }

    /// <summary>
    /// Installs <paramref name="tool"/>'s build under <paramref name="root"/> unless it is there already, readable and
    /// runnable by everyone, and returns the installed tool. A copy is made in a temporary folder and renamed into place,
    /// so a folder that exists is complete.
    /// </summary>
    public static WalArchiveTool Install(WalArchiveTool tool, string root, IOperationReporter reporter)
    {
        tool.EnsureExists();
        var folder = FolderFor(tool, root);
        try
        {
            if (!Directory.Exists(folder))
            {
                Directory.CreateDirectory(root);
                OpenToEveryone(root, directory: true);
                var temporary = folder + ".tmp." + Environment.ProcessId;
                if (Directory.Exists(temporary)) Directory.Delete(temporary, recursive: true);
                foreach (var (source, relative) in Files(tool))
                {
                    var destination = Path.Combine(temporary, relative);
                    Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
                    File.Copy(source, destination);
                    OpenToEveryone(destination, directory: false, executable: relative.EndsWith(WalArchiveTool.NativeFileName, StringComparison.Ordinal) && relative.Contains(Path.DirectorySeparatorChar));
                }
                foreach (var directory in Directory.GetDirectories(temporary, "*", SearchOption.AllDirectories).Append(temporary)) OpenToEveryone(directory, directory: true);
                try { Directory.Move(temporary, folder); }
                catch (IOException) when (Directory.Exists(folder)) { Directory.Delete(temporary, recursive: true); } // installed by another process meanwhile
                reporter.Verbose($"Installed pgbackup-wal into {folder}.");
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new PgBackupException("WalToolNotInstalled", ErrorKind.PermissionDenied, $"pgbackup-wal could not be installed into '{folder}': {ex.Message}", folder,
                $"Run the command as root (or an administrator), or set {RootVariable} to a folder this account can write and the database server's OS user can read.", ex);
        }
        return new WalArchiveTool(Path.Combine(folder, WalArchiveTool.FileName), null, tool.ServerOs,
            tool.NativePath != null ? Path.Combine(folder, WalArchiveTool.NativeRuntimeIdentifier, WalArchiveTool.NativeFileName) : null);
    }

    /// <summary>
    /// Records that <paramref name="use"/> (a cluster's archive_command) is about to run the tool in
    /// <paramref name="installed"/>'s folder, beside the record of what it runs now: until <see cref="CommitPendingUse"/>,
    /// both folders count as in use.
    /// </summary>
    public static void RecordPendingUse(string root, string use, WalArchiveTool installed)
    {
        var uses = Directory.CreateDirectory(Path.Combine(root, UsesFolder)).FullName;
        File.WriteAllText(Path.Combine(uses, use + PendingSuffix), Path.GetFileName(FolderOf(installed)) + "\n");
    }

    /// <summary>The new command is in place: the pending record becomes the record.</summary>
    public static void CommitPendingUse(string root, string use)
    {
        var uses = Path.Combine(root, UsesFolder);
        File.Move(Path.Combine(uses, use + PendingSuffix), Path.Combine(uses, use), overwrite: true);
    }

    /// <summary>The new command was not written: the cluster goes on running what its record names.</summary>
    public static void AbandonPendingUse(string root, string use) => File.Delete(Path.Combine(root, UsesFolder, use + PendingSuffix));

    /// <summary>
    /// Drops the record of <paramref name="use"/> and removes every installed folder that no record names any more.
    /// Returns the folders removed.
    /// </summary>
    public static IReadOnlyList<string> ReleaseUse(string root, string use, Action<string> warn)
    {
        var record = Path.Combine(root, UsesFolder, use);
        if (!File.Exists(record)) return [];
        File.Delete(record);
        return RemoveUnused(root, warn);
    }

    /// <summary>
    /// Removes every installed folder that no record (pending ones included) names: after a cluster moved to a newer build,
    /// or stopped archiving. A folder that cannot be removed is a warning, never a failure of what already succeeded.
    /// </summary>
    public static IReadOnlyList<string> RemoveUnused(string root, Action<string> warn)
    {
        var uses = Path.Combine(root, UsesFolder);
        if (!Directory.Exists(uses)) return [];
        var removed = new List<string>();
        try
        {
            var named = Directory.GetFiles(uses).Select(f => File.ReadAllText(f).Trim()).ToHashSet(StringComparer.Ordinal);
            foreach (var folder in Directory.GetDirectories(root).Where(d => Path.GetFileName(d) != UsesFolder && !named.Contains(Path.GetFileName(d))))
            {
                var name = Path.GetFileName(folder);
                // Only what Install makes: <version>-<hash>, and temporary folders of installs that were killed (not running ones).
                var match = System.Text.RegularExpressions.Regex.Match(name, @"^\d+\.\d+\.\d+-[0-9a-f]{12}(\.tmp\.(?<pid>\d+))?$");
                if (!match.Success) continue;
                if (match.Groups["pid"].Success && IsRunning(int.Parse(match.Groups["pid"].Value, System.Globalization.CultureInfo.InvariantCulture))) continue;
                try
                {
                    Directory.Delete(folder, recursive: true);
                    removed.Add(folder);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { warn($"{folder}, which no cluster runs any more, could not be removed: {ex.Message}"); }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { warn($"The installed copies of pgbackup-wal in {root} could not be tidied: {ex.Message}"); }
        return removed;
    }

    private static bool IsRunning(int pid)
    {
        try { using var process = System.Diagnostics.Process.GetProcessById(pid); return !process.HasExited; }
        catch (ArgumentException) { return false; }
    }

    private static string FolderOf(WalArchiveTool installed) => Path.GetDirectoryName(installed.ToolPath)!;

    private static List<(string Source, string Relative)> Files(WalArchiveTool tool)
    {
        var folder = Path.GetDirectoryName(tool.ToolPath)!;
        var files = new[] { WalArchiveTool.FileName, "pgbackup-wal.runtimeconfig.json", "pgbackup-wal.deps.json" }
            .Select(name => (Path.Combine(folder, name), name)).Where(f => File.Exists(f.Item1)).ToList();
        if (tool.NativePath != null) files.Add((tool.NativePath, Path.Combine(WalArchiveTool.NativeRuntimeIdentifier, WalArchiveTool.NativeFileName)));
        return files;
    }

    private static void OpenToEveryone(string path, bool directory, bool executable = false)
    {
        if (OperatingSystem.IsWindows()) return; // Program Files is readable and runnable by services already
        const UnixFileMode read = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;
        const UnixFileMode run = UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;
        File.SetUnixFileMode(path, directory || executable ? read | run : read);
    }
}
