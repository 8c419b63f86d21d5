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

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Repository", nameof(Repository))));
        try
        {
            var path = RequireRepositoryAddress(settings);
            var target = ResolveServer(settings);
            WriteObject(RunEngine((reporter, ct) => WalArchiveReport.ForServerAsync(target, path, Verify, reporter, ct)), enumerateCollection: true);
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
