using System.Formats.Tar;
using System.Security.Cryptography;
using PgBackup.Engine.Physical;

namespace PgBackup.Engine.Tests;

public sealed class TarIndexTests
{
    [Fact]
    public void The_rest_of_an_uncompressed_tar_is_read_from_any_members_header_on_every_core_with_the_same_digests()
    {
        var members = new (string Name, byte[]? Data)[]
        {
            ("PG_VERSION", "15\n"u8.ToArray()),
            ("global/", null),
            ("base/1/1259", RandomNumberGenerator.GetBytes(300_000)),
            ("base/1/" + new string('x', 140), RandomNumberGenerator.GetBytes(5_000)), // a name that needs a PAX header
            ("base/1/empty", []),
            ("base/1/16384", RandomNumberGenerator.GetBytes(2 << 20)),
        };
        var archive = Path.Combine(Targets.NewFolder(), "16385.tar");
        var headers = new List<long>();
        using (var file = File.Create(archive))
        using (var writer = new TarWriter(file, TarEntryFormat.Pax))
            foreach (var (name, data) in members)
            {
                headers.Add(file.Position);
                var entry = new PaxTarEntry(data == null ? TarEntryType.Directory : TarEntryType.RegularFile, name);
                if (data != null) entry.DataStream = new MemoryStream(data);
                writer.WriteEntry(entry);
            }

        for (var from = 0; from < members.Length; from++)
        {
            var digests = BackupWriteFollower.ReadTarFrom(archive, headers[from], default);
            var expected = members.Skip(from).Where(m => m.Data != null).ToDictionary(m => "pg_tblspc/16385/" + m.Name, m => FileDigest.Of(new MemoryStream(m.Data!)));
            Assert.Equal(expected.OrderBy(e => e.Key), digests.OrderBy(d => d.Key));
        }
    }
}
