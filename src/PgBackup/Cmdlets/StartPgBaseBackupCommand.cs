using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Physical;

namespace PgBackup.Commands;

[Cmdlet(VerbsLifecycle.Start, "PgBaseBackup", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(BaseBackup))]
public sealed class StartPgBaseBackupCommand : PgServerCmdlet
{
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Path { get; set; }

    [Parameter]
    public BaseBackupFormat Format { get; set; } = BaseBackupFormat.Plain;

    [Parameter]
    public WalMethod WalMethod { get; set; } = WalMethod.Stream;

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Compress { get; set; }

    [Parameter]
    public CheckpointMode CheckpointMode { get; set; } = CheckpointMode.Fast;

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Label { get; set; }

    [Parameter]
    [ValidatePattern(@"^\d+[kKmM]?$")]
    public string? MaxRate { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
    public TimeSpan StallTimeout { get; set; } = TimeSpan.FromMinutes(5);

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Repository", nameof(Repository))));
        try
        {
            if (Repository != null && Path != null)
                throw new PgBackupException("PathAndRepository", ErrorKind.InvalidArgument, "Give either -Repository or -Path, not both.", Path,
                    "Use -Repository to file base backups by server, or -Path for one exact folder.");
            RequirePositiveTimeout(StallTimeout, nameof(StallTimeout));
            var target = ResolveServer(settings);
            var path = Path == null ? null : GetUnresolvedProviderPathFromPSPath(Path);
            var repository = path == null && settings.Repository != null ? RequireRepositoryAddress(settings) : null;
            var format = MyInvocation.BoundParameters.ContainsKey(nameof(Format)) ? Format : RunEngine((_, ct) => BaseBackupService.DefaultFormatAsync(repository, ct));
            var request = new BaseBackupRequest
            {
                Target = target,
                Format = format,
                WalMethod = WalMethod,
                Compress = Compress,
                CheckpointMode = CheckpointMode,
                Label = Label,
                MaxRate = MaxRate,
                Repository = repository,
                Path = path,
                Force = Force,
                StallTimeout = StallTimeout,
                ToolPath = settings.ToolPath,
            };
            if (!ShouldProcess(target.Display, $"Base backup ({format}, WAL {WalMethod}) to {path ?? repository?.Display ?? "(no destination)"}")) return;
            WriteObject(RunEngine((reporter, ct) => BaseBackupService.BackupAsync(request, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
