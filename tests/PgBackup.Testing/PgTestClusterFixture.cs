namespace PgBackup.Testing;

/// <summary>One cluster per test class or collection (use with xunit's IClassFixture / ICollectionFixture).</summary>
public sealed class PgTestClusterFixture : IDisposable
{
    public PgTestClusterFixture() => Cluster = PgTestCluster.Start("fixture");

    public PgTestCluster Cluster { get; }

    public void Dispose() => Cluster.Dispose();
}
