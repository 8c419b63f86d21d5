using System.Management.Automation;

namespace PgBackup.Module.Tests;

[Collection("module")]
public sealed class RestorePgDumpTests(ModuleFixture fx)
{
    [Fact]
    public void A_dump_pipes_into_a_restore_of_a_new_database()
    {
        var r = fx.Shell.Run("Invoke-PgDump -Server $s -Database shop -Repository $r -Format Directory -Jobs 2 | Restore-PgDump -TargetDatabase shop_check -Jobs 2",
            ("s", fx.Server), ("r", fx.NewRepository())).AssertNoErrors();
        var result = Assert.Single(r.Output);
        Assert.Contains("PgBackup.RestoreResult", result.TypeNames);
        Assert.Equal("shop_check", result.Properties["Database"].Value);
        Assert.Equal(true, result.Properties["DatabaseCreated"].Value);
        Assert.Equal(true, result.Properties["ChecksumVerified"].Value);
        Assert.Equal(Testing.SampleDatabase.RowCounts(fx.Cluster, ModuleFixture.Database), Testing.SampleDatabase.RowCounts(fx.Cluster, "shop_check"));
        fx.Cluster.DropDatabase("shop_check");
    }

    [Fact]
    public void A_restore_result_pipes_into_a_new_dump()
    {
        var repo = fx.NewRepository();
        var r = fx.Shell.Run("""
            Invoke-PgDump -Server $s -Database shop_eu -Repository $r | Restore-PgDump -TargetDatabase shop_eu_copy | Invoke-PgDump -Repository $r -Format Plain
            """, ("s", fx.Server), ("r", repo)).AssertNoErrors();
        Assert.Equal("shop_eu_copy", Assert.Single(r.Output).Properties["Database"].Value);
        fx.Cluster.DropDatabase("shop_eu_copy");
    }

    [Fact]
    public void A_plain_dump_restores_from_a_path()
    {
        var file = Path.Combine(fx.NewRepository(), "eu.sql");
        fx.Shell.Run("Invoke-PgDump -Server $s -Database shop_eu -Path $p -Format Plain", ("s", fx.Server), ("p", file)).AssertNoErrors();
        var r = fx.Shell.Run("Restore-PgDump -Path $p -TargetDatabase eu_from_sql", ("p", file)).AssertNoErrors();
        Assert.Equal("Plain", r.Output[0].Properties["Format"].Value.ToString());
        Assert.Equal("500", fx.Cluster.Psql("select count(*) from public.items", "eu_from_sql"));
        fx.Cluster.DropDatabase("eu_from_sql");
    }

    [Fact]
    public void DataOnly_loads_rows_into_existing_tables_and_refuses_what_it_cannot_do()
    {
        var repo = fx.NewRepository();
        fx.Shell.Run("Invoke-PgDump -Server $s -Database shop_eu -Repository $r | Restore-PgDump -TargetDatabase eu_rows -Confirm:$false", ("s", fx.Server), ("r", repo)).AssertNoErrors();
        fx.Cluster.Psql("delete from sales.orders; delete from public.items", "eu_rows");
        var items = Path.Combine(repo, "items.dump");
        fx.Shell.Run("Invoke-PgDump -Server $s -Database shop_eu -Table public.items -Format Custom -Path $p", ("s", fx.Server), ("p", items)).AssertNoErrors();
        var loaded = fx.Shell.Run("Restore-PgDump -Path $p -TargetDatabase eu_rows -DataOnly -Confirm:$false", ("p", items)).AssertNoErrors().Output.Single();
        Assert.Equal(false, loaded.Properties["Cleaned"].Value);
        Assert.Equal("500", fx.Cluster.Psql("select count(*) from public.items", "eu_rows"));

        var twice = fx.Shell.Run("Restore-PgDump -Path $p -TargetDatabase eu_rows -DataOnly -Confirm:$false", ("p", items)).SingleError();
        Assert.Equal("PgBackup.RestoreFailed", twice.FullyQualifiedErrorId.Split(',')[0]); // duplicate keys: one transaction, nothing changed
        Assert.Equal("500", fx.Cluster.Psql("select count(*) from public.items", "eu_rows"));
        var plain = Path.Combine(repo, "eu.sql");
        fx.Shell.Run("Invoke-PgDump -Server $s -Database shop_eu -Format Plain -Path $p", ("s", fx.Server), ("p", plain)).AssertNoErrors();
        var e = fx.Shell.Run("Restore-PgDump -Path $p -TargetDatabase eu_rows -DataOnly -Confirm:$false", ("p", plain)).SingleError();
        Assert.Equal("PgBackup.DataOnlyNotApplicable", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidArgument, e.CategoryInfo.Category);
        fx.Cluster.DropDatabase("eu_rows");
    }

    [Fact]
    public void WhatIf_creates_no_database()
    {
        var r = fx.Shell.Run("Invoke-PgDump -Server $s -Database shop_eu -Repository $r | Restore-PgDump -TargetDatabase never_made -WhatIf",
            ("s", fx.Server), ("r", fx.NewRepository())).AssertNoErrors();
        Assert.Empty(r.Output);
        Assert.Equal("", fx.Cluster.Psql("select datname from pg_database where datname = 'never_made'"));
    }

    [Fact]
    public void Restoring_into_a_database_with_objects_is_refused()
    {
        var r = fx.Shell.Run("Invoke-PgDump -Server $s -Database shop_eu -Repository $r | Restore-PgDump", ("s", fx.Server), ("r", fx.NewRepository()));
        var e = r.SingleError();
        Assert.Equal("PgBackup.TargetNotEmpty,PgBackup.Commands.RestorePgDumpCommand", e.FullyQualifiedErrorId);
        Assert.Equal(ErrorCategory.ResourceExists, e.CategoryInfo.Category);
        Assert.Equal("shop_eu", e.TargetObject);
        Assert.Contains("-Clean", e.ErrorDetails.RecommendedAction);
    }

    [Fact]
    public void Dropping_or_cleaning_a_database_needs_confirmation_and_WhatIf_changes_nothing()
    {
        var repo = fx.NewRepository();
        fx.Shell.Run("Invoke-PgDump -Server $s -Database shop_eu -Repository $r | Restore-PgDump -TargetDatabase eu_twin", ("s", fx.Server), ("r", repo)).AssertNoErrors();
        fx.Cluster.Psql("create table local_notes(id int); insert into public.items values (999999, 'local', 1, now());", "eu_twin");

        fx.Shell.Run("Get-PgBackup -Repository $r | Restore-PgDump -TargetDatabase eu_twin -Create -Force -WhatIf", ("r", repo)).AssertNoErrors();
        Assert.Equal("1", fx.Cluster.Psql("select count(*) from pg_class where relname = 'local_notes'", "eu_twin"));

        // No host to ask in this runspace, as in a runbook: a destructive restore without -Confirm:$false is refused.
        var refused = fx.Shell.Run("Get-PgBackup -Repository $r | Restore-PgDump -TargetDatabase eu_twin -Clean", ("r", repo));
        Assert.NotEmpty(refused.AllErrors);
        Assert.Equal("501", fx.Cluster.Psql("select count(*) from public.items", "eu_twin"));

        var cleaned = fx.Shell.Run("Get-PgBackup -Repository $r | Restore-PgDump -TargetDatabase eu_twin -Clean -Confirm:$false", ("r", repo)).AssertNoErrors();
        Assert.Equal(true, cleaned.Output[0].Properties["Cleaned"].Value);
        Assert.Equal("500", fx.Cluster.Psql("select count(*) from public.items", "eu_twin"));
        Assert.Equal("1", fx.Cluster.Psql("select count(*) from pg_class where relname = 'local_notes'", "eu_twin"));

        fx.Shell.Run("Get-PgBackup -Repository $r | Restore-PgDump -TargetDatabase eu_twin -Create -Force -Confirm:$false", ("r", repo)).AssertNoErrors();
        Assert.Equal("0", fx.Cluster.Psql("select count(*) from pg_class where relname = 'local_notes'", "eu_twin"));
        fx.Cluster.DropDatabase("eu_twin");
    }

    [Fact]
    public void A_corrupted_dump_is_refused_with_a_checksum_error()
    {
        var repo = fx.NewRepository();
        var dump = fx.Shell.Run("Invoke-PgDump -Server $s -Database shop_eu -Repository $r", ("s", fx.Server), ("r", repo)).AssertNoErrors().Output[0];
        var path = (string)dump.Properties["Path"].Value;
        var bytes = File.ReadAllBytes(path);
        bytes[^50] ^= 0xFF;
        File.WriteAllBytes(path, bytes);
        var e = fx.Shell.Run("Get-PgBackup -Repository $r | Restore-PgDump -TargetDatabase from_corrupt", ("r", repo)).SingleError();
        Assert.Equal("PgBackup.ChecksumMismatch", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidData, e.CategoryInfo.Category);
        Assert.Equal(path, e.TargetObject);
        Assert.Equal("", fx.Cluster.Psql("select datname from pg_database where datname = 'from_corrupt'"));
    }
}
