using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Replication;

namespace PgBackup.Commands;

[Cmdlet(VerbsLifecycle.Wait, "PgReplication")]
[OutputType(typeof(ReplicationLink), typeof(LogicalReplicationLink), typeof(PatroniCluster))]
public sealed class WaitPgReplicationCommand : PgServerCmdlet
{
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string[]? ApplicationName { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Lsn { get; set; }

    [Parameter]
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(60);

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Patroni { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? PatroniCredential { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            RequirePositiveTimeout(Timeout);
            // A Patroni cluster (-Patroni, or a server whose profile names its REST API): until every member has caught up, as Patroni reports it.
            if ((Patroni ?? (Server != null ? settings.FindProfile(Server)?.Patroni : null)) is { } url)
            {
                var endpoint = PatroniEndpointOf(url, PatroniCredential, settings);
                WriteObject(RunEngine(async (reporter, ct) =>
                {
                    using var client = new Engine.Patroni.PatroniClient(endpoint);
                    return await Engine.Patroni.PatroniHealth.WaitAsync(client, Timeout, reporter, ct).ConfigureAwait(false);
                }));
                return;
            }
            PgBackup.Lsn? target = null;
            if (Lsn != null)
                target = PgBackup.Lsn.TryParse(Lsn, out var parsed) ? parsed : throw new PgBackupException("InvalidLsn", ErrorKind.InvalidArgument,
                    $"'{Lsn}' is not a PostgreSQL LSN.", Lsn, "Give an LSN as PostgreSQL prints it, such as 0/3000148 (pg_current_wal_lsn()).");
            var primary = ResolveServer(settings);
            WriteObject(RunEngine((reporter, ct) => ReplicationMonitor.WaitAsync(primary, target, ApplicationName, Timeout, reporter, ct)), enumerateCollection: true);
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
