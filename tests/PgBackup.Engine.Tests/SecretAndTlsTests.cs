using PgBackup.Engine.Logical;
using PgBackup.Testing;

namespace PgBackup.Engine.Tests;

[Collection("sample cluster")]
public sealed class SecretTests(SampleClusterFixture fixture)
{
    [Fact]
    public async Task The_password_reaches_the_tool_through_its_environment_only()
    {
        // A stand-in pg_dump that records what it was given, then fails like a real one would.
        var tools = Targets.NewFolder();
        var fake = Path.Combine(tools, "pg_dump");
        File.WriteAllText(fake, """
            #!/bin/sh
            if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 99.1"; exit 0; fi
            printf '%s\n' "$@" > "$(dirname "$0")/argv.txt"
            env > "$(dirname "$0")/env.txt"
            echo "pg_dump: error: simulated failure" >&2
            exit 1
            """.Replace("\r", ""));
        File.SetUnixFileMode(fake, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var reporter = new RecordingReporter();

        var ex = await Assert.ThrowsAsync<PgBackupException>(() => DumpService.DumpAsync(new DumpRequest
        {
            Target = Targets.For(fixture.Cluster, SampleDatabase.NonAsciiName), Repository = Targets.NewFolder(), ToolPath = tools,
        }, reporter, default));

        Assert.Equal("PgBackup.DumpFailed", ex.ErrorId);
        Assert.Contains("simulated failure", ex.Message);
        var secret = PgTestCluster.Password;
        Assert.DoesNotContain(secret, File.ReadAllText(Path.Combine(tools, "argv.txt")));
        Assert.Contains("PGPASSWORD=" + secret, File.ReadAllText(Path.Combine(tools, "env.txt")));
        Assert.Contains("--dbname=dbname='" + SampleDatabase.NonAsciiName + "'", File.ReadAllText(Path.Combine(tools, "argv.txt")));
        Assert.DoesNotContain(secret, ex.Message + ex.RecommendedAction + ex.Target);
        Assert.DoesNotContain(reporter.Lines.Concat(reporter.Warnings), l => l.Contains(secret));
    }
}

/// <summary>A cluster that accepts only TLS connections, with a certificate from a throwaway CA.</summary>
public sealed class TlsClusterFixture : IDisposable
{
    public PgTestCluster Cluster { get; }
    public string RootCertificate { get; }
    public string WrongRootCertificate { get; }
    private readonly string _folder;

    public TlsClusterFixture()
    {
        _folder = Path.Combine(Path.GetTempPath(), "pgbackup-tls-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(_folder);
        string F(string name) => Path.Combine(_folder, name);
        File.WriteAllText(F("san.ext"), "subjectAltName=IP:127.0.0.1\n");
        OpenSsl("req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=PgBackup Test CA", "-keyout", F("ca.key"), "-out", F("ca.crt"));
        OpenSsl("req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=Some Other CA", "-keyout", F("other.key"), "-out", F("other.crt"));
        OpenSsl("req", "-new", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", F("server.key"), "-out", F("server.csr"));
        OpenSsl("x509", "-req", "-in", F("server.csr"), "-CA", F("ca.crt"), "-CAkey", F("ca.key"), "-CAcreateserial", "-days", "2", "-out", F("server.crt"), "-extfile", F("san.ext"));
        if (Environment.IsPrivilegedProcess)
            Assert.Equal(0, ProcessRunner.Run("chown", ["-R", "postgres:postgres", _folder]).ExitCode);
        File.SetUnixFileMode(F("server.key"), UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.SetUnixFileMode(_folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
        RootCertificate = F("ca.crt");
        WrongRootCertificate = F("other.crt");
        Cluster = PgTestCluster.Start("tls", new Dictionary<string, string>
        {
            ["ssl"] = "on", ["ssl_cert_file"] = $"'{F("server.crt")}'", ["ssl_key_file"] = $"'{F("server.key")}'",
        });
        File.WriteAllText(Path.Combine(Cluster.DataDirectory, "pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n");
        Cluster.Psql("select pg_reload_conf()");
        Cluster.CreateDatabase("secure");
        Cluster.Psql("create table t(id int); insert into t values (1), (2);", "secure");
    }

    private static void OpenSsl(params string[] args)
    {
        var (code, _, err) = ProcessRunner.Run("openssl", args);
        Assert.True(code == 0, "openssl failed (install it with apt-get install -y openssl): " + err);
    }

    public void Dispose()
    {
        Cluster.Dispose();
        try { Directory.Delete(_folder, recursive: true); } catch (IOException) { }
    }
}

public sealed class TlsTests(TlsClusterFixture fixture) : IClassFixture<TlsClusterFixture>
{
    [Fact]
    public async Task Sslmode_and_root_certificate_reach_npgsql_and_the_tools()
    {
        var target = Targets.For(fixture.Cluster, "secure") with { SslMode = "verify-ca", SslRootCert = fixture.RootCertificate };
        // The tools must take sslmode from the target, not from the caller's environment.
        using var env = new EnvironmentScope(("PGSSLMODE", "disable"));
        var backup = await DumpService.DumpAsync(new DumpRequest { Target = target, Repository = Targets.NewFolder() }, NullReporter.Instance, default);
        var plan = await RestoreService.PlanAsync(new RestoreRequest { Target = target.WithDatabase("secure_copy"), Source = backup }, NullReporter.Instance, default);
        await RestoreService.ExecuteAsync(plan, NullReporter.Instance, default);
        Assert.Equal("2", fixture.Cluster.Psql("select count(*) from t", "secure_copy"));
    }

    [Fact]
    public async Task A_server_certificate_from_another_ca_is_refused()
    {
        var target = Targets.For(fixture.Cluster, "secure") with { SslMode = "verify-ca", SslRootCert = fixture.WrongRootCertificate };
        var ex = await Assert.ThrowsAsync<PgBackupException>(() => DumpService.DumpAsync(new DumpRequest { Target = target, Repository = Targets.NewFolder() }, NullReporter.Instance, default));
        Assert.Equal("PgBackup.TlsFailed", ex.ErrorId);
        Assert.Equal(ErrorKind.ConnectionFailed, ex.Kind);
    }

    [Fact]
    public async Task Plain_connections_are_refused_by_a_tls_only_server()
    {
        var target = Targets.For(fixture.Cluster, "secure") with { SslMode = "disable" };
        var ex = await Assert.ThrowsAsync<PgBackupException>(() => DumpService.DumpAsync(new DumpRequest { Target = target, Repository = Targets.NewFolder() }, NullReporter.Instance, default));
        Assert.Equal("PgBackup.AuthenticationFailed", ex.ErrorId);
        Assert.Contains("no encryption", ex.Message);
    }
}
