using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Logical;

namespace PgBackup.Commands;

[Cmdlet(VerbsLifecycle.Invoke, "PgDump", DefaultParameterSetName = DatabaseSet, SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(DumpBackup))]
public sealed class InvokePgDumpCommand : PgServerCmdlet
{
    private const string DatabaseSet = "Database";
    private const string GlobalsSet = "Globals";

    [Parameter(Position = 1, ParameterSetName = DatabaseSet, ValueFromPipelineByPropertyName = true)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[]? Database { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = GlobalsSet)]
    public SwitchParameter Globals { get; set; }

    [Parameter(ParameterSetName = DatabaseSet)]
    public DumpFormat? Format { get; set; }

    [Parameter(ParameterSetName = DatabaseSet)]
    [ValidateRange(1, 256)]
    public int? Jobs { get; set; }

    [Parameter(ParameterSetName = DatabaseSet)]
    [ValidateRange(0, 9)]
    public int? Compress { get; set; }

    [Parameter(ParameterSetName = DatabaseSet)]
    [SupportsWildcards]
    public string[] Schema { get; set; } = [];

    [Parameter(ParameterSetName = DatabaseSet)]
    [SupportsWildcards]
    public string[] ExcludeSchema { get; set; } = [];

    [Parameter(ParameterSetName = DatabaseSet)]
    [SupportsWildcards]
    public string[] Table { get; set; } = [];

    [Parameter(ParameterSetName = DatabaseSet)]
    [SupportsWildcards]
    public string[] ExcludeTable { get; set; } = [];

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Path { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Repository", nameof(Repository)), ("Jobs", nameof(Jobs))));
        try
        {
            if (Repository != null && Path != null)
                throw new PgBackupException("PathAndRepository", ErrorKind.InvalidArgument, "Give either -Repository or -Path, not both.", Path,
                    "Use -Repository to file dumps by server and database, or -Path for one exact file.");
            var target = ResolveServer(settings);
            var path = Path == null ? null : GetUnresolvedProviderPathFromPSPath(Path);
            var repository = path == null && settings.Repository != null ? RequireRepositoryAddress(settings) : null;
            var format = Format ?? settings.DefaultFormat;
            var databases = Globals ? [target.Database] : ExpandDatabases(target);
            if (path != null && databases.Count > 1)
                throw new PgBackupException("PathWithManyDatabases", ErrorKind.InvalidArgument,
                    $"-Path names one dump, but {databases.Count} databases were selected ({string.Join(", ", databases)}).", Database,
                    "Use -Repository to dump several databases, or select one database.");

            foreach (var database in databases)
            {
                var request = new DumpRequest
                {
                    Target = target.WithDatabase(database),
                    Globals = Globals,
                    Format = format,
                    Jobs = Jobs ?? (format == DumpFormat.Directory ? settings.Jobs : 1),
                    Compress = Compress,
                    Schemas = Schema,
                    ExcludeSchemas = ExcludeSchema,
                    Tables = Table,
                    ExcludeTables = ExcludeTable,
                    Repository = repository,
                    Path = path,
                    Force = Force,
                    ToolPath = settings.ToolPath,
                };
                var what = Globals ? $"globals of {target.Display}" : $"{target.Display}/{database}";
                if (!ShouldProcess(what, $"Dump ({(Globals ? "pg_dumpall --globals-only" : format.ToString())}) to {path ?? repository?.Display ?? "(no destination)"}"))
                    continue;
                try { WriteObject(RunEngine((reporter, ct) => DumpService.DumpAsync(request, reporter, ct))); }
                catch (PgBackupException ex) { WriteEngineError(ex); }
            }
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }

    private List<string> ExpandDatabases(ConnectionTarget target)
    {
        if (Database == null || Database.Length == 0)
        {
            var named = ServerResolver.Parse(Server, LoadSettings()).ContainsKey("dbname") || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("PGDATABASE"));
            return named ? [target.Database]
                : throw new PgBackupException("DatabaseRequired", ErrorKind.InvalidArgument, "No database was named to dump.", ServerResolver.Redact(Server),
                    "Pass -Database (names or wildcards, e.g. -Database * for all), name one in the -Server connection string, or set PGDATABASE; use -Globals for roles and tablespaces.");
        }
        if (!Database.Any(WildcardPattern.ContainsWildcardCharacters)) return [.. Database.Distinct()];
        var all = RunEngine((_, ct) => ServerSession.ListDatabasesAsync(target, ct));
        var chosen = new List<string>();
        foreach (var pattern in Database)
        {
            var wildcard = new WildcardPattern(pattern, WildcardOptions.None);
            var matches = all.Where(wildcard.IsMatch).ToList();
            if (matches.Count == 0)
                WriteEngineError(new PgBackupException("DatabaseNotFound", ErrorKind.ObjectNotFound,
                    $"No database on {target.Display} matches '{pattern}'.", pattern,
                    "Check the pattern; database names are case-sensitive. Databases that do not allow connections and templates are never dumped."));
            chosen.AddRange(matches.Where(m => !chosen.Contains(m)));
        }
        return chosen;
    }
}
