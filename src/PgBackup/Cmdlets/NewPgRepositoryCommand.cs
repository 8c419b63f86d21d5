using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Repository;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.New, "PgRepository", SupportsShouldProcess = true)]
[OutputType(typeof(BackupRepository))]
public sealed class NewPgRepositoryCommand : PgCmdlet
{
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Location")]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Repository", nameof(Repository))));
        try
        {
            var repository = RequireRepositoryAddress(settings);
            if (!ShouldProcess(repository.Display, "Create the repository (folder or container) if missing, test writing, listing, reading and deleting in it, and write its format marker")) return;
            WriteObject(RunEngine((reporter, ct) => RepositoryService.CreateAsync(repository, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
