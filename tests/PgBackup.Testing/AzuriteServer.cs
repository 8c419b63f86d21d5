using System.Diagnostics;
using System.Text.RegularExpressions;

namespace PgBackup.Testing;

/// <summary>
/// Azurite's blob service (npm package azurite, installed by scripts/prerequisites.sh) on a free loopback port with a
/// fresh data folder, for tests of blob repositories; killed on Dispose. <see cref="Kill"/> and <see cref="Start"/>
/// stop and start it again on the same port and data, for tests of storage that goes away mid-operation.
/// </summary>
public sealed partial class AzuriteServer : IDisposable
{
    /// <summary>Azurite's well-known development account and key (public, documented by Microsoft).</summary>
    public const string Account = "devstoreaccount1";
    public const string AccountKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    private readonly string _program;
    private readonly string _folder;
    private readonly string[] _tls;
    private Process? _process;

    private AzuriteServer(string program, string folder, string[] tls)
    {
        _program = program;
        _folder = folder;
        _tls = tls;
    }

    public int Port { get; private set; }
    public string ServiceUrl => $"{(_tls.Length > 0 ? "https" : "http")}://127.0.0.1:{Port}/{Account}";
    public string ConnectionString => $"DefaultEndpointsProtocol=http;AccountName={Account};AccountKey={AccountKey};BlobEndpoint={ServiceUrl};";

    /// <summary>The URL of a container nobody has used yet (Azurite creates it on the first write).</summary>
    public string NewContainerUrl(string? prefix = null) => $"{ServiceUrl}/t{Guid.NewGuid().ToString("N")[..20]}" + (prefix == null ? "" : "/" + prefix);

    /// <param name="certificate">With <paramref name="key"/>, PEM files for HTTPS (pgBackRest speaks nothing else); plain HTTP without.</param>
    public static AzuriteServer Launch(string? certificate = null, string? key = null)
    {
        var server = new AzuriteServer(Locate(), TestFolders.New("pgbackup-azurite"), certificate == null ? [] : ["--cert", certificate, "--key", key!]);
        server.Start();
        return server;
    }

    /// <summary>Starts Azurite (again): on a free port the first time, then on the same port, over the same data.</summary>
    public void Start()
    {
        var psi = new ProcessStartInfo(_program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        string[] arguments = ["--blobHost", "127.0.0.1", "--blobPort", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--location", _folder, "--skipApiVersionCheck", .. _tls];
        foreach (var a in arguments)
            psi.ArgumentList.Add(a);
        var process = Process.Start(psi) ?? throw new InvalidOperationException("Azurite did not start.");
        var listening = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new List<string>();
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data == null) { listening.TrySetException(new InvalidOperationException("Azurite exited: " + string.Join(" | ", output))); return; }
            lock (output) output.Add(e.Data);
            if (ListeningLine().Match(e.Data) is { Success: true } m) listening.TrySetResult(int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (output) output.Add(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!listening.Task.Wait(TimeSpan.FromSeconds(60)))
        {
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            throw new InvalidOperationException("Azurite did not start listening within 60 s: " + string.Join(" | ", output));
        }
        Port = listening.Task.Result;
        _process = process;
    }

    /// <summary>Kills Azurite at once, as a storage endpoint that goes away does.</summary>
    public void Kill()
    {
        if (_process == null) return;
        try { _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        _process.WaitForExit();
        _process.Dispose();
        _process = null;
    }

    /// <summary>
    /// Kills Azurite once it has saved its blob index. Azurite keeps the index in memory and saves it every 5 s when it
    /// changed, so a kill right after a write loses that write (a real storage service never does). This waits for a
    /// save that started after the call (the index file written again), or, when nothing changed, 12 s at the most.
    /// </summary>
    public void KillAfterSave()
    {
        var index = Path.Combine(_folder, "__azurite_db_blob__.json");
        var asked = DateTime.UtcNow;
        var deadline = asked + TimeSpan.FromSeconds(12);
        // A whole second later: the file system's time stamps may be coarse.
        while (DateTime.UtcNow < deadline && !(File.Exists(index) && File.GetLastWriteTimeUtc(index) > asked.AddSeconds(1))) Thread.Sleep(100);
        Kill();
    }

    public void Dispose() => Kill();

    private static string Locate()
    {
        var candidates = new List<string?>
        {
            Environment.GetEnvironmentVariable("PGBACKUP_AZURITE"),
            Path.Combine(Environment.GetEnvironmentVariable("XDG_DATA_HOME") is { Length: > 0 } data ? data : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local", "share"),
                "pgbackup-test", "azurite", "node_modules", ".bin", "azurite-blob"),
        };
        candidates.AddRange((Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator).Select(p => Path.Combine(p, "azurite-blob")));
        return candidates.FirstOrDefault(c => !string.IsNullOrEmpty(c) && File.Exists(c))
            ?? throw new InvalidOperationException("Azurite (the Azure Storage emulator) is not installed, and the blob repository tests need it. " +
                "Run scripts/prerequisites.sh, which installs it with: npm install --prefix ~/.local/share/pgbackup-test/azurite azurite@3.37.0 " +
                "(or set PGBACKUP_AZURITE to an azurite-blob program).");
    }

    [GeneratedRegex(@"listens on https?://[^:]+:(\d+)")]
    private static partial Regex ListeningLine();
}
