using PgBackup.Engine.Connection;
using PgBackup.Engine.Migration;

namespace PgBackup.Engine.Tests;

public sealed class MigrationNamingTests
{
    [Theory]
    [InlineData("orders", "public", "orders", true)]
    [InlineData("orders", "crm", "orders", true)]
    [InlineData("crm.*", "crm", "customers", true)]
    [InlineData("crm.*", "public", "customers", false)]
    [InlineData("Ord?rs", "public", "orders", true)]
    [InlineData("\"Orders\"", "public", "orders", false)]
    [InlineData("\"Orders\"", "public", "Orders", true)]
    [InlineData("o*", "public", "items", false)]
    public void Table_patterns_match_as_pg_dump_reads_them(string pattern, string schema, string table, bool matches) =>
        Assert.Equal(matches, NamePattern.MatchesTable(pattern, schema, table));

    [Fact]
    public void A_migration_has_one_name_per_pair_of_databases_that_PgBackup_owns()
    {
        var name = LogicalMigrationService.NameOf("7301", "shop", "7302", "shop");
        Assert.Equal(name, LogicalMigrationService.NameOf("7301", "shop", "7302", "shop"));
        Assert.StartsWith(LogicalMigrationService.NamePrefix, name);
        Assert.NotEqual(name, LogicalMigrationService.NameOf("7301", "shop", "7302", "shop_new"));
        Assert.NotEqual(name, LogicalMigrationService.NameOf("7302", "shop", "7301", "shop"));
        Assert.True(name.Length < 63, "an identifier PostgreSQL keeps whole");
        Assert.Matches("^[a-z0-9_]+$", name);
    }
}
