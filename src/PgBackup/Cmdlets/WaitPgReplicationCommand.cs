using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Replication;

namespace PgBackup.Commands;

[Cmdlet(VerbsLifecycle.Wait, "PgReplication")]
[OutputType(typeof(ReplicationLink))]
public sealed class WaitPgReplicationCommand : PgServerCmdlet
{
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string[]? ApplicationName { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Lsn { get; set; }

    [Parameter]
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(60);

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            RequirePositiveTimeout(Timeout);
            PgBackup.Lsn? target = null;
            if (Lsn != null)
                target = PgBackup.Lsn.TryParse(Lsn, out var parsed) ? parsed : throw new PgBackupException("InvalidLsn", ErrorKind.InvalidArgument,
                    $"'{Lsn}' is not a PostgreSQL LSN.", Lsn, "Give an LSN as PostgreSQL prints it, such as 0/3000148 (pg_current_wal_lsn()).");
            var primary = ResolveServer(settings);
            WriteObject(RunEngine((reporter, ct) => ReplicationMonitor.WaitAsync(primary, target, ApplicationName, Timeout, reporter, ct)), enumerateCollection: true);
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
