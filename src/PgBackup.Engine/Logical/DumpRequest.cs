using PgBackup.Engine.Connection;
using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Logical;

/// <summary>One database to dump (or the globals, when Globals is set) and where to put it.</summary>
public sealed record DumpRequest
{
    public required ConnectionTarget Target { get; init; }
    public bool Globals { get; init; }
    public DumpFormat Format { get; init; } = DumpFormat.Custom;
    public int Jobs { get; init; } = 1;
    public int? Compress { get; init; }
    public string[] Schemas { get; init; } = [];
    public string[] ExcludeSchemas { get; init; } = [];
    public string[] Tables { get; init; } = [];
    public string[] ExcludeTables { get; init; } = [];
    /// <summary>The repository (a folder or a blob container); the dump goes to &lt;repository&gt;/&lt;host_port&gt;/&lt;database&gt;/.</summary>
    public RepositoryAddress? Repository { get; init; }
    /// <summary>Exact file (or folder, for Directory format) to write instead of a repository location.</summary>
    public string? Path { get; init; }
    public bool Force { get; init; }
    public string? ToolPath { get; init; }
}
