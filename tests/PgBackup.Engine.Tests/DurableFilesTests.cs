using System.Security.Cryptography;
using PgBackup.Engine.Physical;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Tests;

public sealed class DurableFilesTests
{
    [Fact]
    public void Syncing_a_tree_syncs_every_file_in_every_folder_but_does_not_follow_links()
    {
        var root = Targets.NewFolder();
        foreach (var file in new[] { "top", "a/one", "a/b/two", "a/b/c/three" }.Select(f => Path.Combine(root, f)))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(file)!);
            File.WriteAllBytes(file, RandomNumberGenerator.GetBytes(64 << 10));
        }
        var elsewhere = Targets.NewFolder();
        File.WriteAllText(Path.Combine(elsewhere, "not-ours"), "x");
        Directory.CreateSymbolicLink(Path.Combine(root, "a", "link"), elsewhere);

        Assert.Equal((4, 4), DurableFiles.SyncTree(root));
    }

    [Fact]
    public void A_plain_backups_tablespaces_are_found_through_its_pg_tblspc_links_so_they_are_synced_too()
    {
        var backup = Targets.NewFolder();
        var tablespace = Targets.NewFolder();
        Directory.CreateDirectory(Path.Combine(backup, "pg_tblspc"));
        Directory.CreateSymbolicLink(Path.Combine(backup, "pg_tblspc", "16384"), tablespace);
        Directory.CreateSymbolicLink(Path.Combine(backup, "pg_tblspc", "16385"), Path.Combine(tablespace, "gone"));

        Assert.Equal([tablespace], BaseBackupService.TablespaceFolders(backup));
        Assert.Empty(BaseBackupService.TablespaceFolders(Targets.NewFolder()));
    }

    [Fact]
    public async Task A_file_handed_to_the_disk_as_it_is_written_holds_every_byte_in_order()
    {
        var path = Path.Combine(Targets.NewFolder(), "big");
        var chunk = RandomNumberGenerator.GetBytes((3 << 20) + 17);
        using var expected = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await using (var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous))
        await using (var stream = new WritebackStream(file))
        {
            // Past several 64 MB marks, with writes of both kinds.
            for (var i = 0; i < 50; i++)
            {
                var part = chunk.AsMemory(i % 7, chunk.Length - i % 7);
                expected.AppendData(part.Span);
                if (i % 2 == 0) await stream.WriteAsync(part);
                else stream.Write(part.Span);
            }
            Assert.True(stream.Length > 128L << 20);
        }
        await using var written = File.OpenRead(path);
        Assert.Equal(expected.GetHashAndReset(), await SHA256.HashDataAsync(written));
    }

    [Fact]
    public void Starting_the_write_of_a_file_or_syncing_one_that_is_gone_is_not_an_error()
    {
        var gone = Path.Combine(Targets.NewFolder(), "renamed-meanwhile");
        DurableFiles.StartWriting(gone);
        DurableFiles.SyncFile(gone);
    }

    [Fact]
    public void A_folder_that_cannot_be_synced_is_an_io_error_naming_it()
    {
        var missing = Path.Combine(Targets.NewFolder(), "missing");
        var error = Assert.Throws<IOException>(() => DurableFiles.SyncDirectory(missing));
        Assert.Contains(missing, error.Message);
    }

    [Fact]
    public void A_cancelled_sync_stops()
    {
        var root = Targets.NewFolder();
        File.WriteAllText(Path.Combine(root, "file"), "x");
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.Throws<OperationCanceledException>(() => DurableFiles.SyncTree(root, cancelled.Token));
    }

    [Fact]
    public void Moving_to_a_new_name_never_replaces_a_file_that_is_there()
    {
        var folder = Targets.NewFolder();
        var first = Path.Combine(folder, "first.tmp");
        var second = Path.Combine(folder, "second.tmp");
        var destination = Path.Combine(folder, "segment");
        File.WriteAllText(first, "first");
        File.WriteAllText(second, "second");

        Assert.True(DurableFiles.TryMoveNew(first, destination));
        Assert.False(File.Exists(first));
        Assert.False(DurableFiles.TryMoveNew(second, destination));
        Assert.Equal("first", File.ReadAllText(destination));
        Assert.Equal("second", File.ReadAllText(second));
        Assert.Throws<FileNotFoundException>(() => DurableFiles.TryMoveNew(first, Path.Combine(folder, "other")));
    }
}
