using System.Globalization;
using System.Security.Cryptography;
using Npgsql;
using PgBackup.Engine.Connection;

namespace PgBackup.Engine.Logical;

/// <summary>
/// A restore into a new database is written into a staging database ("pgbackup_restoring_&lt;token&gt;") and renamed to
/// the target only once it is complete, so an interrupted restore never leaves a half-restored database under the name
/// a user asked for, and -Create -Force drops the old database only when the new one is ready. While it works, the
/// restoring process holds an advisory lock named after the token on a session of its own; the server releases it when
/// that process goes, however it goes. A staging database whose lock nobody holds is therefore abandoned, and the next
/// restore into the server drops it: the dump it came from is still there to restore again.
/// </summary>
public sealed class RestoreStaging : IAsyncDisposable
{
    public const string Prefix = "pgbackup_restoring_";
    // The first key of the two-key advisory lock: "PGBR".
    private const int LockClass = 0x50474252;

    private readonly NpgsqlConnection _session;
    private readonly ConnectionTarget _target;
    private readonly int _major;
    private bool _done;

    private RestoreStaging(NpgsqlConnection session, ConnectionTarget target, string name, int major)
    {
        _session = session;
        _target = target;
        Name = name;
        _major = major;
    }

    /// <summary>The staging database the tool restores into.</summary>
    public string Name { get; }
    public ConnectionTarget Target => _target.WithDatabase(Name);

    /// <summary>Cleans up after interrupted restores on the server, then creates the staging database under its lock.</summary>
    public static async Task<RestoreStaging> CreateAsync(ConnectionTarget target, string source, string? encoding, int major, IOperationReporter reporter, CancellationToken ct)
    {
        var session = await ServerSession.OpenAsync(MaintenanceOf(target), ct).ConfigureAwait(false);
        try
        {
            await DropAbandonedAsync(session, target, major, reporter, ct).ConfigureAwait(false);
            var token = Convert.ToHexString(RandomNumberGenerator.GetBytes(6)).ToLowerInvariant();
            var name = Prefix + token;
            await ServerSession.ExecuteAsync(session, $"select pg_advisory_lock({LockClass}, {LockKey(token)})", target, ct).ConfigureAwait(false);
            var encodingClause = string.IsNullOrEmpty(encoding) ? "" : $" encoding '{encoding.Replace("'", "''")}'";
            await ServerSession.ExecuteAsync(session, $"create database {ServerSession.QuoteIdentifier(name)} template template0{encodingClause}", target, ct).ConfigureAwait(false);
            var staging = new RestoreStaging(session, target, name, major);
            await staging.CommentAsync($"PgBackup restore of {source} into {target.Database}, by process {Environment.ProcessId} on {Environment.MachineName} since {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm:ss} UTC; not a finished database", ct).ConfigureAwait(false);
            return staging;
        }
        catch
        {
            await session.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Puts the restored database in place: drops the database it replaces when asked to, and renames it to the target.</summary>
    public async Task CommitAsync(bool replaceExisting, IOperationReporter reporter, CancellationToken ct)
    {
        if (replaceExisting)
        {
            reporter.Milestone($"Dropping database '{_target.Database}' on {_target.Display}, which the restored one replaces");
            await ServerSession.ExecuteAsync(_session, $"drop database if exists {ServerSession.QuoteIdentifier(_target.Database)}{Force(_major)}", _target, ct).ConfigureAwait(false);
        }
        await ServerSession.ExecuteAsync(_session, $"alter database {ServerSession.QuoteIdentifier(Name)} rename to {ServerSession.QuoteIdentifier(_target.Database)}", _target, ct).ConfigureAwait(false);
        await ServerSession.ExecuteAsync(_session, $"comment on database {ServerSession.QuoteIdentifier(_target.Database)} is null", _target, ct).ConfigureAwait(false);
        _done = true;
    }

    /// <summary>Without a commit, drops the staging database; always ends the session, which releases the lock.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_done && _session.State == System.Data.ConnectionState.Open)
                await ServerSession.ExecuteAsync(_session, $"drop database if exists {ServerSession.QuoteIdentifier(Name)}{Force(_major)}", _target, CancellationToken.None).ConfigureAwait(false);
        }
        catch (PgBackupException) { /* the next restore into this server removes it */ }
        finally { await _session.DisposeAsync().ConfigureAwait(false); }
    }

    /// <summary>Drops the staging databases nobody restores into any more.</summary>
    private static async Task DropAbandonedAsync(NpgsqlConnection session, ConnectionTarget target, int major, IOperationReporter reporter, CancellationToken ct)
    {
        var staged = new List<(string Name, string Comment)>();
        var held = new HashSet<long>();
        await using (var command = new NpgsqlCommand(
            $"select datname, coalesce(shobj_description(oid, 'pg_database'), '') from pg_database where datname like '{Prefix.Replace("_", "\\_")}%'", session))
        await using (var reader = await command.ExecuteReaderAsync(ct).ConfigureAwait(false))
            while (await reader.ReadAsync(ct).ConfigureAwait(false)) staged.Add((reader.GetString(0), reader.GetString(1)));
        if (staged.Count == 0) return;
        await using (var command = new NpgsqlCommand($"select objid::bigint from pg_locks where locktype = 'advisory' and classid = {LockClass} and objsubid = 2", session))
        await using (var reader = await command.ExecuteReaderAsync(ct).ConfigureAwait(false))
            while (await reader.ReadAsync(ct).ConfigureAwait(false)) held.Add(reader.GetInt64(0));

        foreach (var (name, comment) in staged)
        {
            var token = name[Prefix.Length..];
            if (token.Length < 8 || !uint.TryParse(token[..8], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var key) || held.Contains(key)) continue;
            await ServerSession.ExecuteAsync(session, $"drop database if exists {ServerSession.QuoteIdentifier(name)}{Force(major)}", target, ct).ConfigureAwait(false);
            reporter.Milestone($"Dropped '{name}' on {target.Display}, the unfinished database of an interrupted restore ({comment}).");
        }
    }

    private async Task CommentAsync(string comment, CancellationToken ct) =>
        await ServerSession.ExecuteAsync(_session, $"comment on database {ServerSession.QuoteIdentifier(Name)} is '{comment.Replace("'", "''")}'", _target, ct).ConfigureAwait(false);

    private static int LockKey(string token) => unchecked((int)uint.Parse(token[..8], NumberStyles.HexNumber, CultureInfo.InvariantCulture));

    private static string Force(int major) => major >= 13 ? " with (force)" : "";

    /// <summary>The database to connect to for work on other databases: postgres, or template1 when postgres is the target.</summary>
    public static ConnectionTarget MaintenanceOf(ConnectionTarget target) => target.WithDatabase(target.Database == "postgres" ? "template1" : "postgres");
}
