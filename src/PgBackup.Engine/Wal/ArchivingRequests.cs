using PgBackup.Engine.Connection;
using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Wal;

/// <summary>Turn on WAL archiving of one server into a repository (Enable-PgWalArchiving).</summary>
public sealed record EnableArchivingRequest
{
    public required ConnectionTarget Target { get; init; }
    /// <summary>Repository (folder or blob container); the WAL goes to &lt;repository&gt;/wal/&lt;system identifier&gt;/.</summary>
    public required RepositoryAddress Repository { get; init; }
    public required WalArchiveTool Tool { get; init; }
    /// <summary>The most WAL time that may be lost: becomes archive_timeout, so a quiet server still closes a segment this often.</summary>
    public TimeSpan? MaxRpo { get; init; }
    /// <summary>Restart the server (pg_ctl restart -m fast) when a changed setting needs it; only for a data directory on this machine.</summary>
    public bool Restart { get; init; }
    /// <summary>Switch to a new WAL segment and wait for it in the archive, when no restart is pending.</summary>
    public bool Verify { get; init; } = true;
    public TimeSpan VerifyTimeout { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>The PostgreSQL bin folder for pg_ctl (ToolPath setting); searched for when null.</summary>
    public string? ToolPath { get; init; }
    /// <summary>Replace an archive_command that is not PgBackup's.</summary>
    public bool Force { get; init; }
    /// <summary>
    /// Install the tool under this root (<see cref="WalToolInstallation.Root"/> for the cmdlets), when this process may,
    /// and let archive_command run it from there, so that the server can always run it and a module update does not change
    /// it under a running archive. Null: archive_command runs <see cref="Tool"/> where it is.
    /// </summary>
    public string? ToolInstallRoot { get; init; }
    /// <summary>
    /// The guard against a full pg_wal: when a push fails while more than this many bytes of completed segments wait in
    /// pg_wal, the segment is acknowledged without being archived (and recorded). Null: never (the default).
    /// </summary>
    public long? DropBacklogAbove { get; init; }
    /// <summary>
    /// Above 1: when the server asks for one segment, a background pusher also archives the next ready ones, this many at
    /// a time; each is still acknowledged only once it is committed with its checksum. 1: only the segment asked for.
    /// </summary>
    public int ArchiveParallel { get; init; } = 1;
    /// <summary>Store segments compressed (zlib, fastest level): fewer bytes to the repository, decompressed on every read.</summary>
    public bool CompressWal { get; init; }
}

/// <summary>Undo Enable-PgWalArchiving (Disable-PgWalArchiving).</summary>
public sealed record DisableArchivingRequest
{
    public required ConnectionTarget Target { get; init; }
    public bool Restart { get; init; }
    /// <summary>Reset archive_command even when it is not PgBackup's (another tool archives this server).</summary>
    public bool Force { get; init; }
    public string? ToolPath { get; init; }
    /// <summary>Where Enable-PgWalArchiving installs the tool: the build this cluster ran is removed when no other cluster runs it.</summary>
    public string? ToolInstallRoot { get; init; }
}

/// <summary>A server's archiving settings as they are in effect now, read without changing anything.</summary>
public sealed record ArchivingState
{
    public required string WalLevel { get; init; }
    public required string ArchiveMode { get; init; }
    /// <summary>
    /// The configured command, also while archive_mode is off (when PostgreSQL itself shows "(disabled)"); null when this
    /// role may not read it (superusers and pg_read_all_settings may).
    /// </summary>
    public string? ArchiveCommand { get; init; }
    /// <summary>PostgreSQL 15 and later: an archive module that replaces archive_command when set.</summary>
    public string? ArchiveLibrary { get; init; }
    public TimeSpan? ArchiveTimeout { get; init; }
    /// <summary>True when archive_command runs pgbackup-wal push.</summary>
    public bool IsPgBackupCommand { get; init; }
    /// <summary>The folder, or a blob archive's URL, pgbackup-wal archives into, when <see cref="IsPgBackupCommand"/>.</summary>
    public string? ArchiveFolder { get; init; }
    /// <summary>The file pgbackup-wal reads a blob archive's credential from, when it archives into one.</summary>
    public string? CredentialsFile { get; init; }
    /// <summary>The file pgbackup-wal reads an encrypted repository's public key from, when it encrypts what it archives.</summary>
    public string? KeyFile { get; init; }
    /// <summary>The limit of the guard that drops segments when pg_wal's backlog passes it, when archive_command sets one.</summary>
    public long? DropBacklogAbove { get; init; }
    /// <summary>How many segments the background pusher archives at once (archive_command's --parallel); 1 when it pushes none ahead.</summary>
    public int ArchiveParallel { get; init; } = 1;
    /// <summary>archive_command stores segments compressed (--compress).</summary>
    public bool CompressWal { get; init; }
    /// <summary>Settings changed in the configuration that wait for a restart (pg_settings.pending_restart).</summary>
    public string[] PendingRestart { get; init; } = [];
    /// <summary>Null when this role may not call pg_control_system().</summary>
    public string? SystemIdentifier { get; init; }

    /// <summary>archive_mode is on (or always), and a command (or one this role cannot see) or an archive module is there to run.</summary>
    public bool IsArchiving => ArchiveMode is "on" or "always" && (ArchiveCommand is not "" || !string.IsNullOrEmpty(ArchiveLibrary));
}
