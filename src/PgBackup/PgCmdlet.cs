using System.Collections.Concurrent;
using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Configuration;
using PgBackup.Engine.Connection;

namespace PgBackup.Commands;

/// <summary>
/// What every PgBackup cmdlet shares: running engine work off the pipeline thread while its progress, verbose and
/// warning messages are written from the pipeline thread; Ctrl+C cancelling the engine (and killing child tools);
/// and turning engine errors into ErrorRecords with an id, a category, a target and a recommended action.
/// </summary>
public abstract class PgCmdlet : PSCmdlet
{
    private CancellationTokenSource? _cancel;
    private readonly Dictionary<string, int> _activityIds = [];

    /// <summary>The folder the module was imported from: it ships the WAL archive tool the server runs.</summary>
    protected static string ModuleFolder => Path.GetDirectoryName(typeof(PgCmdlet).Assembly.Location)!;

    protected override void StopProcessing()
    {
        try { _cancel?.Cancel(); }
        catch (ObjectDisposedException) { }
    }

    /// <summary>The check every cmdlet with -Timeout (or another timeout parameter) makes before it starts waiting.</summary>
    protected static void RequirePositiveTimeout(TimeSpan timeout, string parameter = "Timeout")
    {
        if (timeout <= TimeSpan.Zero)
            throw new PgBackupException("InvalidTimeout", ErrorKind.InvalidArgument, $"-{parameter} must be positive, not {timeout}.", timeout,
                "Pass a TimeSpan such as 00:02:00; a bare number is read as ticks.");
    }

    /// <summary>Runs engine work; messages it reports are written while it runs. Engine errors come out as PgBackupException.</summary>
    protected T RunEngine<T>(Func<IOperationReporter, CancellationToken, Task<T>> work)
    {
        using var queue = new BlockingCollection<Action>();
        using var cancel = new CancellationTokenSource();
        _cancel = cancel;
        var reporter = new QueueReporter(queue, this);
        var task = Task.Run(() => work(reporter, cancel.Token));
        task.ContinueWith(_ => queue.CompleteAdding(), TaskScheduler.Default);
        try
        {
            foreach (var write in queue.GetConsumingEnumerable()) write();
        }
        catch
        {
            // The pipeline was stopped while writing (Ctrl+C): let the engine kill its tools and clean up before we return.
            cancel.Cancel();
            try { task.Wait(); } catch (AggregateException) { }
            throw;
        }
        finally { _cancel = null; }
        try { return task.GetAwaiter().GetResult(); }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested) { throw new PipelineStoppedException(); }
    }

    /// <summary>A Patroni REST API as a user gives it, with its login if any (a login is refused over plain HTTP to another machine).</summary>
    protected static Engine.Patroni.PatroniEndpoint PatroniEndpointOf(string url, PSCredential? credential, PgBackupSettings settings) =>
        Engine.Patroni.PatroniEndpoint.Parse(url, credential?.UserName, credential?.GetNetworkCredential().Password, settings.AllowInsecureHttp);

    /// <summary>Patroni's view of its cluster, read from its REST API.</summary>
    protected PatroniCluster ReadPatroniCluster(Engine.Patroni.PatroniEndpoint endpoint) => RunEngine(async (_, ct) =>
    {
        using var client = new Engine.Patroni.PatroniClient(endpoint);
        return await client.GetClusterAsync(ct).ConfigureAwait(false);
    });

    protected PgBackupSettings LoadSettings(IReadOnlyDictionary<string, string?>? fromParameters = null)
    {
        try { return PgBackupSettings.Load(fromParameters); }
        catch (PgBackupException ex) { ThrowTerminatingError(ToErrorRecord(ex)); throw; }
    }

    protected ConnectionTarget ResolveServer(PgBackupSettings settings, string? server, int? port, string? database, PSCredential? credential)
    {
        var pgCredential = credential == null || credential == PSCredential.Empty
            ? null
            : new PgCredential(credential.UserName.TrimStart('\\'), credential.GetNetworkCredential().Password);
        return ServerResolver.Resolve(new ServerRequest(server, port, database, pgCredential), settings, WriteWarning);
    }

    /// <summary>
    /// ShouldProcess with ConfirmImpact High semantics for one call: the cmdlet is Medium (creating a new database is
    /// routine), but dropping or overwriting data asks for confirmation unless -Confirm:$false or $ConfirmPreference allows it.
    /// </summary>
    protected bool ShouldProcessHighImpact(string target, string action, string caution = "This removes or overwrites data that no backup taken by this command holds.")
    {
        if (!ShouldProcess(target, action)) return false;
        if (MyInvocation.BoundParameters.TryGetValue("Confirm", out var confirm)) return true; // -Confirm:$false, or already asked by ShouldProcess
        var preference = GetVariableValue("ConfirmPreference") is ConfirmImpact p ? p : ConfirmImpact.High;
        if (preference == ConfirmImpact.None || preference > ConfirmImpact.High) return true;
        return ShouldContinue($"{action} on {target}? {caution}", "Confirm a high-impact change");
    }

    /// <summary>The catalog filter for a -Server value given to Get-PgBackup or Remove-PgBackup (host, host:port, profile...).</summary>
    protected static Engine.Repository.CatalogFilter WithServer(Engine.Repository.CatalogFilter filter, string? server, PgBackupSettings settings)
    {
        if (server == null) return filter;
        var parts = ServerResolver.Parse(server, settings);
        return filter with
        {
            Server = parts.GetValueOrDefault("host") ?? server,
            Port = parts.TryGetValue("port", out var p) && int.TryParse(p, out var port) ? port : null,
        };
    }

    /// <summary>The repository from -Repository or the Repository setting (a folder, a blob container URL or a profile); an error when there is none.</summary>
    protected Engine.Repository.RepositoryAddress RequireRepositoryAddress(PgBackupSettings settings) =>
        Engine.Repository.RepositoryAddress.Parse(settings.Repository ?? throw new PgBackupException("NoRepository", ErrorKind.InvalidArgument, "No repository was given.", null,
            "Pass -Repository, or set the Repository setting (PGBACKUP_REPOSITORY or pgbackup.json)."), settings, GetUnresolvedProviderPathFromPSPath);

    /// <summary>
    /// Where a backup in blob storage is read from: -Repository when given, else the repository it was listed from, else
    /// its own URL (credentials then come from the environment). Null for a backup in a folder.
    /// </summary>
    protected Engine.Repository.RepositoryAddress? BlobRepositoryOf(string backupPath, string? listedFrom, string? given, PgBackupSettings settings)
    {
        if (!Engine.Repository.RepositoryAddress.LooksLikeUrl(backupPath)) return null;
        var address = Engine.Repository.RepositoryAddress.Parse(given ?? listedFrom ?? backupPath, settings, GetUnresolvedProviderPathFromPSPath);
        return address.IsBlob && address.KeyOf(backupPath) != null ? address
            : throw new PgBackupException("BackupNotInRepository", ErrorKind.InvalidArgument, $"'{backupPath}' is not in the repository '{address.Display}'.", backupPath,
                "Pass the repository the backup is in as -Repository, or leave -Repository out.");
    }

    /// <summary>A backup named by its path: a folder's file (with or without metadata), or a blob's URL (its metadata blob).</summary>
    protected (PgBackupItem Backup, bool HasMetadata, Engine.Repository.RepositoryAddress? Repository) LoadBackup(string path, string? given, PgBackupSettings settings)
    {
        if (!Engine.Repository.RepositoryAddress.LooksLikeUrl(path))
        {
            var (local, hasMetadata) = Engine.Logical.RestoreService.LoadAny(GetUnresolvedProviderPathFromPSPath(path), WriteWarning);
            return (local, hasMetadata, null);
        }
        var url = path.Split('?')[0];
        if (url.EndsWith(Engine.Repository.BackupMetadata.Suffix, StringComparison.Ordinal)) url = url[..^Engine.Repository.BackupMetadata.Suffix.Length];
        var repository = BlobRepositoryOf(url, null, given ?? path, settings)!;
        var store = Engine.Repository.Blob.BlobStore.Open(repository);
        var backup = RunEngine((reporter, ct) => Engine.Repository.Blob.BlobCatalog.ReadAsync(store, repository.KeyOf(url) + Engine.Repository.BackupMetadata.Suffix, reporter.Warning, ct))
            ?? throw new PgBackupException("BackupNotFound", ErrorKind.ObjectNotFound, $"'{url}' is not a backup: it has no PgBackup metadata in its repository.", url,
                "List the backups of the repository with Get-PgBackup and pipe one of them.");
        return (backup, true, repository);
    }

    /// <summary>
    /// The keys that read an encrypted repository: -Passphrase and -Certificate when given, else PGBACKUP_PASSPHRASE (the
    /// Passphrase setting) and the EncryptionCertificate setting (a file, or a thumbprint in the certificate store).
    /// </summary>
    protected Engine.Repository.Encryption.RepositoryKeys ResolveKeys(PgBackupSettings settings, System.Security.SecureString? passphrase, object[]? certificates)
    {
        if (passphrase != null || certificates is { Length: > 0 })
            return new(passphrase == null ? null : new System.Net.NetworkCredential("", passphrase).Password, ToCertificates(certificates));
        var configured = settings.EncryptionCertificate is { Length: > 0 } c ? [ToCertificate(c)] : Array.Empty<System.Security.Cryptography.X509Certificates.X509Certificate2>();
        return new(settings.Passphrase, configured);
    }

    /// <summary>-Certificate values: X509Certificate2 objects, file paths (PowerShell paths resolved here) or thumbprints.</summary>
    protected System.Security.Cryptography.X509Certificates.X509Certificate2[] ToCertificates(object[]? values) =>
        values == null ? [] : values.Select(v => v is PSObject ps ? ps.BaseObject : v).Select(v => v switch
        {
            System.Security.Cryptography.X509Certificates.X509Certificate2 certificate => certificate,
            string text => ToCertificate(text),
            System.IO.FileInfo file => ToCertificate(file.FullName),
            _ => throw new PgBackupException("CertificateNotUsable", ErrorKind.InvalidArgument, $"-Certificate takes certificates, paths or thumbprints, not a {v?.GetType().Name ?? "null"}.", v,
                "Pass an X509Certificate2 (Get-PfxCertificate, Get-Item Cert:\\...), the path of a .cer/.pem/.pfx file, or a thumbprint."),
        }).ToArray();

    private System.Security.Cryptography.X509Certificates.X509Certificate2 ToCertificate(string value) =>
        Engine.Repository.Encryption.CertificateSource.Load(Engine.Repository.Encryption.CertificateSource.LooksLikeThumbprint(value) ? value : GetUnresolvedProviderPathFromPSPath(value));

    protected static ErrorRecord ToErrorRecord(PgBackupException ex) =>
        new(ex, ex.ErrorId, ToCategory(ex.Kind), ex.Target)
        {
            ErrorDetails = new ErrorDetails(ex.Message) { RecommendedAction = ex.RecommendedAction },
        };

    /// <summary>Writes a non-terminating error for one failed item, so the rest of the pipeline goes on.</summary>
    protected void WriteEngineError(PgBackupException ex) => WriteError(ToErrorRecord(ex));

    protected void ThrowEngineError(PgBackupException ex) => ThrowTerminatingError(ToErrorRecord(ex));

    protected static ErrorCategory ToCategory(ErrorKind kind) => kind switch
    {
        ErrorKind.InvalidArgument => ErrorCategory.InvalidArgument,
        ErrorKind.ConnectionFailed => ErrorCategory.ConnectionError,
        ErrorKind.AuthenticationFailed => ErrorCategory.AuthenticationError,
        ErrorKind.ObjectNotFound => ErrorCategory.ObjectNotFound,
        ErrorKind.ResourceExists => ErrorCategory.ResourceExists,
        ErrorKind.NotInstalled => ErrorCategory.NotInstalled,
        ErrorKind.PermissionDenied => ErrorCategory.PermissionDenied,
        ErrorKind.WriteFailed => ErrorCategory.WriteError,
        ErrorKind.InvalidData => ErrorCategory.InvalidData,
        ErrorKind.InvalidOperation => ErrorCategory.InvalidOperation,
        ErrorKind.ToolFailed => ErrorCategory.InvalidResult,
        ErrorKind.OperationTimeout => ErrorCategory.OperationTimeout,
        ErrorKind.ResourceBusy => ErrorCategory.ResourceBusy,
        ErrorKind.LimitsExceeded => ErrorCategory.LimitsExceeded,
        _ => ErrorCategory.NotSpecified,
    };

    /// <summary>The parameters the user actually typed, as configuration overrides (the highest layer).</summary>
    protected Dictionary<string, string?> BoundSettings(params (string Key, string Parameter)[] map)
    {
        var result = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        foreach (var (key, parameter) in map)
            if (MyInvocation.BoundParameters.TryGetValue(parameter, out var value) && value != null)
                result[key] = Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture);
        return result;
    }

    private int ActivityId(string activity)
    {
        if (!_activityIds.TryGetValue(activity, out var id)) _activityIds[activity] = id = _activityIds.Count + 1;
        return id;
    }

    private sealed class QueueReporter(BlockingCollection<Action> queue, PgCmdlet cmdlet) : IOperationReporter
    {
        private void Post(Action write)
        {
            try { queue.Add(write); }
            catch (InvalidOperationException) { } // the pipeline thread has finished reading; late messages are dropped
        }

        public void Progress(string activity, string status, int percent) => Post(() =>
            cmdlet.WriteProgress(new ProgressRecord(cmdlet.ActivityId(activity), activity, status) { PercentComplete = Math.Clamp(percent, -1, 100) }));

        public void ProgressCompleted(string activity) => Post(() =>
            cmdlet.WriteProgress(new ProgressRecord(cmdlet.ActivityId(activity), activity, "Done") { RecordType = ProgressRecordType.Completed }));

        public void Verbose(string message) => Post(() => cmdlet.WriteVerbose(message));
        public void Warning(string message) => Post(() => cmdlet.WriteWarning(message));

        public void Milestone(string message) => Post(() =>
        {
            cmdlet.WriteVerbose(message);
            cmdlet.WriteInformation(message, ["PgBackup"]);
        });
    }
}
