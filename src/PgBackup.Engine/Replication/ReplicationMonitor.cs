using System.Diagnostics;
using System.Globalization;
using Npgsql;
using PgBackup.Engine.Connection;

namespace PgBackup.Engine.Replication;

/// <summary>What one server says about replication: its role, the standbys streaming from it, and, on a standby, its receiver and replay.</summary>
public sealed record ReplicationSnapshot(ConnectionTarget Target, bool InRecovery, Lsn CurrentLsn, IReadOnlyList<ReplicationLink> Links, StandbyStatus? Standby,
    IReadOnlyList<ReplicationSlot> Slots)
{
    /// <summary>Logical replication: this server's logical slots (as a publisher) and subscriptions.</summary>
    public IReadOnlyList<LogicalReplicationLink> LogicalLinks { get; init; } = [];

    public string Role => InRecovery ? "Standby" : "Primary";
}

/// <summary>
/// Reads pg_stat_replication, pg_stat_wal_receiver and pg_replication_slots into objects with lag in bytes and time,
/// judges them against thresholds for monitoring runbooks, and waits for standbys to replay a position.
/// </summary>
public static class ReplicationMonitor
{
    public static async Task<ReplicationSnapshot> ReadAsync(ConnectionTarget target, bool includeSlots, CancellationToken ct)
    {
        await using var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
        try { return await ReadAsync(connection, target, includeSlots, ct).ConfigureAwait(false); }
        catch (NpgsqlException ex) when (!ct.IsCancellationRequested) { throw ServerSession.Translate(ex, target); }
    }

    private static async Task<ReplicationSnapshot> ReadAsync(NpgsqlConnection connection, ConnectionTarget target, bool includeSlots, CancellationToken ct)
    {
        var info = await ServerSession.GetInfoAsync(connection, ct).ConfigureAwait(false);
        var inRecovery = await ServerSession.ScalarAsync<bool>(connection, "select pg_is_in_recovery()", ct).ConfigureAwait(false);
        // On a standby the newest WAL it has is what it received; that is what cascaded standbys and slots are measured against.
        var current = Lsn.Parse(await ServerSession.ScalarAsync<string>(connection,
            inRecovery ? "select coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text" : "select pg_current_wal_lsn()::text", ct).ConfigureAwait(false) ?? "0/0");
        var role = inRecovery ? "Standby" : "Primary";

        var links = new List<ReplicationLink>();
        await using (var cmd = new NpgsqlCommand("""
            select r.pid, coalesce(r.application_name, ''), coalesce(host(r.client_addr), ''), r.client_port, coalesce(r.state, ''), coalesce(r.sync_state, ''),
                   s.slot_name, r.sent_lsn::text, r.write_lsn::text, r.flush_lsn::text, r.replay_lsn::text,
                   extract(epoch from r.write_lag)::float8, extract(epoch from r.flush_lag)::float8, extract(epoch from r.replay_lag)::float8,
                   r.backend_start, r.reply_time
            from pg_stat_replication r left join pg_replication_slots s on s.active_pid = r.pid
            order by r.application_name, r.pid
            """, connection))
        await using (var reader = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false))
        {
            while (await reader.ReadAsync(ct).ConfigureAwait(false))
            {
                Lsn? Position(int i) => reader.IsDBNull(i) ? null : Lsn.Parse(reader.GetString(i));
                TimeSpan? Seconds(int i) => reader.IsDBNull(i) ? null : TimeSpan.FromSeconds(reader.GetDouble(i));
                var link = new ReplicationLink
                {
                    Server = target.Host, Port = target.Port, Role = role,
                    Pid = reader.GetInt32(0), ApplicationName = reader.GetString(1), ClientAddress = reader.GetString(2),
                    ClientPort = reader.IsDBNull(3) ? null : reader.GetInt32(3), State = reader.GetString(4), SyncState = reader.GetString(5),
                    SlotName = reader.IsDBNull(6) ? null : reader.GetString(6),
                    CurrentLsn = current, SentLsn = Position(7), WriteLsn = Position(8), FlushLsn = Position(9), ReplayLsn = Position(10),
                    WriteLag = Seconds(11), FlushLag = Seconds(12), ReplayLag = Seconds(13),
                    BackendStart = reader.IsDBNull(14) ? null : reader.GetFieldValue<DateTimeOffset>(14),
                    ReplyTime = reader.IsDBNull(15) ? null : reader.GetFieldValue<DateTimeOffset>(15),
                };
                link.SentLagBytes = Behind(current, link.SentLsn);
                link.WriteLagBytes = Behind(current, link.WriteLsn);
                link.FlushLagBytes = Behind(current, link.FlushLsn);
                link.ReplayLagBytes = Behind(current, link.ReplayLsn);
                links.Add(link);
            }
        }

        StandbyStatus? standby = null;
        if (inRecovery) standby = await ReadStandbyAsync(connection, target, info, ct).ConfigureAwait(false);
        var slots = includeSlots ? await ReadSlotsAsync(connection, target, current, ct).ConfigureAwait(false) : [];
        var logical = await LogicalLinks.ReadAsync(connection, target, inRecovery, current, ct).ConfigureAwait(false);
        // A logical WAL sender is the publisher's side of a logical link, not a standby.
        links.RemoveAll(l => logical.Any(x => x.Side == "Publisher" && x.Active && l.SlotName == x.Name) || l.ApplicationName.StartsWith("pg_", StringComparison.Ordinal) && l.ApplicationName.Contains("_sync_", StringComparison.Ordinal));
        return new ReplicationSnapshot(target, inRecovery, current, links, standby, slots) { LogicalLinks = logical };
    }

    private static async Task<StandbyStatus> ReadStandbyAsync(NpgsqlConnection connection, ConnectionTarget target, ServerInfo info, CancellationToken ct)
    {
        var paused = info.Major >= 14 ? "pg_get_wal_replay_pause_state() <> 'not paused'" : "pg_is_wal_replay_paused()";
        await using var cmd = new NpgsqlCommand($"""
            select coalesce(w.status, ''), coalesce(w.sender_host, ''), w.sender_port, w.slot_name, w.received_tli,
                   pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(),
                   {paused}, w.last_msg_receipt_time, clock_timestamp(),
                   (select system_identifier::text from pg_control_system())
            from (select 1) one left join pg_stat_wal_receiver w on true
            """, connection);
        await using var reader = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        await reader.ReadAsync(ct).ConfigureAwait(false);
        Lsn? Position(int i) => reader.IsDBNull(i) ? null : Lsn.Parse(reader.GetString(i));
        var received = Position(5);
        var replayed = Position(6);
        var lastCommit = reader.IsDBNull(7) ? (DateTimeOffset?)null : reader.GetFieldValue<DateTimeOffset>(7);
        var now = reader.GetFieldValue<DateTimeOffset>(10);
        return new StandbyStatus
        {
            Server = target.Host, Port = target.Port,
            ReceiverStatus = reader.GetString(0), UpstreamHost = reader.GetString(1), UpstreamPort = reader.IsDBNull(2) ? null : reader.GetInt32(2),
            SlotName = reader.IsDBNull(3) ? null : reader.GetString(3), ReceivedTimeline = reader.IsDBNull(4) ? null : (uint)reader.GetInt32(4),
            ReceivedLsn = received, ReplayedLsn = replayed, ReplayLagBytes = received is { } r && replayed is { } p ? Math.Max(0, r - p) : null,
            LastReplayedCommitTime = lastCommit,
            // Nothing received is waiting: replay is not behind, however old the last commit is (a quiet primary).
            ReplayDelay = received != null && received == replayed ? TimeSpan.Zero : lastCommit is { } c ? now - c : null,
            ReplayPaused = reader.GetBoolean(8),
            LastMessageReceiptTime = reader.IsDBNull(9) ? null : reader.GetFieldValue<DateTimeOffset>(9),
            SystemIdentifier = reader.GetString(11),
        };
    }

    private static async Task<IReadOnlyList<ReplicationSlot>> ReadSlotsAsync(NpgsqlConnection connection, ConnectionTarget target, Lsn current, CancellationToken ct)
    {
        var slots = new List<ReplicationSlot>();
        await using var cmd = new NpgsqlCommand("""
            select slot_name, slot_type, active, active_pid, restart_lsn::text, confirmed_flush_lsn::text, wal_status, safe_wal_size
            from pg_replication_slots order by slot_name
            """, connection);
        await using var reader = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        while (await reader.ReadAsync(ct).ConfigureAwait(false))
        {
            var restart = reader.IsDBNull(4) ? (Lsn?)null : Lsn.Parse(reader.GetString(4));
            slots.Add(new ReplicationSlot
            {
                Server = target.Host, Port = target.Port, SlotName = reader.GetString(0), SlotType = reader.GetString(1), Active = reader.GetBoolean(2),
                ActivePid = reader.IsDBNull(3) ? null : reader.GetInt32(3), RestartLsn = restart,
                ConfirmedFlushLsn = reader.IsDBNull(5) ? null : Lsn.Parse(reader.GetString(5)),
                WalStatus = reader.IsDBNull(6) ? null : reader.GetString(6), SafeWalSize = reader.IsDBNull(7) ? null : reader.GetInt64(7),
                RetainedBytes = Behind(current, restart),
            });
        }
        return slots;
    }

    /// <summary>Pass or fail against thresholds, with a reason for every failure, for a monitoring runbook.</summary>
    public static ReplicationTestResult Evaluate(ReplicationSnapshot snapshot, long? maxLagBytes, TimeSpan? maxReplayLag)
    {
        var failures = new List<string>();
        if (snapshot.Standby is { } s)
        {
            if (s.ReceiverStatus != "streaming") failures.Add($"The WAL receiver is {(s.ReceiverStatus.Length == 0 ? "not running" : s.ReceiverStatus)}, not streaming.");
            if (s.ReplayPaused) failures.Add("WAL replay is paused (pg_wal_replay_resume() resumes it).");
            if (maxLagBytes is { } mb && s.ReplayLagBytes > mb) failures.Add($"{s.ReplayLagBytes} bytes received but not replayed (more than {mb}).");
            if (maxReplayLag is { } ml && s.ReplayDelay > ml) failures.Add($"Replay is {s.ReplayDelay} behind (more than {ml}).");
        }
        else if (snapshot.Links.Count == 0 && snapshot.LogicalLinks.Count == 0)
            failures.Add("No standby is connected.");
        foreach (var logical in snapshot.LogicalLinks)
        {
            if (logical.Side == "Publisher" && !logical.Active) failures.Add($"The logical slot '{logical.Name}' has no subscriber connected; it holds {logical.RetainedWalBytes ?? 0} bytes of WAL.");
            if (logical.Side == "Publisher" && maxLagBytes is { } lb && logical.LagBytes > lb) failures.Add($"The subscriber of '{logical.Name}' has not confirmed {logical.LagBytes} bytes (more than {lb}).");
            if (logical.Side == "Publisher" && maxReplayLag is { } lt && logical.Lag > lt) failures.Add($"The subscriber of '{logical.Name}' confirms {logical.Lag} behind (more than {lt}).");
            if (logical.Side == "Subscriber" && logical.State != "streaming") failures.Add($"The subscription '{logical.Name}' is {logical.State}, not streaming.");
            if (logical.Side == "Subscriber" && logical.Tables.Where(t => t.State != "Ready").ToArray() is { Length: > 0 } copying)
                failures.Add($"The subscription '{logical.Name}' is still copying {copying.Length} table(s): {string.Join(", ", copying.Select(t => $"{t.Table} ({t.State})"))}.");
        }
        foreach (var link in snapshot.Links)
        {
            var name = link.ApplicationName.Length > 0 ? link.ApplicationName : link.ClientAddress;
            if (link.State.Length == 0) failures.Add($"The state of standby '{name}' is hidden from this role; grant it pg_monitor to see replication state and lag.");
            else if (link.State != "streaming") failures.Add($"Standby '{name}' is {link.State}, not streaming.");
            if (maxLagBytes is { } mb && link.ReplayLagBytes > mb) failures.Add($"Standby '{name}' has not replayed {link.ReplayLagBytes} bytes (more than {mb}).");
            if (maxReplayLag is { } ml && link.ReplayLag > ml) failures.Add($"Standby '{name}' replays {link.ReplayLag} behind (more than {ml}).");
        }
        return new ReplicationTestResult
        {
            Server = snapshot.Target.Host, Port = snapshot.Target.Port, Role = snapshot.Role, StandbysChecked = snapshot.Links.Count + snapshot.LogicalLinks.Count + (snapshot.Standby != null ? 1 : 0),
            MaxLagBytes = maxLagBytes, MaxReplayLag = maxReplayLag, Failures = [.. failures], Success = failures.Count == 0,
        };
    }

    /// <summary>
    /// Waits until the chosen standbys of <paramref name="primary"/> have replayed <paramref name="lsn"/> (default: the
    /// primary's current LSN), and its chosen logical subscribers have confirmed it. Returns their links.
    /// </summary>
    public static async Task<IReadOnlyList<object>> WaitAsync(ConnectionTarget primary, Lsn? lsn, IReadOnlyCollection<string>? applicationNames, TimeSpan timeout,
        IOperationReporter reporter, CancellationToken ct)
    {
        await using var connection = await ServerSession.OpenAsync(primary, ct).ConfigureAwait(false);
        try
        {
            var first = await ReadAsync(connection, primary, includeSlots: false, ct).ConfigureAwait(false);
            var target = lsn ?? first.CurrentLsn;
            var activity = $"Waiting for the standbys of {primary.Display} to replay {target}";
            var clock = Stopwatch.StartNew();
            for (var snapshot = first; ; snapshot = await ReadAsync(connection, primary, includeSlots: false, ct).ConfigureAwait(false))
            {
                bool Chosen(string name) => applicationNames == null || applicationNames.Count == 0 || applicationNames.Contains(name, StringComparer.Ordinal);
                var chosen = snapshot.Links.Where(l => Chosen(l.ApplicationName)).ToList();
                // Without names, only logical subscribers that are connected: an idle slot of another tool is not waited for.
                var logical = snapshot.LogicalLinks.Where(l => l.Side == "Publisher" && (applicationNames is { Count: > 0 } ? Chosen(l.Name) : l.Active)).ToList();
                var missing = applicationNames?.Where(n => !chosen.Any(l => l.ApplicationName == n) && !logical.Any(l => l.Name == n)).ToList() ?? [];
                var behind = chosen.Where(l => l.ReplayLsn is not { } r || r < target).ToList();
                var unconfirmed = logical.Where(l => l.ConfirmedLsn is not { } c || c < target).ToList();
                if (chosen.Count + logical.Count > 0 && missing.Count == 0 && behind.Count == 0 && unconfirmed.Count == 0)
                {
                    reporter.ProgressCompleted(activity);
                    reporter.Milestone($"{chosen.Count} standby(s) and {logical.Count} logical subscriber(s) of {primary.Display} reached {target} after {clock.Elapsed.TotalSeconds:0.0}s.");
                    return [.. chosen, .. logical];
                }
                if (clock.Elapsed > timeout)
                {
                    reporter.ProgressCompleted(activity);
                    var why = chosen.Count + logical.Count == 0 && missing.Count == 0 ? "no standby is connected"
                        : string.Join("; ", missing.Select(m => $"'{m}' is not connected").Concat(behind.Select(b =>
                            $"'{(b.ApplicationName.Length > 0 ? b.ApplicationName : b.ClientAddress)}' replayed only {b.ReplayLsn?.ToString() ?? "nothing"}"))
                            .Concat(unconfirmed.Select(l => $"the subscriber of '{l.Name}' confirmed only {l.ConfirmedLsn?.ToString() ?? "nothing"}")));
                    throw new PgBackupException("ReplicationTimeout", ErrorKind.OperationTimeout,
                        $"The standbys of {primary.Display} did not replay {target} within {timeout}: {why}.", primary.Display,
                        "Check the standbys with Get-PgReplicationStatus (a paused replay, a broken connection, or a long-running query on the standby delays replay), or wait longer with -Timeout.");
                }
                var worst = behind.Where(b => b.ReplayLsn != null).Select(b => target - b.ReplayLsn!.Value).DefaultIfEmpty(0).Max();
                reporter.Progress(activity, $"{behind.Count + unconfirmed.Count + missing.Count} standby(s) or subscriber(s) behind, {worst} bytes at most", -1);
                await Task.Delay(100, ct).ConfigureAwait(false);
            }
        }
        catch (NpgsqlException ex) when (!ct.IsCancellationRequested) { throw ServerSession.Translate(ex, primary); }
    }

    private static long? Behind(Lsn current, Lsn? position) => position is { } p ? Math.Max(0, current - p) : null;
}
