using System.Management.Automation;
using PgBackup.Engine.Configuration;
using PgBackup.Engine.Connection;

namespace PgBackup.Commands;

/// <summary>
/// What the logical migration cmdlets share: a source and a target server (as -Server takes them), the source database
/// and the target database (the same name unless -TargetDatabase says otherwise), each bound by property name from the
/// previous cmdlet's output.
/// </summary>
public abstract class PgMigrationCmdlet : PgCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? Source { get; set; }

    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? Target { get; set; }

    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? Database { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? TargetDatabase { get; set; }

    /// <summary>The login on both servers, unless -TargetCredential gives the target's.</summary>
    [Parameter]
    [Credential]
    public PSCredential? Credential { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? TargetCredential { get; set; }

    protected (ConnectionTarget Source, ConnectionTarget Target) ResolvePair(PgBackupSettings settings) =>
        (ResolveServer(settings, Source, null, Database, Credential), ResolveServer(settings, Target, null, TargetDatabase ?? Database, TargetCredential ?? Credential));
}
