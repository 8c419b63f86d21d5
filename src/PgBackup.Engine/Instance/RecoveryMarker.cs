using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Instance;

/// <summary>
/// The lock a recovery holds in its data directory ("pgbackup_recovery.lock") from before it writes the first file
/// until the target is reached and checked. The operating system releases it when the recovering process goes, so a
/// data directory with the file but no holder is what an interrupted recovery left: possibly incomplete, in any case
/// unchecked. Start-PgInstance refuses it; the same Restore-PgPointInTime run again replaces it without -Force, and
/// Remove-PgInstance removes it.
/// </summary>
public static class RecoveryMarker
{
    public const string FileName = "pgbackup_recovery.lock";

    public static string PathIn(string dataDirectory) => Path.Combine(dataDirectory, FileName);

    /// <summary>A recovery is writing into the folder right now.</summary>
    public static bool InProgress(string dataDirectory) => FileLock.IsHeld(PathIn(dataDirectory));

    /// <summary>A recovery that was interrupted left the folder.</summary>
    public static bool Abandoned(string dataDirectory) => File.Exists(PathIn(dataDirectory)) && !FileLock.IsHeld(PathIn(dataDirectory));

    public static string Owner(string dataDirectory) => FileLock.Owner(PathIn(dataDirectory)) is { Length: > 0 } owner ? owner : "no record of which process";

    /// <summary>Takes the folder for a recovery; an error when another recovery is writing into it.</summary>
    public static FileLock Take(string dataDirectory, string purpose) =>
        FileLock.TryAcquire(PathIn(dataDirectory), purpose, deleteOnRelease: true) ?? throw Busy(dataDirectory);

    /// <summary>Errors for a folder a recovery is writing into or left unfinished, for commands that would start or use it.</summary>
    public static void RefuseUnfinished(string dataDirectory, string verb)
    {
        if (InProgress(dataDirectory)) throw Busy(dataDirectory);
        if (Abandoned(dataDirectory))
            throw new PgBackupException("RecoveryIncomplete", ErrorKind.InvalidOperation,
                $"'{dataDirectory}' holds what an interrupted Restore-PgPointInTime left ({Owner(dataDirectory)}): it may be incomplete and was never checked, so PgBackup does not {verb} it.",
                dataDirectory, "Run the same Restore-PgPointInTime again (it replaces what is there without -Force), or remove the folder with Remove-PgInstance.");
    }

    private static PgBackupException Busy(string dataDirectory) =>
        new("RecoveryInProgress", ErrorKind.ResourceBusy, $"A recovery is writing into '{dataDirectory}' right now ({Owner(dataDirectory)}).", dataDirectory,
            "Wait until it has finished, or choose another -DataDirectory.");
}
