using System.Diagnostics;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Logical;
using PgBackup.Testing;

namespace PgBackup.Engine.Tests;

[Collection("sample cluster")]
public sealed class LogicalRoundTripTests(SampleClusterFixture fixture)
{
    private PgTestCluster Cluster => fixture.Cluster;

    [Theory]
    [InlineData(DumpFormat.Custom, 1)]
    [InlineData(DumpFormat.Directory, 2)]
    [InlineData(DumpFormat.Tar, 1)]
    [InlineData(DumpFormat.Plain, 1)]
    public async Task Every_format_restores_to_an_identical_database(DumpFormat format, int jobs)
    {
        var repository = Targets.NewFolder();
        var reporter = new RecordingReporter();
        var backup = await DumpService.DumpAsync(new DumpRequest
        {
            Target = Targets.For(Cluster, SampleClusterFixture.Database), Format = format, Jobs = jobs, Repository = repository,
        }, reporter, default);

        Assert.True(File.Exists(backup.Path) || Directory.Exists(backup.Path));
        Assert.Equal(await BackupChecksum.ComputeAsync(backup.Path, default), backup.Sha256);
        Assert.Equal(BackupChecksum.SizeOf(backup.Path), backup.SizeBytes);
        Assert.Equal(3, backup.TableCount);
        Assert.StartsWith("15", backup.ServerVersion);
        Assert.True(File.Exists(BackupMetadata.PathFor(backup.Path)));
        Assert.Empty(Directory.GetFileSystemEntries(repository, "*.partial", SearchOption.AllDirectories));
        Assert.Contains(reporter.ProgressRecords, p => p.Percent > 0 && p.Status.StartsWith("Table "));

        var listed = Assert.IsType<DumpBackup>(Assert.Single(BackupCatalog.List(repository, null, null)));
        Assert.Equal(backup.Sha256, listed.Sha256);
        Assert.Equal(backup.Path, listed.Path);

        var copy = $"copy_{format}_{jobs}".ToLowerInvariant();
        var plan = await RestoreService.PlanAsync(new RestoreRequest { Target = Targets.For(Cluster, copy), Source = listed, Jobs = jobs }, reporter, default);
        Assert.Equal(RestoreAction.CreateDatabase, plan.Action);
        var restored = await RestoreService.ExecuteAsync(plan, reporter, default);
        Assert.True(restored.DatabaseCreated);
        Assert.True(restored.ChecksumVerified);

        Assert.Equal(SampleDatabase.Schema(Cluster, SampleClusterFixture.Database), SampleDatabase.Schema(Cluster, copy));
        Assert.Equal(SampleDatabase.RowCounts(Cluster, SampleClusterFixture.Database), SampleDatabase.RowCounts(Cluster, copy));
        Cluster.DropDatabase(copy);
    }

    [Fact]
    public async Task A_database_with_a_non_ascii_name_round_trips()
    {
        var repository = Targets.NewFolder();
        var backup = await DumpService.DumpAsync(new DumpRequest { Target = Targets.For(Cluster, SampleDatabase.NonAsciiName), Repository = repository }, NullReporter.Instance, default);
        Assert.Contains(SampleDatabase.NonAsciiName, backup.Path);
        Assert.Equal(SampleDatabase.NonAsciiName, backup.Database);
        var copy = SampleDatabase.NonAsciiName + "_копия";
        var plan = await RestoreService.PlanAsync(new RestoreRequest { Target = Targets.For(Cluster, copy), Source = backup }, NullReporter.Instance, default);
        await RestoreService.ExecuteAsync(plan, NullReporter.Instance, default);
        Assert.Equal(SampleDatabase.RowCounts(Cluster, SampleDatabase.NonAsciiName), SampleDatabase.RowCounts(Cluster, copy));
        Cluster.DropDatabase(copy);
    }

    [Fact]
    public async Task Schema_and_table_filters_reach_pg_dump()
    {
        var repository = Targets.NewFolder();
        var backup = await DumpService.DumpAsync(new DumpRequest
        {
            Target = Targets.For(Cluster, SampleClusterFixture.Database), Repository = repository, Schemas = ["sales"], ExcludeTables = ["sales.orders"],
        }, NullReporter.Instance, default);
        Assert.Equal(0, backup.TableCount);
        var list = Cluster.RunTool("pg_restore", "--list", backup.Path);
        Assert.Contains("VIEW sales order_totals", list);
        Assert.DoesNotContain("TABLE DATA sales orders", list);
        Assert.DoesNotContain("public items", list);
    }

    [Fact]
    public async Task Globals_carry_roles_to_another_server()
    {
        var repository = Targets.NewFolder();
        var globals = await DumpService.DumpAsync(new DumpRequest { Target = Targets.For(Cluster), Globals = true, Repository = repository }, NullReporter.Instance, default);
        Assert.Equal(BackupKind.Globals, globals.Kind);
        Assert.Contains("_globals", globals.Path);
        Assert.Contains("CREATE ROLE app_reader", File.ReadAllText(globals.Path));

        using var other = PgTestCluster.Start("globals-target");
        var reporter = new RecordingReporter();
        var plan = await RestoreService.PlanAsync(new RestoreRequest { Target = Targets.For(other), Source = globals }, reporter, default);
        Assert.Equal(RestoreAction.ApplyGlobals, plan.Action);
        var result = await RestoreService.ExecuteAsync(plan, reporter, default);
        Assert.Equal("t", other.Psql("select rolcanlogin from pg_roles where rolname = 'app_reader'"));
        Assert.Contains(result.Warnings, w => w.Contains("role \"postgres\" already exists")); // reported, not fatal
    }

    [Fact]
    public async Task Cancelling_a_dump_kills_pg_dump_and_leaves_nothing_behind()
    {
        var repository = Targets.NewFolder();
        using var cancel = new CancellationTokenSource();
        var reporter = new RecordingReporter { OnFirstTableProgress = cancel.Cancel };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => DumpService.DumpAsync(new DumpRequest
        {
            Target = Targets.For(Cluster, SampleClusterFixture.Database), Format = DumpFormat.Plain, Repository = repository,
        }, reporter, cancel.Token));
        Assert.Empty(Directory.GetFiles(repository, "*", SearchOption.AllDirectories));
        Assert.Empty(BackupCatalog.List(repository, null, null));
        Assert.Empty(ProcessesWriting(repository));
    }

    /// <summary>pg_dump processes whose command line names this folder: other tests run pg_dump at the same time.</summary>
    internal static List<int> ProcessesWriting(string folder) =>
        Process.GetProcessesByName("pg_dump").Where(p =>
        {
            try { return File.ReadAllText($"/proc/{p.Id}/cmdline").Contains(folder, StringComparison.Ordinal); }
            catch (IOException) { return false; }
        }).Select(p => p.Id).ToList();

    [Fact]
    public async Task A_damaged_dump_is_refused_before_anything_is_restored()
    {
        var repository = Targets.NewFolder();
        var backup = await DumpService.DumpAsync(new DumpRequest { Target = Targets.For(Cluster, SampleDatabase.NonAsciiName), Repository = repository }, NullReporter.Instance, default);
        await using (var f = new FileStream(backup.Path, FileMode.Open, FileAccess.ReadWrite))
        {
            f.Seek(-100, SeekOrigin.End);
            f.WriteByte(0x42);
        }
        var plan = await RestoreService.PlanAsync(new RestoreRequest { Target = Targets.For(Cluster, "never_created"), Source = backup }, NullReporter.Instance, default);
        var ex = await Assert.ThrowsAsync<PgBackupException>(() => RestoreService.ExecuteAsync(plan, NullReporter.Instance, default));
        Assert.Equal("PgBackup.ChecksumMismatch", ex.ErrorId);
        Assert.Equal("", Cluster.Psql("select datname from pg_database where datname = 'never_created'"));

        var test = await DumpTester.TestAsync(new BackupTestRequest { Backup = backup, RestoreTarget = Targets.For(Cluster) }, NullReporter.Instance, default);
        Assert.False(test.Success);
        Assert.False(test.ChecksumValid);
        Assert.False(test.RestoreTested);
        Assert.Equal(VerificationState.Failed, Assert.Single(BackupCatalog.List(repository, null, null)).VerificationState);
    }

    [Fact]
    public async Task A_test_restore_counts_the_tables_and_drops_its_database()
    {
        var repository = Targets.NewFolder();
        var backup = await DumpService.DumpAsync(new DumpRequest { Target = Targets.For(Cluster, SampleDatabase.NonAsciiName), Format = DumpFormat.Directory, Jobs = 2, Repository = repository }, NullReporter.Instance, default);
        var result = await DumpTester.TestAsync(new BackupTestRequest { Backup = backup, RestoreTarget = Targets.For(Cluster), Jobs = 2 }, NullReporter.Instance, default);
        Assert.True(result.Success, string.Join(" ", result.Failures));
        Assert.Equal(3, result.TablesRestored);
        Assert.Equal("", Cluster.Psql($"select datname from pg_database where datname = '{result.TestDatabase}'"));
        var listed = Assert.Single(BackupCatalog.List(repository, null, null));
        Assert.Equal(VerificationState.Verified, listed.VerificationState);
        Assert.NotNull(listed.LastVerified);
    }

    [Fact]
    public async Task A_failed_restore_into_a_new_database_drops_it_again()
    {
        var folder = Targets.NewFolder();
        var dump = Path.Combine(folder, "broken.sql");
        File.WriteAllText(dump, "create table good(id int);\nthis is not sql;\n");
        var (source, hasMetadata) = RestoreService.LoadSource(dump, null);
        Assert.False(hasMetadata);
        var plan = await RestoreService.PlanAsync(new RestoreRequest { Target = Targets.For(Cluster, "half_restored"), Source = source, HasMetadata = false, }, NullReporter.Instance, default);
        var ex = await Assert.ThrowsAsync<PgBackupException>(() => RestoreService.ExecuteAsync(plan, NullReporter.Instance, default));
        Assert.Equal("PgBackup.RestoreFailed", ex.ErrorId);
        Assert.Contains("syntax error", ex.Message);
        Assert.Equal("", Cluster.Psql("select datname from pg_database where datname = 'half_restored'"));
    }

    [Fact]
    public async Task Restoring_over_a_database_with_objects_is_refused_unless_clean()
    {
        var repository = Targets.NewFolder();
        var backup = await DumpService.DumpAsync(new DumpRequest { Target = Targets.For(Cluster, SampleDatabase.NonAsciiName), Repository = repository }, NullReporter.Instance, default);
        Cluster.CreateDatabase("busy");
        Cluster.Psql("create table keep_me(id int); insert into keep_me values (1);", "busy");
        var ex = await Assert.ThrowsAsync<PgBackupException>(() => RestoreService.PlanAsync(new RestoreRequest { Target = Targets.For(Cluster, "busy"), Source = backup }, NullReporter.Instance, default));
        Assert.Equal("PgBackup.TargetNotEmpty", ex.ErrorId);
        Assert.Equal("busy", ex.Target);
        var create = await Assert.ThrowsAsync<PgBackupException>(() => RestoreService.PlanAsync(new RestoreRequest { Target = Targets.For(Cluster, "busy"), Source = backup, Create = true }, NullReporter.Instance, default));
        Assert.Equal("PgBackup.DatabaseExists", create.ErrorId);

        var clean = await RestoreService.PlanAsync(new RestoreRequest { Target = Targets.For(Cluster, "busy"), Source = backup, Clean = true }, NullReporter.Instance, default);
        Assert.Equal(RestoreAction.CleanExisting, clean.Action);
        await RestoreService.ExecuteAsync(clean, NullReporter.Instance, default);
        Assert.Equal("1", Cluster.Psql("select count(*) from keep_me", "busy")); // -Clean drops only what the dump holds
        Assert.Equal("1000", Cluster.Psql("select count(*) from public.items", "busy"));

        var recreate = await RestoreService.PlanAsync(new RestoreRequest { Target = Targets.For(Cluster, "busy"), Source = backup, Create = true, Force = true }, NullReporter.Instance, default);
        Assert.Equal(RestoreAction.RecreateDatabase, recreate.Action);
        await RestoreService.ExecuteAsync(recreate, NullReporter.Instance, default);
        Assert.Equal("0", Cluster.Psql("select count(*) from pg_class where relname = 'keep_me'", "busy"));
        Cluster.DropDatabase("busy");
    }
}
