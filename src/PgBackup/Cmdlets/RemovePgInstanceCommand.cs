using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Recovery;
using PgBackup.Engine.Instance;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Remove, "PgInstance", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(void))]
public sealed class RemovePgInstanceCommand : PgInstanceCmdlet
{
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            if (!ShouldProcess(Directory, "Stop the PostgreSQL server if it runs and delete its data directory")) return;
            RunEngine(async (reporter, ct) => { await InstanceControl.RemoveAsync(Directory, Force, settings.ToolPath, reporter, ct).ConfigureAwait(false); return true; });
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
