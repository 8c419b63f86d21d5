using System.Diagnostics;
using System.Text;

namespace PgBackup.Testing;

/// <summary>Runs a child process to completion and captures its output.</summary>
public static class ProcessRunner
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(5);
    static readonly Encoding utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false);

    /// <summary>
    /// Runs <paramref name="fileName"/> with <paramref name="args"/> passed one by one (no shell, no quoting).
    /// <paramref name="environment"/> entries are added to the inherited environment; a null value removes the variable.
    /// Standard input is always redirected and closed after writing <paramref name="stdin"/>, so a child never waits for a terminal.
    /// On timeout (default <see cref="DefaultTimeout"/>, <see cref="Timeout.InfiniteTimeSpan"/> for none) the process tree is killed
    /// and a <see cref="TimeoutException"/> is thrown.
    /// </summary>
    public static (int ExitCode, string StdOut, string StdErr) Run(string fileName, IEnumerable<string> args,
        IDictionary<string, string?>? environment = null, string? stdin = null, TimeSpan? timeout = null)
        => Run(fileName, args, environment, stdin, timeout, workingDirectory: null);

    internal static (int ExitCode, string StdOut, string StdErr) Run(string fileName, IEnumerable<string> args,
        IDictionary<string, string?>? environment, string? stdin, TimeSpan? timeout, string? workingDirectory)
    {
        var info = new ProcessStartInfo(fileName)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardInputEncoding = utf8,
            StandardOutputEncoding = utf8,
            StandardErrorEncoding = utf8,
            WorkingDirectory = workingDirectory ?? "",
        };
        foreach (var arg in args) info.ArgumentList.Add(arg);
        foreach (var (key, value) in environment ?? new Dictionary<string, string?>())
        {
            if (value is null) info.Environment.Remove(key);
            else info.Environment[key] = value;
        }

        var limit = timeout ?? DefaultTimeout;
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(info) ?? throw new InvalidOperationException($"Could not start '{fileName}'.");
        // Both pipes are drained concurrently, and stdin is fed on its own task, so no pipe buffer can fill up and deadlock.
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        var feeding = Task.Run(() =>
        {
            try
            {
                using var input = process.StandardInput;
                if (stdin is not null) input.Write(stdin);
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException) { } // child exited without reading it
        });

        var finished = process.WaitForExit(limit) && Task.WaitAll([stdout, stderr], Remaining(limit, clock));
        if (!finished)
        {
            try { process.Kill(entireProcessTree: true); process.WaitForExit(5000); }
            catch (InvalidOperationException) { } // already gone
            feeding.Wait(5000);
            throw new TimeoutException($"'{fileName} {string.Join(' ', info.ArgumentList)}' did not finish within {limit} and was killed.");
        }
        // The feeding task closes stdin; Process.Dispose closes it too, and the two must not race.
        feeding.Wait();
        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    static TimeSpan Remaining(TimeSpan limit, Stopwatch clock) =>
        limit == Timeout.InfiniteTimeSpan ? limit : TimeSpan.FromTicks(Math.Max(0, (limit - clock.Elapsed).Ticks));
}
