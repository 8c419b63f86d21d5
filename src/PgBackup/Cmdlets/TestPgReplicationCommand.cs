using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Replication;

namespace PgBackup.Commands;

[Cmdlet(VerbsDiagnostic.Test, "PgReplication")]
[OutputType(typeof(ReplicationTestResult), typeof(bool))]
public sealed class TestPgReplicationCommand : PgCmdlet
{
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string[]? Server { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, 65535)]
    public int? Port { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? Credential { get; set; }

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
        foreach (var server in Server ?? [null!])
        {
            try
            {
                var target = ResolveServer(settings, server, Port, null, Credential);
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
