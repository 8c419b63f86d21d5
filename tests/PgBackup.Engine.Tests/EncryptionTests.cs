using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using PgBackup.Engine;
using PgBackup.Engine.Repository.Encryption;
using Xunit;

namespace PgBackup.Engine.Tests;

/// <summary>The encrypted file format and the repository keyring, without a repository: every way a file can be damaged is caught.</summary>
public sealed class EncryptionTests
{
    private static readonly RepositoryKeyring Keyring = RepositoryKeyring.Create("correct horse battery staple", []);
    private static readonly RSA Private = Keyring.Unlock(new RepositoryKeys("correct horse battery staple", []), "test");

    private static byte[] Encrypt(byte[] plain, string name)
    {
        using var buffer = new MemoryStream();
        using var publicKey = Keyring.PublicKey();
        using (var encrypting = EncryptedContent.Encrypt(buffer, publicKey, Keyring.KeyId, name, leaveOpen: true))
        {
            // Odd-sized writes, so chunk boundaries fall inside writes.
            for (var at = 0; at < plain.Length; at += 7777) encrypting.Write(plain, at, Math.Min(7777, plain.Length - at));
        }
        return buffer.ToArray();
    }

    private static byte[] Decrypt(byte[] sealedBytes, string name)
    {
        using var plain = new MemoryStream();
        using (var decrypting = EncryptedContent.Decrypt(new MemoryStream(sealedBytes), Private, Keyring.KeyId, name)) decrypting.CopyTo(plain);
        return plain.ToArray();
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(EncryptedContent.ChunkSize - 1)]
    [InlineData(EncryptedContent.ChunkSize)]
    [InlineData(EncryptedContent.ChunkSize + 1)]
    [InlineData(3 * EncryptedContent.ChunkSize + 5)]
    public void Round_trip_keeps_every_byte_and_the_length_is_predictable(int length)
    {
        var plain = RandomNumberGenerator.GetBytes(length);
        var sealedBytes = Encrypt(plain, "a/b.dump");
        Assert.Equal(EncryptedContent.EncryptedLength(length, 384), sealedBytes.Length);
        Assert.True(EncryptedContent.LooksEncrypted(sealedBytes));
        Assert.Equal(plain, Decrypt(sealedBytes, "a/b.dump"));
    }

    [Fact]
    public async Task Async_round_trip_matches()
    {
        var plain = RandomNumberGenerator.GetBytes(2 * EncryptedContent.ChunkSize + 100);
        using var buffer = new MemoryStream();
        using var publicKey = Keyring.PublicKey();
        await using (var encrypting = EncryptedContent.Encrypt(buffer, publicKey, Keyring.KeyId, "x", leaveOpen: true))
            await encrypting.WriteAsync(plain);
        using var output = new MemoryStream();
        await using (var decrypting = EncryptedContent.Decrypt(new MemoryStream(buffer.ToArray()), Private, Keyring.KeyId, "x"))
            await decrypting.CopyToAsync(output);
        Assert.Equal(plain, output.ToArray());
    }

    private static EncryptedContentProblem ProblemOf(byte[] sealedBytes, string name) =>
        Assert.Throws<EncryptedContentException>(() => Decrypt(sealedBytes, name)).Problem;

    [Fact]
    public void A_flipped_bit_anywhere_is_caught()
    {
        var sealedBytes = Encrypt(RandomNumberGenerator.GetBytes(2 * EncryptedContent.ChunkSize), "f");
        foreach (var at in new[] { 40, 500, EncryptedContent.ChunkSize, sealedBytes.Length - 1 })
        {
            var copy = (byte[])sealedBytes.Clone();
            copy[at] ^= 0x10;
            Assert.Equal(EncryptedContentProblem.Tampered, ProblemOf(copy, "f"));
        }
    }

    [Fact]
    public void A_cut_off_end_is_caught_at_a_chunk_boundary_and_inside_a_chunk()
    {
        var sealedBytes = Encrypt(RandomNumberGenerator.GetBytes(2 * EncryptedContent.ChunkSize + 10), "t");
        var header = sealedBytes.Length - (2 * EncryptedContent.ChunkSize + 10) - 3 * EncryptedContent.TagSize;
        Assert.Equal(EncryptedContentProblem.Truncated, ProblemOf(sealedBytes[..(header + 2 * (EncryptedContent.ChunkSize + EncryptedContent.TagSize))], "t"));
        Assert.Equal(EncryptedContentProblem.Tampered, ProblemOf(sealedBytes[..(sealedBytes.Length - 5)], "t"));
        Assert.Equal(EncryptedContentProblem.Truncated, ProblemOf(sealedBytes[..20], "t"));
        Assert.Equal(EncryptedContentProblem.Truncated, ProblemOf(sealedBytes[..header], "t"));
    }

    [Fact]
    public void Reordered_chunks_and_appended_bytes_are_caught()
    {
        var plain = RandomNumberGenerator.GetBytes(3 * EncryptedContent.ChunkSize);
        var sealedBytes = Encrypt(plain, "r");
        var header = sealedBytes.Length - plain.Length - 4 * EncryptedContent.TagSize;
        var whole = EncryptedContent.ChunkSize + EncryptedContent.TagSize;
        var swapped = (byte[])sealedBytes.Clone();
        sealedBytes.AsSpan(header, whole).CopyTo(swapped.AsSpan(header + whole));
        sealedBytes.AsSpan(header + whole, whole).CopyTo(swapped.AsSpan(header));
        Assert.Equal(EncryptedContentProblem.Tampered, ProblemOf(swapped, "r"));
        Assert.Equal(EncryptedContentProblem.Tampered, ProblemOf([.. sealedBytes, 0], "r"));
    }

    [Fact]
    public void A_file_put_in_another_files_place_is_caught()
    {
        var one = Encrypt("segment one"u8.ToArray(), "wal/1/000000010000000000000001");
        Assert.Equal(EncryptedContentProblem.Tampered, ProblemOf(one, "wal/1/000000010000000000000002"));
    }

    [Fact]
    public void Clear_text_and_another_repositorys_file_are_told_apart()
    {
        Assert.Equal(EncryptedContentProblem.NotEncrypted, ProblemOf("PGDMP plain dump"u8.ToArray(), "n"));
        var other = RepositoryKeyring.Create("another passphrase here", []);
        using var buffer = new MemoryStream();
        using var otherKey = other.PublicKey();
        using (var s = EncryptedContent.Encrypt(buffer, otherKey, other.KeyId, "n", leaveOpen: true)) s.Write("x"u8);
        Assert.Equal(EncryptedContentProblem.OtherKey, ProblemOf(buffer.ToArray(), "n"));
    }

    [Fact]
    public void No_key_and_a_wrong_passphrase_have_their_own_errors()
    {
        Assert.Equal("PgBackup.EncryptionKeyRequired", Assert.Throws<PgBackupException>(() => Keyring.Unlock(RepositoryKeys.None, "r")).ErrorId);
        Assert.Equal("PgBackup.DecryptionFailed", Assert.Throws<PgBackupException>(() => Keyring.Unlock(new RepositoryKeys("not the passphrase!", []), "r")).ErrorId);
    }

    private static X509Certificate2 NewCertificate(string name, bool ec)
    {
        CertificateRequest request;
        if (ec) request = new CertificateRequest("CN=" + name, ECDsa.Create(ECCurve.NamedCurves.nistP256), HashAlgorithmName.SHA256);
        else request = new CertificateRequest("CN=" + name, RSA.Create(2048), HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
    }

    [Fact]
    public void Certificates_unlock_with_their_private_key_and_their_public_part_only_writes()
    {
        using var production = NewCertificate("production", ec: false);
        using var dr = NewCertificate("dr-site", ec: true);
        var keyring = RepositoryKeyring.Create(null, [production, dr]);
        using var byRsa = keyring.Unlock(new RepositoryKeys(null, [production]), "r");
        using var byEc = keyring.Unlock(new RepositoryKeys(null, [dr]), "r");
        Assert.Equal(keyring.PublicKeyInfo, byEc.ExportSubjectPublicKeyInfo());

        using var publicOnly = X509CertificateLoader.LoadCertificate(production.Export(X509ContentType.Cert));
        var refused = Assert.Throws<PgBackupException>(() => keyring.Unlock(new RepositoryKeys(null, [publicOnly]), "r"));
        Assert.Equal("PgBackup.DecryptionFailed", refused.ErrorId);
        Assert.Contains("only its public part", refused.Message);

        using var stranger = NewCertificate("stranger", ec: false);
        Assert.Equal("PgBackup.DecryptionFailed", Assert.Throws<PgBackupException>(() => keyring.Unlock(new RepositoryKeys(null, [stranger]), "r")).ErrorId);
    }

    [Fact]
    public void Rewrapping_changes_who_can_read_and_keeps_the_key()
    {
        using var production = NewCertificate("production", ec: false);
        var keyring = RepositoryKeyring.Create("first passphrase 123", [production]);
        using var unlocked = keyring.Unlock(new RepositoryKeys("first passphrase 123", []), "r");
        var rewrapped = keyring.Rewrap(unlocked, "second passphrase 456", [], keyring.Recipients.Where(r => r.Kind == "certificate"));
        Assert.Equal(keyring.PublicKeyInfo, rewrapped.PublicKeyInfo);
        Assert.Equal("PgBackup.DecryptionFailed", Assert.Throws<PgBackupException>(() => rewrapped.Unlock(new RepositoryKeys("first passphrase 123", []), "r")).ErrorId);
        using var again = rewrapped.Unlock(new RepositoryKeys("second passphrase 456", []), "r");
        using var byCertificate = rewrapped.Unlock(new RepositoryKeys(null, [production]), "r");
    }
}
