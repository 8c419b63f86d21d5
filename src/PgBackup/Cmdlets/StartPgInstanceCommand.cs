using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Recovery;
using PgBackup.Engine.Instance;

namespace PgBackup.Commands;

[Cmdlet(VerbsLifecycle.Start, "PgInstance", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(PgInstance))]
public sealed class StartPgInstanceCommand : PgInstanceCmdlet
{
    /// <summary>Listen on this port instead of the configured one. Not bound from the pipeline.</summary>
    [Parameter]
    [ValidateRange(1, 65535)]
    public int? Port { get; set; }

    [Parameter]
    public TimeSpan Timeout { get; set; } = TimeSpan.FromMinutes(5);

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            RequirePositiveTimeout(Timeout);
            if (!ShouldProcess(Directory, Port is { } p ? $"Start the PostgreSQL server on port {p}" : "Start the PostgreSQL server")) return;
            WriteObject(RunEngine((reporter, ct) => InstanceControl.StartAsync(Directory, Port, Timeout, settings.ToolPath, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
