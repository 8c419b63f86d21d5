using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Replication;

namespace PgBackup.Commands;

[Cmdlet(VerbsDiagnostic.Test, "PgReplication")]
[OutputType(typeof(ReplicationTestResult), typeof(bool))]
public sealed class TestPgReplicationCommand : PgServersCmdlet
{
    [Parameter]
    [ValidateRange(0, long.MaxValue)]
    public long? MaxLagBytes { get; set; }

    [Parameter]
    public TimeSpan? MaxReplayLag { get; set; }

    [Parameter]
    public SwitchParameter Quiet { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Patroni { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? PatroniCredential { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        // A Patroni cluster (-Patroni, or a server whose profile names its REST API) is judged on Patroni's view.
        if (Patroni != null)
        {
            Report(Patroni, () => Engine.Patroni.PatroniHealth.Evaluate(ReadPatroniCluster(PatroniEndpointOf(Patroni, PatroniCredential, settings)), MaxLagBytes));
            return;
        }
        foreach (var target in ResolveServers(settings))
        {
            if (target.Profile != null && settings.FindProfile(target.Profile)?.Patroni is { } url)
                Report(url, () => Engine.Patroni.PatroniHealth.Evaluate(ReadPatroniCluster(PatroniEndpointOf(url, PatroniCredential, settings)), MaxLagBytes));
            else Report(target.Display, () => ReplicationMonitor.Evaluate(RunEngine((_, ct) => ReplicationMonitor.ReadAsync(target, false, ct)), MaxLagBytes, MaxReplayLag));
        }
    }

    private void Report(string display, Func<ReplicationTestResult> evaluate)
    {
        try
        {
            var result = evaluate();
            foreach (var failure in result.Failures) WriteVerbose($"{display}: {failure}");
            WriteObject(Quiet ? result.Success : result);
        }
        catch (PgBackupException ex)
        {
            // A server that cannot be asked fails the check; -Quiet still answers, for if statements in runbooks.
            if (Quiet) { WriteVerbose(ex.Message); WriteObject(false); }
            else WriteEngineError(ex);
        }
    }
}
