using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Connection;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Get, "PgBackup")]
[OutputType(typeof(DumpBackup), typeof(BaseBackup))]
public sealed class GetPgBackupCommand : PgCmdlet
{
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Server { get; set; }

    [Parameter(Position = 1)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[]? Database { get; set; }

    [Parameter]
    public BackupKind? Kind { get; set; }

    [Parameter]
    public SwitchParameter Latest { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Repository", nameof(Repository))));
        try
        {
            var repository = RequireRepositoryAddress(settings);
            var filter = WithServer(new CatalogFilter(Kind: Kind, DatabaseMatches: DatabaseFilter()), Server, settings);
            var backups = RunEngine((reporter, ct) => BackupCatalog.ListAsync(repository, filter, reporter.Warning, reporter.Verbose, ct));
            if (Latest)
                backups = backups.GroupBy(b => (b.Server.ToLowerInvariant(), b.Port, b.Kind, b.Database)).Select(g => g.MaxBy(b => b.StartTime)!).ToList();
            WriteObject(backups, enumerateCollection: true);
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }

    private Func<string, bool>? DatabaseFilter()
    {
        if (Database == null) return null;
        var patterns = Database.Select(d => new WildcardPattern(d, WildcardOptions.None)).ToList();
        return name => patterns.Any(p => p.IsMatch(name));
    }
}
