using System.Collections.Concurrent;
using PgBackup.Engine;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Instance;
using PgBackup.Testing;
using Xunit;

namespace PgBackup.Engine.Tests;

/// <summary>Collects what the engine reports, so tests can assert on progress and messages.</summary>
public sealed class RecordingReporter : IOperationReporter
{
    public ConcurrentQueue<(string Activity, string Status, int Percent)> ProgressRecords { get; } = new();
    public ConcurrentQueue<string> Lines { get; } = new();
    public ConcurrentQueue<string> Warnings { get; } = new();
    public Action? OnFirstTableProgress { get; set; }
    private int _tableProgressSeen;

    public void Progress(string activity, string status, int percent)
    {
        ProgressRecords.Enqueue((activity, status, percent));
        if (status.StartsWith("Table ", StringComparison.Ordinal) && Interlocked.Exchange(ref _tableProgressSeen, 1) == 0) OnFirstTableProgress?.Invoke();
    }

    public void ProgressCompleted(string activity) { }
    public void Verbose(string message) => Lines.Enqueue(message);
    public void Warning(string message) => Warnings.Enqueue(message);
    public void Milestone(string message) => Lines.Enqueue(message);
}

public static class Targets
{
    public static ConnectionTarget For(PgTestCluster cluster, string database = "postgres", string? password = null) => new()
    {
        Host = cluster.Host,
        Port = cluster.Port,
        Database = database,
        User = PgTestCluster.SuperUser,
        Password = password ?? PgTestCluster.Password,
        PasswordSource = "test",
    };

    public static string NewFolder() => TestFolders.New("pgbackup-engine-tests");
}

/// <summary>One cluster with the sample database (100k rows) and the non-ASCII database, shared by the integration tests.</summary>
public sealed class SampleClusterFixture : IDisposable
{
    public const string Database = "sample";
    public PgTestCluster Cluster { get; } = PgTestCluster.Start("engine");

    public SampleClusterFixture()
    {
        SampleDatabase.Create(Cluster, Database);
        SampleDatabase.Create(Cluster, SampleDatabase.NonAsciiName, itemRows: 1000);
        Cluster.Psql("create role app_reader login password 'reader-secret'; create role app_owner nologin;");
    }

    public void Dispose() => Cluster.Dispose();
}

[CollectionDefinition("sample cluster")]
public sealed class SampleClusterCollection : ICollectionFixture<SampleClusterFixture>;

/// <summary>Tests that change process-wide environment variables run alone.</summary>
[CollectionDefinition("environment", DisableParallelization = true)]
public sealed class EnvironmentCollection;

/// <summary>
/// The data directories of the instances a recovery test class made, removed (their servers stopped first) when the
/// class is done, and queries against such an instance.
/// </summary>
public sealed class RecoveredInstances
{
    private readonly List<string> _directories = [];

    /// <summary>A new data directory under <paramref name="parent"/>, removed by <see cref="RemoveAllAsync"/>.</summary>
    public string NewDataDirectory(string parent)
    {
        var directory = Path.Combine(parent, "pitr-" + Guid.NewGuid().ToString("N")[..8]);
        _directories.Add(directory);
        return directory;
    }

    public async Task RemoveAllAsync()
    {
        foreach (var directory in _directories.Where(Directory.Exists))
            await InstanceControl.RemoveAsync(directory, force: true, null, NullReporter.Instance, default);
    }

    /// <summary>One value from a server on this machine that has the test clusters' superuser and password.</summary>
    public static object Scalar(int port, string sql)
    {
        using var connection = new Npgsql.NpgsqlConnection($"Host=localhost;Port={port};Username={PgTestCluster.SuperUser};Password={PgTestCluster.Password};Database=postgres");
        connection.Open();
        using var command = new Npgsql.NpgsqlCommand(sql, connection);
        return command.ExecuteScalar()!;
    }

    /// <summary>The ids in the ledger table of the instance on <paramref name="port"/>, in order.</summary>
    public static int[] Ledger(int port) => (int[])Scalar(port, "select coalesce(array_agg(id order by id), '{}') from ledger");

    /// <summary>
    /// Stops the standby in <paramref name="directory"/>, makes the primary write (<paramref name="writeSql"/>, four times,
    /// each followed by a WAL switch) and recycle WAL the standby then misses (no slot, wal_keep_size 0), starts the
    /// standby again and waits until it has replayed all of it, which only the archive still has; asserts it restored from there.
    /// </summary>
    public static async Task CatchUpThroughArchiveAsync(PgTestCluster primary, string directory, int port, string writeSql, string cleanupSql)
    {
        await InstanceControl.StopAsync(directory, StopMode.Fast, TimeSpan.FromSeconds(60), null, NullReporter.Instance, default);
        for (var i = 0; i < 4; i++) primary.Psql(writeSql + "; select pg_switch_wal()");
        primary.Psql(cleanupSql);
        var lsn = primary.Psql("select pg_current_wal_lsn()");
        primary.ArchiveCurrentSegment();
        primary.Psql("checkpoint");
        await InstanceControl.StartAsync(directory, port, TimeSpan.FromSeconds(60), null, NullReporter.Instance, default);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (PgTestCluster.QueryAt(port, $"select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn") != "t")
        {
            Assert.True(DateTime.UtcNow < deadline, "the standby did not catch up through the archive within 60 s");
            await Task.Delay(200);
        }
        Assert.Contains("restored log file", File.ReadAllText(Path.Combine(directory, InstanceControl.LogFileName)));
    }
}

/// <summary>
/// Temporary folders an operation must not leave behind. Other tests running at the same time have spools of their own
/// under the same names, so a folder counts as left behind only if it is still there a minute later: an operation in
/// progress removes its spool when it ends, and a leaked one stays.
/// </summary>
public static class TempFolders
{
    public static async Task AssertNoneLeftAsync(string pattern, bool withFilesOnly = false)
    {
        bool Left(string folder)
        {
            try { return Directory.Exists(folder) && (!withFilesOnly || Directory.GetFiles(folder, "*", SearchOption.AllDirectories).Length > 0); }
            catch (DirectoryNotFoundException) { return false; }
        }
        var seen = Directory.GetDirectories(Path.GetTempPath(), pattern).Where(Left).ToList();
        var deadline = DateTime.UtcNow.AddMinutes(1);
        while (seen.Any(Left) && DateTime.UtcNow < deadline) await Task.Delay(200);
        Assert.DoesNotContain(seen, Left);
    }
}
