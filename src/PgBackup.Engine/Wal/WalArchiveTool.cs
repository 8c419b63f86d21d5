using System.Text;

namespace PgBackup.Engine.Wal;

/// <summary>The operating system of the database server, which decides the shell that runs archive_command.</summary>
public enum ServerOs { Unix, Windows }

/// <summary>
/// The pgbackup-wal tool (archive_command and restore_command) and the command strings that run it. The module ships it
/// twice: portable, &lt;moduleFolder&gt;/WalArchive/pgbackup-wal.dll, run by the dotnet host; and, where the build could make
/// one, native (NativeAOT), &lt;moduleFolder&gt;/WalArchive/&lt;rid&gt;/pgbackup-wal[.exe], which starts in a few milliseconds
/// and needs no .NET runtime on the server. The native one is used when it exists for this machine. The caller says where
/// the tool is, the engine never guesses from its own process. The server runs the command on its own machine, so the
/// tool, the dotnet host and the archive folder must be paths there.
/// </summary>
public sealed class WalArchiveTool
{
    public const string FileName = "pgbackup-wal.dll";
    private const string Marker = "pgbackup-wal";

    private readonly Lazy<string> dotnetHost;

    /// <param name="toolPath">The full path of pgbackup-wal.dll.</param>
    /// <param name="dotnetHost">The dotnet host to run it with; found as <see cref="LocateDotnetHost"/> does when null.</param>
    /// <param name="serverOs">The server's operating system; this machine's when null.</param>
    /// <param name="nativePath">The native build for this machine, used instead of the dll when given.</param>
    public WalArchiveTool(string toolPath, string? dotnetHost = null, ServerOs? serverOs = null, string? nativePath = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(toolPath);
        var local = OperatingSystem.IsWindows() ? ServerOs.Windows : ServerOs.Unix;
        ServerOs = serverOs ?? local;
        // A path for a server on another OS cannot be resolved here; it is taken as given.
        ToolPath = ServerOs == local ? Path.GetFullPath(toolPath) : toolPath;
        // A native build runs only on the OS (and architecture) it was built for: this machine's.
        NativePath = nativePath != null && ServerOs == local ? Path.GetFullPath(nativePath) : null;
        this.dotnetHost = dotnetHost != null ? new Lazy<string>(dotnetHost) : new Lazy<string>(LocateDotnetHost);
    }

    /// <summary>The tool as the module ships it: the native build for this machine when there is one, else the dll.</summary>
    public static WalArchiveTool InModuleFolder(string moduleFolder, string? dotnetHost = null)
    {
        var folder = Path.Combine(moduleFolder, "WalArchive");
        var native = Path.Combine(folder, NativeRuntimeIdentifier, NativeFileName);
        return new(Path.Combine(folder, FileName), dotnetHost, nativePath: File.Exists(native) ? native : null);
    }

    public static string NativeFileName => OperatingSystem.IsWindows() ? "pgbackup-wal.exe" : "pgbackup-wal";

    /// <summary>The runtime identifier of this machine's native build (linux-x64, linux-arm64, win-x64, osx-arm64...).</summary>
    public static string NativeRuntimeIdentifier =>
        (OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux") + "-" +
        System.Runtime.InteropServices.RuntimeInformation.OSArchitecture.ToString().ToLowerInvariant();

    public string ToolPath { get; }
    /// <summary>The native build the commands run, or null when they run the dll through the dotnet host.</summary>
    public string? NativePath { get; }
    public bool IsNative => NativePath != null;
    public ServerOs ServerOs { get; }

    /// <summary>The dotnet host that runs the tool; throws PgBackup.WalToolRuntimeMissing when none is installed.</summary>
    public string DotnetHost => dotnetHost.Value;

    /// <summary>The same tool, with commands quoted for a server on <paramref name="os"/>.</summary>
    public WalArchiveTool ForServer(ServerOs os) =>
        os == ServerOs ? this : new WalArchiveTool(ToolPath, dotnetHost.IsValueCreated ? dotnetHost.Value : null, os, NativePath);

    /// <summary>Throws PgBackup.WalToolNotFound when the tool is not where it was said to be.</summary>
    public void EnsureExists()
    {
        if (NativePath != null)
        {
            if (!File.Exists(NativePath))
                throw new PgBackupException("WalToolNotFound", ErrorKind.NotInstalled, $"The WAL archive tool was not found at '{NativePath}'.", NativePath,
                    "Reinstall the PgBackup module (the tool ships in its WalArchive folder).");
            return;
        }
        if (!File.Exists(ToolPath))
            throw new PgBackupException("WalToolNotFound", ErrorKind.NotInstalled, $"The WAL archive tool was not found at '{ToolPath}'.", ToolPath,
                "Reinstall the PgBackup module (the tool ships in its WalArchive folder), or pass the path of a built pgbackup-wal.dll.");
        var runtimeConfig = Path.ChangeExtension(ToolPath, ".runtimeconfig.json");
        if (!File.Exists(runtimeConfig))
            throw new PgBackupException("WalToolNotFound", ErrorKind.NotInstalled, $"'{runtimeConfig}' is missing next to the WAL archive tool; dotnet cannot run it without it.", runtimeConfig,
                "Reinstall the PgBackup module so that its WalArchive folder is complete.");
    }

    /// <summary>The program and the first arguments that run the tool: the native build alone, or the dotnet host with the dll.</summary>
    public string[] Invocation => NativePath != null ? [NativePath] : [DotnetHost, ToolPath];

    /// <summary>What the server's shell runs to start the tool, quoted.</summary>
    private string Start => string.Join(' ', Invocation.Select(w => Quote(w)));

    /// <summary>The option of push that drops segments when pg_wal's backlog passes a number of bytes (the tool's DropGuard).</summary>
    public const string DropOption = "--drop-backlog-above";

    /// <summary>
    /// The archive_command value: pgbackup-wal push %p &lt;archiveFolder | archiveUrl --credentials &lt;file&gt;&gt; [--encrypt &lt;key file&gt;]
    /// [--parallel &lt;n&gt;] [--drop-backlog-above &lt;bytes&gt;].
    /// </summary>
    /// <param name="credentialsFile">For a blob archive: the file the tool reads its credential from.</param>
    /// <param name="parallel">Above 1: a background pusher archives the next ready segments this many at a time (the tool's AheadPusher).</param>
    /// <param name="compress">Segments are stored compressed (<see cref="Repository.WalCompression"/>).</param>
    public string ArchiveCommand(string archiveLocation, string? credentialsFile = null, long? dropBacklogAbove = null, string? keyFile = null, int parallel = 1,
        bool compress = false) =>
        string.Join(' ', Start, "push", Quote("%p", escapePercent: false), Quote(archiveLocation)) +
        (credentialsFile != null ? $" {CredentialsOption} {Quote(credentialsFile)}" : "") + Key(EncryptOption, keyFile) +
        (compress ? " " + Repository.WalCompression.Option : "") + Parallel(parallel) + Drop(dropBacklogAbove);

    /// <summary>The option of push (segments pushed ahead in the background) and fetch (segments prefetched) that sets how many run at once.</summary>
    public const string ParallelOption = "--parallel";
    public const int MaxParallel = 32;

    private static string Parallel(int n) => n > 1 ? $" {ParallelOption} {n.ToString(System.Globalization.CultureInfo.InvariantCulture)}" : "";

    private static string Drop(long? bytes) => bytes is { } b ? $" {DropOption} {b.ToString(System.Globalization.CultureInfo.InvariantCulture)}" : "";

    private string Key(string option, string? keyFile) => keyFile == null ? "" : $" {option} {Quote(keyFile)}";

    /// <summary>The options that give push the public key file, and fetch the private one, of an encrypted repository.</summary>
    public const string EncryptOption = "--encrypt";
    public const string DecryptOption = "--decrypt";

    /// <summary>The restore_command value: pgbackup-wal fetch &lt;archiveFolder&gt; %f %p [--decrypt &lt;key file&gt;] [--parallel &lt;n&gt;].</summary>
    /// <param name="prefetch">Above 1: each fetch that misses the prefetch spool also fetches the next segments, this many at once.</param>
    public string RestoreCommand(string archiveFolder, string? keyFile = null, int prefetch = 1) =>
        string.Join(' ', Start, "fetch", Quote(archiveFolder), Quote("%f", escapePercent: false), Quote("%p", escapePercent: false)) + Key(DecryptOption, keyFile) + Parallel(prefetch);

    /// <summary>
    /// The restore_command value for a blob archive. <paramref name="standby"/>: a storage outage is "not in the archive"
    /// (the standby goes back to streaming) instead of aborting recovery.
    /// </summary>
    public string RestoreCommand(string archiveUrl, string credentialsFile, bool standby, string? keyFile = null, int prefetch = 1) =>
        string.Join(' ', Start, "fetch", Quote(archiveUrl), Quote("%f", escapePercent: false), Quote("%p", escapePercent: false),
            CredentialsOption, Quote(credentialsFile)) + (standby ? " --standby" : "") + Key(DecryptOption, keyFile) + Parallel(prefetch);

    /// <summary>The command line (program first) that makes the tool prove it can write, read and delete in a blob archive.</summary>
    public string[] CheckCommand(string archiveUrl, string credentialsFile) => [.. Invocation, "check", archiveUrl, CredentialsOption, credentialsFile];

    private const string CredentialsOption = "--credentials";

    /// <summary>
    /// A restore_command that only copies (cp, or copy on Windows), for archives whose segments were verified against
    /// their checksums before recovery started: it saves the .NET start-up of the fetch tool on every segment.
    /// </summary>
    public string CopyRestoreCommand(string archiveFolder)
    {
        const string marker = "PGBACKUPWALFILE";
        var source = Quote(archiveFolder.TrimEnd('/', '\\') + (ServerOs == ServerOs.Windows ? "\\" : "/") + marker).Replace(marker, "%f", StringComparison.Ordinal);
        return ServerOs == ServerOs.Windows ? $"copy /Y {source} \"%p\"" : $"cp {source} '%p'";
    }

    /// <summary>
    /// A restore_command for /bin/sh that copies a file only once PgBackup has checked it: it waits for
    /// &lt;markerFolder&gt;/&lt;file&gt;.ok (or .bad, or "done" once every listed file is checked), and aborts recovery (exit
    /// 200) for a damaged file. So the checking runs alongside the replay instead of before it. Once the marker folder
    /// is gone it copies without waiting.
    /// </summary>
    public string GatedCopyRestoreCommand(string archiveFolder, string markerFolder)
    {
        if (ServerOs == ServerOs.Windows) throw new PlatformNotSupportedException("cmd.exe has no waiting loop for this; use CopyRestoreCommand after checking.");
        const string marker = "PGBACKUPWALFILE";
        string Mark(string suffix) => Quote(markerFolder.TrimEnd('/') + "/" + marker + suffix).Replace(marker, "%f", StringComparison.Ordinal);
        var done = Quote(markerFolder.TrimEnd('/') + "/done");
        // Without the marker folder (the recovery that checked is over, e.g. a paused instance resumed later) it just copies.
        return $"while [ -d {Quote(markerFolder)} ] && [ ! -e {Mark(".ok")} ] && [ ! -e {Mark(".bad")} ] && [ ! -e {done} ]; do sleep 0.01; done; " +
               $"if [ -e {Mark(".bad")} ]; then echo \"pgbackup: DAMAGED ARCHIVE: %f does not match its recorded SHA-256; not handing it to PostgreSQL\" >&2; exit 200; fi; " +
               CopyRestoreCommand(archiveFolder);
    }

    /// <summary>
    /// Recognises a command written by <see cref="ArchiveCommand"/> (for either OS, the portable or the native tool) and
    /// returns what it says: where it archives, and with which options.
    /// </summary>
    public static bool TryParseArchiveCommand(string? command, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out ArchiveCommandParts? parts)
    {
        parts = null;
        if (string.IsNullOrWhiteSpace(command) || !command.Contains(Marker, StringComparison.OrdinalIgnoreCase)) return false;
        var words = Split(command);
        // The portable form runs the dll through a dotnet host; the native form is the program itself.
        if (words.Count > 1 && IsTool(words[1], FileName)) words.RemoveAt(0);
        else if (words.Count == 0 || !(IsTool(words[0], "pgbackup-wal") || IsTool(words[0], "pgbackup-wal.exe"))) return false;
        // The options in the order ArchiveCommand writes them, taken from the end.
        long? drop = null;
        if (words.Count > 2 && words[^2] == DropOption)
        {
            if (!long.TryParse(words[^1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var limit)) return false;
            drop = limit;
            words.RemoveRange(words.Count - 2, 2);
        }
        var parallel = 1;
        if (words.Count > 2 && words[^2] == ParallelOption)
        {
            if (!int.TryParse(words[^1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out parallel) || parallel < 1) return false;
            words.RemoveRange(words.Count - 2, 2);
        }
        var compress = words.Count > 1 && words[^1] == Repository.WalCompression.Option;
        if (compress) words.RemoveAt(words.Count - 1);
        string? key = null;
        if (words.Count > 2 && words[^2] == EncryptOption)
        {
            key = words[^1];
            words.RemoveRange(words.Count - 2, 2);
        }
        var (location, credentials) = words switch
        {
            [_, "push", "%p", var folder] => (folder, null),
            [_, "push", "%p", var url, CredentialsOption, var file] => (url, file),
            _ => ((string?)null, (string?)null),
        };
        if (location == null) return false;
        parts = new ArchiveCommandParts(location, credentials, drop, key, parallel, compress);
        return true;
    }

    private static bool IsTool(string word, string fileName) => Path.GetFileName(word.Replace('\\', '/')).Equals(fileName, StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// One argument for the server's shell, then PostgreSQL's own escaping (it replaces %p, %f and %% before the shell sees
    /// the command, so a literal % must be written %%). Unix: /bin/sh, single quotes, ' as '\''. Windows: cmd.exe, double quotes.
    /// </summary>
    internal string Quote(string value, bool escapePercent = true)
    {
        if (value.Length == 0 || value.Any(char.IsControl))
            throw BadPath(value, "it is empty or holds a control character (such as a line break)");
        string quoted;
        if (ServerOs == ServerOs.Unix)
            quoted = "'" + value.Replace("'", @"'\''") + "'";
        else
        {
            if (value.Contains('"')) throw BadPath(value, "cmd.exe cannot quote a double quote in a path");
            // Inside double quotes cmd.exe still expands %NAME%, and there is no escape for it there.
            if (escapePercent && value.Contains('%')) throw BadPath(value, "cmd.exe would expand %...% in it as environment variables");
            quoted = "\"" + value + "\"";
        }
        return escapePercent ? quoted.Replace("%", "%%") : quoted;
    }

    private static PgBackupException BadPath(string value, string why) =>
        new("InvalidWalArchivePath", ErrorKind.InvalidArgument, $"The path '{value}' cannot be used in archive_command: {why}.", value,
            "Use a repository folder (and module location) whose path has no such characters.");

    /// <summary>
    /// Words of a command as the server's shell would see them, after PostgreSQL's %% → % (and with %p, %f kept as they are):
    /// understands '...' with '\'' (sh) and "..." (cmd.exe).
    /// </summary>
    private static List<string> Split(string command)
    {
        var words = new List<string>();
        var word = new StringBuilder();
        var inWord = false;
        for (var i = 0; i < command.Length; i++)
        {
            var c = command[i];
            if (c == '%' && i + 1 < command.Length && command[i + 1] == '%') { word.Append('%'); i++; inWord = true; continue; }
            if (c is '\'' or '"')
            {
                var close = command.IndexOf(c, i + 1);
                if (close < 0) close = command.Length;
                word.Append(command.AsSpan(i + 1, close - i - 1).ToString().Replace("%%", "%"));
                i = close;
                inWord = true;
                continue;
            }
            if (c == '\\' && i + 1 < command.Length && command[i + 1] == '\'') { word.Append('\''); i++; inWord = true; continue; }
            if (char.IsWhiteSpace(c))
            {
                if (inWord) { words.Add(word.ToString()); word.Clear(); inWord = false; }
                continue;
            }
            word.Append(c);
            inWord = true;
        }
        if (inWord) words.Add(word.ToString());
        return words;
    }

    /// <summary>DOTNET_HOST_PATH, then dotnet on PATH, then the usual install folders.</summary>
    public static string LocateDotnetHost()
    {
        var exe = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } fromEnv) candidates.Add(fromEnv);
        foreach (var folder in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            candidates.Add(Path.Combine(folder, exe));
        if (OperatingSystem.IsWindows())
            candidates.Add(Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.ProgramFiles), "dotnet", exe));
        candidates.AddRange(["/usr/share/dotnet/dotnet", "/usr/lib/dotnet/dotnet", @"C:\Program Files\dotnet\dotnet.exe"]);

        foreach (var candidate in candidates)
        {
            try
            {
                if (!File.Exists(candidate)) continue;
                // PATH often holds a symbolic link (/usr/bin/dotnet); the server runs the real file, wherever the link moves.
                var real = File.ResolveLinkTarget(candidate, returnFinalTarget: true)?.FullName ?? Path.GetFullPath(candidate);
                if (File.Exists(real)) return real;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException) { }
        }
        throw new PgBackupException("WalToolRuntimeMissing", ErrorKind.NotInstalled,
            "The .NET runtime (the dotnet host) that runs the WAL archive tool was not found: not in DOTNET_HOST_PATH, not on PATH, not in the usual install folders.",
            "dotnet",
            "Install the .NET runtime 8 or later on the database server (Debian/Ubuntu: apt-get install dotnet-runtime-8.0; Windows: winget install Microsoft.DotNet.Runtime.8), or set DOTNET_HOST_PATH to its dotnet executable.");
    }
}

/// <summary>What a PgBackup archive_command says.</summary>
/// <param name="Location">The archive folder, or a blob archive's URL.</param>
/// <param name="CredentialsFile">The file a blob archive's credential is read from.</param>
/// <param name="DropBacklogAbove">The guard's limit in bytes, when the command sets one.</param>
/// <param name="KeyFile">The key file of an encrypted repository's archive, when the command encrypts.</param>
/// <param name="Parallel">How many segments the background pusher archives at once; 1 when nothing is pushed ahead.</param>
/// <param name="Compress">Segments are stored compressed.</param>
public sealed record ArchiveCommandParts(string Location, string? CredentialsFile, long? DropBacklogAbove, string? KeyFile, int Parallel, bool Compress = false);
