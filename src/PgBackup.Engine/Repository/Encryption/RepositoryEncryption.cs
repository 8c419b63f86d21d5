using System.Security.Cryptography;

namespace PgBackup.Engine.Repository.Encryption;

/// <summary>
/// The encryption of one repository, as an operation holds it: the public key every writer encrypts to, and, once the
/// user's key unlocked it, the private key readers need. Files are named by their key in the repository ('/' between
/// parts, relative to its root), which is bound into their encryption, so a file moved into another's place fails.
/// </summary>
public sealed class RepositoryEncryption : IDisposable
{
    private readonly RSA _publicKey;
    private RSA? _privateKey;

    private RepositoryEncryption(RepositoryKeyring keyring, string repository)
    {
        Keyring = keyring;
        Repository = repository;
        _publicKey = keyring.PublicKey();
    }

    public RepositoryKeyring Keyring { get; }
    public string Repository { get; }
    public bool CanRead => _privateKey != null;

    /// <summary>The encryption of <paramref name="repository"/>, or null when it is not encrypted (no marker, or a marker without keys).</summary>
    public static async Task<RepositoryEncryption?> LoadAsync(RepositoryAddress repository, CancellationToken ct) =>
        await RepositoryService.ReadKeyringAsync(repository, ct).ConfigureAwait(false) is { } keyring ? new RepositoryEncryption(keyring, repository.Display) : null;

    /// <summary>
    /// For an operation that reads: the encryption unlocked with <paramref name="keys"/> now, so a missing or wrong key is
    /// an error before anything is written anywhere. Null for a repository that is not encrypted (the keys are not needed).
    /// </summary>
    public static async Task<RepositoryEncryption?> OpenForReadingAsync(RepositoryAddress repository, RepositoryKeys keys, CancellationToken ct)
    {
        var encryption = await LoadAsync(repository, ct).ConfigureAwait(false);
        if (encryption == null) return null;
        try { encryption._privateKey = encryption.Keyring.Unlock(keys, repository.Display); }
        catch { encryption.Dispose(); throw; }
        return encryption;
    }

    /// <summary>For a folder repository, the name of <paramref name="path"/> inside it; for a blob repository, a key without the address's prefix.</summary>
    public static string NameIn(RepositoryAddress repository, string pathOrKey)
    {
        if (repository.IsBlob) return pathOrKey.StartsWith(repository.Prefix, StringComparison.Ordinal) ? pathOrKey[repository.Prefix.Length..] : pathOrKey;
        return Path.GetRelativePath(Path.GetFullPath(repository.Folder!), Path.GetFullPath(pathOrKey)).Replace('\\', '/');
    }

    /// <summary>
    /// What pgbackup-wal reads for the WAL archive of <paramref name="systemIdentifier"/>: the public key, and with
    /// <paramref name="withPrivateKey"/> (a standby's fetch; only once unlocked) the private key too.
    /// </summary>
    public string WalKeyFileContent(string systemIdentifier, bool withPrivateKey)
    {
        byte[]? secret = null;
        if (withPrivateKey)
            secret = (_privateKey ?? throw new InvalidOperationException("The repository key is not unlocked.")).ExportPkcs8PrivateKey();
        try { return new WalKeyFile(Keyring.PublicKeyInfo, Keyring.KeyId, RepositoryLayout.ArchiveKey(systemIdentifier) + "/", secret).Serialize(); }
        finally { if (secret != null) CryptographicOperations.ZeroMemory(secret); }
    }

    public EncryptingStream Encrypt(Stream output, string name, bool leaveOpen = false) =>
        EncryptedContent.Encrypt(output, _publicKey, Keyring.KeyId, name, leaveOpen);

    /// <summary>The plaintext of the file <paramref name="name"/>; a damaged or substituted file is BackupTampered, naming <paramref name="location"/>.</summary>
    public Stream Decrypt(Stream input, string name, string location, bool leaveOpen = false)
    {
        var key = _privateKey ?? throw new PgBackupException("EncryptionKeyRequired", ErrorKind.PermissionDenied,
            $"The repository '{Repository}' is encrypted, and no key to read it was given.", Repository,
            "Pass -Passphrase or -Certificate (with its private key), or set PGBACKUP_PASSPHRASE or the EncryptionCertificate setting.");
        try { return new TamperReportingStream(EncryptedContent.Decrypt(input, key, Keyring.KeyId, name, leaveOpen), location); }
        catch (EncryptedContentException ex) { throw Tampered(ex, location); }
    }

    /// <summary>Copies the plaintext of an encrypted file to <paramref name="output"/>, authenticating every chunk.</summary>
    public async Task DecryptToAsync(Stream input, string name, string location, Stream output, CancellationToken ct)
    {
        await using var plain = Decrypt(input, name, location, leaveOpen: true);
        await plain.CopyToAsync(output, 1 << 20, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// The repository a backup was read from, for its encryption: the blob repository it was listed from, or for a backup
    /// in a folder the root of its repository (dumps, globals and base backups all sit three levels down).
    /// </summary>
    public static RepositoryAddress? RootOf(PgBackupItem backup, RepositoryAddress? blobRepository)
    {
        if (blobRepository != null) return blobRepository;
        var folder = Path.GetDirectoryName(Path.GetDirectoryName(Path.GetDirectoryName(Path.GetFullPath(backup.Path.TrimEnd('/', '\\')))));
        return folder == null ? null : RepositoryAddress.ForFolder(folder);
    }

    /// <summary>
    /// For reading one backup: its repository's encryption, unlocked (null when the repository is not encrypted). The
    /// repository's marker decides, not the backup's metadata, so metadata that claims "not encrypted" cannot make a
    /// reader accept a file put into an encrypted repository in clear.
    /// </summary>
    public static async Task<RepositoryEncryption?> OpenForBackupAsync(PgBackupItem backup, RepositoryAddress? blobRepository, RepositoryKeys keys, CancellationToken ct) =>
        RootOf(backup, blobRepository) is { } root ? await OpenForReadingAsync(root, keys, ct).ConfigureAwait(false) : null;

    /// <summary>
    /// Encrypts a local file, or every file of a local folder, into <paramref name="destination"/> as the repository's
    /// <paramref name="name"/>, hashing what is written as it is written. With <paramref name="durable"/> each file is handed
    /// to the disk once written and everything is synced at the end; without it (a local folder that is uploaded and
    /// removed) nothing waits for the disk. Files whose relative path <paramref name="skip"/> accepts are left alone.
    /// </summary>
    /// <returns>As <see cref="BackupChecksum.ComputeWithFilesAsync"/> would read it back: the SHA-256 of the encrypted file, or
    /// for a folder the combined one and each file's by relative path.</returns>
    public async Task<(string Sha256, Dictionary<string, string>? Files)> EncryptTreeAsync(string source, string destination, string name, bool durable, CancellationToken ct,
        Func<string, bool>? skip = null)
    {
        var hashes = new System.Collections.Concurrent.ConcurrentDictionary<string, string>(StringComparer.Ordinal);
        await EachFileAsync(source, destination, name, name, async (input, output, fileName, _, token) =>
        {
            await using (var hashing = new Tools.HashingWriteStream(durable ? new Tools.WritebackStream(output) : output))
            {
                await using (var encrypting = Encrypt(hashing, fileName, leaveOpen: true))
                    await input.CopyToAsync(encrypting, 1 << 20, token).ConfigureAwait(false);
                hashes[Path.GetRelativePath(destination, output.Name).Replace('\\', '/')] = hashing.Sha256();
            }
            await output.FlushAsync(token).ConfigureAwait(false);
            if (durable) Tools.DurableFiles.StartWriting(output.SafeFileHandle, 0);
        }, ct, skip).ConfigureAwait(false);
        if (durable)
        {
            if (File.Exists(destination)) Tools.DurableFiles.SyncFile(destination);
            else Tools.DurableFiles.SyncTree(destination, ct);
        }
        if (File.Exists(source)) return (hashes.Values.Single(), null);
        var files = new Dictionary<string, string>(hashes, StringComparer.Ordinal);
        return (BackupChecksum.Combine(files), files);
    }

    /// <summary>
    /// Decrypts an encrypted file, or every file of an encrypted folder, into <paramref name="destination"/> (a local,
    /// temporary place), authenticating all of it; <paramref name="location"/> is how errors name the backup.
    /// </summary>
    public Task DecryptTreeAsync(string source, string destination, string name, string location, CancellationToken ct) =>
        EachFileAsync(source, destination, name, location, (input, output, fileName, fileLocation, token) => DecryptToAsync(input, fileName, fileLocation, output, token), ct);

    /// <summary>
    /// Runs <paramref name="transform"/> from <paramref name="source"/> (a file, or every file of a folder, several at once)
    /// to the same place under <paramref name="destination"/>, with each file's name in the repository and in messages.
    /// Every folder is made, empty ones included (a data directory needs pg_notify and the like).
    /// </summary>
    private static async Task EachFileAsync(string source, string destination, string name, string location,
        Func<Stream, FileStream, string, string, CancellationToken, Task> transform, CancellationToken ct, Func<string, bool>? skip = null)
    {
        static async Task OneAsync(string from, string to, string fileName, string fileLocation, Func<Stream, FileStream, string, string, CancellationToken, Task> transform, CancellationToken token)
        {
            await using var input = new FileStream(from, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan | FileOptions.Asynchronous);
            await using var output = new FileStream(to, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
            await transform(input, output, fileName, fileLocation, token).ConfigureAwait(false);
        }
        if (File.Exists(source))
        {
            await OneAsync(source, destination, name, location, transform, ct).ConfigureAwait(false);
            return;
        }
        Directory.CreateDirectory(destination);
        foreach (var folder in Directory.GetDirectories(source, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(destination, Path.GetRelativePath(source, folder)));
        await Parallel.ForEachAsync(Directory.GetFiles(source, "*", SearchOption.AllDirectories)
                .Where(file => skip == null || !skip(Path.GetRelativePath(source, file).Replace('\\', '/'))),
            new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, Environment.ProcessorCount), CancellationToken = ct }, async (file, token) =>
            {
                var relative = Path.GetRelativePath(source, file).Replace('\\', '/');
                await OneAsync(file, Path.Combine(destination, relative), name + "/" + relative, location.TrimEnd('/') + "/" + relative, transform, token).ConfigureAwait(false);
            }).ConfigureAwait(false);
    }

    public static PgBackupException Tampered(EncryptedContentException ex, string location) =>
        new("BackupTampered", ErrorKind.InvalidData, $"'{location}' {ex.Detail}.", location,
            "Do not use this backup: restore from another one (Get-PgBackup lists them) and find out who or what changed the repository.", ex);

    public void Dispose()
    {
        _publicKey.Dispose();
        _privateKey?.Dispose();
    }

    /// <summary>Turns the format's own errors into BackupTampered while the plaintext is read.</summary>
    private sealed class TamperReportingStream(DecryptingStream inner, string location) : Tools.ForwardReadStream(inner)
    {
        public override int Read(byte[] buffer, int offset, int count)
        {
            try { return inner.Read(buffer, offset, count); }
            catch (EncryptedContentException ex) { throw Tampered(ex, location); }
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            try { return await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false); }
            catch (EncryptedContentException ex) { throw Tampered(ex, location); }
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
    }
}
