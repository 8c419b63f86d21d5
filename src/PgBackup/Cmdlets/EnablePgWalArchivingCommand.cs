using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Wal;

namespace PgBackup.Commands;

[Cmdlet(VerbsLifecycle.Enable, "PgWalArchiving", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(WalArchivingResult))]
public sealed class EnablePgWalArchivingCommand : PgServerCmdlet
{
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    [Parameter]
    public TimeSpan? MaxRpo { get; set; }

    [Parameter]
    public SwitchParameter Restart { get; set; }

    [Parameter]
    public SwitchParameter NoVerify { get; set; }

    [Parameter]
    public TimeSpan? VerifyTimeout { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>The guard against a full pg_wal: bytes of WAL that may wait before a segment whose push fails is dropped.</summary>
    [Parameter]
    [ValidateRange(0, long.MaxValue)]
    public long? DropBacklogAbove { get; set; }

    /// <summary>Segments archived at once by a background pusher ahead of the server; 1 (the default) archives only the one the server asks for.</summary>
    [Parameter]
    [ValidateRange(1, WalArchiveTool.MaxParallel)]
    public int ArchiveParallel { get; set; } = 1;

    /// <summary>Store WAL segments compressed; every reader decompresses them.</summary>
    [Parameter]
    public SwitchParameter CompressWal { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Repository", nameof(Repository))));
        try
        {
            var path = RequireRepositoryAddress(settings);
            var target = ResolveServer(settings);
            if (!ShouldProcess(target.Display, $"Install pgbackup-wal into {WalToolInstallation.Root} and enable WAL archiving into {path} (ALTER SYSTEM: wal_level, archive_mode, archive_command{(MaxRpo != null ? ", archive_timeout" : "")})" +
                (Restart ? " and restart the server if a setting needs it" : ""))) return;
            // Restarting a server interrupts every session on it: that part asks as a high-impact change.
            var restart = Restart && ShouldProcessHighImpact(target.Display, "Restart the server to apply wal_level and archive_mode",
                "A restart ends every session on the server and applies every setting that waits for a restart.");
            var request = new EnableArchivingRequest
            {
                Target = target,
                Repository = path,
                Tool = WalArchiveTool.InModuleFolder(ModuleFolder),
                MaxRpo = MaxRpo,
                Restart = restart,
                Verify = !NoVerify,
                VerifyTimeout = VerifyTimeout ?? TimeSpan.FromSeconds(60),
                ToolPath = settings.ToolPath,
                Force = Force,
                ToolInstallRoot = WalToolInstallation.Root,
                DropBacklogAbove = DropBacklogAbove,
                ArchiveParallel = ArchiveParallel,
                CompressWal = CompressWal,
            };
            WriteObject(RunEngine((reporter, ct) => ArchivingService.EnableAsync(request, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
