using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Repository;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Get, "PgRepository")]
[OutputType(typeof(BackupRepository))]
public sealed class GetPgRepositoryCommand : PgCmdlet
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
            WriteObject(RunEngine((reporter, ct) => RepositoryService.DescribeAsync(repository, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
