using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Migration;

namespace PgBackup.Commands;

[Cmdlet(VerbsLifecycle.Start, "PgLogicalMigration", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(LogicalMigration))]
public sealed class StartPgLogicalMigrationCommand : PgMigrationCmdlet
{
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string[]? Table { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string[]? Schema { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
    public SwitchParameter Restart { get; set; }

    [Parameter]
    public SwitchParameter NoWait { get; set; }

    [Parameter]
    public TimeSpan? Timeout { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            if (Timeout is { } timeout) RequirePositiveTimeout(timeout);
            var (source, target) = ResolvePair(settings);
            var request = new LogicalMigrationRequest
            {
                Source = source, Target = target, Tables = Table ?? [], Schemas = Schema ?? [], Force = Force, Restart = Restart, NoWait = NoWait, Timeout = Timeout,
                ToolPath = settings.ToolPath,
            };
            var plan = RunEngine((reporter, ct) => LogicalMigrationService.PlanAsync(request, reporter, ct));
            foreach (var line in plan.NotCarried) WriteWarning("Logical replication does not carry " + line + ".");
            if (MyInvocation.BoundParameters.TryGetValue("WhatIf", out var whatIf) && (SwitchParameter)whatIf)
            {
                foreach (var step in plan.Steps) ShouldProcess($"{target.Display}/{target.Database}", step);
                return;
            }
            if (!ShouldProcess($"{target.Display}/{target.Database}", $"Migrate {plan.Tables.Count} table(s) of {source.Database} from {source.Display}: " + string.Join("; ", plan.Steps))) return;
            if (plan.NonEmptyOnTarget.Count > 0 &&
                !ShouldProcessHighImpact($"{target.Display}/{target.Database}", "Empty " + string.Join(", ", plan.NonEmptyOnTarget.Select(t => t.Display)), "-Force deletes the rows these target tables hold.")) return;
            WriteObject(RunEngine((reporter, ct) => LogicalMigrationService.StartAsync(plan, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
