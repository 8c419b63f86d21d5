using System.Formats.Tar;
using System.Security.Cryptography;
using PgBackup.Engine.Physical;
using Xunit;

namespace PgBackup.Engine.Tests;

/// <summary>pg_basebackup's tar on standard output: stored without its manifest member, which is taken out, every member digested.</summary>
public sealed class StreamedBaseTarTests
{
    private static readonly DateTimeOffset Written = new(2026, 12, 7, 0, 0, 0, TimeSpan.Zero);

    private static byte[] Tar(params (string Name, byte[]? Content)[] members)
    {
        using var tar = new MemoryStream();
        using (var writer = new TarWriter(tar, TarEntryFormat.Ustar, leaveOpen: true))
            foreach (var (name, content) in members)
            {
                var entry = new UstarTarEntry(content == null ? TarEntryType.Directory : TarEntryType.RegularFile, name) { ModificationTime = Written };
                if (content != null) entry.DataStream = new MemoryStream(content);
                writer.WriteEntry(entry);
            }
        return tar.ToArray();
    }

    [Fact]
    public async Task The_archive_is_stored_without_its_manifest_which_goes_into_its_own_file_and_every_member_is_digested()
    {
        var control = RandomNumberGenerator.GetBytes(8192);
        var relation = RandomNumberGenerator.GetBytes((3 << 20) + 77); // spans reads, ends off a block boundary
        var wal = RandomNumberGenerator.GetBytes(1 << 16);
        var manifest = "{\"PostgreSQL-Backup-Manifest-Version\": 1}\n"u8.ToArray();
        var streamed = Tar(("global/", null), ("global/pg_control", control), ("base/1/1259", relation), ("pg_wal/000000010000000000000002", wal), ("backup_manifest", manifest));
        var manifestPath = Path.Combine(Targets.NewFolder(), "backup_manifest");
        using var stored = new MemoryStream();

        var digests = StreamedBaseTar.Split(new MemoryStream(streamed), stored, manifestPath, sha256: true, default);

        Assert.NotNull(digests);
        Assert.Equal(Tar(("global/", null), ("global/pg_control", control), ("base/1/1259", relation), ("pg_wal/000000010000000000000002", wal)), stored.ToArray());
        Assert.Equal(manifest, await File.ReadAllBytesAsync(manifestPath));
        Assert.Equal(["base/1/1259", "global/pg_control", "pg_wal/000000010000000000000002"], digests!.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(FileDigest.Of(new MemoryStream(relation)), digests["base/1/1259"]);
        Assert.Equal(FileDigest.Of(new MemoryStream(control)), digests["global/pg_control"]);
    }

    [Fact]
    public void A_stream_that_ends_inside_the_archive_is_incomplete_and_one_that_is_not_a_tar_is_refused()
    {
        var whole = Tar(("base/1/1259", RandomNumberGenerator.GetBytes(100_000)), ("backup_manifest", "{}"u8.ToArray()));
        foreach (var cut in new[] { 0, 100, 512, 50_000, whole.Length - 1024 })
            Assert.Null(StreamedBaseTar.Split(new MemoryStream(whole[..cut]), Stream.Null, Path.Combine(Targets.NewFolder(), "backup_manifest"), sha256: false, default));

        var damaged = whole.ToArray();
        damaged[10] ^= 0x20; // a name byte: the header's checksum no longer matches
        Assert.Throws<InvalidDataException>(() => StreamedBaseTar.Split(new MemoryStream(damaged), Stream.Null, Path.Combine(Targets.NewFolder(), "backup_manifest"), sha256: false, default));
    }

    [Fact]
    public void A_size_over_8_GB_is_read_in_base_256()
    {
        var header = Tar(("base/1/16384", []))[..512];
        var size = 9L << 30;
        header[124] = 0x80;
        for (var i = 0; i < 11; i++) header[125 + i] = (byte)(i < 3 ? 0 : size >> ((10 - i) * 8));
        "        "u8.CopyTo(header.AsSpan(148));
        var sum = header.Sum(b => (long)b);
        System.Text.Encoding.ASCII.GetBytes(Convert.ToString(sum, 8).PadLeft(6, '0') + "\0 ").CopyTo(header, 148);

        var (name, parsed, regular) = StreamedBaseTar.ParseHeader(header);

        Assert.Equal(("base/1/16384", size, true), (name, parsed, regular));
    }
}
