using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Wal;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Get, "PgWalArchive")]
[OutputType(typeof(WalArchiveStatus))]
public sealed class GetPgWalArchiveCommand : PgServerCmdlet
{
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    [Parameter]
    public SwitchParameter Verify { get; set; }

    /// <summary>Fail (PgBackup.WalBacklogExceeded) when more completed segments than this wait to be archived.</summary>
    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int? MaxBacklog { get; set; }

    /// <summary>Fail when the oldest segment waiting to be archived has waited longer than this.</summary>
    [Parameter]
    public TimeSpan? MaxBacklogAge { get; set; }

    /// <summary>Fail when the disk of pg_wal has fewer free bytes than this.</summary>
    [Parameter]
    [ValidateRange(0, long.MaxValue)]
    public long? MinFreeBytes { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Repository", nameof(Repository))));
        try
        {
            var path = RequireRepositoryAddress(settings);
            var target = ResolveServer(settings);
            var statuses = RunEngine((reporter, ct) => WalArchiveReport.ForServerAsync(target, path, Verify, reporter, ct));
            WriteObject(statuses, enumerateCollection: true);
            var current = statuses.Single(s => s.InRecovery != null);
            if (WalArchiveReport.CheckBacklog(current, MaxBacklog, MaxBacklogAge, MinFreeBytes) is { } exceeded) WriteEngineError(exceeded);
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
