using System.Security.Cryptography;
using PgBackup.Engine.Wal;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Encryption;
using PgBackup.Testing;

namespace PgBackup.Engine.Tests;

/// <summary>The built pgbackup-wal (the test project references it, so it is built with the tests) and a way to run it.</summary>
internal static class WalTool
{
    private static readonly Lazy<string> dll = new(Find);

    /// <summary>src/PgBackup.WalArchive/bin/&lt;configuration of the tests&gt;/net8.0/pgbackup-wal.dll</summary>
    public static string DllPath => dll.Value;

    public static (int ExitCode, string StdOut, string StdErr) Run(params string[] args) =>
        ProcessRunner.Run(WalArchiveTool.LocateDotnetHost(), [DllPath, .. args], timeout: TimeSpan.FromMinutes(1));

    /// <summary>Copies the tool (dll, the LZ4 libraries it loads, runtimeconfig, deps) into <paramref name="folder"/>, as the module build does.</summary>
    public static string CopyTo(string folder)
    {
        Directory.CreateDirectory(folder);
        var built = Path.GetDirectoryName(DllPath)!;
        foreach (var file in Directory.GetFiles(built, "pgbackup-wal.*").Concat(Directory.GetFiles(built, "K4os.*.dll")))
            File.Copy(file, Path.Combine(folder, Path.GetFileName(file)), overwrite: true);
        return Path.Combine(folder, WalArchiveTool.FileName);
    }

    /// <summary>
    /// src/PgBackup.WalArchive/bin/native/&lt;configuration&gt;/&lt;rid&gt;/pgbackup-wal, which the build makes where a native
    /// toolchain is installed; a test that needs it fails saying what to install.
    /// </summary>
    public static string NativePath
    {
        get
        {
            var configuration = Path.GetFileName(Path.GetDirectoryName(Path.GetDirectoryName(DllPath))!);
            var native = Path.Combine(Path.GetDirectoryName(Path.GetDirectoryName(Path.GetDirectoryName(DllPath)))!, "native", configuration,
                WalArchiveTool.NativeRuntimeIdentifier, WalArchiveTool.NativeFileName);
            return File.Exists(native) ? native : throw new InvalidOperationException(
                $"The native build of pgbackup-wal is missing ({native}): install a native toolchain (Debian/Ubuntu: apt-get install gcc libc6-dev zlib1g-dev, or clang) and build again; the build warns when it cannot make it.");
        }
    }

    /// <summary>Copies the native build into <paramref name="folder"/>, keeping it executable.</summary>
    public static string CopyNativeTo(string folder)
    {
        Directory.CreateDirectory(folder);
        var copy = Path.Combine(folder, WalArchiveTool.NativeFileName);
        File.Copy(NativePath, copy, overwrite: true);
        return copy;
    }

    public static string Sha256(string path) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)));

    public static string WriteRandomFile(string path, int size = 16 * 1024 * 1024)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, RandomNumberGenerator.GetBytes(size));
        return path;
    }

    private static string Find()
    {
        var testBin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)); // tests/PgBackup.Engine.Tests/bin/<Configuration>/net10.0
        var configuration = testBin.Parent!.Name;
        var root = testBin;
        while (root != null && !File.Exists(Path.Combine(root.FullName, "PgBackup.sln"))) root = root.Parent;
        if (root == null) throw new InvalidOperationException($"The repository root (PgBackup.sln) was not found above {testBin.FullName}.");
        var path = Path.Combine(root.FullName, "src", "PgBackup.WalArchive", "bin", configuration, "net8.0", WalArchiveTool.FileName);
        return File.Exists(path) ? path : throw new InvalidOperationException($"{path} is missing: build tests/PgBackup.Engine.Tests (it references the tool).");
    }
}

public sealed class WalArchiveToolTests : IDisposable
{
    private const string Segment = "000000010000000000000001";
    // Spaces, a single quote and a percent sign: what shells and PostgreSQL's % escapes get wrong.
    private readonly string root = Path.Combine(Targets.NewFolder(), "it's a 100% test");
    private string Archive => Path.Combine(root, "wal archive");

    public void Dispose() => Directory.Delete(Path.GetDirectoryName(root)!, recursive: true);

    [Theory]
    [InlineData(Segment, 16 * 1024 * 1024)]
    [InlineData("00000002.history", 42)]
    [InlineData("000000010000000000000002.00000028.backup", 300)]
    [InlineData("000000010000000000000003.partial", 1024 * 1024)]
    public void Push_archives_a_new_file_with_a_sidecar_that_matches(string name, int size)
    {
        var source = WalTool.WriteRandomFile(Path.Combine(root, "pg_wal", name), size);

        var (exit, _, stderr) = WalTool.Run("push", source, Archive);

        Assert.True(exit == 0, stderr);
        var archived = Path.Combine(Archive, name);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(archived));
        Assert.Equal($"{WalTool.Sha256(source)}  {name}\n", File.ReadAllText(archived + ".sha256"));
        Assert.Equal([name, name + ".sha256"], Directory.GetFiles(Archive).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Pushing_the_same_content_again_succeeds_without_rewriting()
    {
        var source = WalTool.WriteRandomFile(Path.Combine(root, "pg_wal", Segment));
        Assert.Equal(0, WalTool.Run("push", source, Archive).ExitCode);
        var archived = Path.Combine(Archive, Segment);
        var past = DateTime.UtcNow.AddHours(-1);
        File.SetLastWriteTimeUtc(archived, past);

        var (exit, _, stderr) = WalTool.Run("push", source, Archive);
        Assert.True(exit == 0, stderr);
        Assert.Equal(past, File.GetLastWriteTimeUtc(archived));

        // A lost sidecar is written again from the archived file, which is still left alone.
        File.Delete(archived + ".sha256");
        Assert.Equal(0, WalTool.Run("push", source, Archive).ExitCode);
        Assert.Equal(past, File.GetLastWriteTimeUtc(archived));
        Assert.StartsWith(WalTool.Sha256(source), File.ReadAllText(archived + ".sha256"));
    }

    [Fact]
    public void Pushing_different_content_under_an_archived_name_fails_and_keeps_the_original()
    {
        var first = WalTool.WriteRandomFile(Path.Combine(root, "one", Segment));
        var second = WalTool.WriteRandomFile(Path.Combine(root, "two", Segment));
        Assert.Equal(0, WalTool.Run("push", first, Archive).ExitCode);

        var (exit, stdout, stderr) = WalTool.Run("push", second, Archive);

        Assert.Equal(4, exit); // a failure to PostgreSQL, which keeps the segment; 4 tells the guard never to drop it
        Assert.Equal("", stdout);
        var line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("pgbackup-wal: ", line);
        Assert.Contains("already archived", line);
        Assert.Contains("refusing to overwrite", line);
        Assert.Contains(WalTool.Sha256(first), line);
        Assert.Contains(WalTool.Sha256(second), line);
        Assert.Equal(File.ReadAllBytes(first), File.ReadAllBytes(Path.Combine(Archive, Segment)));
        Assert.StartsWith(WalTool.Sha256(first), File.ReadAllText(Path.Combine(Archive, Segment + ".sha256")));
        Assert.Equal(2, Directory.GetFiles(Archive).Length);
    }

    [Fact]
    public async Task Pushes_of_one_segment_at_the_same_moment_all_succeed_and_leave_one_copy_and_its_checksum()
    {
        // PostgreSQL never runs two archive_commands for one segment, but two servers (or a server and an operator
        // replaying .ready files by hand) may push into one archive; pgBackRest prevents that with a lock, PgBackup
        // makes it safe: temporary names per process, a rename that never overwrites, the same content accepted.
        for (var round = 0; round < 4; round++)
        {
            var name = $"00000001000000000000001{round}";
            var source = WalTool.WriteRandomFile(Path.Combine(root, "pg_wal", name));
            var pushes = await Task.WhenAll(Enumerable.Range(0, 6).Select(_ => Task.Run(() => WalTool.Run("push", source, Archive))));
            Assert.All(pushes, p => Assert.True(p.ExitCode == 0, p.StdErr));
            Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(Path.Combine(Archive, name)));
            Assert.Equal($"{WalTool.Sha256(source)}  {name}\n", File.ReadAllText(Path.Combine(Archive, name + ".sha256")));
        }
        Assert.DoesNotContain(Directory.GetFiles(Archive), f => f.Contains(".tmp", StringComparison.Ordinal));
        Assert.Equal(8, Directory.GetFiles(Archive).Length);
    }

    [Fact]
    public async Task Pushes_of_different_content_under_one_name_at_the_same_moment_keep_exactly_one_with_its_checksum()
    {
        for (var round = 0; round < 4; round++)
        {
            var name = $"00000001000000000000002{round}";
            var sources = Enumerable.Range(0, 3).Select(i => WalTool.WriteRandomFile(Path.Combine(root, $"server{i}", name))).ToList();
            var pushes = await Task.WhenAll(sources.Select(source => Task.Run(() => (Source: source, Result: WalTool.Run("push", source, Archive)))));
            var winner = Assert.Single(pushes, p => p.Result.ExitCode == 0);
            Assert.All(pushes.Where(p => p.Result.ExitCode != 0), p => Assert.Contains("refusing to overwrite", p.Result.StdErr));
            Assert.Equal(File.ReadAllBytes(winner.Source), File.ReadAllBytes(Path.Combine(Archive, name)));
            Assert.Equal($"{WalTool.Sha256(winner.Source)}  {name}\n", File.ReadAllText(Path.Combine(Archive, name + ".sha256")));
        }
        Assert.DoesNotContain(Directory.GetFiles(Archive), f => f.Contains(".tmp", StringComparison.Ordinal));
    }

    [Fact]
    public void Push_of_a_missing_file_fails_with_one_line()
    {
        var (exit, _, stderr) = WalTool.Run("push", Path.Combine(root, "pg_wal", Segment), Archive);
        Assert.Equal(1, exit);
        Assert.StartsWith("pgbackup-wal: ", Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
    }

    [Fact]
    public void Fetch_returns_the_archived_file_and_fails_quietly_for_a_missing_one()
    {
        var source = WalTool.WriteRandomFile(Path.Combine(root, "pg_wal", Segment));
        Assert.Equal(0, WalTool.Run("push", source, Archive).ExitCode);
        var destination = Path.Combine(root, "restore", "RECOVERYXLOG");
        Directory.CreateDirectory(Path.GetDirectoryName(destination)!);

        var (exit, _, stderr) = WalTool.Run("fetch", Archive, Segment, destination);
        Assert.True(exit == 0, stderr);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(destination));

        var missing = Path.Combine(root, "restore", "RECOVERYHISTORY");
        (exit, _, stderr) = WalTool.Run("fetch", Archive, "00000002.history", missing);
        Assert.NotEqual(0, exit);
        Assert.Equal("", stderr);
        Assert.False(File.Exists(missing));
    }

    [Fact]
    public void Fetch_refuses_an_archived_file_that_does_not_match_its_sidecar()
    {
        var source = WalTool.WriteRandomFile(Path.Combine(root, "pg_wal", Segment));
        Assert.Equal(0, WalTool.Run("push", source, Archive).ExitCode);
        using (var archived = File.OpenWrite(Path.Combine(Archive, Segment)))
        {
            archived.Position = 8192;
            archived.WriteByte(0xFF);
        }
        var destination = Path.Combine(root, "RECOVERYXLOG");

        var (exit, _, stderr) = WalTool.Run("fetch", Archive, Segment, destination);

        // Above 125, so PostgreSQL aborts recovery instead of taking the damage for the end of the archive.
        Assert.True(exit > 125, $"exit code {exit}");
        Assert.StartsWith("pgbackup-wal: DAMAGED ARCHIVE", stderr);
        Assert.False(File.Exists(destination));
        Assert.Empty(Directory.GetFiles(root, "RECOVERYXLOG*"));
    }

    /// <summary>What PostgreSQL does before handing the command to /bin/sh: %p, %f and %% replaced.</summary>
    private static string Expand(string command, string p, string f) => command.Replace("%%", "\0").Replace("%p", p).Replace("%f", f).Replace("\0", "%");

    [Fact]
    public void The_archive_command_runs_under_sh_with_spaces_quotes_and_percent_signs_in_every_path()
    {
        var tool = new WalArchiveTool(WalTool.CopyTo(Path.Combine(root, "module's folder", "WalArchive")));
        var source = WalTool.WriteRandomFile(Path.Combine(root, "data", "pg_wal", Segment), 1024);
        var restored = Path.Combine(root, "data", "pg_wal", "RECOVERYXLOG");

        var push = ProcessRunner.Run("/bin/sh", ["-c", $"cd '{Path.Combine(root, "data").Replace("'", @"'\''")}' && " + Expand(tool.ArchiveCommand(Archive), "pg_wal/" + Segment, Segment)]);
        Assert.True(push.ExitCode == 0, push.StdErr);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(Path.Combine(Archive, Segment)));

        var fetch = ProcessRunner.Run("/bin/sh", ["-c", $"cd '{Path.Combine(root, "data").Replace("'", @"'\''")}' && " + Expand(tool.RestoreCommand(Archive), "pg_wal/RECOVERYXLOG", Segment)]);
        Assert.True(fetch.ExitCode == 0, fetch.StdErr);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(restored));

        File.Delete(restored);
        var copy = ProcessRunner.Run("/bin/sh", ["-c", $"cd '{Path.Combine(root, "data").Replace("'", @"'\''")}' && " + Expand(tool.CopyRestoreCommand(Archive), "pg_wal/RECOVERYXLOG", Segment)]);
        Assert.True(copy.ExitCode == 0, copy.StdErr);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(restored));
        var missing = ProcessRunner.Run("/bin/sh", ["-c", $"cd '{Path.Combine(root, "data").Replace("'", @"'\''")}' && " + Expand(tool.CopyRestoreCommand(Archive), "pg_wal/RECOVERYXLOG", "00000001000000000000FFFF")]);
        Assert.NotEqual(0, missing.ExitCode); // "not in the archive" for PostgreSQL

        // The gated copy waits for the file's marker: .ok copies it, .bad aborts recovery, "done" lets unlisted files through.
        var markers = Directory.CreateDirectory(Path.Combine(root, "it's 100% checked")).FullName;
        string Gated(string file) => $"cd '{Path.Combine(root, "data").Replace("'", @"'\''")}' && " + Expand(tool.GatedCopyRestoreCommand(Archive, markers), "pg_wal/RECOVERYXLOG", file);
        File.Delete(restored);
        File.WriteAllBytes(Path.Combine(markers, Segment + ".ok"), []);
        Assert.Equal(0, ProcessRunner.Run("/bin/sh", ["-c", Gated(Segment)]).ExitCode);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(restored));
        File.Move(Path.Combine(markers, Segment + ".ok"), Path.Combine(markers, Segment + ".bad"));
        var bad = ProcessRunner.Run("/bin/sh", ["-c", Gated(Segment)]);
        Assert.Equal(200, bad.ExitCode);
        Assert.Contains("DAMAGED ARCHIVE", bad.StdErr);
        File.WriteAllBytes(Path.Combine(markers, "done"), []);
        Assert.NotEqual(0, ProcessRunner.Run("/bin/sh", ["-c", Gated("00000001000000000000FFFF")]).ExitCode);
        Directory.Delete(markers, recursive: true);
        File.Delete(restored);
        Assert.Equal(0, ProcessRunner.Run("/bin/sh", ["-c", Gated(Segment)]).ExitCode); // no gate any more: a plain copy
        Assert.True(File.Exists(restored));
    }

    [Fact]
    public void The_native_build_runs_the_same_commands_under_sh_without_a_dotnet_host()
    {
        var module = Path.Combine(root, "module's folder");
        WalTool.CopyTo(Path.Combine(module, "WalArchive"));
        WalTool.CopyNativeTo(Path.Combine(module, "WalArchive", WalArchiveTool.NativeRuntimeIdentifier));
        var tool = WalArchiveTool.InModuleFolder(module, dotnetHost: "/nonexistent/dotnet");
        Assert.True(tool.IsNative);
        tool.EnsureExists();
        var source = WalTool.WriteRandomFile(Path.Combine(root, "data", "pg_wal", Segment), 1024);
        var restored = Path.Combine(root, "data", "pg_wal", "RECOVERYXLOG");
        var inData = $"cd '{Path.Combine(root, "data").Replace("'", @"'\''")}' && ";

        var command = tool.ArchiveCommand(Archive);
        Assert.DoesNotContain("dotnet", command);
        var push = ProcessRunner.Run("/bin/sh", ["-c", inData + Expand(command, "pg_wal/" + Segment, Segment)]);
        Assert.True(push.ExitCode == 0, push.StdErr);
        Assert.Equal($"{WalTool.Sha256(source)}  {Segment}\n", File.ReadAllText(Path.Combine(Archive, Segment + ".sha256")));
        var fetch = ProcessRunner.Run("/bin/sh", ["-c", inData + Expand(tool.RestoreCommand(Archive), "pg_wal/RECOVERYXLOG", Segment)]);
        Assert.True(fetch.ExitCode == 0, fetch.StdErr);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(restored));

        // Disable-PgWalArchiving and the inspection know both forms, for folders and for blob archives.
        Assert.True(WalArchiveTool.TryParseArchiveCommand(command, out ArchiveCommandParts? folder));
        Assert.Equal(Archive, folder.Location);
        Assert.True(WalArchiveTool.TryParseArchiveCommand(tool.ArchiveCommand("https://a.blob.core.windows.net/c/wal/1", "/var/lib/postgresql/.pgbackup/1-archive.json"),
            out ArchiveCommandParts? blob));
        Assert.Equal("https://a.blob.core.windows.net/c/wal/1", blob.Location);
        Assert.Equal("/var/lib/postgresql/.pgbackup/1-archive.json", blob.CredentialsFile);
        // Every option read back, in the order the commands write them.
        Assert.True(WalArchiveTool.TryParseArchiveCommand(tool.ArchiveCommand(Archive, "/c.json", dropBacklogAbove: 1024, keyFile: "/k.json", parallel: 4), out ArchiveCommandParts? all));
        Assert.Equal(new ArchiveCommandParts(Archive, "/c.json", 1024, "/k.json", 4), all);
        Assert.Contains(" --parallel 4", tool.RestoreCommand(Archive, prefetch: 4));
        // A server on another OS cannot run this machine's native build: its commands use the portable tool.
        Assert.False(tool.ForServer(ServerOs.Windows).IsNative);
    }

    [Fact]
    public void Unix_commands_single_quote_every_path_and_double_every_percent_sign()
    {
        var tool = new WalArchiveTool("/opt/pg backup/WalArchive/pgbackup-wal.dll", "/usr/share/dotnet/dotnet", ServerOs.Unix);
        const string folder = "/srv/it's 50% full/wal/7301234567890123456";

        Assert.Equal(@"'/usr/share/dotnet/dotnet' '/opt/pg backup/WalArchive/pgbackup-wal.dll' push '%p' '/srv/it'\''s 50%% full/wal/7301234567890123456'",
            tool.ArchiveCommand(folder));
        Assert.Equal(@"'/usr/share/dotnet/dotnet' '/opt/pg backup/WalArchive/pgbackup-wal.dll' fetch '/srv/it'\''s 50%% full/wal/7301234567890123456' '%f' '%p'",
            tool.RestoreCommand(folder));
        Assert.Equal(@"cp '/srv/it'\''s 50%% full/wal/7301234567890123456/%f' '%p'", tool.CopyRestoreCommand(folder));
        Assert.True(WalArchiveTool.TryParseArchiveCommand(tool.ArchiveCommand(folder), out ArchiveCommandParts? parsed));
        Assert.Equal(folder, parsed.Location);
        Assert.Throws<PgBackupException>(() => tool.ArchiveCommand("/srv/two\nlines"));
    }

    [Fact]
    public void Windows_commands_double_quote_every_path_and_refuse_what_cmd_cannot_quote()
    {
        var tool = new WalArchiveTool("/opt/x/pgbackup-wal.dll", "/usr/bin/dotnet").ForServer(ServerOs.Windows);
        Assert.Same(tool, tool.ForServer(ServerOs.Windows));
        var windows = new WalArchiveTool(@"C:\Program Files\PowerShell\Modules\PgBackup\0.1.0\WalArchive\pgbackup-wal.dll", @"C:\Program Files\dotnet\dotnet.exe", ServerOs.Windows);
        const string folder = @"D:\pg backup\wal\7301234567890123456";

        Assert.Equal(@"""C:\Program Files\dotnet\dotnet.exe"" ""C:\Program Files\PowerShell\Modules\PgBackup\0.1.0\WalArchive\pgbackup-wal.dll"" push ""%p"" ""D:\pg backup\wal\7301234567890123456""",
            windows.ArchiveCommand(folder));
        Assert.Equal(@"""C:\Program Files\dotnet\dotnet.exe"" ""C:\Program Files\PowerShell\Modules\PgBackup\0.1.0\WalArchive\pgbackup-wal.dll"" fetch ""D:\pg backup\wal\7301234567890123456"" ""%f"" ""%p""",
            windows.RestoreCommand(folder));
        Assert.Equal(@"copy /Y ""D:\pg backup\wal\7301234567890123456\%f"" ""%p""", windows.CopyRestoreCommand(folder));
        Assert.True(WalArchiveTool.TryParseArchiveCommand(windows.ArchiveCommand(folder), out ArchiveCommandParts? parsed));
        Assert.Equal(folder, parsed.Location);
        Assert.Equal("PgBackup.InvalidWalArchivePath", Assert.Throws<PgBackupException>(() => windows.ArchiveCommand(@"D:\50% full")).ErrorId);
        Assert.Equal("PgBackup.InvalidWalArchivePath", Assert.Throws<PgBackupException>(() => windows.ArchiveCommand("D:\\a\"b")).ErrorId);
    }

    [Fact]
    public void Options_in_the_wrong_place_are_usage_errors_and_a_fetch_never_reports_them_as_a_missing_file()
    {
        Assert.Equal(2, WalTool.Run("push", "a", "b", "--encrypt").ExitCode);
        Assert.Equal(2, WalTool.Run("push", "a", "b", "--decrypt", "k").ExitCode);
        Assert.Equal(2, WalTool.Run("push", "a", "b", "--parallel", "0").ExitCode);
        // Exit codes up to 125 tell PostgreSQL "not in the archive", which ends recovery early; a broken fetch aborts it.
        var fetch = WalTool.Run("fetch", "a", "b", "c", "--encrypt", "k");
        Assert.Equal(200, fetch.ExitCode);
        Assert.Contains("belongs to push", fetch.StdErr);
        Assert.Equal(200, WalTool.Run("fetch", "a", "b", "c", "--parallel").ExitCode);
        Assert.Equal(200, WalTool.Run("fetch", "a", "b", "c", "--parallel", "x").ExitCode);
    }

    [Fact]
    public void Commands_of_other_tools_are_not_taken_for_pgbackup()
    {
        Assert.False(WalArchiveTool.TryParseArchiveCommand("", out ArchiveCommandParts? _));
        Assert.False(WalArchiveTool.TryParseArchiveCommand("test ! -f /mnt/server/archivedir/%f && cp %p /mnt/server/archivedir/%f", out ArchiveCommandParts? _));
        Assert.False(WalArchiveTool.TryParseArchiveCommand("pgbackrest --stanza=main archive-push %p", out ArchiveCommandParts? _));
        Assert.False(WalArchiveTool.TryParseArchiveCommand("'/usr/bin/dotnet' '/x/pgbackup-wal.dll' fetch '/a' '%f' '%p'", out ArchiveCommandParts? _));
    }

    [Fact]
    public void The_dotnet_host_is_found_and_a_missing_tool_is_reported()
    {
        Assert.True(File.Exists(WalArchiveTool.LocateDotnetHost()));
        var missing = new WalArchiveTool(Path.Combine(root, "nowhere", WalArchiveTool.FileName));
        var error = Assert.Throws<PgBackupException>(missing.EnsureExists);
        Assert.Equal("PgBackup.WalToolNotFound", error.ErrorId);
        Assert.Equal(ErrorKind.NotInstalled, error.Kind);
        new WalArchiveTool(WalTool.DllPath).EnsureExists();
    }
}

/// <summary>pgbackup-wal against an encrypted repository's archive folder: what it stores, repeats, conflicts and hands back.</summary>
public sealed class EncryptedWalArchiveToolTests : IDisposable
{
    private const string Segment = "000000010000000000000001";
    private readonly string root = Targets.NewFolder();
    private string Archive => Path.Combine(root, "wal", "7000000000000000001");
    private readonly RepositoryKeyring keyring = RepositoryKeyring.Create("tool tests passphrase", []);

    public void Dispose() => Directory.Delete(root, recursive: true);

    private string KeyFile(bool withPrivateKey)
    {
        using var unlocked = keyring.Unlock(new RepositoryKeys("tool tests passphrase", []), "test");
        var path = Path.Combine(root, withPrivateKey ? "fetch-key.json" : "push-key.json");
        File.WriteAllText(path, new WalKeyFile(keyring.PublicKeyInfo, keyring.KeyId, "wal/7000000000000000001/", withPrivateKey ? unlocked.ExportPkcs8PrivateKey() : null).Serialize());
        return path;
    }

    [Fact]
    public void Push_stores_only_ciphertext_a_repeat_is_accepted_other_content_refused_and_fetch_returns_the_segment()
    {
        var source = WalTool.WriteRandomFile(Path.Combine(root, "pg_wal", Segment));
        var push = KeyFile(withPrivateKey: false);
        var (exit, _, stderr) = WalTool.Run("push", source, Archive, "--encrypt", push);
        Assert.True(exit == 0, stderr);
        var archived = File.ReadAllBytes(Path.Combine(Archive, Segment));
        Assert.True(EncryptedContent.LooksEncrypted(archived));
        Assert.True(archived.AsSpan().IndexOf(File.ReadAllBytes(source).AsSpan(1000, 64)) < 0);
        Assert.Contains("plain-sha256 " + WalTool.Sha256(source), File.ReadAllText(Path.Combine(Archive, Segment + ".sha256")));

        Assert.Equal(0, WalTool.Run("push", source, Archive, "--encrypt", push).ExitCode);
        var other = WalTool.WriteRandomFile(Path.Combine(root, "other", Segment));
        var conflict = WalTool.Run("push", other, Archive, "--encrypt", push);
        Assert.Equal(4, conflict.ExitCode);
        Assert.Contains("different content", conflict.StdErr);

        var fetched = Path.Combine(root, "fetched");
        var fetch = WalTool.Run("fetch", Archive, Segment, fetched, "--decrypt", KeyFile(withPrivateKey: true));
        Assert.True(fetch.ExitCode == 0, fetch.StdErr);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(fetched));

        // The public key alone cannot decrypt, and without a key nothing encrypted is handed to PostgreSQL.
        Assert.Equal(200, WalTool.Run("fetch", Archive, Segment, fetched + "2", "--decrypt", push).ExitCode);
        var noKey = WalTool.Run("fetch", Archive, Segment, fetched + "3");
        Assert.Equal(200, noKey.ExitCode);
        Assert.Contains("encrypted", noKey.StdErr);
        Assert.False(File.Exists(fetched + "3"));
    }

    [Fact]
    public void Compressed_then_encrypted_a_segment_comes_back_as_it_was_and_a_damaged_one_aborts_recovery()
    {
        // Real WAL compresses; random bytes would not: half a segment of zeros, as a segment not yet filled has.
        var source = Path.Combine(root, "pg_wal", Segment);
        Directory.CreateDirectory(Path.GetDirectoryName(source)!);
        File.WriteAllBytes(source, [.. System.Security.Cryptography.RandomNumberGenerator.GetBytes(8 << 20), .. new byte[8 << 20]]);
        var push = KeyFile(withPrivateKey: false);
        var (exit, _, stderr) = WalTool.Run("push", source, Archive, "--encrypt", push, WalCompression.Option);
        Assert.True(exit == 0, stderr);
        Assert.True(new FileInfo(Path.Combine(Archive, Segment)).Length < 12L << 20, "compressed before it was encrypted");
        // The same segment again, with or without compression, is the same segment.
        Assert.Equal(0, WalTool.Run("push", source, Archive, "--encrypt", push).ExitCode);
        var fetched = Path.Combine(root, "fetched");
        var fetch = WalTool.Run("fetch", Archive, Segment, fetched, "--decrypt", KeyFile(withPrivateKey: true));
        Assert.True(fetch.ExitCode == 0, fetch.StdErr);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(fetched));

        // Compressed alone, into a folder archive: a flipped byte with its sidecar rewritten to match still aborts recovery.
        var plainArchive = Path.Combine(root, "plain archive");
        Assert.Equal(0, WalTool.Run("push", source, plainArchive, WalCompression.Option).ExitCode);
        Assert.Equal(0, WalTool.Run("push", source, plainArchive).ExitCode);
        Assert.Equal(0, WalTool.Run("fetch", plainArchive, Segment, fetched + "2").ExitCode);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(fetched + "2"));
        var path = Path.Combine(plainArchive, Segment);
        var bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 3] ^= 0x10;
        File.WriteAllBytes(path, bytes);
        File.WriteAllText(path + ".sha256", WalTool.Sha256(path) + "  " + Segment + "\nplain-sha256 " + WalTool.Sha256(source) + "\n");
        var damaged = WalTool.Run("fetch", plainArchive, Segment, fetched + "3");
        Assert.Equal(200, damaged.ExitCode);
        Assert.Contains("DAMAGED ARCHIVE", damaged.StdErr);
        Assert.False(File.Exists(fetched + "3"));
        // Cut short at a block boundary's neighbourhood, its sidecar rewritten again: the frame ends early, which is damage too.
        File.WriteAllBytes(path, File.ReadAllBytes(path)[..(4 << 20)]);
        File.WriteAllText(path + ".sha256", WalTool.Sha256(path) + "  " + Segment + "\nplain-sha256 " + WalTool.Sha256(source) + "\n");
        var truncated = WalTool.Run("fetch", plainArchive, Segment, fetched + "3");
        Assert.Equal(200, truncated.ExitCode);
        Assert.Contains("DAMAGED ARCHIVE", truncated.StdErr);
        // --compress belongs to push.
        Assert.Equal(200, WalTool.Run("fetch", plainArchive, Segment, fetched + "4", WalCompression.Option).ExitCode);
    }

    [Fact]
    public void A_segment_an_earlier_version_stored_zlib_compressed_is_still_fetched()
    {
        var source = Path.Combine(root, "pg_wal", Segment);
        Directory.CreateDirectory(Path.GetDirectoryName(source)!);
        File.WriteAllBytes(source, [.. System.Security.Cryptography.RandomNumberGenerator.GetBytes(1 << 20), .. new byte[15 << 20]]);
        var archive = Path.Combine(root, "zlib archive");
        Directory.CreateDirectory(archive);
        var stored = Path.Combine(archive, Segment);
        using (var file = File.Create(stored))
        {
            file.Write("PGBKWZ1\n"u8);
            using var zlib = new System.IO.Compression.ZLibStream(file, System.IO.Compression.CompressionLevel.Fastest);
            zlib.Write(File.ReadAllBytes(source));
        }
        File.WriteAllText(stored + ".sha256", WalTool.Sha256(stored) + "  " + Segment + "\nplain-sha256 " + WalTool.Sha256(source) + "\n");
        var fetched = Path.Combine(root, "fetched");
        var fetch = WalTool.Run("fetch", archive, Segment, fetched);
        Assert.True(fetch.ExitCode == 0, fetch.StdErr);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(fetched));
        // The same segment pushed again, now compressed with LZ4, is recognised as the one archived.
        Assert.Equal(0, WalTool.Run("push", source, archive, WalCompression.Option).ExitCode);
        Assert.StartsWith("PGBKWZ1", System.Text.Encoding.ASCII.GetString(File.ReadAllBytes(stored), 0, 7));
    }

    [Fact]
    public void An_encrypted_segment_a_killed_push_left_without_its_sidecar_is_replaced_and_fetched_whole()
    {
        var source = WalTool.WriteRandomFile(Path.Combine(root, "pg_wal", Segment));
        var push = KeyFile(withPrivateKey: false);
        // What a push killed between putting the segment in place and writing its sidecar leaves: unacknowledged, and
        // without the private key impossible to compare. Half of it, to be sure the new push does not keep it.
        var first = Path.Combine(root, "first");
        Directory.CreateDirectory(first);
        Assert.Equal(0, WalTool.Run("push", source, first, "--encrypt", push).ExitCode);
        Directory.CreateDirectory(Archive);
        var leftover = Path.Combine(Archive, Segment);
        var bytes = File.ReadAllBytes(Path.Combine(first, Segment));
        File.WriteAllBytes(leftover, bytes[..(bytes.Length / 2)]);
        File.SetLastWriteTimeUtc(leftover, DateTime.UtcNow.AddMinutes(-1));

        var (exit, _, stderr) = WalTool.Run("push", source, Archive, "--encrypt", push);
        Assert.True(exit == 0, stderr);
        Assert.True(File.Exists(leftover + ".sha256"));
        var fetched = Path.Combine(root, "fetched");
        var fetch = WalTool.Run("fetch", Archive, Segment, fetched, "--decrypt", KeyFile(withPrivateKey: true));
        Assert.True(fetch.ExitCode == 0, fetch.StdErr);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(fetched));
    }

    [Fact]
    public void A_tampered_segment_aborts_recovery_and_a_history_file_keeps_its_switch_points_in_clear()
    {
        var source = WalTool.WriteRandomFile(Path.Combine(root, "pg_wal", Segment));
        var push = KeyFile(withPrivateKey: false);
        Assert.Equal(0, WalTool.Run("push", source, Archive, "--encrypt", push).ExitCode);
        var path = Path.Combine(Archive, Segment);
        var bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 0x20;
        File.WriteAllBytes(path, bytes);
        // The sidecar is rewritten to match, as an attacker who can write the archive would: the encryption still catches it.
        File.WriteAllText(path + ".sha256", WalTool.Sha256(path) + "  " + Segment + "\n");
        var fetched = Path.Combine(root, "fetched");
        var (exit, _, stderr) = WalTool.Run("fetch", Archive, Segment, fetched, "--decrypt", KeyFile(withPrivateKey: true));
        Assert.Equal(200, exit);
        Assert.Contains("TAMPERED", stderr);
        Assert.False(File.Exists(fetched));

        var history = Path.Combine(root, "pg_wal", "00000002.history");
        File.WriteAllText(history, "1\t0/3000000\tbefore 2026-12-07 10:00:00+00 at restore point \"secret plan\"\n");
        Assert.Equal(0, WalTool.Run("push", history, Archive, "--encrypt", push).ExitCode);
        Assert.DoesNotContain("secret plan", File.ReadAllText(Path.Combine(Archive, "00000002.history")));
        var text = new FolderWalArchiveStore(Archive).ReadText("00000002.history")!;
        var span = Assert.Single(WalInventory.ParseHistory(2, text), s => s.Timeline == 1);
        Assert.Equal(Lsn.Parse("0/3000000"), span.End);
        Assert.DoesNotContain("secret plan", File.ReadAllText(Path.Combine(Archive, "00000002.history.sha256")));
    }
}
