using System.Diagnostics;
using PgBackup.Engine.Connection;

namespace PgBackup.Engine.Physical;

/// <summary>
/// Notices a base backup that hangs. pg_basebackup has no timeout of its own: against a server that stops responding
/// (hung, SIGSTOPped, its disk stuck, a network that drops packets without resetting the connection) it waits forever.
/// When pg_basebackup has reported nothing for the stall timeout, the server is asked a query; a server that answers is
/// busy (a spread checkpoint, WAL archiving at the end, -MaxRate) and the wait goes on, one that does not answer within
/// the timeout is given up on: <see cref="Token"/> is cancelled, which kills pg_basebackup.
/// </summary>
internal sealed class StallWatch : IDisposable
{
    private readonly ConnectionTarget _target;
    private readonly TimeSpan _timeout;
    private readonly IOperationReporter _reporter;
    private readonly CancellationTokenSource _cancel;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _watching;
    private long _lastReceived = Stopwatch.GetTimestamp();
    private volatile bool _stalled;

    public StallWatch(ConnectionTarget target, TimeSpan timeout, IOperationReporter reporter, CancellationToken ct)
    {
        if (timeout <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "The stall timeout must be positive.");
        _target = target;
        _timeout = timeout;
        _reporter = reporter;
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(ct);
        _watching = Task.Run(WatchAsync);
    }

    /// <summary>Cancelled when the user cancels, or when the backup is given up as hung (<see cref="Stalled"/>).</summary>
    public CancellationToken Token => _cancel.Token;

    public bool Stalled => _stalled;

    /// <summary>pg_basebackup reported something: progress, a step, a message.</summary>
    public void Received() => Interlocked.Exchange(ref _lastReceived, Stopwatch.GetTimestamp());

    public void Stop()
    {
        _stop.Cancel();
        try { _watching.Wait(TimeSpan.FromSeconds(30)); }
        catch (AggregateException) { }
    }

    private async Task WatchAsync()
    {
        var tick = TimeSpan.FromMilliseconds(Math.Clamp(_timeout.TotalMilliseconds / 10, 100, 1000));
        try
        {
            while (!_stop.IsCancellationRequested && !_cancel.IsCancellationRequested)
            {
                await Task.Delay(tick, _stop.Token).ConfigureAwait(false);
                var quiet = Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastReceived));
                if (quiet < _timeout) continue;
                if (await AnswersAsync().ConfigureAwait(false))
                {
                    _reporter.Verbose($"pg_basebackup has received nothing for {quiet.TotalSeconds:0} s, but {_target.Display} answers (a checkpoint, WAL archiving or -MaxRate); waiting.");
                    Received();
                    continue;
                }
                if (_stop.IsCancellationRequested) return;
                _stalled = true;
                _reporter.Warning($"The base backup of {_target.Display} has received nothing for {quiet.TotalSeconds:0} s and the server does not answer: stopping pg_basebackup.");
                _cancel.Cancel();
                return;
            }
        }
        catch (OperationCanceledException) { }
    }

    private async Task<bool> AnswersAsync()
    {
        using var patience = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        patience.CancelAfter(_timeout);
        try
        {
            var seconds = (int)Math.Clamp(_timeout.TotalSeconds, 1, 60);
            await using var connection = await ServerSession.OpenAsync(_target with { ConnectTimeoutSeconds = seconds }, patience.Token).ConfigureAwait(false);
            await ServerSession.ScalarAsync<int>(connection, "select 1", patience.Token).ConfigureAwait(false);
            return true;
        }
        catch (Exception ex) when (ex is PgBackupException or OperationCanceledException or Npgsql.NpgsqlException or TimeoutException or IOException) { return false; }
    }

    public void Dispose()
    {
        Stop();
        _cancel.Dispose();
        _stop.Dispose();
    }
}
