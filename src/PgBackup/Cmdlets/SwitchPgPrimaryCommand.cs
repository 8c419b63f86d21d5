using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Failover;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Switch, "PgPrimary", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(SwitchoverResult))]
public sealed class SwitchPgPrimaryCommand : PgCmdlet
{
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNullOrEmpty]
    public string? Primary { get; set; }

    /// <summary>The standby to promote; a StandbyStatus from Get-PgReplicationStatus binds through its Server and Port.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [Alias("Server")]
    [ValidateNotNullOrEmpty]
    public string? Candidate { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("Port")]
    [ValidateRange(1, 65535)]
    public int? CandidatePort { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? Credential { get; set; }

    [Parameter]
    [ValidateRange(0, long.MaxValue)]
    public long MaxLagBytes { get; set; } = 16 * 1024 * 1024;

    [Parameter]
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(60);

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            if (Timeout <= TimeSpan.Zero)
                throw new PgBackupException("InvalidTimeout", ErrorKind.InvalidArgument, $"-Timeout must be positive, not {Timeout}.", Timeout, "Pass a TimeSpan such as 00:02:00.");
            var request = new SwitchoverRequest
            {
                Primary = ResolveServer(settings, Primary, null, null, Credential),
                Candidate = ResolveServer(settings, Candidate, CandidatePort, null, Credential),
                MaxLagBytes = MaxLagBytes, Timeout = Timeout, ToolPath = settings.ToolPath,
            };
            var plan = RunEngine((reporter, ct) => SwitchoverService.PlanAsync(request, reporter, ct));
            if (MyInvocation.BoundParameters.TryGetValue("WhatIf", out var whatIf) && (SwitchParameter)whatIf)
            {
                // -WhatIf shows the plan step by step, after every pre-check has passed, and changes nothing.
                foreach (var step in plan.Steps) ShouldProcess(request.Candidate.Display, step);
                return;
            }
            if (!ShouldProcess(request.Candidate.Display, $"Switch over from {request.Primary.Display}: " + string.Join("; ", plan.Steps))) return;
            WriteObject(RunEngine((reporter, ct) => SwitchoverService.ExecuteAsync(plan, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
