using PgBackup.Testing;

namespace PgBackup.Module.Tests;

/// <summary>
/// One cluster with the sample database, one imported module; shared by all module tests, which run one after another
/// (xunit.runner.json) because some of them set process-wide environment variables as a user would.
/// </summary>
public sealed class ModuleFixture : IDisposable
{
    public const string Database = "shop";
    public PgTestCluster Cluster { get; }
    public PowerShellSession Shell { get; }
    public string Server => Cluster.ServerArgument;

    public ModuleFixture()
    {
        // The module finds the password as psql would: through PGPASSFILE.
        Environment.SetEnvironmentVariable("PGPASSFILE", PgTestCluster.PgPassFile);
        foreach (var name in new[] { "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGBACKUP_CONFIG", "PGBACKUP_REPOSITORY", "PGBACKUP_TOOLPATH" })
            Environment.SetEnvironmentVariable(name, null);
        Environment.SetEnvironmentVariable("PGUSER", PgTestCluster.SuperUser);
        Environment.SetEnvironmentVariable("PGBACKUP_CONFIG", null);
        Cluster = PgTestCluster.Start("module");
        SampleDatabase.Create(Cluster, Database, itemRows: 20_000);
        SampleDatabase.Create(Cluster, "shop_eu", itemRows: 500);
        Shell = new PowerShellSession();
    }

    public string NewRepository() => TestFolders.New("pgbackup-module-tests");

    public void Dispose()
    {
        Shell.Dispose();
        Cluster.Dispose();
    }
}

[CollectionDefinition("module")]
public sealed class ModuleCollection : ICollectionFixture<ModuleFixture>;
