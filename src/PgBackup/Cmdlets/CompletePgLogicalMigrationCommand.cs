using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Migration;

namespace PgBackup.Commands;

[Cmdlet(VerbsLifecycle.Complete, "PgLogicalMigration", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(LogicalCutover))]
public sealed class CompletePgLogicalMigrationCommand : PgMigrationCmdlet
{
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? Name { get; set; }

    [Parameter]
    [ValidateRange(0, long.MaxValue)]
    public long MaxLagBytes { get; set; } = 16 * 1024 * 1024;

    [Parameter]
    public SwitchParameter LeaveSourceWritable { get; set; }

    [Parameter]
    public SwitchParameter VerifyData { get; set; }

    [Parameter]
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(60);

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            RequirePositiveTimeout(Timeout);
            var (source, target) = ResolvePair(settings);
            var request = new LogicalCutoverRequest
            {
                Source = source, Target = target, Name = Name, MaxLagBytes = MaxLagBytes, LeaveSourceWritable = LeaveSourceWritable, VerifyData = VerifyData, Timeout = Timeout,
            };
            var plan = RunEngine((reporter, ct) => LogicalCutoverService.PlanAsync(request, reporter, ct));
            if (MyInvocation.BoundParameters.TryGetValue("WhatIf", out var whatIf) && (SwitchParameter)whatIf)
            {
                foreach (var step in plan.Steps) ShouldProcess($"{source.Display}/{source.Database}", step);
                return;
            }
            if (!ShouldProcess($"{source.Display}/{source.Database}", $"Cut over to {target.Display}/{target.Database}: " + string.Join("; ", plan.Steps))) return;
            var result = RunEngine((reporter, ct) => LogicalCutoverService.ExecuteAsync(plan, reporter, ct));
            WriteObject(result);
            if (LogicalCutoverService.FailureOf(result) is { } differs) WriteEngineError(differs);
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
