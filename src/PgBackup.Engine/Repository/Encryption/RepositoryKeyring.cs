using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Konscious.Security.Cryptography;

namespace PgBackup.Engine.Repository.Encryption;

/// <summary>
/// The keys of an encrypted repository, kept in its marker: an RSA-3072 repository key whose public half is in clear
/// (every writer encrypts each file's own key to it, so writing needs no secret) and whose private half is stored only
/// wrapped, once per recipient: by a key derived from a passphrase with Argon2id (its parameters stored beside it), and
/// by each certificate's public key (RSA-OAEP, or ECDH for an EC certificate). Any one recipient unlocks the private
/// key; adding or removing a recipient re-wraps it and rewrites no backup.
/// </summary>
public sealed class RepositoryKeyring
{
    private const int RepositoryKeyBits = 3072;
    private const int KdfMemoryKiB = 64 * 1024;
    private const int KdfIterations = 3;
    private const int KdfParallelism = 2;

    private RepositoryKeyring(byte[] publicKey, List<KeyRecipient> recipients)
    {
        PublicKeyInfo = publicKey;
        KeyId = EncryptedContent.KeyId(publicKey);
        Recipients = recipients;
    }

    public byte[] PublicKeyInfo { get; }
    public byte[] KeyId { get; }
    public IReadOnlyList<KeyRecipient> Recipients { get; private set; }

    public RSA PublicKey()
    {
        var rsa = RSA.Create();
        rsa.ImportSubjectPublicKeyInfo(PublicKeyInfo, out _);
        return rsa;
    }

    /// <summary>One way to unwrap the repository key: a passphrase, or a certificate (named by thumbprint and subject).</summary>
    public sealed record KeyRecipient(string Kind, byte[] Nonce, byte[] Wrapped)
    {
        public byte[]? Salt { get; init; }
        public int MemoryKiB { get; init; }
        public int Iterations { get; init; }
        public int Parallelism { get; init; }
        public string? Thumbprint { get; init; }
        public string? Subject { get; init; }
        public DateTimeOffset? NotAfter { get; init; }
        /// <summary>RSA: the key-encryption key, RSA-OAEP-SHA256 encrypted to the certificate. EC: the ephemeral ECDH public key.</summary>
        public byte[]? KeyExchange { get; init; }

        public string Describe() => Kind == "passphrase" ? "a passphrase" : $"the certificate {Subject} ({Thumbprint})";
    }

    /// <summary>A new repository key, wrapped for the passphrase (when given) and for each certificate.</summary>
    public static RepositoryKeyring Create(string? passphrase, IReadOnlyList<X509Certificate2> certificates)
    {
        using var rsa = RSA.Create(RepositoryKeyBits);
        var keyring = new RepositoryKeyring(rsa.ExportSubjectPublicKeyInfo(), []);
        var secret = rsa.ExportPkcs8PrivateKey();
        try { keyring.Recipients = keyring.Wrap(secret, passphrase, certificates); }
        finally { CryptographicOperations.ZeroMemory(secret); }
        return keyring;
    }

    /// <summary>
    /// The same repository key, wrapped anew for another set of recipients (Set-PgRepository): the unlocked key is needed.
    /// </summary>
    public RepositoryKeyring Rewrap(RSA unlocked, string? passphrase, IReadOnlyList<X509Certificate2> certificates, IEnumerable<KeyRecipient> kept)
    {
        var secret = unlocked.ExportPkcs8PrivateKey();
        try
        {
            var keyring = new RepositoryKeyring(PublicKeyInfo, []);
            keyring.Recipients = [.. kept, .. keyring.Wrap(secret, passphrase, certificates)];
            return keyring;
        }
        finally { CryptographicOperations.ZeroMemory(secret); }
    }

    private List<KeyRecipient> Wrap(byte[] secret, string? passphrase, IReadOnlyList<X509Certificate2> certificates)
    {
        var recipients = new List<KeyRecipient>();
        if (passphrase != null)
        {
            var salt = RandomNumberGenerator.GetBytes(16);
            var kek = DeriveFromPassphrase(passphrase, salt, KdfMemoryKiB, KdfIterations, KdfParallelism);
            var (nonce, wrapped) = Seal(kek, secret, Associated("passphrase", null));
            recipients.Add(new KeyRecipient("passphrase", nonce, wrapped) { Salt = salt, MemoryKiB = KdfMemoryKiB, Iterations = KdfIterations, Parallelism = KdfParallelism });
        }
        foreach (var certificate in certificates)
        {
            byte[] kek, exchange;
            if (certificate.GetRSAPublicKey() is { } rsa)
            {
                using (rsa)
                {
                    kek = RandomNumberGenerator.GetBytes(32);
                    exchange = rsa.Encrypt(kek, RSAEncryptionPadding.OaepSHA256);
                }
            }
            else if (certificate.GetECDiffieHellmanPublicKey() is { } ec)
            {
                using (ec)
                using (var ephemeral = ECDiffieHellman.Create(ec.ExportParameters(false).Curve))
                {
                    kek = ephemeral.DeriveKeyFromHash(ec.PublicKey, HashAlgorithmName.SHA256, "pgbackup-repository-key"u8.ToArray(), KeyId);
                    exchange = ephemeral.ExportSubjectPublicKeyInfo();
                }
            }
            else
                throw new PgBackupException("CertificateNotUsable", ErrorKind.InvalidArgument,
                    $"The certificate {certificate.Subject} ({certificate.Thumbprint}) has a {certificate.PublicKey.Oid.FriendlyName} key; PgBackup encrypts to RSA and EC keys.", certificate.Thumbprint,
                    "Use a certificate with an RSA (2048 bits or more) or an EC (P-256, P-384, P-521) key.");
            var (nonce, wrapped) = Seal(kek, secret, Associated("certificate", certificate.Thumbprint));
            recipients.Add(new KeyRecipient("certificate", nonce, wrapped)
            {
                Thumbprint = certificate.Thumbprint,
                Subject = certificate.Subject,
                NotAfter = new DateTimeOffset(certificate.NotAfter.ToUniversalTime()),
                KeyExchange = exchange,
            });
        }
        return recipients;
    }

    /// <summary>
    /// The private repository key, unwrapped with the first recipient the keys can open: a certificate whose thumbprint
    /// is a recipient, else the passphrase. No key at all is EncryptionKeyRequired; keys that open nothing, DecryptionFailed.
    /// </summary>
    public RSA Unlock(RepositoryKeys keys, string repository)
    {
        if (keys.IsEmpty)
            throw new PgBackupException("EncryptionKeyRequired", ErrorKind.PermissionDenied,
                $"The repository '{repository}' is encrypted, and no key to read it was given.", repository,
                $"Pass -Passphrase or -Certificate (a certificate with its private key that is one of the repository's recipients: {string.Join(", ", Recipients.Select(r => r.Describe()))}), or set PGBACKUP_PASSPHRASE or the EncryptionCertificate setting.");
        foreach (var certificate in keys.Certificates)
        {
            var recipient = Recipients.FirstOrDefault(r => r.Kind == "certificate" && string.Equals(r.Thumbprint, certificate.Thumbprint, StringComparison.OrdinalIgnoreCase));
            if (recipient == null) continue;
            if (!certificate.HasPrivateKey)
                throw new PgBackupException("DecryptionFailed", ErrorKind.PermissionDenied,
                    $"The certificate {certificate.Subject} ({certificate.Thumbprint}) is a recipient of '{repository}', but this machine has only its public part, which can write backups there but not read them.", certificate.Thumbprint,
                    "Give the certificate with its private key (a .pfx, a .pem with its key, or one in the certificate store that has its key), or the repository's passphrase.");
            byte[] kek;
            try
            {
                if (certificate.GetRSAPrivateKey() is { } rsa)
                    using (rsa) kek = rsa.Decrypt(recipient.KeyExchange!, RSAEncryptionPadding.OaepSHA256);
                else
                {
                    using var ec = certificate.GetECDiffieHellmanPrivateKey() ?? throw new CryptographicException("the certificate has no usable private key");
                    using var ephemeral = ECDiffieHellman.Create();
                    ephemeral.ImportSubjectPublicKeyInfo(recipient.KeyExchange, out _);
                    kek = ec.DeriveKeyFromHash(ephemeral.PublicKey, HashAlgorithmName.SHA256, "pgbackup-repository-key"u8.ToArray(), KeyId);
                }
            }
            catch (CryptographicException ex)
            {
                throw new PgBackupException("DecryptionFailed", ErrorKind.PermissionDenied,
                    $"The certificate {certificate.Subject} ({certificate.Thumbprint}) could not unwrap the key of '{repository}': {ex.Message}", certificate.Thumbprint,
                    "Check that the certificate's private key is the one it was issued with and that this account may use it, or give the passphrase.", ex);
            }
            return Open(kek, recipient, Associated("certificate", recipient.Thumbprint), repository, certificate.Thumbprint);
        }
        if (keys.Passphrase != null && Recipients.FirstOrDefault(r => r.Kind == "passphrase") is { } byPassphrase)
        {
            var kek = DeriveFromPassphrase(keys.Passphrase, byPassphrase.Salt!, byPassphrase.MemoryKiB, byPassphrase.Iterations, byPassphrase.Parallelism);
            return Open(kek, byPassphrase, Associated("passphrase", null), repository, "passphrase");
        }
        var given = string.Join(" and ", new[] { keys.Passphrase != null ? "a passphrase" : null, keys.Certificates.Count > 0 ? $"the certificate(s) {string.Join(", ", keys.Certificates.Select(c => c.Thumbprint))}" : null }.OfType<string>());
        throw new PgBackupException("DecryptionFailed", ErrorKind.PermissionDenied,
            $"None of the keys given ({given}) opens the repository '{repository}'; it can be read with {string.Join(" or ", Recipients.Select(r => r.Describe()))}.", repository,
            "Give one of those keys with -Passphrase or -Certificate.");
    }

    private RSA Open(byte[] kek, KeyRecipient recipient, byte[] associated, string repository, string what)
    {
        var secret = new byte[recipient.Wrapped.Length - EncryptedContent.TagSize];
        try
        {
            using (var aes = new AesGcm(kek, EncryptedContent.TagSize))
                aes.Decrypt(recipient.Nonce, recipient.Wrapped.AsSpan(0, secret.Length), recipient.Wrapped.AsSpan(secret.Length), secret, associated);
            var rsa = RSA.Create();
            rsa.ImportPkcs8PrivateKey(secret, out _);
            if (!rsa.ExportSubjectPublicKeyInfo().AsSpan().SequenceEqual(PublicKeyInfo))
                throw new CryptographicException("The unwrapped key does not match the repository's public key.");
            return rsa;
        }
        catch (CryptographicException ex)
        {
            throw new PgBackupException("DecryptionFailed", ErrorKind.PermissionDenied,
                what == "passphrase" ? $"The passphrase does not open the repository '{repository}'." : $"The certificate {what} does not open the repository '{repository}': its wrapped key fails authentication.", repository,
                "Check the passphrase or certificate; a repository's keys are listed by Get-PgRepository (Recipients).", ex);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
            CryptographicOperations.ZeroMemory(kek);
        }
    }

    private byte[] Associated(string kind, string? thumbprint) => [.. KeyId, .. Encoding.UTF8.GetBytes(kind + "\0" + (thumbprint ?? "").ToUpperInvariant())];

    private static (byte[] Nonce, byte[] Wrapped) Seal(byte[] kek, byte[] secret, byte[] associated)
    {
        var nonce = RandomNumberGenerator.GetBytes(12);
        var wrapped = new byte[secret.Length + EncryptedContent.TagSize];
        using (var aes = new AesGcm(kek, EncryptedContent.TagSize))
            aes.Encrypt(nonce, secret, wrapped.AsSpan(0, secret.Length), wrapped.AsSpan(secret.Length), associated);
        CryptographicOperations.ZeroMemory(kek);
        return (nonce, wrapped);
    }

    private static byte[] DeriveFromPassphrase(string passphrase, byte[] salt, int memoryKiB, int iterations, int parallelism)
    {
        var bytes = Encoding.UTF8.GetBytes(passphrase);
        try
        {
            using var argon = new Argon2id(bytes) { Salt = salt, MemorySize = memoryKiB, Iterations = iterations, DegreeOfParallelism = parallelism };
            return argon.GetBytes(32);
        }
        finally { CryptographicOperations.ZeroMemory(bytes); }
    }

    public void WriteJson(Utf8JsonWriter json)
    {
        json.WriteStartObject();
        json.WriteString("algorithm", "AES-256-GCM chunks, file keys RSA-OAEP-SHA256 to the repository key");
        json.WriteNumber("chunkSize", EncryptedContent.ChunkSize);
        json.WriteBase64String("publicKey", PublicKeyInfo);
        json.WriteString("keyId", Convert.ToHexString(KeyId).ToLowerInvariant());
        json.WriteStartArray("recipients");
        foreach (var r in Recipients)
        {
            json.WriteStartObject();
            json.WriteString("kind", r.Kind);
            if (r.Kind == "passphrase")
            {
                json.WriteString("kdf", "argon2id");
                json.WriteNumber("memoryKiB", r.MemoryKiB);
                json.WriteNumber("iterations", r.Iterations);
                json.WriteNumber("parallelism", r.Parallelism);
                json.WriteBase64String("salt", r.Salt);
            }
            else
            {
                json.WriteString("thumbprint", r.Thumbprint);
                json.WriteString("subject", r.Subject);
                if (r.NotAfter is { } notAfter) json.WriteString("notAfter", notAfter);
                json.WriteBase64String("keyExchange", r.KeyExchange);
            }
            json.WriteBase64String("nonce", r.Nonce);
            json.WriteBase64String("wrappedKey", r.Wrapped);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteEndObject();
    }

    public static RepositoryKeyring ReadJson(JsonElement e)
    {
        var publicKey = e.GetProperty("publicKey").GetBytesFromBase64();
        if (e.GetProperty("chunkSize").GetInt32() != EncryptedContent.ChunkSize) throw new FormatException("unknown chunk size");
        var recipients = e.GetProperty("recipients").EnumerateArray().Select(r =>
        {
            var kind = r.GetProperty("kind").GetString()!;
            var nonce = r.GetProperty("nonce").GetBytesFromBase64();
            var wrapped = r.GetProperty("wrappedKey").GetBytesFromBase64();
            return kind switch
            {
                "passphrase" => new KeyRecipient(kind, nonce, wrapped)
                {
                    Salt = r.GetProperty("salt").GetBytesFromBase64(),
                    MemoryKiB = r.GetProperty("memoryKiB").GetInt32(),
                    Iterations = r.GetProperty("iterations").GetInt32(),
                    Parallelism = r.GetProperty("parallelism").GetInt32(),
                },
                "certificate" => new KeyRecipient(kind, nonce, wrapped)
                {
                    Thumbprint = r.GetProperty("thumbprint").GetString(),
                    Subject = r.GetProperty("subject").GetString(),
                    NotAfter = r.TryGetProperty("notAfter", out var n) ? n.GetDateTimeOffset() : null,
                    KeyExchange = r.GetProperty("keyExchange").GetBytesFromBase64(),
                },
                _ => throw new FormatException($"unknown recipient kind '{kind}'"),
            };
        }).ToList();
        return new RepositoryKeyring(publicKey, recipients);
    }
}

/// <summary>The keys a user gave to read an encrypted repository: a passphrase, certificates (with private keys to read), or neither.</summary>
public sealed record RepositoryKeys(string? Passphrase, IReadOnlyList<X509Certificate2> Certificates)
{
    public static readonly RepositoryKeys None = new(null, []);
    public bool IsEmpty => Passphrase == null && Certificates.Count == 0;
}
