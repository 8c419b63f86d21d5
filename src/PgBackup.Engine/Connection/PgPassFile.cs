namespace PgBackup.Engine.Connection;

/// <summary>Reads a libpq password file (hostname:port:database:username:password, '*' wildcards, '\' escapes) as psql does.</summary>
public static class PgPassFile
{
    public static string DefaultPath => OperatingSystem.IsWindows()
        ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.ApplicationData), "postgresql", "pgpass.conf")
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".pgpass");

    /// <returns>The password of the first matching line, or null. A file readable by others is ignored on Unix, as libpq does.</returns>
    public static string? Lookup(string path, string host, int port, string database, string user, Action<string>? warn = null)
    {
        if (!File.Exists(path)) return null;
        if (!OperatingSystem.IsWindows())
        {
            var mode = File.GetUnixFileMode(path);
            if ((mode & (UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute |
                         UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute)) != 0)
            {
                warn?.Invoke($"The password file '{path}' is ignored because group or others can read it; run 'chmod 0600 {path}'.");
                return null;
            }
        }
        var hostForMatch = host.StartsWith('/') ? "localhost" : host;
        foreach (var raw in File.ReadLines(path))
        {
            if (raw.Length == 0 || raw.StartsWith('#')) continue;
            var fields = Split(raw);
            if (fields.Count < 5) continue;
            if (Matches(fields[0], hostForMatch) && Matches(fields[1], port.ToString(System.Globalization.CultureInfo.InvariantCulture)) &&
                Matches(fields[2], database) && Matches(fields[3], user))
                return fields[4];
        }
        return null;
    }

    private static bool Matches(string pattern, string value) => pattern == "*" || pattern == value;

    private static List<string> Split(string line)
    {
        var fields = new List<string>();
        var current = new System.Text.StringBuilder();
        for (var i = 0; i < line.Length; i++)
        {
            var c = line[i];
            if (c == '\\' && i + 1 < line.Length) { current.Append(line[++i]); continue; }
            if (c == ':' && fields.Count < 4) { fields.Add(current.ToString()); current.Clear(); continue; }
            current.Append(c);
        }
        fields.Add(current.ToString());
        return fields;
    }
}
