using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Replication;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Set, "PgSynchronousStandby", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(SynchronousReplicationResult))]
public sealed class SetPgSynchronousStandbyCommand : PgServerCmdlet
{
    [Parameter(Mandatory = true)]
    [AllowEmptyCollection]
    public string[] Standby { get; set; } = [];

    [Parameter]
    public SynchronousMode Mode { get; set; } = SynchronousMode.First;

    [Parameter]
    [ValidateRange(1, 64)]
    public int Count { get; set; } = 1;

    [Parameter]
    [ValidateSet("on", "remote_write", "remote_apply", "local", "off")]
    public string? SynchronousCommit { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            var request = new SynchronousStandbyRequest
            {
                Primary = ResolveServer(settings), Standbys = Standby.Where(s => !string.IsNullOrWhiteSpace(s)).Distinct().ToList(),
                Mode = Mode, Count = Count, SynchronousCommit = SynchronousCommit, Force = Force,
            };
            var (names, notStreaming) = RunEngine((_, ct) => SynchronousStandbyService.PlanAsync(request, ct));
            var action = names.Length == 0 ? "Make replication asynchronous (reset synchronous_standby_names)" : $"Set synchronous_standby_names = '{names}'";
            if (!ShouldProcess(request.Primary.Display, action)) return;
            // Commits wait for standbys that are not there: the primary stops accepting writes until they connect.
            if (request.Standbys.Count > 0 && request.Standbys.Count - notStreaming.Count < request.Count &&
                !ShouldProcessHighImpact(request.Primary.Display, action, $"{string.Join(", ", notStreaming)} not streaming: every commit waits until enough of them connect.")) return;
            WriteObject(RunEngine((reporter, ct) => SynchronousStandbyService.ApplyAsync(request, names, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
