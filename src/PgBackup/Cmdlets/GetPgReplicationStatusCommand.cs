using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Replication;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Get, "PgReplicationStatus")]
[OutputType(typeof(ReplicationLink), typeof(StandbyStatus), typeof(ReplicationSlot), typeof(LogicalReplicationLink), typeof(PatroniCluster))]
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
            WritePatroniCluster(Patroni, settings);
            return;
        }
        foreach (var target in ResolveServers(settings))
        {
            // A server whose profile names its Patroni is read from Patroni, as with -Patroni.
            if (target.Profile != null && settings.FindProfile(target.Profile)?.Patroni is { } patroni)
            {
                WritePatroniCluster(patroni, settings);
                continue;
            }
            try
            {
                var snapshot = RunEngine((_, ct) => ReplicationMonitor.ReadAsync(target, IncludeSlots, ct));
                if (snapshot.Standby != null) WriteObject(snapshot.Standby);
                if (snapshot.Links.Count == 0 && !snapshot.InRecovery) WriteVerbose($"No standby is connected to {target.Display}.");
                WriteObject(snapshot.Links, enumerateCollection: true);
                WriteObject(snapshot.Slots, enumerateCollection: true);
                WriteObject(snapshot.LogicalLinks, enumerateCollection: true);
                foreach (var orphan in snapshot.LogicalLinks.Select(LogicalLinks.OrphanWarning).OfType<string>()) WriteWarning(orphan);
            }
            catch (PgBackupException ex) { WriteEngineError(ex); }
        }
    }

    /// <summary>A Patroni cluster, read from Patroni's REST API: its own view of leader, members and lag.</summary>
    private void WritePatroniCluster(string url, Engine.Configuration.PgBackupSettings settings)
    {
        try { WriteObject(ReadPatroniCluster(PatroniEndpointOf(url, PatroniCredential, settings))); }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
