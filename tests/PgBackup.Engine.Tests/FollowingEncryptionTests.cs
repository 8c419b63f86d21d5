using System.Security.Cryptography;
using System.Text;
using PgBackup.Engine.Physical;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Encryption;
using Xunit;

namespace PgBackup.Engine.Tests;

/// <summary>A Plain backup encrypted while pg_basebackup writes it keeps only copies of the bytes that were verified.</summary>
public sealed class FollowingEncryptionTests
{
    private const string Passphrase = "following encryption passphrase";

    [Fact]
    public async Task Only_copies_of_the_verified_bytes_are_kept_and_everything_else_is_encrypted_from_the_spool()
    {
        var repository = RepositoryAddress.ForFolder(Targets.NewFolder());
        await RepositoryService.CreateAsync(repository, new RepositoryService.EncryptionChoice(Passphrase, []), NullReporter.Instance, default);
        var spool = Targets.NewFolder();
        var files = new Dictionary<string, byte[]>
        {
            ["base/1/1259"] = RandomNumberGenerator.GetBytes(3 << 20),  // copied whole while written: kept
            ["base/1/2619"] = RandomNumberGenerator.GetBytes(100_000),  // copied before pg_basebackup finished it: replaced
            ["global/pg_control"] = RandomNumberGenerator.GetBytes(8192), // still open when the backup ended: replaced
            ["PG_VERSION"] = "15\n"u8.ToArray(),                         // never seen by the follower
            ["base/1/empty"] = [],                                       // copied, nothing in it
            ["pg_wal/000000010000000000000002"] = RandomNumberGenerator.GetBytes(1 << 16), // not in the manifest
        };
        foreach (var (relative, content) in files)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(spool, relative))!);
            File.WriteAllBytes(Path.Combine(spool, relative), content);
        }
        Directory.CreateDirectory(Path.Combine(spool, "pg_notify"));
        var manifest = new StringBuilder("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n");
        manifest.AppendJoin(",\n", files.Where(f => !f.Key.StartsWith("pg_wal/", StringComparison.Ordinal)).Select(f =>
            $"{{ \"Path\": \"{f.Key}\", \"Size\": {f.Value.Length}, \"Checksum-Algorithm\": \"SHA256\", \"Checksum\": \"{Convert.ToHexString(SHA256.HashData(f.Value)).ToLowerInvariant()}\" }}"));
        manifest.Append("\n] }\n");
        File.WriteAllText(Path.Combine(spool, "backup_manifest"), manifest.ToString());

        var destination = Path.Combine(Targets.NewFolder(), "backup");
        const string name = "base/localhost-5432/20261207T000000Z";
        using var encryption = (await RepositoryEncryption.LoadAsync(repository, default))!;
        Dictionary<string, string> stored;
        string copied, stale;
        using (var copies = new FollowingEncryption(encryption, destination, name))
        {
            void Follow(string relative, byte[] content)
            {
                using var digester = new FileDigester();
                for (var at = 0; at < content.Length; at += 70_000)
                {
                    var piece = content.AsSpan(at, Math.Min(70_000, content.Length - at));
                    digester.Append(piece);
                    copies.Append(relative, piece);
                }
                copies.Finish(relative, digester.Finish());
            }
            Follow("base/1/1259", files["base/1/1259"]);
            Follow("base/1/2619", files["base/1/2619"][..60_000]);
            copies.Append("global/pg_control", files["global/pg_control"].AsSpan(0, 4096));
            Follow("base/1/empty", []);
            string HashOf(string relative) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(Path.Combine(destination, relative)))).ToLowerInvariant();
            (copied, stale) = (HashOf("base/1/1259"), HashOf("base/1/2619"));
            stored = await copies.CompleteAsync(spool, NullReporter.Instance, default);
        }
        // Encryption is randomised, so a copy encrypted again would differ.
        Assert.Equal(copied, stored["base/1/1259"]);
        Assert.NotEqual(stale, stored["base/1/2619"]);

        Assert.Equal(files.Keys.Append("backup_manifest").Order(StringComparer.Ordinal), stored.Keys.Order(StringComparer.Ordinal));
        foreach (var (relative, sha) in stored)
            Assert.Equal(sha, Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(Path.Combine(destination, relative)))).ToLowerInvariant());
        Assert.True(Directory.Exists(Path.Combine(destination, "pg_notify")));

        using var reading = (await RepositoryEncryption.OpenForReadingAsync(repository, new RepositoryKeys(Passphrase, []), default))!;
        var decrypted = Targets.NewFolder();
        await reading.DecryptTreeAsync(destination, decrypted, name, destination, default);
        foreach (var (relative, content) in files) Assert.Equal(content, File.ReadAllBytes(Path.Combine(decrypted, relative)));
        Assert.Equal(manifest.ToString(), File.ReadAllText(Path.Combine(decrypted, "backup_manifest")));
    }
}
