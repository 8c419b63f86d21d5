using System.Management.Automation;
using System.Reflection;
using System.Runtime.Loader;

namespace PgBackup.Commands;

/// <summary>
/// Loads PgBackup.Engine and its dependencies (Npgsql, Microsoft.Extensions.*) from the module's Dependencies folder into a
/// private AssemblyLoadContext, so other modules that ship other versions of those libraries cannot collide with ours.
/// PgBackup.Model stays in the default context: its types are what scripts and format files see.
/// </summary>
public sealed class ModuleInitializer : IModuleAssemblyInitializer, IModuleAssemblyCleanup
{
    private static readonly string DependencyFolder =
        Path.Combine(Path.GetDirectoryName(typeof(ModuleInitializer).Assembly.Location)!, "Dependencies");
    private static readonly DependencyLoadContext Context = new(DependencyFolder);
    private static int _registered;

    public void OnImport()
    {
        if (Interlocked.Exchange(ref _registered, 1) == 0)
            AssemblyLoadContext.Default.Resolving += ResolveEngine;
    }

    public void OnRemove(PSModuleInfo module)
    {
        // Runspaces may still use the module (Azure Automation runs several jobs in one process), so the handler stays registered.
    }

    private static Assembly? ResolveEngine(AssemblyLoadContext context, AssemblyName name) =>
        name.Name == "PgBackup.Engine" ? Context.LoadFromAssemblyName(name) : null;

    private sealed class DependencyLoadContext(string folder) : AssemblyLoadContext("PgBackup.Dependencies")
    {
        protected override Assembly? Load(AssemblyName name)
        {
            if (name.Name == "PgBackup.Model") return typeof(DumpBackup).Assembly;
            var path = Path.Combine(folder, name.Name + ".dll");
            return File.Exists(path) ? LoadFromAssemblyPath(path) : null;
        }
    }
}
