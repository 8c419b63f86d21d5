using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.RegularExpressions;

namespace PgBackup.Engine.Tools;

/// <summary>One PostgreSQL client program found on disk, with the version it reports.</summary>
public sealed record PgTool(string Name, string Path, string VersionText, int Major)
{
    public override string ToString() => $"{Name} {VersionText} ({Path})";
}

/// <summary>
/// Finds pg_dump, pg_restore, psql and friends: in the configured ToolPath only, when one is set; otherwise in the
/// usual install folders and PATH. Picks one whose major version can serve the server, and says why others were refused.
/// </summary>
public sealed class ToolLocator(string? toolPath)
{
    private static readonly ConcurrentDictionary<(string Path, DateTime Written, long Size), (string Text, int Major)?> VersionCache = new();

    public string? ToolPath { get; } = toolPath;

    /// <param name="minimumMajor">The lowest major version that can do the job (pg_dump: the server's major).</param>
    /// <param name="preferredMajor">Among usable tools, this major is preferred (normally the server's).</param>
    public PgTool Find(string name, int? minimumMajor, int? preferredMajor, IOperationReporter reporter)
    {
        var candidates = Candidates(name).ToList();
        var usable = new List<PgTool>();
        var refused = new List<string>();
        foreach (var path in candidates)
        {
            var version = ProbeVersion(path);
            if (version == null) { refused.Add($"{path} (does not report a PostgreSQL version)"); continue; }
            var tool = new PgTool(name, path, version.Value.Text, version.Value.Major);
            if (minimumMajor is { } min && tool.Major < min) { refused.Add($"{path} (version {tool.VersionText} is older than {min})"); continue; }
            usable.Add(tool);
        }
        foreach (var r in refused) reporter.Verbose($"Refused {name}: {r}");

        if (usable.Count == 0)
        {
            var where = ToolPath != null ? $"the configured ToolPath '{ToolPath}'" : "PATH and the usual PostgreSQL install folders";
            if (refused.Count > 0 && minimumMajor != null)
                throw new PgBackupException("ToolTooOld", ErrorKind.NotInstalled,
                    $"No {name} of version {minimumMajor} or later was found in {where}; refused: {string.Join("; ", refused)}.", name,
                    $"Install the PostgreSQL {minimumMajor} client programs (Debian/Ubuntu: apt-get install postgresql-client-{minimumMajor}; Windows: the EDB installer) and set ToolPath (PGBACKUP_TOOLPATH) to their bin folder if it is not found.");
            throw new PgBackupException("ToolNotFound", ErrorKind.NotInstalled,
                $"{name} was not found in {where}.", name,
                "Install the PostgreSQL client programs (Debian/Ubuntu: apt-get install postgresql-client; RHEL: dnf install postgresql; Windows: the EDB installer; macOS: brew install postgresql) or set ToolPath (PGBACKUP_TOOLPATH) to the folder that holds them.");
        }

        var chosen = usable
            .Select((t, i) => (t, i))
            .OrderBy(x => preferredMajor != null && x.t.Major == preferredMajor ? 0 : 1)
            .ThenByDescending(x => x.t.Major)
            .ThenBy(x => x.i)
            .First().t;
        reporter.Verbose($"Using {chosen}" + (preferredMajor != null ? $" for a version {preferredMajor} server." : "."));
        return chosen;
    }

    private IEnumerable<string> Candidates(string name)
    {
        var exe = OperatingSystem.IsWindows() ? name + ".exe" : name;
        var seen = new HashSet<string>(OperatingSystem.IsWindows() ? StringComparer.OrdinalIgnoreCase : StringComparer.Ordinal);
        IEnumerable<string> folders = ToolPath != null ? [ToolPath] : SearchFolders();
        foreach (var folder in folders)
        {
            string full;
            try { full = System.IO.Path.GetFullPath(System.IO.Path.Combine(folder, exe)); }
            catch (ArgumentException) { continue; }
            if (!File.Exists(full)) continue;
            var real = ResolveLink(full);
            if (seen.Add(real)) yield return full;
        }
    }

    private static IEnumerable<string> SearchFolders()
    {
        static IEnumerable<string> Versioned(string pattern, string root)
        {
            if (!Directory.Exists(root)) return [];
            try
            {
                return Directory.GetDirectories(root, pattern)
                    .OrderByDescending(d => int.TryParse(Regex.Match(d, @"(\d+)[^\\/]*$").Groups[1].Value, out var v) ? v : 0);
            }
            catch (IOException) { return []; }
            catch (UnauthorizedAccessException) { return []; }
        }

        if (OperatingSystem.IsWindows())
        {
            foreach (var root in new[] { Environment.GetFolderPath(Environment.SpecialFolder.ProgramFiles), Environment.GetFolderPath(Environment.SpecialFolder.ProgramFilesX86) })
                if (!string.IsNullOrEmpty(root))
                    foreach (var d in Versioned("*", System.IO.Path.Combine(root, "PostgreSQL"))) yield return System.IO.Path.Combine(d, "bin");
        }
        else
        {
            foreach (var d in Versioned("*", "/usr/lib/postgresql")) yield return d + "/bin";
            foreach (var d in Versioned("pgsql-*", "/usr")) yield return d + "/bin";
            yield return "/usr/local/pgsql/bin";
            foreach (var d in Versioned("postgresql@*", "/opt/homebrew/opt")) yield return d + "/bin";
            foreach (var d in Versioned("postgresql@*", "/usr/local/opt")) yield return d + "/bin";
            foreach (var d in Versioned("*", "/Applications/Postgres.app/Contents/Versions")) yield return d + "/bin";
        }
        foreach (var p in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(System.IO.Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            yield return p;
    }

    private static string ResolveLink(string path)
    {
        try { return File.ResolveLinkTarget(path, returnFinalTarget: true)?.FullName ?? path; }
        catch (IOException) { return path; }
    }

    /// <summary>Runs "tool --version" once per file version; "pg_dump (PostgreSQL) 15.18 (Debian ...)" gives 15.</summary>
    public static (string Text, int Major)? ProbeVersion(string path)
    {
        var info = new FileInfo(path);
        return VersionCache.GetOrAdd((info.FullName, info.LastWriteTimeUtc, info.Length), _ =>
        {
            try
            {
                var psi = new ProcessStartInfo(path) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                psi.ArgumentList.Add("--version");
                using var p = Process.Start(psi)!;
                var output = p.StandardOutput.ReadToEndAsync();
                if (!p.WaitForExit(15000)) { try { p.Kill(true); } catch (InvalidOperationException) { } return null; }
                var m = Regex.Match(output.Result, @"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?(?:\.(\d+))?");
                if (!m.Success) return null;
                // Servers before 10 had two-part majors (9.6); PgBackup only compares the first part, as server_version_num / 10000 does.
                var major = int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                var text = m.Value[(m.Value.IndexOf(')') + 1)..].Trim();
                return (text, major);
            }
            catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or IOException or UnauthorizedAccessException)
            {
                return null;
            }
        });
    }
}
