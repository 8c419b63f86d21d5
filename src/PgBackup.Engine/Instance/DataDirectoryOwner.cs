using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Instance;

/// <summary>The OS user that owns a local data directory, which is the user its server (and archive_command) runs as.</summary>
public static class DataDirectoryOwner
{
    /// <returns>The owner's name, or null on Windows or when it cannot be read.</returns>
    public static async Task<string?> FindAsync(string dataDirectory, CancellationToken ct)
    {
        if (OperatingSystem.IsWindows()) return null;
        var stat = new PgTool("stat", "stat", "", 0);
        var result = await ToolRunner.RunAsync(stat, ["-c", "%U", dataDirectory], new Dictionary<string, string?>(), null, ct, captureOutput: true).ConfigureAwait(false);
        if (!result.Succeeded) // BSD and macOS
            result = await ToolRunner.RunAsync(stat, ["-f", "%Su", dataDirectory], new Dictionary<string, string?>(), null, ct, captureOutput: true).ConfigureAwait(false);
        return result.Succeeded && result.StandardOutput.Trim() is { Length: > 0 } owner ? owner : null;
    }

    /// <summary>
    /// chown [-R] &lt;owner&gt; &lt;path&gt;: hands files PgBackup wrote as root to the OS user the server runs as.
    /// <paramref name="owner"/> is as chown takes it ("postgres", or "postgres:" for the user's login group too).
    /// </summary>
    /// <returns>chown's result; the caller words the error for what it was preparing.</returns>
    public static Task<ToolResult> GiveToAsync(string path, string owner, bool recursive, CancellationToken ct) =>
        ToolRunner.RunAsync(new PgTool("chown", "chown", "", 0), recursive ? ["-R", owner, path] : [owner, path], new Dictionary<string, string?>(), null, ct, captureOutput: true);

    /// <summary>chown -h: the link itself, never what it points to, for paths inside a folder another user controls.</summary>
    public static Task<ToolResult> GiveEntryToAsync(string path, string owner, CancellationToken ct) =>
        ToolRunner.RunAsync(new PgTool("chown", "chown", "", 0), ["-h", owner, path], new Dictionary<string, string?>(), null, ct, captureOutput: true);
}
