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

/// <summary>
/// For read-only cmdlets that look at several servers in one call: -Server takes a list and server names piped in as
/// strings, as well as objects with a Server property.
/// </summary>
public abstract class PgServersCmdlet : PgCmdlet
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

    /// <summary>One target per -Server value (the libpq defaults when none was given); a server string that cannot be parsed is an error for that server only.</summary>
    protected IEnumerable<ConnectionTarget> ResolveServers(PgBackupSettings settings)
    {
        foreach (var server in Server ?? [null!])
        {
            ConnectionTarget? target = null;
            try { target = ResolveServer(settings, server, Port, null, Credential); }
            catch (Engine.PgBackupException ex) { WriteEngineError(ex); }
            if (target != null) yield return target;
        }
    }
}
