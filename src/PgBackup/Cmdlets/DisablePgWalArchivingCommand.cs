using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Wal;

namespace PgBackup.Commands;

[Cmdlet(VerbsLifecycle.Disable, "PgWalArchiving", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(WalArchivingResult))]
public sealed class DisablePgWalArchivingCommand : PgServerCmdlet
{
    [Parameter]
    public SwitchParameter Restart { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            var target = ResolveServer(settings);
            // Without archiving, point-in-time recovery past the newest base backup is no longer possible: a high-impact change.
            if (!ShouldProcess(target.Display, "Disable WAL archiving (reset archive_command, archive_mode and archive_timeout)" + (Restart ? " and restart the server" : ""))) return;
            var request = new DisableArchivingRequest { Target = target, Restart = Restart, Force = Force, ToolPath = settings.ToolPath, ToolInstallRoot = WalToolInstallation.Root };
            WriteObject(RunEngine((reporter, ct) => ArchivingService.DisableAsync(request, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
