using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Failover;
using PgBackup.Engine.Routing;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Switch, "PgPrimary", DefaultParameterSetName = SwitchoverSet, SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(SwitchoverResult))]
public sealed class SwitchPgPrimaryCommand : PgCmdlet
{
    private const string SwitchoverSet = "Switchover";
    private const string FailoverSet = "Failover";

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = SwitchoverSet)]
    [Parameter(ParameterSetName = FailoverSet)]
    [ValidateNotNullOrEmpty]
    public string? Primary { get; set; }

    /// <summary>The standby to promote (for -Failover: the standbys to choose from); a StandbyStatus from Get-PgReplicationStatus binds through its Server and Port.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [Alias("Server")]
    [ValidateNotNullOrEmpty]
    public string[]? Candidate { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = FailoverSet)]
    public SwitchParameter Failover { get; set; }

    /// <summary>Failover: cuts the old primary off. Switchover: shuts a primary on another host down cleanly (and may print its final checkpoint).</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? FenceScript { get; set; }

    /// <summary>Other standbys of the old primary, pointed at the new one after a switchover.</summary>
    [Parameter(ParameterSetName = SwitchoverSet)]
    [ValidateNotNullOrEmpty]
    public string[]? Standby { get; set; }

    /// <summary>The failed primary's data directory, when it is on this machine: the failover then reports the WAL it loses.</summary>
    [Parameter(ParameterSetName = FailoverSet)]
    [ValidateNotNullOrEmpty]
    public string? PrimaryDataDirectory { get; set; }

    [Parameter(ParameterSetName = FailoverSet)]
    public SwitchParameter Force { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("Port")]
    [ValidateRange(1, 65535)]
    public int? CandidatePort { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? Credential { get; set; }

    [Parameter(ParameterSetName = SwitchoverSet)]
    [ValidateRange(0, long.MaxValue)]
    public long MaxLagBytes { get; set; } = 16 * 1024 * 1024;

    [Parameter]
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(60);

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? RouteScript { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string[]? PgBouncer { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string[]? PgBouncerConfig { get; set; }

    [Parameter]
    public TimeSpan RouteTimeout { get; set; } = Engine.Routing.RouteScript.DefaultTimeout;

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Patroni { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? PatroniCredential { get; set; }

    [Parameter]
    public DateTimeOffset? At { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            RequirePositiveTimeout(Timeout);
            if (RouteScript != null) RequirePositiveTimeout(RouteTimeout, nameof(RouteTimeout));
            if (PgBouncerConfig != null && PgBouncerConfig.Length != (PgBouncer?.Length ?? 0))
                throw new PgBackupException("PgBouncerConfigCount", ErrorKind.InvalidArgument,
                    $"-PgBouncerConfig names {PgBouncerConfig.Length} file(s) for {PgBouncer?.Length ?? 0} -PgBouncer admin console(s); they go in pairs, in the same order.", PgBouncerConfig,
                    "Give one pgbouncer.ini per -PgBouncer, or leave -PgBouncerConfig out for poolers on other machines (-RouteScript then points them at the new primary).");
            // A profile that names its Patroni marks the cluster as Patroni's, as -Patroni does.
            var patroni = Patroni ?? settings.FindProfile(Primary ?? Candidate![0])?.Patroni;
            if (patroni != null)
            {
                SwitchThroughPatroni(settings, patroni);
                return;
            }
            if (At != null)
                throw new PgBackupException("AtNeedsPatroni", ErrorKind.InvalidArgument, "-At schedules a switchover in Patroni; without -Patroni, PgBackup switches over now.", At,
                    "Add -Patroni with a member's REST API URL, or leave out -At.");
            if (Failover)
            {
                var failover = new FailoverRequest
                {
                    OldPrimary = Primary == null ? null : ResolveServer(settings, Primary, null, null, Credential),
                    Candidates = Candidate!.Select(c => ResolveServer(settings, c, Candidate!.Length == 1 ? CandidatePort : null, null, Credential)).ToList(),
                    FenceScript = FenceScript, Force = Force, Timeout = Timeout, ToolPath = settings.ToolPath, RouteScript = RouteScript, RouteTimeout = RouteTimeout,
                    OldPrimaryDataDirectory = PrimaryDataDirectory == null ? null : GetUnresolvedProviderPathFromPSPath(PrimaryDataDirectory),
                    PgBouncers = PgBouncers(settings),
                };
                var names = string.Join(", ", failover.Candidates.Select(c => c.Display));
                var clients = failover.PgBouncers.Count > 0 ? $"; pause the PgBouncer databases that point at {failover.OldPrimary?.Display} and resume them toward the new primary" : "";
                if (!ShouldProcess(names, "Fail over: let every candidate replay what it received, fence the old primary, promote the most advanced candidate and repoint the others" + clients)) return;
                WriteResult(RunEngine((reporter, ct) => FailoverService.FailoverAsync(failover, reporter, ct)));
                return;
            }
            if (Candidate!.Length != 1)
                throw new PgBackupException("OneCandidate", ErrorKind.InvalidArgument, $"A switchover promotes one standby; {Candidate.Length} were given.", Candidate,
                    "Give one -Candidate, or use -Failover to let PgBackup choose the most advanced of several standbys.");
            var request = new SwitchoverRequest
            {
                Primary = ResolveServer(settings, Primary, null, null, Credential),
                Candidate = ResolveServer(settings, Candidate[0], CandidatePort, null, Credential),
                MaxLagBytes = MaxLagBytes, Timeout = Timeout, ToolPath = settings.ToolPath, FenceScript = FenceScript, RouteScript = RouteScript, RouteTimeout = RouteTimeout,
                OtherStandbys = (Standby ?? []).Select(s => ResolveServer(settings, s, null, null, Credential)).ToList(),
                PgBouncers = PgBouncers(settings),
            };
            var plan = RunEngine((reporter, ct) => SwitchoverService.PlanAsync(request, reporter, ct));
            if (MyInvocation.BoundParameters.TryGetValue("WhatIf", out var whatIf) && (SwitchParameter)whatIf)
            {
                // -WhatIf shows the plan step by step, after every pre-check has passed, and changes nothing.
                foreach (var step in plan.Steps) ShouldProcess(request.Candidate.Display, step);
                return;
            }
            if (!ShouldProcess(request.Candidate.Display, $"Switch over from {request.Primary.Display}: " + string.Join("; ", plan.Steps))) return;
            WriteResult(RunEngine((reporter, ct) => SwitchoverService.ExecuteAsync(plan, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }

    /// <summary>A cluster that Patroni runs: Patroni moves the leader key, PgBackup asks it to and moves the clients.</summary>
    private void SwitchThroughPatroni(Engine.Configuration.PgBackupSettings settings, string patroniUrl)
    {
        if (Candidate!.Length != 1)
            throw new PgBackupException("OneCandidate", ErrorKind.InvalidArgument, $"Patroni promotes the one member it is asked to; {Candidate.Length} were given.", Candidate,
                "Give one -Candidate (Get-PgReplicationStatus -Patroni lists the members).");
        // Members are named as Patroni names them; a profile given as -Primary or -Candidate stands for its host:port.
        string Member(string value) => settings.FindProfile(value) is { Host: { } host } profile ? $"{host}:{profile.Port ?? 5432}" : value;
        var request = new PatroniSwitchoverRequest
        {
            Patroni = PatroniEndpointOf(patroniUrl, PatroniCredential, settings),
            Leader = Failover || Primary == null ? null : Member(Primary), Candidate = Member(Candidate[0]), Failover = Failover, At = At,
            Database = ResolveServer(settings, null, null, null, Credential),
            Timeout = Timeout, RouteScript = RouteScript, RouteTimeout = RouteTimeout, ToolPath = settings.ToolPath,
            PgBouncers = PgBouncers(settings),
        };
        var plan = RunEngine((reporter, ct) => PatroniSwitchover.PlanAsync(request, reporter, ct));
        if (MyInvocation.BoundParameters.TryGetValue("WhatIf", out var whatIf) && (SwitchParameter)whatIf)
        {
            foreach (var step in plan.Steps) ShouldProcess(plan.Candidate.Server, step);
            return;
        }
        if (!ShouldProcess(plan.Candidate.Server, string.Join("; ", plan.Steps))) return;
        WriteResult(RunEngine((reporter, ct) => PatroniSwitchover.ExecuteAsync(plan, reporter, ct)));
    }

    /// <summary>The -PgBouncer admin consoles, each with its -PgBouncerConfig when given.</summary>
    private List<PgBouncerRequest> PgBouncers(Engine.Configuration.PgBackupSettings settings) =>
        (PgBouncer ?? []).Select((b, i) => new PgBouncerRequest(ResolveServer(settings, b, null, "pgbouncer", null),
            PgBouncerConfig == null ? null : GetUnresolvedProviderPathFromPSPath(PgBouncerConfig[i]))).ToList();

    /// <summary>The result, then a failed route script as an error of its own: the primary has moved, the clients may not have.</summary>
    private void WriteResult(SwitchoverResult result)
    {
        WriteObject(result);
        if (Engine.Routing.RouteScript.FailureOf(result) is { } routingFailed) WriteEngineError(routingFailed);
    }
}
