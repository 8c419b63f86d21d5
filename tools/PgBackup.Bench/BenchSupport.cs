using System.Diagnostics;
using System.Management.Automation;
using System.Management.Automation.Runspaces;

/// <summary>What every benchmark mode needs: the built module, a runspace that imports it, a stopwatch and a median.</summary>
public static class BenchSupport
{
    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PgBackup.sln"))) return dir.FullName;
        throw new InvalidOperationException("Run the benchmark from inside the PgBackup repository.");
    }

    public static string ModuleManifest() =>
        Directory.GetFiles(Path.Combine(RepositoryRoot(), "out", "PgBackup"), "PgBackup.psd1", SearchOption.AllDirectories).Single();

    public static Runspace OpenRunspaceWithModule()
    {
        var runspace = RunspaceFactory.CreateRunspace(InitialSessionState.CreateDefault2());
        runspace.Open();
        Invoke(runspace, $"Import-Module '{ModuleManifest()}' -ErrorAction Stop");
        return runspace;
    }

    public static void Invoke(Runspace runspace, string script)
    {
        using var ps = PowerShell.Create();
        ps.Runspace = runspace;
        ps.AddScript(script);
        ps.Invoke();
        if (ps.HadErrors) throw new InvalidOperationException(string.Join("; ", ps.Streams.Error));
    }

    public static string InvokeText(Runspace runspace, string script)
    {
        using var ps = PowerShell.Create();
        ps.Runspace = runspace;
        ps.AddScript(script);
        return string.Join(" ", ps.Invoke().Select(o => o?.ToString()));
    }

    public static TimeSpan Time(Action action)
    {
        var sw = Stopwatch.StartNew();
        action();
        return sw.Elapsed;
    }

    /// <summary>CPU time of this process: the module runs in it.</summary>
    public static TimeSpan ProcessorTime() => Process.GetCurrentProcess().TotalProcessorTime;

    /// <summary>CPU time of the child processes waited for (pg_basebackup, pg_dump...), from /proc/self/stat on Linux.</summary>
    public static TimeSpan ChildProcessorTime()
    {
        if (!OperatingSystem.IsLinux()) return TimeSpan.Zero;
        var stat = File.ReadAllText("/proc/self/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        // cutime and cstime are fields 16 and 17 of the whole line, in clock ticks (100 per second on Linux).
        return TimeSpan.FromSeconds((long.Parse(fields[13]) + long.Parse(fields[14])) / 100.0);
    }

    public static TimeSpan Median(List<TimeSpan> times) => times.Order().ElementAt(times.Count / 2);
}
