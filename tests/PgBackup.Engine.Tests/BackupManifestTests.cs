using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text;
using PgBackup.Engine.Physical;

namespace PgBackup.Engine.Tests;

public sealed class BackupManifestTests
{
    [Fact]
    public void Crc32C_is_written_as_PostgreSQL_writes_it_and_does_not_depend_on_how_the_bytes_arrive()
    {
        // The CRC-32C check value of "123456789" is 0xE3069283; a manifest holds its bytes in memory order.
        var bytes = Encoding.ASCII.GetBytes("123456789");
        var whole = FileDigest.Of(new MemoryStream(bytes));
        Assert.Equal("839206e3", whole.Crc32C);
        Assert.Equal(Convert.ToHexString(SHA256.HashData(bytes)).ToLowerInvariant(), whole.Sha256);

        var random = new byte[1_000_003];
        new Random(7).NextBytes(random);
        using var pieces = new FileDigester();
        var at = 0;
        foreach (var size in new[] { 1, 7, 8, 4096, 13, 500_000 })
        {
            pieces.Append(random.AsSpan(at, size));
            at += size;
        }
        pieces.Append(random.AsSpan(at));
        Assert.Equal(FileDigest.Of(new MemoryStream(random)), pieces.Finish());
    }

    private static string Manifest(string files)
    {
        var body = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n" + files + " ],\n" +
            "\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n";
        return body + "\"Manifest-Checksum\": \"" + Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(body))).ToLowerInvariant() + "\"}\n";
    }

    [Fact]
    public void A_manifest_gets_SHA256_checksums_and_a_new_checksum_and_keeps_everything_else()
    {
        var abc = FileDigest.Of(new MemoryStream("abc"u8.ToArray()));
        Assert.Equal("b73f4b36", abc.Crc32C); // CRC-32C("abc") = 0x364B3FB7
        var text = Manifest(
            "{ \"Path\": \"backup_label\", \"Size\": 3, \"Last-Modified\": \"2026-11-25 20:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"b73f4b36\" },\n" +
            "{ \"Encoded-Path\": \"626173652fc3a9\", \"Size\": 3, \"Last-Modified\": \"2026-11-25 20:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"b73f4b36\" },\n" +
            "{ \"Path\": \"global/pg_control\", \"Size\": 3, \"Last-Modified\": \"2026-11-25 20:00:00 GMT\" }");
        var manifest = BackupManifest.Parse(Encoding.UTF8.GetBytes(text));
        Assert.Null(manifest.ChecksumProblem());
        Assert.Equal(["backup_label", "base/é", "global/pg_control"], manifest.Files.Select(f => f.Path));

        Assert.True(abc.Matches(manifest.Files[0]));
        var digests = new Dictionary<string, FileDigest> { ["backup_label"] = abc, ["base/é"] = abc };

        var sealedBytes = manifest.WithSha256(digests);
        var sealedManifest = BackupManifest.Parse(sealedBytes);
        Assert.Null(sealedManifest.ChecksumProblem());
        Assert.Equal(["SHA256", "SHA256", null], sealedManifest.Files.Select(f => f.ChecksumAlgorithm));
        Assert.Equal(abc.Sha256, sealedManifest.Files[0].Checksum);
        Assert.True(abc.Matches(sealedManifest.Files[1]));
        var sealedText = Encoding.UTF8.GetString(sealedBytes);
        Assert.Contains("\"Encoded-Path\":\"626173652fc3a9\"", sealedText);
        Assert.Contains("\"Last-Modified\":\"2026-11-25 20:00:00 GMT\"", sealedText);
        Assert.Contains("\"Start-LSN\": \"0/2000028\"", sealedText);
        // PostgreSQL checksums everything up to the line before the last, which must hold the checksum alone.
        var lines = sealedText.TrimEnd('\n').Split('\n');
        Assert.StartsWith("\"Manifest-Checksum\"", lines[^1]);

        var tampered = Encoding.UTF8.GetBytes(text.Replace("\"Size\": 3, \"Last", "\"Size\": 4, \"Last"));
        Assert.NotNull(BackupManifest.Parse(tampered).ChecksumProblem());
        Assert.Throws<InvalidOperationException>(() => manifest.WithSha256(new Dictionary<string, FileDigest> { ["backup_label"] = abc }));
    }

    [Fact]
    public async Task The_follower_reads_files_written_one_after_another_and_the_one_still_growing()
    {
        var root = Path.Combine(Targets.NewFolder(), "backup");
        await using var follower = BackupWriteFollower.Start(root, BaseBackupFormat.Plain, handToDisk: true);
        var random = new Random(3);
        // As pg_basebackup's extractor does: create, append, close, next file; WAL streamed alongside into pg_wal.
        Directory.CreateDirectory(Path.Combine(root, "pg_wal"));
        for (var i = 0; i < 30; i++)
        {
            var folder = Path.Combine(root, "base", (i / 10).ToString());
            Directory.CreateDirectory(folder);
            await using (var file = new FileStream(Path.Combine(folder, i.ToString()), FileMode.CreateNew))
                for (var chunk = 0; chunk < (i == 12 ? 40 : 2); chunk++)
                {
                    var bytes = new byte[random.Next(1, 300_000)];
                    random.NextBytes(bytes);
                    file.Write(bytes);
                    file.Flush();
                    if (chunk % 5 == 0) await Task.Delay(15);
                }
            await File.AppendAllTextAsync(Path.Combine(root, "pg_wal", "000000010000000000000001"), "wal");
        }
        var digests = await follower.FinishAsync();

        var written = Directory.GetFiles(Path.Combine(root, "base"), "*", SearchOption.AllDirectories);
        Assert.Equal(30, written.Length);
        foreach (var file in written)
            Assert.Equal(FileDigest.Of(file), digests[Path.GetRelativePath(root, file).Replace('\\', '/')]);
        Assert.DoesNotContain(digests.Keys, k => k.StartsWith("pg_wal", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_follower_reads_a_tar_file_while_it_grows()
    {
        var root = Path.Combine(Targets.NewFolder(), "backup");
        await using var follower = BackupWriteFollower.Start(root, BaseBackupFormat.Tar, handToDisk: true);
        Directory.CreateDirectory(root);
        var contents = new Dictionary<string, byte[]>();
        await using (var tarFile = new FileStream(Path.Combine(root, "base.tar"), FileMode.CreateNew))
        await using (var writer = new TarWriter(tarFile, TarEntryFormat.Ustar, leaveOpen: true))
        {
            for (var i = 0; i < 20; i++)
            {
                var bytes = new byte[i * 50_000 + 1];
                new Random(i).NextBytes(bytes);
                contents[$"base/1/{i}"] = bytes;
                writer.WriteEntry(new UstarTarEntry(TarEntryType.RegularFile, $"base/1/{i}") { DataStream = new MemoryStream(bytes) });
                tarFile.Flush();
                await Task.Delay(10);
            }
        }
        var digests = await follower.FinishAsync();
        foreach (var (name, bytes) in contents) Assert.Equal(FileDigest.Of(new MemoryStream(bytes)), digests[name]);
    }
}
