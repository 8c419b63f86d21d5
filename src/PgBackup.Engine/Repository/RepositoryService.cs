using System.Text;
using System.Text.Json;
using System.Security.Cryptography.X509Certificates;
using PgBackup.Engine.Repository.Blob;
using PgBackup.Engine.Repository.Encryption;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Repository;

/// <summary>
/// Repositories as things a user creates and looks at (New-PgRepository, Get-PgRepository). A repository carries a
/// format marker, pgbackup-repository.json at its root, so that a later PgBackup knows what it reads and a wrong
/// -Repository is told apart from an empty one; repositories written before markers existed work without one.
/// </summary>
public static class RepositoryService
{
    public const string MarkerName = "pgbackup-repository.json";
    private const string FormatName = "pgbackup-repository";
    /// <summary>Version 2 marks an encrypted repository: a PgBackup that knows only version 1 refuses it rather than writing into it in clear.</summary>
    public const int FormatVersion = 2;
    private const int PlainFormatVersion = 1;
    private const string ProbePrefix = ".pgbackup-access-test-";

    /// <summary>How New-PgRepository -Encrypt protects a repository: a passphrase and/or certificates (public parts suffice).</summary>
    public sealed record EncryptionChoice(string? Passphrase, IReadOnlyList<X509Certificate2> Certificates);

    /// <summary>
    /// Creates the folder or container when missing, proves write, list, read and delete, writes the marker when missing
    /// (with a new repository key when <paramref name="encrypt"/> is given), and describes what is there.
    /// </summary>
    public static async Task<BackupRepository> CreateAsync(RepositoryAddress repository, EncryptionChoice? encrypt, IOperationReporter reporter, CancellationToken ct)
    {
        if (encrypt != null) RequireRecipient(encrypt.Passphrase, encrypt.Certificates, repository);
        var activity = $"Preparing the repository {repository.Display}";
        reporter.Progress(activity, "Checking access", 0);
        try
        {
            var backend = Backend.For(repository);
            await backend.CreateAsync(ct).ConfigureAwait(false);
            await ProveAccessAsync(backend, repository, ct).ConfigureAwait(false);
            reporter.Verbose($"Writing, listing, reading and deleting a test file in {repository.Display} worked.");
            var written = false;
            var existing = Parse(await backend.ReadAsync(MarkerName, ct).ConfigureAwait(false), repository);
            if (encrypt != null && existing?.Keyring != null)
                throw new PgBackupException("RepositoryAlreadyEncrypted", ErrorKind.ResourceExists, $"The repository '{repository.Display}' is already encrypted.", repository.Display,
                    "Add or remove certificates, or change the passphrase, with Set-PgRepository; leave -Encrypt out to only look at it.");
            if (encrypt != null)
            {
                var held = (await backend.ListAsync(ct).ConfigureAwait(false)).Where(f => f.Key != MarkerName && !f.Key.StartsWith(ProbePrefix, StringComparison.Ordinal)).ToList();
                if (held.Count > 0)
                    throw new PgBackupException("RepositoryNotEmpty", ErrorKind.InvalidOperation,
                        $"The repository '{repository.Display}' already holds {held.Count} files (for example '{held[0].Key}') written in clear; encryption is chosen when a repository is created.", repository.Display,
                        "Create the encrypted repository in a new folder or container (or under a new prefix), and take new backups there.");
                reporter.Progress(activity, "Creating the repository key", 30);
                var keyring = RepositoryKeyring.Create(encrypt.Passphrase, encrypt.Certificates);
                await backend.WriteAsync(MarkerName, Marker(existing?.Created ?? DateTimeOffset.UtcNow, keyring), ct).ConfigureAwait(false);
                reporter.Milestone($"{repository.Display} is encrypted with the key {Convert.ToHexString(keyring.KeyId).ToLowerInvariant()}, readable with {string.Join(" or ", keyring.Recipients.Select(r => r.Describe()))}.");
                written = true;
            }
            else if (existing == null)
            {
                await backend.WriteAsync(MarkerName, Marker(DateTimeOffset.UtcNow, null), ct).ConfigureAwait(false);
                written = true;
            }
            reporter.Progress(activity, "Reading what it holds", 50);
            var result = await DescribeAsync(repository, reporter, ct).ConfigureAwait(false);
            result.MarkerWritten = written;
            result.AccessVerified = true;
            reporter.Milestone(result.DumpCount + result.BaseBackupCount + result.GlobalsCount + result.WalFileCount == 0
                ? $"{repository.Display} is a new, empty PgBackup repository."
                : $"{repository.Display} holds {result.DumpCount} dumps, {result.GlobalsCount} globals dumps, {result.BaseBackupCount} base backups and {result.WalFileCount} archived WAL files ({result.SizeBytes} bytes).");
            return result;
        }
        finally { reporter.ProgressCompleted(activity); }
    }

    public static async Task<BackupRepository> DescribeAsync(RepositoryAddress repository, IOperationReporter reporter, CancellationToken ct)
    {
        var backend = Backend.For(repository);
        if (!await backend.ExistsAsync(ct).ConfigureAwait(false))
            throw new PgBackupException("RepositoryNotFound", ErrorKind.ObjectNotFound, $"The repository '{repository.Display}' does not exist.", repository.Display,
                "Check -Repository (or the Repository setting), or create it with New-PgRepository.");
        var marker = Parse(await backend.ReadAsync(MarkerName, ct).ConfigureAwait(false), repository);
        var keyring = marker?.Keyring;
        var files = await backend.ListAsync(ct).ConfigureAwait(false);
        var backups = await BackupCatalog.ListAsync(repository, null, reporter.Warning, reporter.Verbose, ct).ConfigureAwait(false);
        var wal = files.Where(f => f.Key.StartsWith(RepositoryLayout.WalFolder + "/", StringComparison.Ordinal))
            .Select(f => (Parts: f.Key.Split('/'), f.Size))
            .Where(f => f.Parts.Length == 3 && !f.Parts[2].StartsWith('.') && !f.Parts[2].Contains(".tmp.", StringComparison.Ordinal))
            .ToList();
        return new BackupRepository
        {
            Kind = repository.Kind,
            Location = repository.Display,
            FormatVersion = marker?.Version,
            Created = marker?.Created,
            Encrypted = keyring != null,
            EncryptionKeyId = keyring == null ? null : Convert.ToHexString(keyring.KeyId).ToLowerInvariant(),
            Recipients = keyring == null ? [] : keyring.Recipients.Select(r => r.Kind == "passphrase" ? "Passphrase" : $"Certificate {r.Subject} ({r.Thumbprint})").ToArray(),
            SizeBytes = files.Sum(f => f.Size),
            DumpCount = backups.Count(b => b.Kind == BackupKind.Dump),
            GlobalsCount = backups.Count(b => b.Kind == BackupKind.Globals),
            BaseBackupCount = backups.Count(b => b.Kind == BackupKind.Base),
            OldestBackup = backups.Count > 0 ? backups.Min(b => b.StartTime) : null,
            NewestBackup = backups.Count > 0 ? backups.Max(b => b.StartTime) : null,
            WalArchives = wal.Select(f => f.Parts[1]).Distinct().Order(StringComparer.Ordinal).ToArray(),
            WalFileCount = wal.Count(f => !f.Parts[2].EndsWith(WalInventory.SidecarSuffix, StringComparison.Ordinal)),
            WalBytes = wal.Sum(f => f.Size),
        };
    }

    private static async Task ProveAccessAsync(Backend backend, RepositoryAddress repository, CancellationToken ct)
    {
        var name = ProbePrefix + Guid.NewGuid().ToString("N");
        var content = Encoding.UTF8.GetBytes("pgbackup access test " + DateTimeOffset.UtcNow.ToString("O"));
        PgBackupException Failed(string what) => new("RepositoryNotUsable", ErrorKind.PermissionDenied,
            $"The repository '{repository.Display}' accepted a test file but {what}.", repository.Display,
            "Check the permissions (for a container: a SAS token or role that allows read, write, list and delete) and that nothing else rewrites the repository.");
        await backend.WriteAsync(name, content, ct).ConfigureAwait(false);
        try
        {
            if (!(await backend.ListAsync(ct).ConfigureAwait(false)).Any(f => f.Key == name)) throw Failed("does not list it");
            if (await backend.ReadAsync(name, ct).ConfigureAwait(false) is not { } read || !read.AsSpan().SequenceEqual(content)) throw Failed("returned other content when it was read back");
        }
        finally
        {
            await backend.DeleteAsync(name, CancellationToken.None).ConfigureAwait(false);
        }
        if (await backend.ReadAsync(name, ct).ConfigureAwait(false) != null) throw Failed("still holds it after deleting it");
    }

    /// <summary>
    /// Set-PgRepository: the repository key re-wrapped for a new set of recipients (certificates added or removed, the
    /// passphrase set, changed or removed), unlocked first with <paramref name="keys"/>. No backup is rewritten.
    /// </summary>
    public static async Task<BackupRepository> SetRecipientsAsync(RepositoryAddress repository, RepositoryKeys keys, IReadOnlyList<X509Certificate2> addCertificates,
        IReadOnlyList<string> removeThumbprints, string? newPassphrase, bool removePassphrase, IOperationReporter reporter, CancellationToken ct)
    {
        var backend = Backend.For(repository);
        var marker = Parse(await backend.ReadAsync(MarkerName, ct).ConfigureAwait(false), repository);
        var keyring = marker?.Keyring ?? throw new PgBackupException("RepositoryNotEncrypted", ErrorKind.InvalidOperation,
            $"The repository '{repository.Display}' is not encrypted, so it has no keys to change.", repository.Display,
            "Encryption is chosen when a repository is created: New-PgRepository -Encrypt into a new folder or container.");
        foreach (var thumbprint in removeThumbprints)
            if (!keyring.Recipients.Any(r => string.Equals(r.Thumbprint, thumbprint, StringComparison.OrdinalIgnoreCase)))
                throw new PgBackupException("RecipientNotFound", ErrorKind.ObjectNotFound, $"The certificate {thumbprint} is not a recipient of '{repository.Display}'.", thumbprint,
                    "Get-PgRepository lists the repository's recipients (Recipients).");
        using var unlocked = keyring.Unlock(keys, repository.Display);
        var replaced = addCertificates.Select(c => c.Thumbprint).Concat(removeThumbprints).ToHashSet(StringComparer.OrdinalIgnoreCase);
        var kept = keyring.Recipients.Where(r => r.Kind == "passphrase" ? newPassphrase == null && !removePassphrase : !replaced.Contains(r.Thumbprint!)).ToList();
        if (kept.Count == 0 && newPassphrase == null && addCertificates.Count == 0)
            throw new PgBackupException("LastRecipient", ErrorKind.InvalidOperation, $"This would leave nobody able to read '{repository.Display}'.", repository.Display,
                "Keep the passphrase or one certificate, or add a new one in the same command.");
        var rewrapped = keyring.Rewrap(unlocked, newPassphrase, addCertificates, kept);
        await backend.WriteAsync(MarkerName, Marker(marker.Created ?? DateTimeOffset.UtcNow, rewrapped), ct).ConfigureAwait(false);
        reporter.Milestone($"{repository.Display} can now be read with {string.Join(" or ", rewrapped.Recipients.Select(r => r.Describe()))}.");
        return await DescribeAsync(repository, reporter, ct).ConfigureAwait(false);
    }

    /// <summary>The keyring of an encrypted repository; null when the repository has no marker or is not encrypted.</summary>
    internal static async Task<RepositoryKeyring?> ReadKeyringAsync(RepositoryAddress repository, CancellationToken ct) =>
        Parse(await Backend.For(repository).ReadAsync(MarkerName, ct).ConfigureAwait(false), repository)?.Keyring;

    private static void RequireRecipient(string? passphrase, IReadOnlyList<X509Certificate2> certificates, RepositoryAddress repository)
    {
        if (passphrase == null && certificates.Count == 0)
            throw new PgBackupException("EncryptionKeyRequired", ErrorKind.InvalidArgument, $"-Encrypt needs at least one key that will read '{repository.Display}'.", repository.Display,
                "Pass -Passphrase, -Certificate (one or several, for example production's and the DR site's), or both.");
        if (passphrase is { Length: < 12 })
            throw new PgBackupException("PassphraseTooShort", ErrorKind.InvalidArgument, "The passphrase has fewer than 12 characters.", "Passphrase",
                "Use a passphrase of 12 characters or more (a few random words), or a certificate.");
    }

    private static byte[] Marker(DateTimeOffset created, RepositoryKeyring? keyring)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteString("format", FormatName);
            json.WriteNumber("version", keyring == null ? PlainFormatVersion : FormatVersion);
            json.WriteString("created", created);
            if (keyring != null)
            {
                json.WritePropertyName("encryption");
                keyring.WriteJson(json);
            }
            json.WriteEndObject();
        }
        return buffer.ToArray();
    }

    private sealed record MarkerContent(int Version, DateTimeOffset? Created, RepositoryKeyring? Keyring);

    private static MarkerContent? Parse(byte[]? bytes, RepositoryAddress repository)
    {
        if (bytes == null) return null;
        try
        {
            using var document = JsonDocument.Parse(bytes);
            var root = document.RootElement;
            if (root.TryGetProperty("format", out var format) && format.GetString() == FormatName && root.TryGetProperty("version", out var version))
            {
                var number = version.GetInt32();
                if (number > FormatVersion)
                    throw new PgBackupException("RepositoryFormatUnsupported", ErrorKind.InvalidData,
                        $"The repository '{repository.Display}' has format version {number}; this PgBackup reads version {FormatVersion} and older.", repository.Display,
                        "Update the PgBackup module to the version that wrote this repository.");
                return new MarkerContent(number, root.TryGetProperty("created", out var created) && created.TryGetDateTimeOffset(out var at) ? at : null,
                    root.TryGetProperty("encryption", out var encryption) ? RepositoryKeyring.ReadJson(encryption) : null);
            }
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException or KeyNotFoundException) { }
        throw new PgBackupException("InvalidRepository", ErrorKind.InvalidData,
            $"'{MarkerName}' in the repository '{repository.Display}' is not a PgBackup repository marker.", repository.Display,
            $"Check that -Repository names a PgBackup repository; if the file is damaged, delete {MarkerName} and run New-PgRepository again.");
    }

    /// <summary>The few operations on a repository's root that creating and describing it need, on either backend.</summary>
    private abstract class Backend
    {
        public static Backend For(RepositoryAddress repository) => repository.IsBlob ? new BlobBackend(BlobStore.Open(repository)) : new FolderBackend(repository.Folder!);
        public abstract Task<bool> ExistsAsync(CancellationToken ct);
        public abstract Task CreateAsync(CancellationToken ct);
        public abstract Task WriteAsync(string name, byte[] content, CancellationToken ct);
        public abstract Task<byte[]?> ReadAsync(string name, CancellationToken ct);
        public abstract Task DeleteAsync(string name, CancellationToken ct);
        /// <summary>Every file under the root, with keys relative to it ('/' between parts).</summary>
        public abstract Task<IReadOnlyList<(string Key, long Size)>> ListAsync(CancellationToken ct);
    }

    private sealed class FolderBackend(string folder) : Backend
    {
        public override Task<bool> ExistsAsync(CancellationToken ct) => Task.FromResult(Directory.Exists(folder));

        public override Task CreateAsync(CancellationToken ct) => Io(() => Directory.CreateDirectory(folder), "create");

        public override Task WriteAsync(string name, byte[] content, CancellationToken ct) => Io(() =>
        {
            var path = Path.Combine(folder, name);
            var temporary = path + ".tmp." + Environment.ProcessId;
            using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                stream.Write(content);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, path, overwrite: true);
            DurableFiles.SyncDirectory(folder);
        }, "write into");

        public override Task<byte[]?> ReadAsync(string name, CancellationToken ct)
        {
            var path = Path.Combine(folder, name);
            return Io(() => File.Exists(path) ? File.ReadAllBytes(path) : null, "read");
        }

        public override Task DeleteAsync(string name, CancellationToken ct) => Io(() => File.Delete(Path.Combine(folder, name)), "delete from");

        public override Task<IReadOnlyList<(string Key, long Size)>> ListAsync(CancellationToken ct) => Io(() =>
            (IReadOnlyList<(string, long)>)new DirectoryInfo(folder).EnumerateFiles("*", new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true, AttributesToSkip = 0 })
                .Select(f => (Path.GetRelativePath(folder, f.FullName).Replace('\\', '/'), f.Length)).ToList(), "list");

        private Task Io(Action action, string doing) => Io(() => { action(); return true; }, doing);

        private Task<T> Io<T>(Func<T> action, string doing)
        {
            try { return Task.FromResult(action()); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new PgBackupException("RepositoryNotWritable", ErrorKind.PermissionDenied, $"PgBackup could not {doing} the repository folder '{folder}': {ex.Message}", folder,
                    "Check that this account can create, write, list, read and delete files there, and that the volume is mounted, writable and not full.", ex);
            }
        }
    }

    private sealed class BlobBackend(BlobStore store) : Backend
    {
        private string Prefix => store.Address.Prefix;

        public override async Task<bool> ExistsAsync(CancellationToken ct) =>
            (await store.Call(() => store.Container.ExistsAsync(ct), "look for the container of").ConfigureAwait(false)).Value;

        public override Task CreateAsync(CancellationToken ct) => store.EnsureContainerAsync(ct);
        public override Task WriteAsync(string name, byte[] content, CancellationToken ct) => store.WriteSmallAsync(Prefix + name, content, ct);
        public override Task<byte[]?> ReadAsync(string name, CancellationToken ct) => store.ReadSmallAsync(Prefix + name, ct);
        public override Task DeleteAsync(string name, CancellationToken ct) => store.DeleteAsync(Prefix + name, ct);

        public override async Task<IReadOnlyList<(string Key, long Size)>> ListAsync(CancellationToken ct) =>
            (await store.ListAsync(Prefix, ct).ConfigureAwait(false)).Select(e => (e.Key[Prefix.Length..], e.Size)).ToList();
    }
}
