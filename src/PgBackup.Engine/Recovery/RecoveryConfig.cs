using System.Globalization;
using System.Text;

namespace PgBackup.Engine.Recovery;

/// <summary>The settings a recovered instance runs with, and how a PostgreSQL major version wants them written.</summary>
public sealed record RecoverySettings
{
    public required string RestoreCommand { get; init; }
    public required RecoveryTarget Target { get; init; }
    /// <summary>The timeline to follow, as PostgreSQL takes it: a number, "latest" or "current".</summary>
    public required string Timeline { get; init; }
    public required int Port { get; init; }
    public required string ListenAddresses { get; init; }
    /// <summary>Null leaves unix_socket_directories as the backup had it.</summary>
    public string? SocketDirectory { get; init; }
    /// <summary>False switches archive_mode off, so the recovered instance never archives into the original archive.</summary>
    public bool KeepArchiving { get; init; }
}

/// <summary>
/// Renders recovery settings: PostgreSQL 12 and later read them from postgresql.auto.conf and start recovery when
/// recovery.signal exists; 11 and earlier read recovery.conf. Values are quoted as ALTER SYSTEM quotes them.
/// </summary>
public static class RecoveryConfig
{
    public const string SignalFile = "recovery.signal";
    public const string LegacyFile = "recovery.conf";

    /// <returns>The files to write into the data directory: name and content (appended to postgresql.auto.conf, or a whole recovery.conf).</returns>
    public static IReadOnlyList<(string File, string Content, bool Append)> Render(RecoverySettings settings, int major, string header)
    {
        var server = new StringBuilder();
        server.Append('\n').Append("# ").Append(header).Append('\n');
        Line(server, "port", settings.Port.ToString(CultureInfo.InvariantCulture), quote: false);
        Line(server, "listen_addresses", settings.ListenAddresses);
        if (settings.SocketDirectory != null) Line(server, "unix_socket_directories", settings.SocketDirectory);
        if (!settings.KeepArchiving) Line(server, "archive_mode", "off", quote: false);
        // A backup of a standby carries its primary_conninfo; the recovered instance must not follow that primary.
        Line(server, "primary_conninfo", "");
        Line(server, "primary_slot_name", "");
        Line(server, "hot_standby", "on", quote: false);

        var recovery = new StringBuilder();
        Line(recovery, "restore_command", settings.RestoreCommand);
        var target = settings.Target;
        switch (target.Kind)
        {
            case RecoveryTargetKind.Time:
                Line(recovery, "recovery_target_time", target.Time!.Value.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss.ffffff", CultureInfo.InvariantCulture) + "+00");
                break;
            case RecoveryTargetKind.Lsn:
                Line(recovery, "recovery_target_lsn", target.Lsn!.Value.ToString());
                break;
            case RecoveryTargetKind.Xid:
                Line(recovery, "recovery_target_xid", target.Xid!.Value.ToString(CultureInfo.InvariantCulture));
                break;
            case RecoveryTargetKind.Name:
                Line(recovery, "recovery_target_name", target.Name!);
                break;
            case RecoveryTargetKind.Immediate:
                Line(recovery, "recovery_target", "immediate");
                break;
        }
        if (target.Kind is RecoveryTargetKind.Time or RecoveryTargetKind.Lsn or RecoveryTargetKind.Xid)
            Line(recovery, "recovery_target_inclusive", target.Inclusive ? "on" : "off", quote: false);
        Line(recovery, "recovery_target_timeline", settings.Timeline);
        if (target.Kind != RecoveryTargetKind.Latest)
            Line(recovery, "recovery_target_action", target.Action.ToString().ToLowerInvariant());

        if (major >= 12)
            return [("postgresql.auto.conf", server.Append(recovery).ToString(), true), (SignalFile, "", false)];
        var legacy = new StringBuilder("# ").Append(header).Append('\n').Append(recovery);
        Line(legacy, "standby_mode", "off", quote: false);
        return [("postgresql.auto.conf", server.ToString(), true), (LegacyFile, legacy.ToString(), false)];
    }

    /// <summary>A string value for postgresql.conf: single quotes doubled, backslashes doubled (the file parser reads \ escapes).</summary>
    public static string Quote(string value) => "'" + value.Replace("\\", "\\\\").Replace("'", "''") + "'";

    private static void Line(StringBuilder builder, string name, string value, bool quote = true) =>
        builder.Append(name).Append(" = ").Append(quote ? Quote(value) : value).Append('\n');
}
