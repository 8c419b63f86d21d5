using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Replication;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Get, "PgReplicationStatus")]
[OutputType(typeof(ReplicationLink), typeof(StandbyStatus), typeof(ReplicationSlot), typeof(PatroniCluster))]
public sealed class GetPgReplicationStatusCommand : PgServersCmdlet
{
    [Parameter]
    public SwitchParameter IncludeSlots { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Patroni { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? PatroniCredential { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        if (Patroni != null)
        {
            // A Patroni cluster is read from Patroni's REST API: its own view of leader, members and lag.
            try
            {
                var endpoint = Engine.Patroni.PatroniEndpoint.Parse(Patroni, PatroniCredential?.UserName, PatroniCredential?.GetNetworkCredential().Password);
                WriteObject(RunEngine(async (_, ct) =>
                {
                    using var client = new Engine.Patroni.PatroniClient(endpoint);
                    return await client.GetClusterAsync(ct).ConfigureAwait(false);
                }));
            }
            catch (PgBackupException ex) { WriteEngineError(ex); }
            return;
        }
        foreach (var target in ResolveServers(settings))
        {
            try
            {
                var snapshot = RunEngine((_, ct) => ReplicationMonitor.ReadAsync(target, IncludeSlots, ct));
                if (snapshot.Standby != null) WriteObject(snapshot.Standby);
                if (snapshot.Links.Count == 0 && !snapshot.InRecovery) WriteVerbose($"No standby is connected to {target.Display}.");
                WriteObject(snapshot.Links, enumerateCollection: true);
                WriteObject(snapshot.Slots, enumerateCollection: true);
            }
            catch (PgBackupException ex) { WriteEngineError(ex); }
        }
    }
}
