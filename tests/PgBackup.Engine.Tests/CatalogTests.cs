using PgBackup.Engine.Repository;
using PgBackup.Engine.Logical;

namespace PgBackup.Engine.Tests;

public sealed class CatalogTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 25, 12, 0, 0, TimeSpan.Zero);

    private static DumpBackup Backup(string db, int daysAgo, VerificationState state = VerificationState.Unverified) => new()
    {
        Server = "db1", Port = 5432, Database = db, Kind = BackupKind.Dump, StartTime = Now.AddDays(-daysAgo),
        Path = $"/repo/db1_5432/{db}/{db}_{daysAgo}.dump", VerificationState = state,
    };

    [Fact]
    public void KeepLast_keeps_the_newest_n_of_each_database()
    {
        var backups = new[] { Backup("a", 1), Backup("a", 2), Backup("a", 3), Backup("b", 5) };
        var plan = BackupCatalog.PlanRetention(backups, keepLast: 2, olderThan: null, Now, force: false);
        var removed = Assert.Single(plan);
        Assert.True(removed.Remove);
        Assert.EndsWith("a_3.dump", removed.Backup.Path);
    }

    [Fact]
    public void KeepLast_and_OlderThan_together_keep_at_least_n_and_everything_newer_than_the_age()
    {
        var backups = Enumerable.Range(1, 10).Select(d => Backup("a", d * 5)).ToArray(); // 5, 10, ... 50 days old
        var plan = BackupCatalog.PlanRetention(backups, keepLast: 3, olderThan: TimeSpan.FromDays(30), Now, force: false);
        Assert.Equal(["a_35.dump", "a_40.dump", "a_45.dump", "a_50.dump"], plan.Where(d => d.Remove).Select(d => Path.GetFileName(d.Backup.Path)).Order());
        var few = BackupCatalog.PlanRetention(backups.Skip(6).ToArray(), keepLast: 3, olderThan: TimeSpan.FromDays(30), Now, force: false);
        Assert.Equal(["a_50.dump"], few.Where(d => d.Remove).Select(d => Path.GetFileName(d.Backup.Path)));
    }

    [Fact]
    public void OlderThan_never_removes_the_last_valid_backup_unless_forced()
    {
        var backups = new[] { Backup("a", 40), Backup("a", 50), Backup("a", 35, VerificationState.Failed) };
        var plan = BackupCatalog.PlanRetention(backups, null, TimeSpan.FromDays(30), Now, force: false);
        Assert.Equal(3, plan.Count);
        var kept = Assert.Single(plan, d => !d.Remove);
        Assert.EndsWith("a_40.dump", kept.Backup.Path); // the newest valid one; the failed one does not count
        Assert.All(BackupCatalog.PlanRetention(backups, null, TimeSpan.FromDays(30), Now, force: true), d => Assert.True(d.Remove));
    }

    [Fact]
    public void Removing_piped_backups_keeps_the_only_valid_one()
    {
        var a1 = Backup("a", 1);
        var a2 = Backup("a", 2);
        var plan = BackupCatalog.PlanRemoval([a1, a2], _ => [a1, a2], force: false);
        Assert.Equal(a1, Assert.Single(plan, d => !d.Remove).Backup);
        var withOther = BackupCatalog.PlanRemoval([a2], _ => [a1, a2], force: false);
        Assert.True(Assert.Single(withOther).Remove);
    }

    [Fact]
    public void Safe_names_keep_letters_and_drop_path_characters()
    {
        Assert.Equal("café_données", RepositoryLayout.SafeName("café_données"));
        Assert.Equal("a_b_c", RepositoryLayout.SafeName("a/b\\c"));
        Assert.Equal("_", RepositoryLayout.SafeName(".."));
    }

    [Fact]
    public async Task Directory_checksums_change_when_a_file_changes_or_disappears()
    {
        var folder = Targets.NewFolder();
        File.WriteAllText(Path.Combine(folder, "toc.dat"), "toc");
        File.WriteAllText(Path.Combine(folder, "3001.dat.gz"), "data");
        var before = await BackupChecksum.ComputeAsync(folder, default);
        Assert.Equal(before, await BackupChecksum.ComputeAsync(folder, default));
        File.WriteAllText(Path.Combine(folder, "3001.dat.gz"), "dat4");
        Assert.NotEqual(before, await BackupChecksum.ComputeAsync(folder, default));
        File.Delete(Path.Combine(folder, "3001.dat.gz"));
        Assert.NotEqual(before, await BackupChecksum.ComputeAsync(folder, default));
    }

    [Fact]
    public void Stale_partial_dumps_are_reported_not_listed()
    {
        var folder = Targets.NewFolder();
        File.WriteAllText(Path.Combine(folder, "app_20260101T000000000Z.dump.partial"), "half");
        var warnings = new List<string>();
        Assert.Empty(BackupCatalog.List(folder, null, warnings.Add));
        Assert.Contains(warnings, w => w.Contains("interrupted dump"));
    }

    [Fact]
    public void Formats_are_recognised_from_their_bytes()
    {
        var folder = Targets.NewFolder();
        var custom = Path.Combine(folder, "x.dump");
        File.WriteAllText(custom, "PGDMP\u0001\u000e");
        var plain = Path.Combine(folder, "x.sql");
        File.WriteAllText(plain, "create table t();");
        var dir = Directory.CreateDirectory(Path.Combine(folder, "d")).FullName;
        File.WriteAllText(Path.Combine(dir, "toc.dat"), "");
        Assert.Equal(DumpFormat.Custom, DumpFormats.Detect(custom));
        Assert.Equal(DumpFormat.Plain, DumpFormats.Detect(plain));
        Assert.Equal(DumpFormat.Directory, DumpFormats.Detect(dir));
        Assert.Equal("PgBackup.BackupNotFound", Assert.Throws<PgBackupException>(() => DumpFormats.Detect(Path.Combine(folder, "nope"))).ErrorId);
    }
}

public sealed class WalRetentionTests
{
    [Fact]
    public void Prunes_only_wal_before_the_oldest_kept_base_backup_and_keeps_history_files()
    {
        var repository = Targets.NewFolder();
        var folder = Directory.CreateDirectory(RepositoryLayout.ArchiveFolder(repository, "7300000000000000001")).FullName;
        string[] names =
        [
            "000000010000000000000001", "000000010000000000000002", "000000010000000000000002.00000028.backup",
            "000000010000000000000003", "000000010000000000000004", "00000002.history", "000000020000000000000004",
        ];
        foreach (var name in names)
        {
            File.WriteAllText(Path.Combine(folder, name), name);
            File.WriteAllText(Path.Combine(folder, name + WalInventory.SidecarSuffix), "x  " + name);
        }
        var kept = new BaseBackup { SystemIdentifier = "7300000000000000001", StartSegment = "000000010000000000000003", StartLsn = new Lsn(0x3000028) };
        var newer = new BaseBackup { SystemIdentifier = "7300000000000000001", StartSegment = "000000020000000000000004", StartLsn = new Lsn(0x4000028) };

        var plan = Assert.Single(WalRetention.Plan(repository, [newer, kept]));
        Assert.Equal("000000010000000000000003", plan.KeepFrom.ToString());
        Assert.Equal(
            ["000000010000000000000001", "000000010000000000000002", "000000010000000000000002.00000028.backup"],
            plan.Files);
        WalRetention.Execute(plan);
        Assert.Equal(8, Directory.GetFiles(folder).Length);
        Assert.True(File.Exists(Path.Combine(folder, "00000002.history")));
        Assert.Empty(WalRetention.Plan(repository, []));
    }
}
