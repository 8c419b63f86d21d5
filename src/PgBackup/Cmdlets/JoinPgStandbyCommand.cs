using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Failover;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Join, "PgStandby", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(StandbyStatus))]
public sealed class JoinPgStandbyCommand : PgServerCmdlet
{
    [Parameter(Mandatory = true)]
    [ValidateNotNullOrEmpty]
    public string? DataDirectory { get; set; }

    [Parameter]
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(120);

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            var request = new RejoinRequest { DataDirectory = GetUnresolvedProviderPathFromPSPath(DataDirectory!), Primary = ResolveServer(settings), Timeout = Timeout, ToolPath = settings.ToolPath };
            // pg_rewind throws away whatever the old primary wrote after the timelines diverged: that is High impact.
            if (!ShouldProcess(request.DataDirectory, $"Rewind (pg_rewind) and start as a standby of {request.Primary.Display}; changes written after the divergence are discarded")) return;
            WriteObject(RunEngine((reporter, ct) => RejoinService.RejoinAsync(request, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
