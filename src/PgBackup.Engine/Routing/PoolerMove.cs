using Npgsql;
using PgBackup.Engine.Connection;

namespace PgBackup.Engine.Routing;

/// <summary>
/// The PgBouncers moved with one change of primary (a switchover or a failover, PgBackup's own or Patroni's): paused
/// before the change, pointed at the new primary and resumed after it, and, when the change fails midway, resumed
/// toward whichever server is the primary then. No pooler is left paused.
/// </summary>
public sealed class PoolerMove(IReadOnlyList<PgBouncerPooler> poolers, IOperationReporter reporter)
{
    private readonly List<PgBouncerPooler> _paused = [];

    public bool IsEmpty => poolers.Count == 0;
    public string Noun => poolers.Count > 1 ? "PgBouncers" : "PgBouncer";

    /// <summary>PAUSE every pooler's databases, each bounded by <paramref name="timeout"/>.</summary>
    public async Task PauseAsync(TimeSpan timeout, CancellationToken ct)
    {
        foreach (var pooler in poolers)
        {
            _paused.Add(pooler);
            await pooler.PauseAsync(timeout, reporter, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Points the paused poolers at the new primary and resumes them; what each did is in its <see cref="PoolerSwitch"/>.</summary>
    public async Task<PoolerSwitch[]> ResumeAsync(ConnectionTarget primary, CancellationToken ct)
    {
        var moved = new List<PoolerSwitch>();
        foreach (var pooler in _paused) moved.Add(await pooler.ResumeAsync(primary, reporter, ct).ConfigureAwait(false));
        _paused.Clear();
        return [.. moved];
    }

    /// <summary>
    /// After a failure: resumes every pooler still paused toward the server <paramref name="primaryNow"/> finds
    /// (where it pointed before, when it finds none). Never throws, so the failure itself reaches the user.
    /// </summary>
    public async Task RecoverAsync(Func<Task<ConnectionTarget?>> primaryNow)
    {
        if (_paused.Count == 0) return;
        ConnectionTarget? primary = null;
        try { primary = await primaryNow().ConfigureAwait(false); }
        catch (Exception ex) when (ex is PgBackupException or NpgsqlException or OperationCanceledException or HttpRequestException) { reporter.Verbose($"The primary could not be found: {ex.Message}"); }
        foreach (var pooler in _paused)
        {
            var resumed = await pooler.ResumeAsync(primary, reporter, CancellationToken.None).ConfigureAwait(false);
            reporter.Warning($"The change of primary failed; the PgBouncer at {resumed.Pooler} was resumed toward {(primary?.Display ?? resumed.PointsTo + ", since no server answers as the primary")}.");
        }
        _paused.Clear();
    }
}
