using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Recovery;

/// <summary>What a user can give Restore-PgPointInTime as its target, before it is one <see cref="RecoveryTarget"/>.</summary>
public sealed record RecoveryTargetChoice(DateTimeOffset? Time, Lsn? Lsn, ulong? Xid, string? Name, bool Immediate, bool Latest, bool Exclusive,
    string? Timeline, RecoveryTargetAction Action);

/// <summary>Turns the user's choices into one recovery target and the base backups that may serve it.</summary>
public static class RecoveryChoices
{
    public static RecoveryTarget Target(RecoveryTargetChoice choice)
    {
        var given = new (bool Set, Func<RecoveryTarget> Make)[]
        {
            (choice.Time != null, () => RecoveryTarget.AtTime(choice.Time!.Value, !choice.Exclusive)),
            (choice.Lsn != null, () => RecoveryTarget.AtLsn(choice.Lsn!.Value, !choice.Exclusive)),
            (choice.Xid != null, () => RecoveryTarget.AtXid(choice.Xid!.Value, !choice.Exclusive)),
            (choice.Name != null, () => RecoveryTarget.AtName(choice.Name!)),
            (choice.Immediate, RecoveryTarget.EndOfBackup),
            (choice.Latest, RecoveryTarget.EndOfArchive),
        }.Where(g => g.Set).ToList();
        if (given.Count != 1)
            throw new PgBackupException(given.Count == 0 ? "NoRecoveryTarget" : "TooManyRecoveryTargets", ErrorKind.InvalidArgument,
                given.Count == 0 ? "No recovery target was given." : "More than one recovery target was given.", null,
                "Give exactly one of -TargetTime, -TargetLsn, -TargetXid, -TargetName, -Immediate (end of the backup) or -Latest (end of the archive).");
        var target = given[0].Make();
        if (choice.Exclusive && target.Kind is not (RecoveryTargetKind.Time or RecoveryTargetKind.Lsn or RecoveryTargetKind.Xid))
            throw new PgBackupException("ExclusiveNotApplicable", ErrorKind.InvalidArgument, "-Exclusive applies only to -TargetTime, -TargetLsn and -TargetXid.", "Exclusive",
                "Leave out -Exclusive, or give a time, LSN or transaction id target.");
        if (target.Kind == RecoveryTargetKind.Latest && choice.Action != RecoveryTargetAction.Promote)
            throw new PgBackupException("TargetActionNotApplicable", ErrorKind.InvalidArgument,
                "-Latest has no stopping point to pause or shut down at: recovery replays all archived WAL and then opens the database.", choice.Action,
                "Leave out -TargetAction, or give a target (for example -TargetTime) to pause or shut down at.");
        target.Timeline = choice.Timeline;
        target.Action = choice.Action;
        return target;
    }

    /// <summary>A backup the user chose: refused when its last verification failed.</summary>
    public static BaseBackup Chosen(BaseBackup backup) => backup.VerificationState != VerificationState.Failed ? backup
        : throw new PgBackupException("BackupFailedVerification", ErrorKind.InvalidData, $"Base backup {backup.Id} failed its last verification ({backup.LastVerified:u}); PgBackup does not recover from it.", backup,
            "Recover from another base backup (Get-PgBackup -Kind Base lists them with their VerificationState), or run Test-PgBackup on this one again if the problem was fixed.");

    public static BaseBackup ById(string repository, string id, Action<string>? warn) =>
        ById(BackupCatalog.List(repository, new CatalogFilter(Kind: BackupKind.Base), warn).OfType<BaseBackup>(), repository, id);

    public static BaseBackup ById(IEnumerable<BaseBackup> listed, string repository, string id)
    {
        var match = listed.FirstOrDefault(b => string.Equals(b.Id, id, StringComparison.OrdinalIgnoreCase));
        return match != null ? Chosen(match) : throw new PgBackupException("BackupNotFound", ErrorKind.ObjectNotFound,
            $"The repository '{repository}' holds no base backup with the id '{id}'.", id, "Get-PgBackup -Kind Base lists the ids of the base backups it holds.");
    }

    /// <summary>The base backups of one server's cluster (the one its newest backup is of) that passed or await verification.</summary>
    public static IReadOnlyList<BaseBackup> OfServer(string repository, CatalogFilter serverFilter, string serverName, Action<string>? warn) =>
        OfServer(BackupCatalog.List(repository, serverFilter with { Kind = BackupKind.Base }, warn).OfType<BaseBackup>(), repository, serverName);

    public static IReadOnlyList<BaseBackup> OfServer(IEnumerable<BaseBackup> listed, string repository, string serverName)
    {
        var backups = listed.Where(b => b.VerificationState != VerificationState.Failed).ToList();
        if (backups.Count == 0)
            throw new PgBackupException("NoBaseBackup", ErrorKind.ObjectNotFound, $"The repository '{repository}' holds no base backup of {serverName}.", serverName,
                "Take one with Start-PgBaseBackup, or check -Server against Get-PgBackup -Kind Base.");
        var cluster = backups.MaxBy(b => b.StartTime)!.SystemIdentifier;
        return backups.Where(b => b.SystemIdentifier == cluster).ToList();
    }
}
