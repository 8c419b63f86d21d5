using PgBackup.Engine.Configuration;

namespace PgBackup.Engine.Tests;

[Collection("environment")]
public sealed class SettingsTests
{
    [Fact]
    public void Layers_defaults_file_environment_and_parameters_and_says_where_each_value_came_from()
    {
        var folder = Targets.NewFolder();
        var file = Path.Combine(folder, "pgbackup.json");
        File.WriteAllText(file, """{ "Repository": "/from/file", "Jobs": 3, "Servers": { "prod": { "Host": "db1.example.com", "Port": 6432, "User": "backup", "SslMode": "verify-full" } } }""");
        using var env = new EnvironmentScope(("PGBACKUP_CONFIG", file), ("PGBACKUP_JOBS", "5"), ("PGBACKUP_REPOSITORY", null), ("PGBACKUP_TOOLPATH", null));

        var settings = PgBackupSettings.Load(new Dictionary<string, string?> { ["ToolPath"] = "/from/parameter", ["Repository"] = null });
        Assert.Equal("/from/file", settings.Repository);
        Assert.Equal(5, settings.Jobs);
        Assert.Equal("/from/parameter", settings.ToolPath);
        Assert.Equal(DumpFormat.Custom, settings.DefaultFormat);

        var described = settings.Describe().ToDictionary(s => s.Name, StringComparer.OrdinalIgnoreCase);
        Assert.Equal("File: " + file, described["Repository"].Source);
        Assert.Equal("Environment: PGBACKUP_JOBS", described["Jobs"].Source);
        Assert.Equal("Parameter", described["ToolPath"].Source);
        Assert.Equal("Default", described["DefaultFormat"].Source);
        Assert.Equal("db1.example.com", described["Servers:prod:Host"].Value);

        var profile = settings.FindProfile("PROD")!;
        Assert.Equal(("db1.example.com", 6432, "backup", "verify-full"), (profile.Host, profile.Port, profile.User, profile.SslMode));
    }

    [Fact]
    public void A_profile_name_is_usable_as_server()
    {
        var folder = Targets.NewFolder();
        var file = Path.Combine(folder, "pgbackup.json");
        File.WriteAllText(file, """{ "Servers": { "prod": { "Host": "db1.example.com", "Port": 6432, "Database": "app", "User": "backup" } } }""");
        using var env = new EnvironmentScope(("PGBACKUP_CONFIG", file), ("PGPASSFILE", "/nonexistent"), ("PGPASSWORD", null));
        var target = Connection.ServerResolver.Resolve(new Connection.ServerRequest("prod"), PgBackupSettings.Load());
        Assert.Equal(("db1.example.com", 6432, "app", "backup"), (target.Host, target.Port, target.Database, target.User));
    }

    [Fact]
    public void Environment_variables_alone_configure_everything_as_in_azure_automation()
    {
        using var env = new EnvironmentScope(("PGBACKUP_CONFIG", null), ("APPDATA", null), ("XDG_CONFIG_HOME", Targets.NewFolder()),
            ("PGBACKUP_REPOSITORY", "/env/repo"), ("PGBACKUP_DEFAULTFORMAT", "directory"), ("PGBACKUP_SERVERS__NIGHTLY__HOST", "db9"));
        var settings = PgBackupSettings.Load();
        Assert.Equal("/env/repo", settings.Repository);
        Assert.Equal(DumpFormat.Directory, settings.DefaultFormat);
        Assert.Equal("db9", settings.FindProfile("nightly")!.Host);
    }

    [Fact]
    public void Broken_json_and_bad_values_are_reported_with_the_file_and_setting()
    {
        var folder = Targets.NewFolder();
        var file = Path.Combine(folder, "pgbackup.json");
        File.WriteAllText(file, "{ \"Repository\": ");
        using (new EnvironmentScope(("PGBACKUP_CONFIG", file)))
        {
            var ex = Assert.Throws<PgBackupException>(() => PgBackupSettings.Load());
            Assert.Equal("PgBackup.ConfigInvalid", ex.ErrorId);
            Assert.Equal(file, ex.Target);
        }
        using (new EnvironmentScope(("PGBACKUP_CONFIG", Path.Combine(folder, "missing.json"))))
            Assert.Equal("PgBackup.ConfigNotFound", Assert.Throws<PgBackupException>(() => PgBackupSettings.Load()).ErrorId);
        using (new EnvironmentScope(("PGBACKUP_CONFIG", null), ("PGBACKUP_JOBS", "many")))
        {
            var ex = Assert.Throws<PgBackupException>(() => PgBackupSettings.Load().Jobs);
            Assert.Equal("PgBackup.ConfigInvalid", ex.ErrorId);
            Assert.Contains("PGBACKUP_JOBS", ex.RecommendedAction);
        }
    }

    [Fact]
    public void Secrets_are_never_shown()
    {
        using var env = new EnvironmentScope(("PGBACKUP_CONFIG", null), ("PGPASSWORD", "hunter2"));
        var all = PgBackupSettings.Load().Describe();
        Assert.DoesNotContain(all, s => s.Value?.Contains("hunter2") == true);
        Assert.Contains(all, s => s.Name == "PGPASSWORD" && s.Value == "********");
    }
}
