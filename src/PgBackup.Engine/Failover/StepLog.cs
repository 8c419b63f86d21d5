using System.Diagnostics;

namespace PgBackup.Engine.Failover;

/// <summary>The steps of a switchover or failover as they run: each is announced, timed and kept for the result.</summary>
internal sealed class StepLog(IOperationReporter reporter, string? activity = null)
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly List<SwitchoverStep> _steps = [];

    public TimeSpan Elapsed => _clock.Elapsed;
    public SwitchoverStep[] Steps => [.. _steps];

    public async Task RunAsync(string name, int percent, Func<Task> work)
    {
        if (activity != null) reporter.Progress(activity, name, percent);
        reporter.Milestone(name);
        var started = Elapsed;
        await work().ConfigureAwait(false);
        Record(name, started);
    }

    /// <summary>A step whose name is known only once it has run.</summary>
    public void Record(string name, TimeSpan started) => _steps.Add(new SwitchoverStep { Name = name, Duration = Elapsed - started });

    public void Completed() { if (activity != null) reporter.ProgressCompleted(activity); }
}
