using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Replication;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Get, "PgReplicationStatus")]
[OutputType(typeof(ReplicationLink), typeof(StandbyStatus), typeof(ReplicationSlot))]
public sealed class GetPgReplicationStatusCommand : PgServersCmdlet
{
    [Parameter]
    public SwitchParameter IncludeSlots { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
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
