using PgBackup.Engine.Configuration;
using PgBackup.Engine.Connection;

namespace PgBackup.Engine.Tests;

[Collection("environment")]
public sealed class ServerResolverTests
{
    [Theory]
    [InlineData("db1", "db1", null)]
    [InlineData("db1:6543", "db1", "6543")]
    [InlineData("[::1]:5433", "::1", "5433")]
    [InlineData("fe80::1", "fe80::1", null)]
    [InlineData("10.0.0.5:5432", "10.0.0.5", "5432")]
    public void Parses_host_and_port_forms(string server, string host, string? port)
    {
        var parts = ServerResolver.Parse(server);
        Assert.Equal(host, parts["host"]);
        Assert.Equal(port, parts.GetValueOrDefault("port"));
    }

    [Fact]
    public void Parses_libpq_connection_strings_with_quotes_and_escapes()
    {
        var parts = ServerResolver.Parse(@"host=db1 port = 5433 dbname='my app' user=o\'brien sslmode=verify-full password='p w\'d'");
        Assert.Equal("db1", parts["host"]);
        Assert.Equal("5433", parts["port"]);
        Assert.Equal("my app", parts["dbname"]);
        Assert.Equal("o'brien", parts["user"]);
        Assert.Equal("verify-full", parts["sslmode"]);
        Assert.Equal("p w'd", parts["password"]);
    }

    [Fact]
    public void Parses_uris_with_percent_encoding_and_query_parameters()
    {
        var parts = ServerResolver.Parse("postgresql://backup%40corp:s3cr%2Ft@db1.example.com:5444/caf%C3%A9?sslmode=require&sslrootcert=/etc/root.crt");
        Assert.Equal("backup@corp", parts["user"]);
        Assert.Equal("s3cr/t", parts["password"]);
        Assert.Equal("db1.example.com", parts["host"]);
        Assert.Equal("5444", parts["port"]);
        Assert.Equal("café", parts["dbname"]);
        Assert.Equal("require", parts["sslmode"]);
        Assert.Equal("/etc/root.crt", parts["sslrootcert"]);
    }

    [Fact]
    public void Redacts_passwords_in_server_strings()
    {
        Assert.DoesNotContain("hunter2", ServerResolver.Redact("postgresql://u:hunter2@h/db"));
        Assert.DoesNotContain("hunter2", ServerResolver.Redact("host=h password=hunter2 dbname=x"));
        Assert.DoesNotContain("hunter2", ServerResolver.Redact("host=h password='hunter2' dbname=x"));
    }

    [Fact]
    public void Bad_server_strings_name_the_problem_without_the_password()
    {
        var ex = Assert.Throws<PgBackupException>(() => ServerResolver.Parse("host=h password=hunter2 dbname"));
        Assert.Equal("PgBackup.InvalidServer", ex.ErrorId);
        Assert.Equal(ErrorKind.InvalidArgument, ex.Kind);
        Assert.DoesNotContain("hunter2", ex.Message);
        Assert.DoesNotContain("hunter2", ex.Target?.ToString());
    }

    [Fact]
    public void Parameters_beat_the_server_string_which_beats_libpq_variables()
    {
        using var env = new EnvironmentScope(("PGHOST", "envhost"), ("PGPORT", "7000"), ("PGUSER", "envuser"), ("PGDATABASE", "envdb"), ("PGPASSWORD", null), ("PGPASSFILE", "/nonexistent"));
        var settings = PgBackupSettings.Load();
        var fromEnv = ServerResolver.Resolve(new ServerRequest(null), settings);
        Assert.Equal(("envhost", 7000, "envuser", "envdb"), (fromEnv.Host, fromEnv.Port, fromEnv.User, fromEnv.Database));

        var fromString = ServerResolver.Resolve(new ServerRequest("host=strhost port=7001 user=struser dbname=strdb"), settings);
        Assert.Equal(("strhost", 7001, "struser", "strdb"), (fromString.Host, fromString.Port, fromString.User, fromString.Database));

        var fromParameters = ServerResolver.Resolve(new ServerRequest("strhost:7001", 7002, "paramdb", new PgCredential("paramuser", "pw")), settings);
        Assert.Equal(("strhost", 7002, "paramuser", "paramdb", "pw"), (fromParameters.Host, fromParameters.Port, fromParameters.User, fromParameters.Database, fromParameters.Password));
    }

    [Fact]
    public void Passwords_come_from_the_pgpass_file_named_by_PGPASSFILE()
    {
        var folder = Targets.NewFolder();
        var passFile = Path.Combine(folder, "pgpass");
        File.WriteAllText(passFile, "# comment\nother:*:*:*:nope\ndb1:5432:*:backup:from\\:file\n*:*:*:*:fallback\n");
        File.SetUnixFileMode(passFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        using var env = new EnvironmentScope(("PGPASSFILE", passFile), ("PGPASSWORD", null), ("PGHOST", null), ("PGPORT", null), ("PGUSER", null));
        var target = ServerResolver.Resolve(new ServerRequest("db1", Database: "app", Credential: null) with { }, PgBackupSettings.Load());
        Assert.Equal("fallback", target.Password); // user defaults to the OS user, so the catch-all line matches
        var backup = ServerResolver.Resolve(new ServerRequest("host=db1 user=backup"), PgBackupSettings.Load());
        Assert.Equal("from:file", backup.Password);
        Assert.Contains(passFile, backup.PasswordSource);
    }

    [Fact]
    public void A_pgpass_file_readable_by_others_is_ignored_with_a_warning()
    {
        var folder = Targets.NewFolder();
        var passFile = Path.Combine(folder, "pgpass");
        File.WriteAllText(passFile, "*:*:*:*:secret\n");
        File.SetUnixFileMode(passFile, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
        var warnings = new List<string>();
        Assert.Null(PgPassFile.Lookup(passFile, "h", 5432, "d", "u", warnings.Add));
        Assert.Contains(warnings, w => w.Contains("chmod 0600"));
    }

    [Fact]
    public void Unknown_sslmode_is_refused()
    {
        var ex = Assert.Throws<PgBackupException>(() => ServerResolver.Resolve(new ServerRequest("host=h sslmode=always"), PgBackupSettings.Load()));
        Assert.Equal("PgBackup.InvalidSslMode", ex.ErrorId);
    }
}

/// <summary>Sets environment variables for one test and restores them after.</summary>
public sealed class EnvironmentScope : IDisposable
{
    private readonly List<(string Name, string? Old)> _saved = [];

    public EnvironmentScope(params (string Name, string? Value)[] variables)
    {
        foreach (var (name, value) in variables)
        {
            _saved.Add((name, Environment.GetEnvironmentVariable(name)));
            Environment.SetEnvironmentVariable(name, value);
        }
    }

    public void Dispose()
    {
        foreach (var (name, old) in _saved) Environment.SetEnvironmentVariable(name, old);
    }
}
