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

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        foreach (var target in ResolveServers(settings))
        {
            try
            {
                var result = ReplicationMonitor.Evaluate(RunEngine((_, ct) => ReplicationMonitor.ReadAsync(target, false, ct)), MaxLagBytes, MaxReplayLag);
                foreach (var failure in result.Failures) WriteVerbose($"{target.Display}: {failure}");
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
}
