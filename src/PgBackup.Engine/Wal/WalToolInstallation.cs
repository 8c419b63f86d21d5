using System.Security.Cryptography;
using System.Text;

using PgBackup.Engine.Instance;

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
    public static string Root => InstalledToolUses.Root;

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
                $"Run the command as root (or an administrator), or set {InstalledToolUses.RootVariable} to a folder this account can write and the database server's OS user can read.", ex);
        }
        return new WalArchiveTool(Path.Combine(folder, WalArchiveTool.FileName), null, tool.ServerOs,
            tool.NativePath != null ? Path.Combine(folder, WalArchiveTool.NativeRuntimeIdentifier, WalArchiveTool.NativeFileName) : null);
    }

    private static List<(string Source, string Relative)> Files(WalArchiveTool tool)
    {
        var folder = Path.GetDirectoryName(tool.ToolPath)!;
        // The portable tool with the libraries it loads (LZ4), its runtimeconfig and deps.
        var files = Directory.GetFiles(folder, "*.dll").Select(Path.GetFileName)
            .Concat(["pgbackup-wal.runtimeconfig.json", "pgbackup-wal.deps.json"])
            .Select(name => (Path.Combine(folder, name!), name!)).Where(f => File.Exists(f.Item1)).ToList();
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
