using System.Diagnostics;
using System.Management.Automation;
using PgBackup.Testing;

namespace PgBackup.Module.Tests;

[Collection("module")]
public sealed class InvokePgDumpTests(ModuleFixture fx)
{
    [Fact]
    public void Dumps_a_database_into_the_repository_and_returns_a_DumpBackup()
    {
        var repo = fx.NewRepository();
        var r = fx.Shell.Run("Invoke-PgDump -Server $s -Database shop -Repository $r -Format Custom -Verbose", ("s", fx.Server), ("r", repo)).AssertNoErrors();
        var dump = Assert.Single(r.Output);
        Assert.Contains("PgBackup.DumpBackup", dump.TypeNames);
        Assert.Equal("shop", dump.Properties["Database"].Value);
        Assert.Equal("127.0.0.1", dump.Properties["Server"].Value);
        Assert.Equal(fx.Cluster.Port, dump.Properties["Port"].Value);
        var path = (string)dump.Properties["Path"].Value;
        Assert.StartsWith(Path.Combine(repo, $"127.0.0.1_{fx.Cluster.Port}", "shop"), path);
        Assert.True(File.Exists(path));
        Assert.Matches("^[0-9a-f]{64}$", (string)dump.Properties["Sha256"].Value);
        Assert.True((long)dump.Properties["SizeBytes"].Value > 0);
        Assert.IsType<TimeSpan>(dump.Properties["Duration"].Value);
        Assert.IsType<DateTimeOffset>(dump.Properties["StartTime"].Value);
        Assert.Contains(r.Progress, p => p.PercentComplete > 0 && p.StatusDescription.StartsWith("Table "));
        Assert.Contains(r.Verbose, v => v.Contains("Using pg_dump"));
        Assert.Contains(r.Information, i => i.MessageData.ToString()!.StartsWith("Dumped "));
    }

    [Fact]
    public void A_wildcard_makes_one_backup_per_matching_database()
    {
        var repo = fx.NewRepository();
        var r = fx.Shell.Run("Invoke-PgDump -Server $s -Database shop* -Repository $r -Format Directory -Jobs 2", ("s", fx.Server), ("r", repo)).AssertNoErrors();
        Assert.Equal(["shop", "shop_eu"], r.Output.Select(o => (string)o.Properties["Database"].Value).Order());
        Assert.All(r.Output, o => Assert.True(Directory.Exists((string)o.Properties["Path"].Value)));
    }

    [Fact]
    public void Globals_are_dumped_with_pg_dumpall()
    {
        var repo = fx.NewRepository();
        var r = fx.Shell.Run("Invoke-PgDump -Server $s -Globals -Repository $r", ("s", fx.Server), ("r", repo)).AssertNoErrors();
        Assert.Equal("Globals", Assert.Single(r.Output).Properties["Kind"].Value.ToString());
        Assert.Contains("CREATE ROLE postgres", File.ReadAllText((string)r.Output[0].Properties["Path"].Value));
    }

    [Fact]
    public void WhatIf_writes_nothing()
    {
        var repo = fx.NewRepository();
        var r = fx.Shell.Run("Invoke-PgDump -Server $s -Database shop -Repository $r -WhatIf", ("s", fx.Server), ("r", repo)).AssertNoErrors();
        Assert.Empty(r.Output);
        Assert.Empty(Directory.GetFileSystemEntries(repo));
    }

    [Fact]
    public void An_unreachable_server_is_a_connection_error()
    {
        var port = FreePort.Next();
        var e = fx.Shell.Run("Invoke-PgDump -Server \"127.0.0.1:$p\" -Database shop -Repository $r", ("p", port), ("r", fx.NewRepository())).SingleError();
        Assert.Equal("PgBackup.ServerUnreachable,PgBackup.Commands.InvokePgDumpCommand", e.FullyQualifiedErrorId);
        Assert.Equal(ErrorCategory.ConnectionError, e.CategoryInfo.Category);
        Assert.Equal($"127.0.0.1:{port}", e.TargetObject);
        Assert.False(string.IsNullOrEmpty(e.ErrorDetails.RecommendedAction));
    }

    [Fact]
    public void A_wrong_password_is_an_authentication_error_that_never_shows_the_password()
    {
        var r = fx.Shell.Run("""
            $cred = [pscredential]::new('postgres', [System.Net.NetworkCredential]::new('', 'Wr0ng-Secret!').SecurePassword)
            Invoke-PgDump -Server $s -Database shop -Repository $r -Credential $cred -Verbose
            """, ("s", fx.Server), ("r", fx.NewRepository()));
        var e = r.SingleError();
        Assert.Equal("PgBackup.AuthenticationFailed", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.AuthenticationError, e.CategoryInfo.Category);
        Assert.Contains("credential", e.ErrorDetails.RecommendedAction);
        Assert.DoesNotContain("Wr0ng-Secret!", e.ToString() + e.ErrorDetails.RecommendedAction + e.TargetObject + string.Join("", r.Verbose));
    }

    [Fact]
    public void A_missing_database_is_object_not_found()
    {
        var e = fx.Shell.Run("Invoke-PgDump -Server $s -Database no_such_db -Repository $r", ("s", fx.Server), ("r", fx.NewRepository())).SingleError();
        Assert.Equal("PgBackup.DatabaseNotFound", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.ObjectNotFound, e.CategoryInfo.Category);
        Assert.Equal("no_such_db", e.TargetObject);
        var wildcard = fx.Shell.Run("Invoke-PgDump -Server $s -Database nothing* -Repository $r", ("s", fx.Server), ("r", fx.NewRepository())).SingleError();
        Assert.Equal("PgBackup.DatabaseNotFound", wildcard.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal("nothing*", wildcard.TargetObject);
    }

    [Fact]
    public void A_missing_tool_says_what_to_install()
    {
        var empty = fx.NewRepository();
        var e = fx.Shell.Run("$env:PGBACKUP_TOOLPATH = $t; try { Invoke-PgDump -Server $s -Database shop -Repository $r } finally { $env:PGBACKUP_TOOLPATH = $null }",
            ("t", empty), ("s", fx.Server), ("r", fx.NewRepository())).SingleError();
        Assert.Equal("PgBackup.ToolNotFound", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.NotInstalled, e.CategoryInfo.Category);
        Assert.Equal("pg_dump", e.TargetObject);
        Assert.Contains("apt-get install", e.ErrorDetails.RecommendedAction);
    }

    [Fact]
    public void A_pg_dump_older_than_the_server_is_refused()
    {
        var tools = fx.NewRepository();
        var fake = Path.Combine(tools, "pg_dump");
        File.WriteAllText(fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n");
        File.SetUnixFileMode(fake, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var r = fx.Shell.Run("$env:PGBACKUP_TOOLPATH = $t; try { Invoke-PgDump -Server $s -Database shop -Repository $r -Verbose } finally { $env:PGBACKUP_TOOLPATH = $null }",
            ("t", tools), ("s", fx.Server), ("r", fx.NewRepository()));
        var e = r.SingleError();
        Assert.Equal("PgBackup.ToolTooOld", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.NotInstalled, e.CategoryInfo.Category);
        Assert.Contains("9.6.24", e.ToString());
        Assert.Contains(r.Verbose, v => v.Contains("Refused pg_dump") && v.Contains(fake));
    }

    [Fact]
    public void A_read_only_target_folder_is_permission_denied()
    {
        using var mount = TmpfsMount.Create("ro,size=1m");
        var e = fx.Shell.Run("Invoke-PgDump -Server $s -Database shop -Repository $r", ("s", fx.Server), ("r", mount.Path)).SingleError();
        Assert.Equal("PgBackup.TargetNotWritable", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.PermissionDenied, e.CategoryInfo.Category);
    }

    [Fact]
    public void A_full_target_folder_is_a_write_error_and_leaves_no_partial_dump()
    {
        using var mount = TmpfsMount.Create("size=256k");
        var e = fx.Shell.Run("Invoke-PgDump -Server $s -Database shop -Repository $r -Format Plain", ("s", fx.Server), ("r", mount.Path)).SingleError();
        Assert.Equal("PgBackup.TargetFull", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.WriteError, e.CategoryInfo.Category);
        Assert.Empty(Directory.GetFiles(mount.Path, "*", SearchOption.AllDirectories));
    }

    [Fact]
    public void An_existing_path_is_not_overwritten_without_Force()
    {
        var file = Path.Combine(fx.NewRepository(), "shop.dump");
        File.WriteAllText(file, "precious");
        var e = fx.Shell.Run("Invoke-PgDump -Server $s -Database shop -Path $p", ("s", fx.Server), ("p", file)).SingleError();
        Assert.Equal("PgBackup.TargetExists", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.ResourceExists, e.CategoryInfo.Category);
        Assert.Equal("precious", File.ReadAllText(file));
        fx.Shell.Run("Invoke-PgDump -Server $s -Database shop -Path $p -Force", ("s", fx.Server), ("p", file)).AssertNoErrors();
        Assert.StartsWith("PGDMP", File.ReadAllText(file)[..5]);
    }

    [Fact]
    public void Jobs_need_the_directory_format()
    {
        var e = fx.Shell.Run("Invoke-PgDump -Server $s -Database shop -Repository $r -Format Custom -Jobs 4", ("s", fx.Server), ("r", fx.NewRepository())).SingleError();
        Assert.Equal("PgBackup.JobsNeedDirectoryFormat", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidArgument, e.CategoryInfo.Category);
    }

    private static string CommandLine(Process p)
    {
        try { return File.ReadAllText($"/proc/{p.Id}/cmdline"); }
        catch (IOException) { return ""; }
    }

    [Fact]
    public void Stopping_the_pipeline_kills_pg_dump_and_leaves_nothing_behind()
    {
        var repo = fx.NewRepository();
        var (result, stopped) = fx.Shell.RunAndStop($"Invoke-PgDump -Server '{fx.Server}' -Database shop -Repository '{repo}' -Format Plain",
            p => p.StatusDescription.StartsWith("Table "), TimeSpan.FromSeconds(60));
        Assert.True(stopped, "the dump finished before it could be stopped: " + string.Join(" | ", result.AllErrors));
        Assert.Empty(Directory.GetFiles(repo, "*", SearchOption.AllDirectories));
        Assert.DoesNotContain(Process.GetProcessesByName("pg_dump"), p => CommandLine(p).Contains(repo, StringComparison.Ordinal));
    }
}

/// <summary>A tmpfs mounted for one test, to make a folder full or read-only for real.</summary>
public sealed class TmpfsMount : IDisposable
{
    public string Path { get; }

    private TmpfsMount(string path) => Path = path;

    public static TmpfsMount Create(string options)
    {
        var path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "pgbackup-tmpfs-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(path);
        var (code, _, err) = ProcessRunner.Run("mount", ["-t", "tmpfs", "-o", options, "tmpfs", path]);
        Assert.True(code == 0, $"mounting a tmpfs failed ({err.Trim()}); these tests need root (or CAP_SYS_ADMIN) to simulate a full or read-only disk");
        return new TmpfsMount(path);
    }

    public void Dispose()
    {
        ProcessRunner.Run("umount", ["-l", Path]);
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
