using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Migration;

namespace PgBackup.Commands;

/// <summary>Abandons a logical migration at any stage: its subscription, slot and publication go, and a source a cutover made read-only takes writes again.</summary>
[Cmdlet(VerbsLifecycle.Stop, "PgLogicalMigration", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(string))]
public sealed class StopPgLogicalMigrationCommand : PgMigrationCmdlet
{
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? Name { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            var (source, target) = ResolvePair(settings);
            var name = Name ?? RunEngine((_, ct) => LogicalMigrationService.NameOfAsync(source, target, ct));
            if (!ShouldProcess($"{source.Display}/{source.Database}", $"Remove the migration {name}: its subscription on {target.Display}/{target.Database}, its slot and publication on the source, and the source's read-only setting")) return;
            var removed = RunEngine((reporter, ct) => LogicalMigrationService.RemoveAsync(name, source, target, reporter, ct));
            if (removed.Count == 0) WriteWarning($"Nothing of the migration {name} was found: no subscription, slot, publication or read-only setting.");
            if (PassThru) WriteObject(removed, enumerateCollection: true);
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
