using System.Diagnostics;
using System.Globalization;

namespace PgBackup.WalArchive;

/// <summary>
/// Parallel, asynchronous push (push --parallel &lt;n&gt;): PostgreSQL asks for one segment at a time, so while it waits, a
/// background pusher archives the segments that are ready next (the .ready files of pg_wal/archive_status), n at a time,
/// and the following calls find theirs already done.
///
/// The spool, pg_wal/pgbackup_archive_spool (pg_basebackup and pg_rewind leave pg_wal's contents out of copies):
/// - worker.lock, held by the one background pusher while it runs;
/// - &lt;file&gt;.lock, held by whoever pushes that file (the pusher or the foreground), so nothing is pushed twice at once;
/// - &lt;file&gt;.ok, written by the pusher after the file is committed with its checksum in the repository, with the size
///   and modification time the file had when the push read it. The foreground acknowledges a file to PostgreSQL only
///   from a matching .ok, or after pushing it itself: never before it is committed.
/// Locks are the operating system's (flock on Unix), released when a process dies, so killing either at any point loses
/// nothing: a push cut short leaves no .ok, and the next one finds the archive's copy and compares it, as PostgreSQL's own
/// repeated pushes do.
/// </summary>
internal static class AheadPusher
{
    public const string WorkerCommand = "push-ahead";
    public const string SpoolName = "pgbackup_archive_spool";
    private const string WorkerLock = "worker.lock";
    private const string WorkerLog = "worker.log";
    /// <summary>The archive the running pusher pushes into, and the request to stop it.</summary>
    private const string WorkerArchive = "worker.archive", WorkerStop = "worker.stop";
    /// <summary>The pusher ends after this long with nothing to push; the next call starts another.</summary>
    private static readonly TimeSpan IdleExit = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan LongestBackoff = TimeSpan.FromSeconds(30);

    /// <summary>The foreground: PostgreSQL's call for one file.</summary>
    /// <param name="pushNow">Pushes the file in this process, as without --parallel.</param>
    /// <param name="workerArguments">The arguments that start the background pusher for this archive.</param>
    /// <param name="archive">Where this command archives: a pusher for another archive (archive_command changed) is told to stop.</param>
    public static int Push(string source, string archive, Func<int> pushNow, string[] workerArguments)
    {
        var full = Path.GetFullPath(source);
        var spool = Path.Combine(Path.GetDirectoryName(full)!, SpoolName);
        try { Directory.CreateDirectory(spool); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return pushNow(); }
        var name = Path.GetFileName(full);
        var asked = DateTime.UtcNow;
        StartWorker(spool, archive, workerArguments);
        using var claim = Claim(spool, name);
        if (TakeAcknowledgement(spool, name, full, archive)) return 0;
        // The pusher failed on this file while this call waited for it: report that rather than spend another round of
        // retries (a server that shuts down waits for the running archive_command).
        if (TakeFailure(spool, name, asked) is { } failure)
        {
            Console.Error.WriteLine("pgbackup-wal: " + failure);
            return 1;
        }
        var file = new FileInfo(full);
        var identity = file.Exists ? Identity(file, archive) : null;
        var result = pushNow();
        // Until PostgreSQL marks the file done, the pusher could take it up again: the .ok says it is committed.
        if (result == 0 && identity != null) File.WriteAllText(Path.Combine(spool, name + ".ok"), identity);
        return result;
    }

    /// <summary>The background pusher (pgbackup-wal push-ahead &lt;pg_wal&gt; &lt;archive&gt; ... --parallel &lt;n&gt;).</summary>
    /// <param name="push">Pushes one file of pg_wal, with the same result codes as push.</param>
    public static int Work(string walFolder, string archive, int parallel, Func<string, int> push)
    {
        var spool = Path.Combine(walFolder, SpoolName);
        var status = Path.Combine(walFolder, "archive_status");
        Directory.CreateDirectory(spool);
        using var worker = TryLock(Path.Combine(spool, WorkerLock));
        if (worker == null) return 0; // another pusher runs
        LogToSpool(spool);
        var stop = Path.Combine(spool, WorkerStop);
        File.Delete(stop);
        File.WriteAllText(Path.Combine(spool, WorkerArchive), archive);

        var gate = new object();
        var inFlight = new HashSet<string>(StringComparer.Ordinal);
        var failures = new Dictionary<string, (int Count, DateTime RetryAt)>(StringComparer.Ordinal);
        using var slots = new SemaphoreSlim(parallel);
        var idle = Stopwatch.StartNew();
        var sweep = Stopwatch.StartNew();
        while (Directory.Exists(status) && !File.Exists(stop))
        {
            var started = 0;
            foreach (var name in ReadyFiles(status))
            {
                lock (gate)
                    if (inFlight.Contains(name) || (failures.TryGetValue(name, out var failed) && failed.RetryAt > DateTime.UtcNow)) continue;
                if (File.Exists(Path.Combine(spool, name + ".ok"))) continue;
                if (!slots.Wait(0)) break;
                lock (gate) inFlight.Add(name);
                started++;
                _ = Task.Run(() =>
                {
                    try
                    {
                        var result = PushOne(spool, status, walFolder, name, archive, push);
                        lock (gate)
                        {
                            if (result is 0 or null) failures.Remove(name);
                            else
                            {
                                var count = failures.TryGetValue(name, out var before) ? before.Count + 1 : 1;
                                var wait = TimeSpan.FromSeconds(Math.Min(LongestBackoff.TotalSeconds, Math.Pow(2, count - 1)));
                                failures[name] = (count, DateTime.UtcNow + wait);
                            }
                        }
                    }
                    catch (Exception ex) { Console.Error.WriteLine($"pgbackup-wal: pushing {name} ahead failed: {ex.Message}"); }
                    finally
                    {
                        lock (gate) inFlight.Remove(name);
                        slots.Release();
                    }
                });
            }
            bool busy;
            lock (gate) busy = started > 0 || inFlight.Count > 0;
            if (busy) idle.Restart();
            else if (idle.Elapsed > IdleExit) break;
            if (sweep.Elapsed > TimeSpan.FromSeconds(1))
            {
                Sweep(spool, status);
                sweep.Restart();
            }
            if (started > 0) continue;
            // Every slot taken: wait for a push to end rather than list archive_status again meanwhile.
            if (slots.CurrentCount == 0)
            {
                if (slots.Wait(100)) slots.Release();
            }
            else Thread.Sleep(10);
        }
        for (var i = 0; i < parallel; i++) slots.Wait();
        Sweep(spool, status);
        return 0;
    }

    /// <returns>The push's result; null when the file needs no push from here (taken by the foreground, or already done).</returns>
    private static int? PushOne(string spool, string status, string walFolder, string name, string archive, Func<string, int> push)
    {
        using var claim = TryLock(Path.Combine(spool, name + ".lock"));
        if (claim == null || !File.Exists(Path.Combine(status, name + ".ready")) || File.Exists(Path.Combine(spool, name + ".ok"))) return null;
        var source = new FileInfo(Path.Combine(walFolder, name));
        if (!source.Exists) return null;
        // What the file is as the push reads it: a later call trusts the .ok only for the same file.
        var identity = Identity(source, archive);
        Program.LastError = null;
        int result;
        try { result = push(source.FullName); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or HttpRequestException or ArgumentException)
        {
            result = Program.Error(1, $"could not archive {name} into {Program.WithoutQuery(archive)}: {ex.Message}");
        }
        if (result == 0) File.WriteAllText(Path.Combine(spool, name + ".ok"), identity);
        else File.WriteAllText(Path.Combine(spool, name + ".failed"), Program.LastError ?? $"the background pusher could not archive {name} (exit code {result})");
        return result;
    }

    /// <summary>The pusher's failure on this file since <paramref name="since"/>, consumed; null when there is none that recent.</summary>
    private static string? TakeFailure(string spool, string name, DateTime since)
    {
        var marker = new FileInfo(Path.Combine(spool, name + ".failed"));
        if (!marker.Exists) return null;
        string? text = null;
        try { if (marker.LastWriteTimeUtc >= since) text = File.ReadAllText(marker.FullName); }
        catch (FileNotFoundException) { }
        File.Delete(marker.FullName);
        return text;
    }

    /// <summary>True, and the .ok consumed, when the pusher committed this very file; a stale .ok is removed.</summary>
    private static bool TakeAcknowledgement(string spool, string name, string source, string archive)
    {
        var marker = Path.Combine(spool, name + ".ok");
        string recorded;
        try { recorded = File.ReadAllText(marker); }
        catch (FileNotFoundException) { return false; }
        var info = new FileInfo(source);
        var matches = info.Exists && recorded == Identity(info, archive);
        File.Delete(marker);
        return matches;
    }

    /// <summary>The file as the push read it, and the archive it went to: an .ok says "this file is committed there".</summary>
    private static string Identity(FileInfo file, string archive) =>
        file.Length.ToString(CultureInfo.InvariantCulture) + " " + file.LastWriteTimeUtc.Ticks.ToString(CultureInfo.InvariantCulture) + "\n" + archive;

    /// <summary>The ready files in PostgreSQL's order: timeline history files first, then by name.</summary>
    private static IEnumerable<string> ReadyFiles(string status)
    {
        string[] ready;
        try { ready = Directory.GetFiles(status, "*.ready"); }
        catch (DirectoryNotFoundException) { return []; }
        return ready.Select(p => Path.GetFileNameWithoutExtension(p))
            .OrderBy(n => n.EndsWith(".history", StringComparison.Ordinal) ? 0 : 1).ThenBy(n => n, StringComparer.Ordinal).ToList();
    }

    /// <summary>Removes the .ok and .lock of files PostgreSQL no longer waits for (its .ready is gone).</summary>
    private static void Sweep(string spool, string status)
    {
        foreach (var path in Directory.EnumerateFiles(spool))
        {
            var file = Path.GetFileName(path);
            var extension = Path.GetExtension(file);
            if (extension is not (".ok" or ".failed" or ".lock") || file == WorkerLock) continue;
            var name = file[..^extension.Length];
            if (File.Exists(Path.Combine(status, name + ".ready"))) continue;
            try
            {
                using (var claim = TryLock(Path.Combine(spool, name + ".lock")))
                {
                    if (claim == null) continue;
                    File.Delete(Path.Combine(spool, name + ".ok"));
                    File.Delete(Path.Combine(spool, name + ".failed"));
                }
                File.Delete(Path.Combine(spool, name + ".lock"));
            }
            catch (IOException) { } // taken again meanwhile (Windows refuses to delete an open file): the next sweep

        }
    }

    /// <summary>Starts the background pusher unless one runs; it exits at once if another won the race to start.</summary>
    private static void StartWorker(string spool, string archive, string[] arguments)
    {
        using (var probe = TryLock(Path.Combine(spool, WorkerLock)))
        {
            if (probe == null)
            {
                // A pusher for another archive (archive_command was changed) ends after its pushes in flight; the next call starts ours.
                string? running = null;
                try { running = File.ReadAllText(Path.Combine(spool, WorkerArchive)); }
                catch (FileNotFoundException) { }
                if (running != null && running != archive) File.WriteAllText(Path.Combine(spool, WorkerStop), "");
                return;
            }
        }
        var start = new ProcessStartInfo(Environment.ProcessPath!)
        {
            UseShellExecute = false,
            // Not PostgreSQL's output: whoever waits for this push to end must not wait for the pusher too.
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        // The portable tool runs through the dotnet host; the native one is its own program.
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
            start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "pgbackup-wal.dll"));
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        try
        {
            using var process = Process.Start(start);
            process?.StandardInput.Close();
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or IOException)
        {
            Console.Error.WriteLine($"pgbackup-wal: could not start the background pusher ({ex.Message}); pushing one segment at a time");
        }
    }

    /// <summary>Waits for the lock of one file (the pusher holds it for at most one push).</summary>
    private static FileStream Claim(string spool, string name)
    {
        var path = Path.Combine(spool, name + ".lock");
        while (true)
        {
            if (TryLock(path) is { } claim) return claim;
            Thread.Sleep(5);
        }
    }

    internal static FileStream? TryLock(string path)
    {
        try { return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, bufferSize: 1); }
        catch (IOException) when (File.Exists(path)) { return null; }
    }

    /// <summary>The pusher's messages go to a log in the spool: nobody reads its standard error.</summary>
    private static void LogToSpool(string spool)
    {
        var path = Path.Combine(spool, WorkerLog);
        var log = new FileStream(path, FileMode.OpenOrCreate, FileAccess.Write, FileShare.ReadWrite);
        if (log.Length > 1 << 20) log.SetLength(0);
        log.Seek(0, SeekOrigin.End);
        Console.SetError(new StreamWriter(log) { AutoFlush = true });
        Console.SetOut(TextWriter.Null);
    }
}
