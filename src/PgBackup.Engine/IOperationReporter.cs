namespace PgBackup.Engine;

/// <summary>
/// How the engine tells its caller what it is doing. Cmdlets forward these to Write-Progress,
/// Write-Verbose, Write-Warning and Write-Information on the pipeline thread.
/// </summary>
public interface IOperationReporter
{
    /// <param name="percent">0-100, or -1 when PostgreSQL gives no measure.</param>
    void Progress(string activity, string status, int percent);
    void ProgressCompleted(string activity);
    void Verbose(string message);
    void Warning(string message);
    /// <summary>Milestones; Azure Automation shows no progress bars, so these also go to the information stream.</summary>
    void Milestone(string message);
}

public sealed class NullReporter : IOperationReporter
{
    public static readonly NullReporter Instance = new();
    public void Progress(string activity, string status, int percent) { }
    public void ProgressCompleted(string activity) { }
    public void Verbose(string message) { }
    public void Warning(string message) { }
    public void Milestone(string message) { }
}
