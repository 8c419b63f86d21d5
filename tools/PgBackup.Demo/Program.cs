using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Runspaces;
using PgBackup.Testing;

// Starts a throwaway PostgreSQL with a sample database, imports the built module from out/PgBackup/<version>/ and runs
// a PowerShell script (default: examples/first-backup.ps1) with $Server and $Repository set, printing every object it returns.
var root = FindRoot();
var script = args.Length > 0 ? Path.GetFullPath(args[0]) : Path.Combine(root, "examples", "first-backup.ps1");
var manifest = Directory.GetFiles(Path.Combine(root, "out", "PgBackup"), "PgBackup.psd1", SearchOption.AllDirectories).Single();
var repository = Path.Combine(Path.GetTempPath(), "pgbackup-demo-" + Guid.NewGuid().ToString("N")[..8]);

Console.WriteLine($"Starting a throwaway PostgreSQL {PgTestCluster.MajorVersion} and creating the sample database 'shop' (100,000 items)...");
using var cluster = PgTestCluster.Start("demo");
SampleDatabase.Create(cluster, "shop");
Environment.SetEnvironmentVariable("PGPASSFILE", PgTestCluster.PgPassFile);
Environment.SetEnvironmentVariable("PGUSER", PgTestCluster.SuperUser);

using var runspace = RunspaceFactory.CreateRunspace(InitialSessionState.CreateDefault2());
runspace.Open();
using var ps = PowerShell.Create();
ps.Runspace = runspace;
ps.AddCommand("Import-Module").AddParameter("Name", manifest).AddParameter("ErrorAction", "Stop").AddStatement();
ps.AddCommand(script).AddParameter("Server", cluster.ServerArgument).AddParameter("Repository", repository);
ps.Streams.Information.DataAdded += (_, e) => Console.WriteLine("  > " + ps.Streams.Information[e.Index].MessageData);
ps.Streams.Warning.DataAdded += (_, e) => Console.WriteLine("WARNING: " + ps.Streams.Warning[e.Index].Message);
Console.WriteLine($"Running {Path.GetRelativePath(root, script)} with -Server {cluster.ServerArgument} -Repository {repository}");
Console.WriteLine();

var output = new PSDataCollection<PSObject>();
output.DataAdded += (_, e) => Print(output[e.Index]);
var failed = false;
try { ps.Invoke(null, output); }
catch (RuntimeException ex) { Console.Error.WriteLine($"ERROR {ex.ErrorRecord.FullyQualifiedErrorId}: {ex.Message}"); failed = true; }
foreach (var error in ps.Streams.Error)
{
    Console.Error.WriteLine($"ERROR {error.FullyQualifiedErrorId} ({error.CategoryInfo.Category}): {error}");
    if (error.ErrorDetails?.RecommendedAction is { Length: > 0 } action) Console.Error.WriteLine("      What to do: " + action);
    failed = true;
}
try { Directory.Delete(repository, recursive: true); } catch (IOException) { }
return failed ? 1 : 0;

static void Print(PSObject item)
{
    if (item.BaseObject is string s) { Console.WriteLine(s); return; }
    Console.WriteLine(item.TypeNames[0]);
    foreach (var p in item.Properties)
    {
        var value = p.Value is IEnumerable e and not string ? string.Join(", ", e.Cast<object>()) : p.Value;
        Console.WriteLine($"  {p.Name,-18} : {value}");
    }
    Console.WriteLine();
}

static string FindRoot()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "PgBackup.sln"))) return dir.FullName;
    throw new InvalidOperationException("Run the demo from inside the PgBackup repository.");
}
