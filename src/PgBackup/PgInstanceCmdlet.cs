using System.Management.Automation;

namespace PgBackup.Commands;

/// <summary>-DataDirectory for the instance cmdlets: by position, and by property name from RecoveryResult and PgInstance objects.</summary>
public abstract class PgInstanceCmdlet : PgCmdlet
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? DataDirectory { get; set; }

    protected string Directory => GetUnresolvedProviderPathFromPSPath(DataDirectory!);
}
