namespace PgBackup.Engine.Instance;

/// <summary>
/// Which installed build of pgbackup-wal each server process on this machine runs (Wal.WalToolInstallation installs
/// them): one small record per use in &lt;root&gt;/uses/, naming the build's folder, so that a build is removed once no
/// cluster's archive_command and no standby's restore_command runs it. Here, below the capabilities, because removing a
/// standby (Instance) releases its use too.
/// </summary>
public static class InstalledToolUses
{
    private const string UsesFolder = "uses";
    private const string PendingSuffix = ".next";

    public const string RootVariable = "PGBACKUP_WAL_TOOL_ROOT";

    /// <summary>Where builds are installed: /usr/local/lib/pgbackup/wal, %ProgramFiles%\PgBackup\wal, or PGBACKUP_WAL_TOOL_ROOT.</summary>
    public static string Root => Environment.GetEnvironmentVariable(RootVariable) is { Length: > 0 } root ? Path.GetFullPath(root)
        : OperatingSystem.IsWindows() ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.ProgramFiles), "PgBackup", "wal")
        : "/usr/local/lib/pgbackup/wal";

    /// <summary>The key of a standby's restore_command: its data directory.</summary>
    public static string StandbyUse(string dataDirectory) => "standby-" + WalCredentialsFile.DataDirectoryKey(dataDirectory);

    /// <summary>
    /// The key of a cluster's archive_command among the records: its system identifier and data directory (a primary and
    /// a standby or a copy on this machine share the identifier, never the record).
    /// </summary>
    public static string ArchiveUse(string systemIdentifier, string dataDirectory) =>
        "archive-" + systemIdentifier + "-" + WalCredentialsFile.DataDirectoryKey(dataDirectory);

    /// <summary>Whether this process may install there: root (or an administrator), or a root it can write.</summary>
    public static bool CanInstall(string root)
    {
        if (Environment.IsPrivilegedProcess) return true;
        var existing = root;
        while (existing.Length > 0 && !Directory.Exists(existing)) existing = Path.GetDirectoryName(existing) ?? "";
        return existing.Length > 0 && Tools.FolderProbe.IsWritable(existing);
    }

    /// <summary>
    /// Records that <paramref name="use"/> (a cluster's archive_command) is about to run the tool in
    /// <paramref name="installedFolder"/>, beside the record of what it runs now: until <see cref="CommitPendingUse"/>,
    /// both folders count as in use.
    /// </summary>
    public static void RecordPendingUse(string root, string use, string installedFolder)
    {
        var uses = Directory.CreateDirectory(Path.Combine(root, UsesFolder)).FullName;
        File.WriteAllText(Path.Combine(uses, use + PendingSuffix), Path.GetFileName(installedFolder) + "\n");
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
                if (match.Groups["pid"].Success && InstanceControl.IsAlive(int.Parse(match.Groups["pid"].Value, System.Globalization.CultureInfo.InvariantCulture))) continue;
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
}
