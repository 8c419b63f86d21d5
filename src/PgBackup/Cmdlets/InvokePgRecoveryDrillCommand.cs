using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Recovery;
using PgBackup.Engine.Wal;
using PgBackup.Engine.Instance;

namespace PgBackup.Commands;

[Cmdlet(VerbsLifecycle.Invoke, "PgRecoveryDrill", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(DrillReport))]
public sealed class InvokePgRecoveryDrillCommand : PgServerCmdlet
{
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    [Parameter]
    public TimeSpan? RtoObjective { get; set; }

    [Parameter]
    public TimeSpan? RpoObjective { get; set; }

    /// <summary>Queries whose results must be the same on the source and on the recovered instance.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string[] Query { get; set; } = [];

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string Database { get; set; } = "postgres";

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? DataDirectory { get; set; }

    /// <summary>The port of the throwaway instance; a free one when not given.</summary>
    [Parameter]
    [ValidateRange(1, 65535)]
    public int? RecoveryPort { get; set; }

    [Parameter]
    public SwitchParameter Keep { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? ReportPath { get; set; }

    /// <summary>The passphrase of an encrypted repository.</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    /// <summary>A certificate, with its private key, that reads an encrypted repository.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public object[]? Certificate { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Repository", nameof(Repository))));
        try
        {
            var source = ResolveServer(settings);
            var request = new DrillRequest
            {
                Source = source,
                Repository = RequireRepositoryAddress(settings),
                WalTool = WalArchiveTool.InModuleFolder(ModuleFolder),
                RtoObjective = RtoObjective,
                RpoObjective = RpoObjective,
                Queries = Query,
                QueryDatabase = Database,
                DataDirectory = DataDirectory == null ? null : GetUnresolvedProviderPathFromPSPath(DataDirectory),
                Port = RecoveryPort,
                Keep = Keep,
                ReportPath = ReportPath == null ? null : GetUnresolvedProviderPathFromPSPath(ReportPath),
                ToolPath = settings.ToolPath,
                Keys = ResolveKeys(settings, Passphrase, Certificate),
            };
            if (request.DataDirectory != null || RecoveryPort != null)
                PointInTimeRecovery.CheckDestination(request.DataDirectory ?? System.IO.Path.GetTempPath() + "pgbackup-drill-check-" + Guid.NewGuid().ToString("N"), RecoveryPort ?? InstanceControl.FreePort(), force: false);
            if (!ShouldProcess(source.Display, $"Recover its newest base backup from {request.Repository} into a throwaway instance, check it and {(Keep ? "keep" : "remove")} it")) return;
            WriteObject(RunEngine((reporter, ct) => RecoveryDrill.RunAsync(request, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
