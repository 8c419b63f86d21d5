using System.Collections.Concurrent;
using System.Diagnostics;

namespace PgBackup.Engine.Tools;

/// <summary>
/// Starts the PostgreSQL tools so that they die with the PowerShell process that started them, even when it is killed
/// with SIGKILL (a runbook worker recycled, an OOM kill): a pg_dump or pg_basebackup that outlived it would keep loading
/// the server and writing into a backup nobody will finish.
/// </summary>
/// <remarks>
/// On Linux a tool starts as the child of a small shell in a session of its own, and util-linux's setpriv asks the
/// kernel to send that shell SIGTERM when its parent goes (--pdeathsig); the shell then kills its whole session, the
/// tool and whatever the tool forked (pg_basebackup's WAL streamer is a child of pg_basebackup, which a signal to
/// pg_basebackup alone would orphan). The kernel means the parent thread, so every tool is started from one thread that
/// lives as long as the process: a thread-pool thread may be retired while the tool still runs. Where setpriv or setsid
/// is missing (or on other systems) tools start directly, and a killed PowerShell leaves them running until they finish
/// or fail.
/// </remarks>
public static class ChildProcesses
{
    // $0 is the tool and $@ its arguments. stdin goes through fd 3 because a shell gives a background job /dev/null.
    private const string Supervisor = "trap 'kill -KILL 0' TERM; exec 3<&0; \"$0\" \"$@\" <&3 3<&- & wait $!";
    private static readonly Lazy<string[]?> Wrapper = new(FindWrapper);
    private static readonly BlockingCollection<(Process Process, TaskCompletionSource Started)> Requests = [];
    private static readonly Lazy<Thread> Starter = new(() =>
    {
        var thread = new Thread(StartRequests) { IsBackground = true, Name = "PgBackup tool starter" };
        thread.Start();
        return thread;
    });

    /// <summary>The program and arguments that run <paramref name="path"/> tied to this process's life.</summary>
    public static (string FileName, IReadOnlyList<string> Arguments) TiedToThisProcess(string path, IEnumerable<string> arguments) =>
        Wrapper.Value is { } wrapper ? (wrapper[0], [.. wrapper[1..], path, .. arguments]) : (path, [.. arguments]);

    /// <summary>Whether tools started here die with this process.</summary>
    public static bool AreTied => Wrapper.Value != null;

    /// <summary>Process.Start on the long-lived starter thread (see the remarks); its exceptions are rethrown here.</summary>
    public static void Start(Process process)
    {
        if (Wrapper.Value == null)
        {
            process.Start();
            return;
        }
        _ = Starter.Value;
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Requests.Add((process, started));
        started.Task.GetAwaiter().GetResult();
    }

    private static void StartRequests()
    {
        foreach (var (process, started) in Requests.GetConsumingEnumerable())
        {
            try
            {
                process.Start();
                started.SetResult();
            }
            catch (Exception ex) { started.SetException(ex); }
        }
    }

    /// <summary>setpriv --pdeathsig TERM -- setsid /bin/sh -c Supervisor, when this system has them all and they work.</summary>
    private static string[]? FindWrapper()
    {
        if (!OperatingSystem.IsLinux()) return null;
        var setpriv = new[] { "/usr/bin/setpriv", "/bin/setpriv" }.FirstOrDefault(File.Exists);
        var setsid = new[] { "/usr/bin/setsid", "/bin/setsid" }.FirstOrDefault(File.Exists);
        if (setpriv == null || setsid == null || !File.Exists("/bin/sh")) return null;
        string[] wrapper = [setpriv, "--pdeathsig", "TERM", "--", setsid, "/bin/sh", "-c", Supervisor];
        try
        {
            // util-linux before 2.33 has no --pdeathsig.
            var probe = new ProcessStartInfo(wrapper[0]) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardInput = true };
            foreach (var argument in wrapper[1..].Append("/bin/true")) probe.ArgumentList.Add(argument);
            using var process = Process.Start(probe)!;
            process.StandardInput.Close();
            process.StandardError.ReadToEnd();
            process.WaitForExit();
            return process.ExitCode == 0 ? wrapper : null;
        }
        catch (System.ComponentModel.Win32Exception) { return null; }
    }
}
