using System.Management.Automation;
using PgBackup.Engine.Configuration;
using PgBackup.Engine.Connection;

namespace PgBackup.Commands;

/// <summary>
/// The connection parameters every cmdlet that works on one server takes, the same everywhere: -Server (first
/// position, and by property name so result objects pipe in), -Port and -Credential.
/// </summary>
public abstract class PgServerCmdlet : PgCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? Server { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, 65535)]
    public int? Port { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? Credential { get; set; }

    protected ConnectionTarget ResolveServer(PgBackupSettings settings, string? database = null) =>
        ResolveServer(settings, Server, Port, database, Credential);
}
