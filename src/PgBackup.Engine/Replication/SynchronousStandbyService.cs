using Npgsql;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Patroni;

namespace PgBackup.Engine.Replication;

public sealed record SynchronousStandbyRequest
{
    public required ConnectionTarget Primary { get; init; }
    /// <summary>Application names of the standbys; empty makes replication asynchronous again.</summary>
    public required IReadOnlyList<string> Standbys { get; init; }
    public SynchronousMode Mode { get; init; } = SynchronousMode.First;
    /// <summary>How many of the standbys must confirm each commit.</summary>
    public int Count { get; init; } = 1;
    /// <summary>synchronous_commit to set as well (on, remote_write, remote_apply, local, off); unchanged when null.</summary>
    public string? SynchronousCommit { get; init; }
    public bool Force { get; init; }
    public TimeSpan SettleTimeout { get; init; } = TimeSpan.FromSeconds(15);
}

/// <summary>
/// Set-PgSynchronousStandby: synchronous_standby_names and synchronous_commit through ALTER SYSTEM and a reload.
/// A configuration that would make every commit wait (fewer named standbys streaming than must confirm) is refused unless forced.
/// </summary>
public static class SynchronousStandbyService
{
    public static string Render(IReadOnlyList<string> standbys, SynchronousMode mode, int count) =>
        standbys.Count == 0 ? "" : $"{(mode == SynchronousMode.First ? "FIRST" : "ANY")} {count} ({string.Join(", ", standbys.Select(s => "\"" + s.Replace("\"", "\"\"") + "\""))})";

    /// <returns>The settings that would be applied, and the named standbys that are not streaming now.</returns>
    public static async Task<(string Names, IReadOnlyList<string> NotStreaming)> PlanAsync(SynchronousStandbyRequest request, CancellationToken ct)
    {
        Validate(request);
        await PatroniClient.RefuseIfManagedAsync(request.Primary, "change its synchronous replication",
            "Let Patroni manage synchronous replication: patronictl edit-config --set synchronous_mode=true (and synchronous_node_count), or PATCH /config on its REST API.", ct).ConfigureAwait(false);
        var snapshot = await ReplicationMonitor.ReadAsync(request.Primary, includeSlots: false, ct).ConfigureAwait(false);
        if (snapshot.InRecovery)
            throw new PgBackupException("NotAPrimary", ErrorKind.InvalidOperation, $"{request.Primary.Display} is a standby; synchronous replication is configured on the primary.", request.Primary.Display,
                "Run the command against the primary (Get-PgReplicationStatus shows each server's role).");
        var streaming = snapshot.Links.Where(l => l.State == "streaming").Select(l => l.ApplicationName).ToHashSet(StringComparer.Ordinal);
        var notStreaming = request.Standbys.Where(s => !streaming.Contains(s)).ToList();
        var names = Render(request.Standbys, request.Mode, request.Count);
        if (request.Standbys.Count > 0 && request.Standbys.Count - notStreaming.Count < request.Count && !request.Force)
            throw new PgBackupException("SynchronousStandbyNotConnected", ErrorKind.InvalidOperation,
                $"synchronous_standby_names = '{names}' would make every commit on {request.Primary.Display} wait: {request.Count} of the named standbys must confirm, " +
                $"but {string.Join(", ", notStreaming.Select(n => $"'{n}'"))} {(notStreaming.Count == 1 ? "is" : "are")} not streaming " +
                $"(streaming now: {(streaming.Count == 0 ? "none" : string.Join(", ", streaming))}).", names,
                "Name standbys that stream now (their application_name, see Get-PgReplicationStatus), lower -Count, or pass -Force if commits may wait until they connect.");
        return (names, notStreaming);
    }

    public static async Task<SynchronousReplicationResult> ApplyAsync(SynchronousStandbyRequest request, string names, IOperationReporter reporter, CancellationToken ct)
    {
        await using var connection = await ServerSession.OpenAsync(request.Primary, ct).ConfigureAwait(false);
        try
        {
            await AlterAsync(connection, "synchronous_standby_names", names.Length == 0 ? null : names, ct).ConfigureAwait(false);
            if (request.SynchronousCommit != null) await AlterAsync(connection, "synchronous_commit", request.SynchronousCommit, ct).ConfigureAwait(false);
            await ServerSession.ScalarAsync<bool>(connection, "select pg_reload_conf()", ct).ConfigureAwait(false);
            reporter.Milestone($"synchronous_standby_names on {request.Primary.Display} is now '{names}'.");

            // The walsenders pick the change up on their next cycle; wait until the named standbys report sync/quorum.
            var deadline = DateTime.UtcNow + request.SettleTimeout;
            while (true)
            {
                var snapshot = await ReplicationMonitor.ReadAsync(request.Primary, includeSlots: false, ct).ConfigureAwait(false);
                var current = await ServerSession.ScalarAsync<string>(connection, "select current_setting('synchronous_standby_names')", ct).ConfigureAwait(false) ?? "";
                var settled = current == names && (names.Length == 0
                    ? snapshot.Links.All(l => l.SyncState == "async")
                    : snapshot.Links.Count(l => request.Standbys.Contains(l.ApplicationName) && l.SyncState is "sync" or "quorum" or "potential") >= Math.Min(request.Count, snapshot.Links.Count(l => request.Standbys.Contains(l.ApplicationName))));
                if (settled || DateTime.UtcNow > deadline)
                {
                    if (!settled) reporter.Warning($"The standbys of {request.Primary.Display} did not report the new synchronous state within {request.SettleTimeout}; check Get-PgReplicationStatus.");
                    return new SynchronousReplicationResult
                    {
                        Server = request.Primary.Host, Port = request.Primary.Port, SynchronousStandbyNames = current,
                        SynchronousCommit = await ServerSession.ScalarAsync<string>(connection, "select current_setting('synchronous_commit')", ct).ConfigureAwait(false) ?? "",
                        Forced = request.Force, Standbys = [.. snapshot.Links],
                    };
                }
                await Task.Delay(100, ct).ConfigureAwait(false);
            }
        }
        catch (NpgsqlException ex) when (!ct.IsCancellationRequested) { throw ServerSession.Translate(ex, request.Primary); }
    }

    private static async Task AlterAsync(NpgsqlConnection connection, string setting, string? value, CancellationToken ct)
    {
        // ALTER SYSTEM takes no parameters: the value is a quoted literal.
        var sql = value == null ? $"alter system reset {setting}" : $"alter system set {setting} = '{value.Replace("'", "''")}'";
        await using var cmd = new NpgsqlCommand(sql, connection);
        await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    private static void Validate(SynchronousStandbyRequest r)
    {
        if (r.Standbys.Count > 0 && (r.Count < 1 || r.Count > r.Standbys.Count))
            throw new PgBackupException("InvalidSynchronousCount", ErrorKind.InvalidArgument, $"-Count {r.Count} must be from 1 to the number of standbys named ({r.Standbys.Count}).", r.Count,
                "Lower -Count, or name more standbys.");
        if (r.SynchronousCommit is { } c && c is not ("on" or "remote_write" or "remote_apply" or "local" or "off"))
            throw new PgBackupException("InvalidSynchronousCommit", ErrorKind.InvalidArgument, $"'{c}' is not a synchronous_commit value.", c, "Use on, remote_write, remote_apply, local or off.");
    }
}
