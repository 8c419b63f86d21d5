using System.IO.Compression;
using System.Text.RegularExpressions;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Encryption;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Logical;

public sealed record RestoreRequest
{
    /// <summary>The server to restore into; Target.Database is the database to restore into.</summary>
    public required ConnectionTarget Target { get; init; }
    /// <summary>The dump, from the catalog, a pipeline or read from the metadata beside -Path.</summary>
    public required DumpBackup Source { get; init; }
    /// <summary>False when the dump has no PgBackup metadata, so there is no checksum to verify.</summary>
    public bool HasMetadata { get; init; } = true;
    public bool Create { get; init; }
    public bool Clean { get; init; }
    public bool Force { get; init; }
    public bool NoOwner { get; init; }
    /// <summary>Only the rows, into tables that exist already: how rows deleted by mistake go back into production.</summary>
    public bool DataOnly { get; init; }
    public int Jobs { get; init; } = 1;
    public string? ToolPath { get; init; }
    /// <summary>The repository a dump in blob storage is read from (its credentials); null for a dump in a folder.</summary>
    public RepositoryAddress? Repository { get; init; }
    /// <summary>The keys that read the dump's repository when it is encrypted.</summary>
    public RepositoryKeys Keys { get; init; } = RepositoryKeys.None;
}

public enum RestoreAction { CreateDatabase, RecreateDatabase, IntoEmptyDatabase, CleanExisting, OverExisting, ApplyGlobals, DataIntoExisting }

/// <summary>What a restore will do, worked out without changing anything, so -WhatIf can show it.</summary>
public sealed record RestorePlan(RestoreRequest Request, RestoreAction Action, ServerInfo Server)
{
    /// <summary>The dump's repository's encryption, unlocked while planning; null when it is not encrypted.</summary>
    public RepositoryEncryption? Encryption { get; init; }

    public string TargetDescription => $"{Request.Target.Display}/{Request.Target.Database}";

    public string ActionDescription => Action switch
    {
        RestoreAction.CreateDatabase => $"Create database '{Request.Target.Database}' and restore {Request.Source.Path} into it",
        RestoreAction.RecreateDatabase => $"DROP database '{Request.Target.Database}', create it anew and restore {Request.Source.Path} into it",
        RestoreAction.IntoEmptyDatabase => $"Restore {Request.Source.Path} into the empty database '{Request.Target.Database}'",
        RestoreAction.CleanExisting => $"Drop the objects of {Request.Source.Path} from '{Request.Target.Database}' and restore them",
        RestoreAction.OverExisting => $"Restore {Request.Source.Path} on top of the existing objects of '{Request.Target.Database}'",
        RestoreAction.DataIntoExisting => $"Load the rows of {Request.Source.Path} into the existing tables of '{Request.Target.Database}'",
        _ => $"Apply the roles and tablespaces of {Request.Source.Path}",
    };
}

/// <summary>
/// Restores a dump with pg_restore (Custom, Directory, Tar) or psql (Plain, globals). Refuses to write into a database
/// that has objects unless -Clean or -Force; verifies the checksum first. A new database (or one -Create -Force
/// replaces) is restored under a staging name and renamed into place when complete (<see cref="RestoreStaging"/>);
/// into an existing database, a serial restore is one transaction.
/// </summary>
public static class RestoreService
{
    private static readonly Regex SerialTableLine = new(@"processing data for table ""(?<name>.+)""", RegexOptions.Compiled);
    private static readonly Regex ParallelTableLine = new(@"finished item \d+ TABLE DATA (?<name>.+)$", RegexOptions.Compiled);

    /// <summary>Reads a dump from a path: its metadata when PgBackup wrote it, otherwise what its bytes say.</summary>
    public static (DumpBackup Backup, bool HasMetadata) LoadSource(string path, Action<string>? warn) =>
        LoadAny(path, warn) switch
        {
            (DumpBackup dump, var hasMetadata) => (dump, hasMetadata),
            var (other, _) => throw new PgBackupException("NotADump", ErrorKind.InvalidArgument, $"'{other.Path}' is a base backup, not a dump.", other.Path,
                "Restore base backups by starting them as an instance (Test-PgBackup -Restore proves they start); Restore-PgDump takes pg_dump output."),
        };

    /// <summary>Reads any backup from a path: its metadata when PgBackup wrote it, otherwise a dump recognised by its bytes.</summary>
    public static (PgBackupItem Backup, bool HasMetadata) LoadAny(string path, Action<string>? warn)
    {
        var full = System.IO.Path.GetFullPath(path.TrimEnd('/', '\\'));
        if (full.EndsWith(BackupMetadata.Suffix, StringComparison.OrdinalIgnoreCase)) full = full[..^BackupMetadata.Suffix.Length];
        var metadata = BackupMetadata.PathFor(full);
        if (File.Exists(metadata) && BackupMetadata.Read(metadata, null, warn) is { } known) return (known, true);
        var format = DumpFormats.Detect(full);
        warn?.Invoke($"'{full}' has no PgBackup metadata ({System.IO.Path.GetFileName(metadata)}), so its checksum cannot be verified.");
        return (new DumpBackup { Path = full, Format = format, Kind = BackupKind.Dump, Id = System.IO.Path.GetFileName(full) }, false);
    }

    /// <summary>Works out what the restore will do; an encrypted dump's key is checked here, before anything is written.</summary>
    public static async Task<RestorePlan> PlanAsync(RestoreRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        var encryption = await RepositoryEncryption.OpenForBackupAsync(request.Source, request.Repository, request.Keys, ct).ConfigureAwait(false);
        try { return await PlanActionAsync(request, ct).ConfigureAwait(false) with { Encryption = encryption }; }
        catch { encryption?.Dispose(); throw; }
    }

    private static async Task<RestorePlan> PlanActionAsync(RestoreRequest request, CancellationToken ct)
    {
        var source = request.Source;
        if (request.Repository is { IsBlob: true } repository)
            await BlobRestores.CheckExistsAsync(repository, source, ct).ConfigureAwait(false);
        else if (!File.Exists(source.Path) && !Directory.Exists(source.Path))
            throw new PgBackupException("BackupNotFound", ErrorKind.ObjectNotFound, $"The dump '{source.Path}' does not exist.", source.Path,
                "Check the path, or list the backups that exist with Get-PgBackup.");
        if (request.Jobs < 1)
            throw new PgBackupException("InvalidJobs", ErrorKind.InvalidArgument, $"-Jobs must be at least 1, not {request.Jobs}.", request.Jobs, "Pass -Jobs 1 or more.");
        if (request.Jobs > 1 && source.Format is not (DumpFormat.Custom or DumpFormat.Directory))
            throw new PgBackupException("JobsNeedArchiveFormat", ErrorKind.InvalidArgument,
                $"Parallel restore works only for Custom and Directory dumps; '{source.Path}' is {source.Format}.", request.Jobs, "Leave -Jobs out for this dump.");

        var target = request.Target;
        var maintenance = target.WithDatabase(target.Database == "postgres" ? "template1" : "postgres");
        await using var connection = await ServerSession.OpenAsync(maintenance, ct).ConfigureAwait(false);
        var info = await ServerSession.GetInfoAsync(connection, ct).ConfigureAwait(false);

        if (source.Kind == BackupKind.Globals) return new RestorePlan(request, RestoreAction.ApplyGlobals, info);

        var exists = await ServerSession.ScalarAsync<long>(connection, "select count(*) from pg_database where datname = $1", ct, target.Database).ConfigureAwait(false) > 0;
        if (request.DataOnly)
        {
            if (source.Format == DumpFormat.Plain || request.Create || request.Clean)
                throw new PgBackupException("DataOnlyNotApplicable", ErrorKind.InvalidArgument,
                    source.Format == DumpFormat.Plain ? "-DataOnly needs a Custom, Directory or Tar dump; a Plain dump is one SQL script." : "-DataOnly loads rows into existing tables; it cannot be combined with -Create or -Clean.",
                    source.Path, "Dump with -Format Custom (Invoke-PgDump -Table ...), and give -DataOnly alone.");
            return exists ? new RestorePlan(request, RestoreAction.DataIntoExisting, info)
                : throw new PgBackupException("DatabaseNotFound", ErrorKind.ObjectNotFound, $"-DataOnly loads rows into existing tables, but the database '{target.Database}' does not exist on {target.Display}.",
                    target.Database, "Check -TargetDatabase, or restore without -DataOnly to create the database and its tables.");
        }
        if (!exists) return new RestorePlan(request, RestoreAction.CreateDatabase, info);

        if (request.Create)
            return request.Force
                ? new RestorePlan(request, RestoreAction.RecreateDatabase, info)
                : throw new PgBackupException("DatabaseExists", ErrorKind.ResourceExists,
                    $"-Create was given, but the database '{target.Database}' already exists on {target.Display}.", target.Database,
                    "Choose another -TargetDatabase, or add -Force to drop it and create it anew (its current contents are lost).");

        var objects = await CountUserObjectsAsync(target, ct).ConfigureAwait(false);
        if (objects == 0) return new RestorePlan(request, RestoreAction.IntoEmptyDatabase, info);
        if (request.Clean)
            return source.Format == DumpFormat.Plain
                ? throw new PgBackupException("CleanNotSupported", ErrorKind.InvalidArgument,
                    "A Plain-format dump has no per-object DROP statements, so -Clean cannot remove what it is about to restore.", source.Path,
                    "Use -Create -Force to drop the database and create it anew, or restore into another -TargetDatabase.")
                : new RestorePlan(request, RestoreAction.CleanExisting, info);
        if (request.Force) return new RestorePlan(request, RestoreAction.OverExisting, info);
        throw new PgBackupException("TargetNotEmpty", ErrorKind.ResourceExists,
            $"The database '{target.Database}' on {target.Display} already holds {objects} object(s); restoring into it could mix or overwrite data.", target.Database,
            "Restore into a new database with -TargetDatabase, or pass -Clean to drop the dump's objects first, or -Create -Force to drop and recreate the database.");
    }

    public static async Task<RestoreResult> ExecuteAsync(RestorePlan plan, IOperationReporter reporter, CancellationToken ct)
    {
        var request = plan.Request;
        var source = request.Source;
        var target = request.Target;
        var activity = $"Restoring {System.IO.Path.GetFileName(source.Path)} into {plan.TargetDescription}";
        var start = DateTimeOffset.UtcNow;
        using var encryption = plan.Encryption;
        if (request.Repository is { IsBlob: true } repository)
            return await BlobRestores.ExecuteAsync(plan, repository, activity, reporter, ct).ConfigureAwait(false);
        if (encryption != null) return await ExecuteEncryptedAsync(plan, encryption, activity, start, reporter, ct).ConfigureAwait(false);
        return await ExecuteAsync(plan, activity, start, null, reporter, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// A dump in an encrypted folder repository: a single-file dump restored serially streams through the decryption into
    /// the tool (a chunk that fails authentication stops the tool before its bytes reach it); otherwise it is decrypted
    /// into a temporary folder on this machine (every chunk authenticated before the restore starts), restored from there,
    /// and the folder removed. Either way a changed, cut or substituted file is BackupTampered.
    /// </summary>
    private static async Task<RestoreResult> ExecuteEncryptedAsync(RestorePlan plan, RepositoryEncryption encryption, string activity, DateTimeOffset start,
        IOperationReporter reporter, CancellationToken ct)
    {
        var source = plan.Request.Source;
        var name = RepositoryEncryption.NameIn(RepositoryEncryption.RootOf(source, null)!, source.Path);
        if (source.Format != DumpFormat.Directory && plan.Request.Jobs == 1)
        {
            if (plan.Request.HasMetadata && string.IsNullOrEmpty(source.Sha256)) throw ChecksumMismatch(source, new DumpDamage(source.Path, "it has no recorded SHA-256", ""));
            var streamed = await ExecuteAsync(plan, activity, start, (gated, token) =>
            {
                Stream file = new FileStream(source.Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan | FileOptions.Asynchronous);
                if (gated && plan.Request.HasMetadata)
                    file = new ChecksumGateStream(file, source.Sha256, actual => ChecksumMismatch(source, new DumpDamage(source.Path, $"'{source.Path}' has SHA-256 {actual}, recorded {source.Sha256}", actual)));
                return Task.FromResult(encryption.Decrypt(file, name, source.Path));
            }, reporter, ct).ConfigureAwait(false);
            streamed.ChecksumVerified = plan.Request.HasMetadata;
            return streamed;
        }
        // Decrypting authenticates every chunk of every file, which a checksum of the encrypted bytes would only repeat.
        var result = await RestoreDecryptedCopyAsync(plan, encryption, source.Path, name, activity, start, reporter, ct).ConfigureAwait(false);
        result.ChecksumVerified = true;
        return result;
    }

    /// <summary>Decrypts a verified local copy of an encrypted dump into a temporary folder, restores it from there and removes the folder.</summary>
    internal static async Task<RestoreResult> RestoreDecryptedCopyAsync(RestorePlan plan, RepositoryEncryption encryption, string encryptedCopy, string name, string activity,
        DateTimeOffset start, IOperationReporter reporter, CancellationToken ct)
    {
        var source = plan.Request.Source;
        var temp = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "pgbackup-decrypted-" + Guid.NewGuid().ToString("N"));
        try
        {
            var local = System.IO.Path.Combine(temp, source.Id.Length > 0 ? source.Id : "dump");
            Directory.CreateDirectory(temp);
            reporter.Progress(activity, "Decrypting the dump", 0);
            await encryption.DecryptTreeAsync(encryptedCopy, local, name, source.Path, ct).ConfigureAwait(false);
            var copy = BackupMetadata.Copy(source);
            copy.Path = local;
            var result = await ExecuteAsync(plan with { Request = plan.Request with { Source = copy, Repository = null, HasMetadata = false }, Encryption = null },
                activity, start, null, reporter, ct).ConfigureAwait(false);
            result.SourcePath = source.Path;
            return result;
        }
        finally { PartialBackup.DeletePath(temp); }
    }

    /// <summary>
    /// The restore itself. <paramref name="stream"/>, when given, opens the dump as a stream whose last bytes are only
    /// released once its checksum matched (a dump read from blob storage); otherwise the dump is a local file or folder.
    /// </summary>
    internal static async Task<RestoreResult> ExecuteAsync(RestorePlan plan, string activity, DateTimeOffset start, Func<bool, CancellationToken, Task<Stream>>? stream,
        IOperationReporter reporter, CancellationToken ct)
    {
        var request = plan.Request;
        var source = request.Source;
        var target = request.Target;
        if (request.HasMetadata && stream == null)
        {
            reporter.Progress(activity, "Verifying SHA-256", 0);
            if (await BackupChecksum.CheckAsync(source, ct).ConfigureAwait(false) is { } damage)
                throw ChecksumMismatch(source, damage);
        }

        var created = plan.Action is RestoreAction.CreateDatabase or RestoreAction.RecreateDatabase;
        await using var staging = created
            ? await RestoreStaging.CreateAsync(target, source.Path, source.Encoding, plan.Server.Major, reporter, ct).ConfigureAwait(false)
            : null;
        var into = staging?.Target ?? target;

        List<string> warnings = [];
        PgTool tool;
        try
        {
            (tool, warnings) = source.Format == DumpFormat.Plain
                ? await RunPsqlAsync(plan, into, activity, stream, reporter, ct).ConfigureAwait(false)
                : await RunPgRestoreAsync(plan, into, activity, stream, reporter, ct).ConfigureAwait(false);
            if (staging != null) await staging.CommitAsync(plan.Action == RestoreAction.RecreateDatabase, reporter, ct).ConfigureAwait(false);
        }
        finally { reporter.ProgressCompleted(activity); }

        var end = DateTimeOffset.UtcNow;
        reporter.Milestone($"Restored {source.Path} into {plan.TargetDescription} in {(end - start).TotalSeconds:0.0}s");
        return new RestoreResult
        {
            SourcePath = source.Path,
            Format = source.Format,
            Kind = source.Kind,
            Server = target.Host,
            Port = target.Port,
            Database = target.Database,
            DatabaseCreated = created,
            Cleaned = plan.Action == RestoreAction.CleanExisting,
            Jobs = request.Jobs,
            ChecksumVerified = request.HasMetadata,
            StartTime = start,
            EndTime = end,
            Duration = end - start,
            ToolVersion = tool.VersionText,
            Warnings = [.. warnings],
        };
    }

    internal static PgBackupException ChecksumMismatch(DumpBackup source, DumpDamage damage) =>
        new("ChecksumMismatch", ErrorKind.InvalidData,
            $"The dump '{source.Path}' is not what was recorded when it was made: {damage.Problem}. It has been changed or damaged, so nothing was restored.",
            damage.File, "Do not restore this copy: take an older backup (Get-PgBackup) or make a new dump, and check the storage that holds the repository.");

    private static async Task<(PgTool, List<string>)> RunPgRestoreAsync(RestorePlan plan, ConnectionTarget into, string activity, Func<bool, CancellationToken, Task<Stream>>? stream,
        IOperationReporter reporter, CancellationToken ct)
    {
        var request = plan.Request;
        var tool = new ToolLocator(request.ToolPath).Find("pg_restore", MajorOf(request.Source.ToolVersion), plan.Server.Major, reporter);
        var env = into.ToolEnvironment();

        ToolResult list;
        if (stream == null) list = await ToolRunner.RunAsync(tool, ["--list", request.Source.Path], env, null, ct, captureOutput: true).ConfigureAwait(false);
        else
        {
            // pg_restore reads only the table of contents at the start of the stream for its list, then stops reading.
            await using var head = await stream(false, ct).ConfigureAwait(false);
            list = await ToolRunner.RunAsync(tool, ["--list"], env, null, ct, captureOutput: true, input: head).ConfigureAwait(false);
        }
        if (!list.Succeeded) throw RestoreFailure(tool, list, plan);
        var tables = list.StandardOutput.Split('\n').Count(l => !l.StartsWith(';') && l.Contains(" TABLE DATA ", StringComparison.Ordinal));

        var args = new List<string> { ConnectionTarget.DbNameArgument(into.Database), "--verbose", "--exit-on-error" };
        if (request.Jobs > 1) args.Add("--jobs=" + request.Jobs);
        else args.Add("--single-transaction");
        if (request.NoOwner) args.Add("--no-owner");
        if (plan.Action == RestoreAction.CleanExisting) { args.Add("--clean"); args.Add("--if-exists"); }
        if (plan.Action == RestoreAction.DataIntoExisting) args.Add("--data-only");
        if (stream == null) args.Add(request.Source.Path);
        await using var input = stream == null ? null : await stream(true, ct).ConfigureAwait(false);

        var lineRegex = request.Jobs > 1 ? ParallelTableLine : SerialTableLine;
        var done = 0;
        reporter.Progress(activity, $"Restoring {tables} tables", 0);
        var result = await ToolRunner.RunAsync(tool, args, env, line =>
        {
            if (lineRegex.Match(line) is { Success: true } m)
            {
                var n = Interlocked.Increment(ref done);
                reporter.Progress(activity, $"Table {n} of {Math.Max(n, tables)}: {m.Groups["name"].Value}", tables > 0 ? Math.Min(99, n * 100 / tables) : -1);
            }
            reporter.Verbose(line);
        }, ct, reporter: reporter, input: input).ConfigureAwait(false);
        if (!result.Succeeded) throw RestoreFailure(tool, result, plan);
        return (tool, []);
    }

    private static async Task<(PgTool, List<string>)> RunPsqlAsync(RestorePlan plan, ConnectionTarget into, string activity, Func<bool, CancellationToken, Task<Stream>>? stream,
        IOperationReporter reporter, CancellationToken ct)
    {
        var request = plan.Request;
        var globals = request.Source.Kind == BackupKind.Globals;
        if (request.NoOwner)
            reporter.Warning("-NoOwner has no effect on a Plain dump: psql runs its ALTER ... OWNER statements as written. Dump with the Custom format to choose at restore time.");
        var tool = new ToolLocator(request.ToolPath).Find("psql", null, plan.Server.Major, reporter);
        var args = new List<string> { "--no-psqlrc", "--quiet", "--file=-", ConnectionTarget.DbNameArgument(into.Database) };
        // Roles that already exist make some globals statements fail; those are reported, not fatal.
        if (!globals) { args.Add("--set=ON_ERROR_STOP=1"); args.Add("--single-transaction"); }

        bool gzip;
        if (stream == null) gzip = IsGzip(request.Source.Path);
        else
        {
            await using var head = await stream(false, ct).ConfigureAwait(false);
            gzip = head.ReadByte() == 0x1f && head.ReadByte() == 0x8b;
        }
        await using var file = stream == null
            ? new FileStream(request.Source.Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan)
            : await stream(true, ct).ConfigureAwait(false);
        var total = stream == null ? file.Length : request.Source.SizeBytes;
        await using var counting = new ProgressStream(file, read => reporter.Progress(activity, $"{read / (1024 * 1024)} of {total / (1024 * 1024)} MB", total > 0 ? (int)Math.Min(99, read * 100 / total) : -1));
        Stream input = gzip ? new GZipStream(counting, CompressionMode.Decompress) : counting;
        var warnings = new List<string>();
        try
        {
            var result = await ToolRunner.RunAsync(tool, args, into.ToolEnvironment(), line =>
            {
                if (globals && line.Contains("ERROR:", StringComparison.Ordinal)) lock (warnings) warnings.Add(line);
                reporter.Verbose(line);
            }, ct, reporter: reporter, input: input).ConfigureAwait(false);
            if (!result.Succeeded || (!globals && result.ErrorLines.Any(l => l.Contains("ERROR:", StringComparison.Ordinal))))
                throw RestoreFailure(tool, result, plan);
        }
        finally { await input.DisposeAsync().ConfigureAwait(false); }
        foreach (var w in warnings) reporter.Warning(w);
        return (tool, warnings);
    }

    private static bool IsGzip(string path)
    {
        using var f = File.OpenRead(path);
        return f.ReadByte() == 0x1f && f.ReadByte() == 0x8b;
    }

    private static PgBackupException RestoreFailure(PgTool tool, ToolResult result, RestorePlan plan) =>
        new("RestoreFailed", ErrorKind.ToolFailed,
            $"{tool.Name} failed (exit code {result.ExitCode}) restoring '{plan.Request.Source.Path}' into {plan.TargetDescription}. " +
            (plan.Action == RestoreAction.CreateDatabase ? "The database it was restoring into was dropped again. " :
             plan.Action == RestoreAction.RecreateDatabase ? $"The database it was restoring into was dropped again; '{plan.Request.Target.Database}' is as it was. " :
             plan.Request.Jobs <= 1 ? "The restore ran in one transaction, so nothing was changed. " : "") +
            $"{tool.Name} said:{Environment.NewLine}{result.ErrorSummary()}",
            plan.Request.Source.Path,
            "Read the tool's message above (run with -Verbose for all of it). Missing roles: restore the globals dump first or pass -NoOwner; a newer dump format: use a newer pg_restore (ToolPath).");

    internal static async Task<long> CountUserObjectsAsync(ConnectionTarget target, CancellationToken ct)
    {
        await using var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
        return await ServerSession.ScalarAsync<long>(connection, """
            select (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
                     where n.nspname not in ('pg_catalog','information_schema') and n.nspname !~ '^pg_(toast|temp)')
                 + (select count(*) from pg_namespace where nspname not in ('public','information_schema') and nspname !~ '^pg_')
                 + (select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname not in ('pg_catalog','information_schema'))
                 + (select count(*) from pg_type t join pg_namespace n on n.oid = t.typnamespace
                     where n.nspname not in ('pg_catalog','information_schema') and n.nspname !~ '^pg_(toast|temp)' and t.typrelid = 0 and t.typelem = 0)
                 + (select count(*) from pg_extension where extname <> 'plpgsql')
                 + (select count(*) from pg_largeobject_metadata)
            """, ct).ConfigureAwait(false);
    }

    internal static async Task DropQuietlyAsync(ConnectionTarget target, ServerInfo server, IOperationReporter reporter)
    {
        try
        {
            await using var connection = await ServerSession.OpenAsync(target.WithDatabase(target.Database == "postgres" ? "template1" : "postgres"), CancellationToken.None).ConfigureAwait(false);
            await ServerSession.ExecuteAsync(connection, $"drop database if exists {ServerSession.QuoteIdentifier(target.Database)}{(server.Major >= 13 ? " with (force)" : "")}", target, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            reporter.Warning($"Could not drop the database '{target.Database}' on {target.Display} after the failure: {ex.Message}. Drop it by hand.");
        }
    }

    private static int? MajorOf(string toolVersion) =>
        int.TryParse(Regex.Match(toolVersion ?? "", @"^\d+").Value, out var m) ? m : null;
}

/// <summary>Reports how many bytes have been read, at most every 256 KB, for the progress bar of a plain restore.</summary>
internal sealed class ProgressStream(Stream inner, Action<long> onProgress) : ForwardReadStream(inner, leaveOpen: true)
{
    private long _read, _lastReported;
    public override long Position { get => _read; set => throw new NotSupportedException(); }
    public override int Read(byte[] buffer, int offset, int count) => Count(Inner.Read(buffer, offset, count));
    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => Count(await Inner.ReadAsync(buffer, ct).ConfigureAwait(false));
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) => ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();

    private int Count(int n)
    {
        _read += n;
        if (_read - _lastReported >= 256 * 1024) { _lastReported = _read; onProgress(_read); }
        return n;
    }
}
