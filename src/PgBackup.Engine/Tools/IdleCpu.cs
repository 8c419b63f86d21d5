using System.Runtime.InteropServices;

namespace PgBackup.Engine.Tools;

/// <summary>
/// Lets the calling thread run only on CPU time nothing else wants (SCHED_IDLE on Linux, the lowest thread priority on
/// Windows), and puts it back to normal later from any thread. For work that shares the machine with a PostgreSQL tool and
/// must not slow it down, such as checksumming a base backup while pg_basebackup writes it.
/// </summary>
public sealed class IdleCpu
{
    private const int SchedOther = 0;
    private const int SchedIdle = 5;

    private readonly Thread _thread;
    private readonly int? _linuxThreadId;
    private readonly ThreadPriority _priority;
    private int _left;

    private IdleCpu(Thread thread, int? linuxThreadId, ThreadPriority priority)
    {
        _thread = thread;
        _linuxThreadId = linuxThreadId;
        _priority = priority;
    }

    /// <summary>Lowers the calling thread; where the operating system does not allow it, the thread stays as it is.</summary>
    public static IdleCpu Enter()
    {
        var thread = Thread.CurrentThread;
        if (OperatingSystem.IsLinux())
        {
            try
            {
                var id = gettid();
                var param = new SchedParam();
                return new IdleCpu(thread, sched_setscheduler(id, SchedIdle, ref param) == 0 ? id : null, thread.Priority);
            }
            catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException) { return new IdleCpu(thread, null, thread.Priority); }
        }
        var priority = thread.Priority;
        if (OperatingSystem.IsWindows()) thread.Priority = ThreadPriority.Lowest;
        return new IdleCpu(thread, null, priority);
    }

    /// <summary>Back to normal scheduling; safe to call more than once and from another thread.</summary>
    public void Leave()
    {
        if (Interlocked.Exchange(ref _left, 1) == 1) return;
        if (_linuxThreadId is { } id)
        {
            var param = new SchedParam();
            _ = sched_setscheduler(id, SchedOther, ref param);
        }
        else if (OperatingSystem.IsWindows() && _thread.IsAlive)
        {
            try { _thread.Priority = _priority; }
            catch (ThreadStateException) { /* the thread has ended */ }
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct SchedParam
    {
        public int Priority;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int gettid();

    [DllImport("libc", SetLastError = true)]
    private static extern int sched_setscheduler(int pid, int policy, ref SchedParam param);
}
