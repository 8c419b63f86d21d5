using System.Security.Cryptography;
using PgBackup.Engine.Repository.Encryption;

namespace PgBackup.WalArchive;

/// <summary>
/// Encryption of an encrypted repository's WAL archive, from the key file the cmdlets wrote (--encrypt for push, with
/// the public key only; --decrypt for fetch, with the private key). Each file is named "wal/&lt;system identifier&gt;/&lt;file&gt;"
/// in its encryption, so a segment put in another's place fails authentication. Because every encryption is fresh, a
/// repeated push is recognised by the SHA-256 of the plaintext, recorded beside the encrypted file (pgBackRest keeps the
/// SHA-1 of the plaintext in the file's name for the same purpose).
/// </summary>
internal sealed class WalEncryption : IDisposable
{
    public const string EncryptOption = "--encrypt";
    public const string DecryptOption = "--decrypt";
    private readonly WalKeyFile _key;
    private readonly RSA _rsa;

    private WalEncryption(WalKeyFile key, RSA rsa)
    {
        _key = key;
        _rsa = rsa;
    }

    public static WalEncryption Load(string path, bool decrypt)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"cannot read the key file '{path}' ({ex.Message}); Enable-PgWalArchiving and New-PgStandby write it for the server's OS user");
        }
        WalKeyFile key;
        try { key = WalKeyFile.Parse(text); }
        catch (Exception ex) when (ex is FormatException or System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new IOException($"the key file '{path}' is not usable: {ex.Message}");
        }
        if (decrypt && key.PrivateKey == null) throw new IOException($"the key file '{path}' holds no private key, so it can encrypt but not decrypt");
        var rsa = RSA.Create();
        if (decrypt) rsa.ImportPkcs8PrivateKey(key.PrivateKey, out _);
        else rsa.ImportSubjectPublicKeyInfo(key.PublicKey, out _);
        return new WalEncryption(key, rsa);
    }

    private string NameOf(string fileName) => _key.NamePrefix + fileName;

    /// <summary>Encrypts <paramref name="source"/> into <paramref name="output"/>.</summary>
    /// <returns>The SHA-256 of the plaintext and of the encrypted bytes written.</returns>
    /// <param name="compress">Compress first (<see cref="PgBackup.Engine.Repository.WalCompression"/>), then encrypt.</param>
    public (string PlainSha256, string Sha256) Encrypt(string source, Stream output, bool compress = false)
    {
        using var hashing = new PgBackup.Engine.Tools.HashingWriteStream(output);
        string plain;
        using (var encrypting = EncryptedContent.Encrypt(hashing, _rsa, _key.KeyId, NameOf(Path.GetFileName(source)), leaveOpen: true))
            plain = Program.CopyInto(source, encrypting, compress);
        return (plain, hashing.Sha256());
    }

    /// <summary>Decrypts an archived (already checksum-verified) file into <paramref name="destination"/>; a failed chunk throws <see cref="EncryptedContentException"/>.</summary>
    public void Decrypt(string encrypted, string name, string destination)
    {
        using var input = new FileStream(encrypted, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
        using var output = new FileStream(destination, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
        using var plain = EncryptedContent.Decrypt(input, _rsa, _key.KeyId, NameOf(name));
        plain.CopyTo(output, 1 << 20);
    }

    /// <summary>
    /// The switch points of a timeline history file ("parent:lsn,parent:lsn"), kept in clear beside its encrypted copy so
    /// that the archive's timelines can be listed without the key; the reasons (which may name a restore point) are not kept.
    /// Null for any other file.
    /// </summary>
    public static string? LineageOf(string source)
    {
        if (!source.EndsWith(".history", StringComparison.Ordinal)) return null;
        var points = File.ReadAllLines(source)
            .Select(l => l.Trim())
            .Where(l => l.Length > 0 && !l.StartsWith('#'))
            .Select(l => l.Split((char[]?)null, 3, StringSplitOptions.RemoveEmptyEntries))
            .Where(f => f.Length >= 2 && uint.TryParse(f[0], out _) && f[1].Contains('/') && f[1].All(c => char.IsAsciiHexDigit(c) || c == '/'))
            .Select(f => f[0] + ":" + f[1]);
        return string.Join(",", points);
    }

    public static string PlainSha256Of(string path)
    {
        using var input = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0, FileOptions.SequentialScan);
        return Hex(SHA256.HashData(input));
    }

    private static string Hex(byte[] hash) => Convert.ToHexString(hash).ToLowerInvariant();

    public void Dispose() => _rsa.Dispose();
}
