using System.Collections;
using System.Collections.Concurrent;
using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace PgBackup.Testing;

/// <summary>
/// A throwaway PostgreSQL cluster (initdb + pg_ctl) in its own temp folder, listening on 127.0.0.1 on a free port.
/// The superuser authenticates over TCP with scram-sha-256 and <see cref="Password"/>.
/// </summary>
public sealed class PgTestCluster : IDisposable
{
    public const string SuperUser = "postgres";

    static readonly Lazy<string> password = new(() => "pgbackup-test-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12)));
    static readonly Lazy<string> pgPassFile = new(CreatePgPassFile);
    static readonly Lazy<string> binDirectory = new(FindBinDirectory);
    static readonly Lazy<int> majorVersion = new(ReadMajorVersion);
    static readonly ConcurrentDictionary<PgTestCluster, byte> live = new();
    // PostgreSQL refuses to run as root, so the server tools then run as the postgres user via runuser.
    static readonly bool isRoot = !OperatingSystem.IsWindows() && Environment.IsPrivilegedProcess;

    static PgTestCluster() => AppDomain.CurrentDomain.ProcessExit += (_, _) => DisposeAll();

    readonly string root;
    readonly string? socketRoot; // only set when the socket had to live outside `root` (path too long)
    int disposed;

    public static string Password => password.Value;
    public static string PgPassFile => pgPassFile.Value;
    public static string BinDirectory => binDirectory.Value;
    public static int MajorVersion => majorVersion.Value;

    public string Host => "127.0.0.1";
    public int Port { get; private set; }
    public string DataDirectory { get; }
    public string SocketDirectory { get; }
    public string LogFile { get; }
    public string ServerArgument => $"{Host}:{Port}";

    PgTestCluster(string tag)
    {
        root = Directory.CreateTempSubdirectory($"pgbackup-test-{tag}").FullName;
        DataDirectory = Path.Combine(root, "data");
        LogFile = Path.Combine(root, "server.log");
        SocketDirectory = Path.Combine(root, "sock");
        if (SocketDirectory.Length + "/.s.PGSQL.65535".Length >= 100)
            SocketDirectory = socketRoot = Path.Combine("/tmp", "pgbt-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4)));
        Directory.CreateDirectory(SocketDirectory);
    }

    /// <summary>
    /// Creates and starts a new cluster. <paramref name="settings"/> are appended to postgresql.conf after the defaults
    /// (so they win); values that are not a plain word or number are single-quoted unless already quoted. Do not set port.
    /// </summary>
    public static PgTestCluster Start(string? name = null, IDictionary<string, string>? settings = null)
    {
        _ = BinDirectory; // fail fast, before creating anything, if PostgreSQL is not installed
        var tag = Regex.Replace(name ?? "", "[^A-Za-z0-9_-]", "");
        tag = tag.Length == 0 ? "" : tag[..Math.Min(tag.Length, 20)] + "-";
        var cluster = new PgTestCluster(tag);
        live.TryAdd(cluster, 0);
        try
        {
            cluster.Initialize(tag, settings);
            return cluster;
        }
        catch
        {
            cluster.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A streaming standby of <paramref name="primary"/>: pg_basebackup -R (standby.signal and primary_conninfo), its own
    /// port and socket folder, started and in recovery when this returns.
    /// </summary>
    public static PgTestCluster StartStandbyOf(PgTestCluster primary, string? name = null)
    {
        var tag = Regex.Replace(name ?? "standby", "[^A-Za-z0-9_-]", "");
        tag = tag[..Math.Min(tag.Length, 20)] + "-";
        var standby = new PgTestCluster(tag);
        live.TryAdd(standby, 0);
        try
        {
            if (isRoot)
            {
                Chown(standby.root);
                if (standby.socketRoot is not null) Chown(standby.socketRoot);
            }
            var env = EnvironmentWithoutPg();
            env["PGPASSWORD"] = Password;
            var exe = Path.Combine(BinDirectory, "pg_basebackup");
            string[] args = ["-h", primary.Host, "-p", primary.Port.ToString(CultureInfo.InvariantCulture), "-U", SuperUser, "-D", standby.DataDirectory, "-R", "-X", "stream", "-c", "fast"];
            var result = isRoot
                ? ProcessRunner.Run("runuser", ["-u", "postgres", "--", exe, .. args], env, null, TimeSpan.FromMinutes(5), "/")
                : ProcessRunner.Run(exe, args, env, null, TimeSpan.FromMinutes(5), "/");
            if (result.ExitCode != 0) throw new InvalidOperationException($"pg_basebackup for the standby failed (exit code {result.ExitCode}):\n{result.StdErr}");
            standby.Port = FreePort.Next();
            standby.AppendConf([("port", standby.Port.ToString(CultureInfo.InvariantCulture)), ("unix_socket_directories", Quote(standby.SocketDirectory)),
                ("cluster_name", Quote("pgbackup-test-" + tag.TrimEnd('-'))), ("hot_standby", "on")]);
            standby.StartServer();
            return standby;
        }
        catch
        {
            standby.Dispose();
            throw;
        }
    }

    void Initialize(string tag, IDictionary<string, string>? settings)
    {
        var pwFile = Path.Combine(root, "pwfile");
        WritePrivateFile(pwFile, Password + "\n");
        if (isRoot)
        {
            Chown(root);
            if (socketRoot is not null) Chown(socketRoot);
        }
        try
        {
            // initdb creates DataDirectory itself, with mode 0700 and owned by whoever runs it.
            // --no-sync: a throwaway cluster does not need the final fsync of every file, which costs ~1 s.
            string[] initdb = ["--auth-local=trust", "--auth-host=scram-sha-256", "--username=" + SuperUser, "--pwfile=" + pwFile,
                "--encoding=UTF8", "--data-checksums", "--no-sync", "-D", DataDirectory];
            var result = RunServerTool("initdb", [.. initdb, "--locale=C.UTF-8"]);
            if (result.ExitCode != 0) result = RunServerTool("initdb", [.. initdb, "--locale=C"]); // no C.UTF-8 on this system
            if (result.ExitCode != 0)
                throw new InvalidOperationException($"initdb failed (exit code {result.ExitCode}):\n{result.StdErr}{result.StdOut}");
        }
        finally
        {
            File.Delete(pwFile);
        }

        Port = FreePort.Next();
        var conf = new List<(string, string)>
        {
            ("listen_addresses", "'127.0.0.1'"), ("port", Port.ToString(CultureInfo.InvariantCulture)),
            ("unix_socket_directories", Quote(SocketDirectory)), ("cluster_name", Quote("pgbackup-test-" + tag.TrimEnd('-'))),
            ("fsync", "off"), ("synchronous_commit", "off"), ("full_page_writes", "on"), ("max_connections", "50"),
            ("shared_buffers", "32MB"), ("logging_collector", "off"),
        };
        conf.AddRange((settings ?? new Dictionary<string, string>()).Select(s => (s.Key, ConfValue(s.Value))));
        AppendConf(conf);

        try
        {
            StartServer();
        }
        catch (InvalidOperationException) when (ReadLog().Contains("could not bind", StringComparison.Ordinal))
        {
            // Someone grabbed the port between FreePort.Next() and the server binding it.
            Port = FreePort.Next();
            AppendConf([("port", Port.ToString(CultureInfo.InvariantCulture))]);
            StartServer();
        }
    }

    /// <summary>libpq key=value connection string without the password (use <see cref="Password"/> or <see cref="PgPassFile"/>).</summary>
    public string ConnectionString(string database = "postgres") =>
        $"host={Host} port={Port} user={SuperUser} dbname='{database.Replace(@"\", @"\\").Replace("'", @"\'")}'";

    /// <summary>Runs one SQL string with psql and returns its trimmed, unaligned, tuples-only output.</summary>
    public string Psql(string sql, string database = "postgres") => RunPsql(database, "-c", sql);

    public string PsqlFile(string path, string database = "postgres") => RunPsql(database, "-f", path);

    // -q drops command tags ("INSERT 0 1"), so multi-statement strings return just the query results.
    string RunPsql(string database, string option, string value) =>
        RunClient("psql", ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", ConnectionString(database), option, value],
            clientEncoding: "UTF8").Trim();

    /// <summary>Switches to a new WAL segment and waits until the finished one is archived; returns its name.</summary>
    public string ArchiveCurrentSegment() => ArchiveCurrentSegment(sql => Psql(sql));

    /// <param name="scalar">Runs one query on the server and returns its single value.</param>
    public static string ArchiveCurrentSegment(Func<string, string> scalar)
    {
        // pg_switch_wal returns the end of the segment it finished, which pg_walfile_name names.
        var segment = scalar("select pg_walfile_name(pg_switch_wal())");
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (string.CompareOrdinal(scalar("select coalesce(last_archived_wal, '') from pg_stat_archiver"), segment) < 0)
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"{segment} was not archived within a minute");
            Thread.Sleep(100);
        }
        return segment;
    }

    /// <summary>psql against another server on this machine that has the test clusters' superuser and password, such as a recovered copy of one.</summary>
    public static string QueryAt(int port, string sql, string database = "postgres")
    {
        var env = EnvironmentWithoutPg();
        env["PGPASSWORD"] = Password;
        var (exitCode, stdout, stderr) = ProcessRunner.Run(Path.Combine(BinDirectory, "psql"),
            ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "localhost", "-p", port.ToString(CultureInfo.InvariantCulture), "-U", SuperUser, "-d", database, "-c", sql], env);
        if (exitCode != 0) throw new InvalidOperationException($"psql on port {port} failed with exit code {exitCode}: {stderr.Trim()}");
        return stdout.Trim();
    }

    /// <summary>Runs a client tool from <see cref="BinDirectory"/> against this cluster and returns its stdout.</summary>
    public string RunTool(string tool, params string[] args) => RunClient(tool, args, clientEncoding: null);

    string RunClient(string tool, IEnumerable<string> args, string? clientEncoding)
    {
        var env = EnvironmentWithoutPg();
        env["PGHOST"] = Host;
        env["PGPORT"] = Port.ToString(CultureInfo.InvariantCulture);
        env["PGUSER"] = SuperUser;
        env["PGPASSWORD"] = Password;
        if (clientEncoding is not null) env["PGCLIENTENCODING"] = clientEncoding;
        var (exitCode, stdout, stderr) = ProcessRunner.Run(Path.Combine(BinDirectory, tool), args, env);
        if (exitCode != 0) throw new InvalidOperationException($"{tool} failed with exit code {exitCode}: {stderr.Trim()}");
        return stdout;
    }

    public void CreateDatabase(string name) => Psql($"CREATE DATABASE {QuoteIdentifier(name)}");

    public void DropDatabase(string name) => Psql($"DROP DATABASE IF EXISTS {QuoteIdentifier(name)} WITH (FORCE)");

    /// <summary>Fast shutdown; does nothing if the server is not running.</summary>
    public void Stop()
    {
        if (!File.Exists(Path.Combine(DataDirectory, "postmaster.pid"))) return;
        var result = RunServerTool("pg_ctl", "-D", DataDirectory, "-m", "fast", "-w", "-t", "60", "stop");
        if (result.ExitCode != 0)
            throw new InvalidOperationException($"pg_ctl stop failed (exit code {result.ExitCode}): {result.StdErr.Trim()}");
    }

    /// <summary>Starts the server again (same data directory and port) after <see cref="Stop"/>.</summary>
    public void StartAgain()
    {
        ObjectDisposedException.ThrowIf(disposed != 0, this);
        StartServer();
    }

    void StartServer()
    {
        var result = RunServerTool("pg_ctl", "-D", DataDirectory, "-l", LogFile, "-w", "-t", "60", "start");
        if (result.ExitCode != 0)
            throw new InvalidOperationException(
                $"pg_ctl start failed on port {Port} (exit code {result.ExitCode}): {result.StdErr.Trim()}\n--- tail of {LogFile} ---\n{LogTail()}");
    }

    /// <summary>Stops the server (immediate shutdown or kill if needed) and deletes its folder. Idempotent; never throws.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0) return;
        try
        {
            try { Stop(); }
            catch { Kill(); }
        }
        catch { /* best effort */ }
        TryDeleteDirectory(root);
        if (socketRoot is not null) TryDeleteDirectory(socketRoot);
        live.TryRemove(this, out _);
    }

    void Kill()
    {
        try { RunServerTool("pg_ctl", "-D", DataDirectory, "-m", "immediate", "-w", "-t", "30", "stop"); }
        catch { /* fall through to killing the postmaster */ }
        var pidFile = Path.Combine(DataDirectory, "postmaster.pid");
        if (!File.Exists(pidFile) || !int.TryParse(File.ReadLines(pidFile).FirstOrDefault(), out var pid)) return;
        using var process = Process.GetProcessById(pid);
        if (process.ProcessName == "postgres") process.Kill(entireProcessTree: true); // the pid file may be stale
    }

    static void DisposeAll()
    {
        foreach (var cluster in live.Keys) cluster.Dispose();
        if (pgPassFile.IsValueCreated) TryDeleteDirectory(Path.GetDirectoryName(pgPassFile.Value)!);
    }

    /// <summary>Runs initdb/pg_ctl, as the postgres user when this process is root.</summary>
    static (int ExitCode, string StdOut, string StdErr) RunServerTool(string tool, params string[] args)
    {
        var exe = Path.Combine(BinDirectory, tool);
        // Working directory "/" so the postgres user is not left in an unreadable cwd such as /root.
        return isRoot
            ? ProcessRunner.Run("runuser", ["-u", "postgres", "--", exe, .. args], EnvironmentWithoutPg(), null, TimeSpan.FromMinutes(2), "/")
            : ProcessRunner.Run(exe, args, EnvironmentWithoutPg(), null, TimeSpan.FromMinutes(2), "/");
    }

    // Removes every inherited PG* variable (PGSERVICE, PGDATABASE, PGHOSTADDR, PGPASSFILE, PGDATA, ...) so none can redirect a child.
    static Dictionary<string, string?> EnvironmentWithoutPg()
    {
        var env = new Dictionary<string, string?>();
        foreach (DictionaryEntry variable in Environment.GetEnvironmentVariables())
            if (variable.Key is string key && key.StartsWith("PG", StringComparison.Ordinal)) env[key] = null;
        return env;
    }

    void AppendConf(IEnumerable<(string Name, string Value)> settings)
    {
        var text = new StringBuilder("\n# added by PgBackup.Testing\n");
        foreach (var (name, value) in settings) text.Append(name).Append(" = ").Append(value).Append('\n');
        File.AppendAllText(Path.Combine(DataDirectory, "postgresql.conf"), text.ToString());
    }

    static string ConfValue(string value) =>
        value.StartsWith('\'') || Regex.IsMatch(value, @"^[A-Za-z0-9_.+-]+$") ? value : Quote(value);

    static string Quote(string value) => "'" + value.Replace(@"\", @"\\").Replace("'", "''") + "'";

    static string QuoteIdentifier(string name) => "\"" + name.Replace("\"", "\"\"") + "\"";

    string ReadLog()
    {
        try
        {
            using var reader = new StreamReader(new FileStream(LogFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite));
            return reader.ReadToEnd();
        }
        catch (IOException) { return ""; }
    }

    string LogTail() => string.Join('\n', ReadLog().Split('\n').TakeLast(40));

    static void Chown(string path)
    {
        var (exitCode, _, stderr) = ProcessRunner.Run("chown", ["-R", "postgres:postgres", path]);
        if (exitCode != 0) throw new InvalidOperationException($"chown -R postgres:postgres {path} failed: {stderr.Trim()}");
    }

    static void WritePrivateFile(string path, string content)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using var writer = new StreamWriter(new FileStream(path, options));
        writer.Write(content);
    }

    static void TryDeleteDirectory(string path)
    {
        for (var attempt = 0; attempt < 3; attempt++)
        {
            try
            {
                if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
                return;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { Thread.Sleep(200); }
        }
    }

    static string CreatePgPassFile()
    {
        var path = Path.Combine(Directory.CreateTempSubdirectory("pgbackup-pgpass-").FullName, ".pgpass");
        WritePrivateFile(path, $"127.0.0.1:*:*:{SuperUser}:{Password}\nlocalhost:*:*:{SuperUser}:{Password}\n");
        return path;
    }

    static string FindBinDirectory()
    {
        static bool HasServer(string? dir) =>
            dir is not null && File.Exists(Path.Combine(dir, "initdb")) && File.Exists(Path.Combine(dir, "pg_ctl"));
        static double VersionOf(string dir) =>
            double.TryParse(Regex.Match(Path.GetFileName(dir), @"\d+(\.\d+)?$").Value, CultureInfo.InvariantCulture, out var v) ? v : 0;
        static IEnumerable<string> Newest(string parent, string pattern) => Directory.Exists(parent)
            ? Directory.GetDirectories(parent, pattern).OrderByDescending(VersionOf).Select(d => Path.Combine(d, "bin"))
            : [];

        string? fromPgConfig = null;
        try
        {
            var (exitCode, stdout, _) = ProcessRunner.Run("pg_config", ["--bindir"], timeout: TimeSpan.FromSeconds(30));
            if (exitCode == 0) fromPgConfig = stdout.Trim();
        }
        catch (Win32Exception) { } // pg_config not on PATH

        string?[] candidates = [fromPgConfig, .. Newest("/usr/lib/postgresql", "*"), .. Newest("/usr", "pgsql-*")];
        return candidates.FirstOrDefault(HasServer) ?? throw new InvalidOperationException(
            "PostgreSQL server binaries not found: install them with `apt-get install -y postgresql postgresql-contrib` " +
            "(or `dnf install postgresql-server postgresql-contrib`) and make sure initdb and pg_ctl are in `pg_config --bindir`, " +
            "/usr/lib/postgresql/<version>/bin or /usr/pgsql-<version>/bin.");
    }

    static int ReadMajorVersion()
    {
        var (exitCode, stdout, stderr) = RunServerTool("pg_ctl", "--version");
        var match = Regex.Match(stdout, @"\(PostgreSQL\) (\d+)");
        return exitCode == 0 && match.Success
            ? int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture)
            : throw new InvalidOperationException($"Could not read the version from `pg_ctl --version`: {stdout}{stderr}");
    }
}
