using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Wal;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Get, "PgWalArchive")]
[OutputType(typeof(WalArchiveStatus))]
public sealed class GetPgWalArchiveCommand : PgCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? Server { get; set; }

    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, 65535)]
    public int? Port { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? Credential { get; set; }

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
            var repository = settings.Repository ?? throw new PgBackupException("NoRepository", ErrorKind.InvalidArgument, "No repository was given.", null,
                "Pass -Repository, or set the Repository setting (PGBACKUP_REPOSITORY or pgbackup.json).");
            var target = ResolveServer(settings, Server, Port, null, Credential);
            var path = GetUnresolvedProviderPathFromPSPath(repository);
            WriteObject(RunEngine((reporter, ct) => WalArchiveReport.ForServerAsync(target, path, Verify, reporter, ct)), enumerateCollection: true);
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
