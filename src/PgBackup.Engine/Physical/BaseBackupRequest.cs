using PgBackup.Engine.Connection;
using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Physical;

public sealed record BaseBackupRequest
{
    public required ConnectionTarget Target { get; init; }
    public BaseBackupFormat Format { get; init; } = BaseBackupFormat.Plain;
    public WalMethod WalMethod { get; init; } = WalMethod.Stream;
    /// <summary>A pg_basebackup --compress value: [client-|server-]gzip|lz4|zstd|none[:level].</summary>
    public string? Compress { get; init; }
    public CheckpointMode CheckpointMode { get; init; } = CheckpointMode.Fast;
    public string? Label { get; init; }
    /// <summary>pg_basebackup --max-rate, such as "50M" or "2048k".</summary>
    public string? MaxRate { get; init; }
    /// <summary>The repository (a folder or a blob container); the backup goes to &lt;repository&gt;/&lt;host_port&gt;/base/.</summary>
    public RepositoryAddress? Repository { get; init; }
    /// <summary>Exact folder to write instead of a repository location.</summary>
    public string? Path { get; init; }
    public bool Force { get; init; }
    /// <summary>
    /// How long pg_basebackup may receive nothing, with the server not answering a query either, before the backup is
    /// stopped as hung (a server or network that hangs would otherwise keep it waiting forever).
    /// </summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromMinutes(5);
    public string? ToolPath { get; init; }
}
