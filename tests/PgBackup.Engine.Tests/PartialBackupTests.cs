using PgBackup.Engine.Repository;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Tests;

/// <summary>
/// The lock and the write-then-commit protocol that keep interrupted backups from looking valid. A process that dies
/// cannot be simulated in-process, so "abandoned" here is a lock file nobody holds, which is what a killed process
/// leaves; the Pester fault suite kills real processes.
/// </summary>
public sealed class PartialBackupTests
{
    [Fact]
    public void A_lock_is_exclusive_says_who_holds_it_and_is_free_again_once_released()
    {
        var path = Path.Combine(Targets.NewFolder(), "backup.lock");
        using (var held = FileLock.TryAcquire(path, "Start-PgBaseBackup of db1:5432", deleteOnRelease: false))
        {
            Assert.NotNull(held);
            Assert.True(FileLock.IsHeld(path));
            Assert.StartsWith($"Start-PgBaseBackup of db1:5432 by process {Environment.ProcessId} on {Environment.MachineName} since ", FileLock.Owner(path));
            Assert.Null(FileLock.TryAcquire(path, "another", deleteOnRelease: false, patience: TimeSpan.FromMilliseconds(200)));
        }
        Assert.False(FileLock.IsHeld(path));
        Assert.True(File.Exists(path), "a shared lock file stays, so nobody can lock a file that is being deleted");
        Assert.Equal("", FileLock.Owner(path));
        using var again = FileLock.TryAcquire(path, "again", deleteOnRelease: false);
        Assert.NotNull(again);
    }

    [Fact]
    public void A_committed_backup_has_its_metadata_and_final_name_and_nothing_partial_is_left()
    {
        var folder = Targets.NewFolder();
        var final = Path.Combine(folder, "shop_20260101T000000000Z.dump");
        using (var writing = PartialBackup.Begin(final, "Invoke-PgDump of test", NullReporter.Instance))
        {
            File.WriteAllText(writing.PartialPath, "dump");
            Assert.True(FileLock.IsHeld(final + PartialBackup.LockSuffix));
            Assert.Empty(BackupCatalog.List(folder, null, null));
            Assert.Single(PartialBackup.Find(folder, recursive: false), l => l.InProgress);
            writing.Commit(new DumpBackup { Id = "x", Path = final, Kind = BackupKind.Dump, Database = "shop", Sha256 = "abc" }, replaceExisting: false);
        }
        Assert.Equal([final, BackupMetadata.PathFor(final)], Directory.GetFiles(folder).Order(StringComparer.Ordinal));
        Assert.Equal("dump", File.ReadAllText(final));
        Assert.Single(BackupCatalog.List(folder, null, null));
    }

    [Fact]
    public void An_unfinished_backup_is_deleted_when_it_is_given_up_and_never_listed()
    {
        var folder = Targets.NewFolder();
        var final = Path.Combine(folder, "base_20260101T000000000Z");
        using (var writing = PartialBackup.Begin(final, "Start-PgBaseBackup of test", NullReporter.Instance))
            Directory.CreateDirectory(Path.Combine(writing.PartialPath, "global"));
        Assert.Empty(Directory.GetFileSystemEntries(folder));
    }

    [Fact]
    public void What_a_dead_writer_left_is_removed_by_the_next_backup_into_the_folder_and_a_live_one_is_left_alone()
    {
        var folder = Targets.NewFolder();
        // A writer that died after its metadata reached the disk but before its rename, and one that died while writing.
        var renameMissing = Path.Combine(folder, "shop_1.dir");
        Directory.CreateDirectory(renameMissing + PartialBackup.Suffix);
        File.WriteAllText(BackupMetadata.PathFor(renameMissing), "{}");
        File.WriteAllText(renameMissing + PartialBackup.LockSuffix, "");
        var writing = Path.Combine(folder, "shop_2.dump");
        File.WriteAllText(writing + PartialBackup.Suffix, "half");
        File.WriteAllText(writing + PartialBackup.LockSuffix, "");
        File.WriteAllText(BackupMetadata.PathFor(writing) + ".tmp", "{");
        // A backup still being written by a live process.
        var live = Path.Combine(folder, "shop_3.dump");
        using var liveLock = FileLock.TryAcquire(live + PartialBackup.LockSuffix, "Invoke-PgDump of shop", deleteOnRelease: true)!;
        File.WriteAllText(live + PartialBackup.Suffix, "being written");
        // A finished backup.
        var done = Path.Combine(folder, "shop_0.dump");
        File.WriteAllText(done, "done");
        File.WriteAllText(BackupMetadata.PathFor(done), "{}");

        var found = PartialBackup.Find(folder, recursive: false);
        Assert.Equal(3, found.Count);
        Assert.Single(found, l => l.InProgress && l.Path == live + PartialBackup.Suffix);

        var reporter = new RecordingReporter();
        using (PartialBackup.Begin(Path.Combine(folder, "shop_4.dump"), "Invoke-PgDump of shop", reporter)) { }

        Assert.Equal(
            [done, BackupMetadata.PathFor(done), live + PartialBackup.Suffix, live + PartialBackup.LockSuffix, live + PartialBackup.LockSuffix + FileLock.OwnerSuffix],
            Directory.GetFileSystemEntries(folder).Order(StringComparer.Ordinal));
        Assert.Equal(2, reporter.Lines.Count(m => m.StartsWith("Removed '", StringComparison.Ordinal)));
    }

    [Fact]
    public void A_partial_without_a_lock_file_is_reported_but_not_removed_since_nobody_can_tell_whether_it_is_being_written()
    {
        var folder = Targets.NewFolder();
        var unknown = Path.Combine(folder, "shop_1.dump" + PartialBackup.Suffix);
        File.WriteAllText(unknown, "from an older PgBackup");
        using (PartialBackup.Begin(Path.Combine(folder, "shop_2.dump"), "Invoke-PgDump of shop", NullReporter.Instance)) { }
        Assert.True(File.Exists(unknown));
        var warnings = new List<string>();
        BackupCatalog.List(folder, null, warnings.Add);
        Assert.Contains(warnings, w => w.Contains(unknown, StringComparison.Ordinal) && w.Contains("is not a backup", StringComparison.Ordinal));
    }
}
