using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Recovery;
using PgBackup.Engine.Instance;

namespace PgBackup.Commands;

[Cmdlet(VerbsLifecycle.Stop, "PgInstance", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(PgInstance))]
public sealed class StopPgInstanceCommand : PgInstanceCmdlet
{
    [Parameter]
    public StopMode Mode { get; set; } = StopMode.Fast;

    [Parameter]
    public TimeSpan Timeout { get; set; } = TimeSpan.FromMinutes(1);

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            RequirePositiveTimeout(Timeout);
            if (!ShouldProcess(Directory, $"Stop the PostgreSQL server ({Mode.ToString().ToLowerInvariant()} mode)")) return;
            var instance = RunEngine((reporter, ct) => InstanceControl.StopAsync(Directory, Mode, Timeout, settings.ToolPath, reporter, ct));
            if (PassThru) WriteObject(instance);
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
