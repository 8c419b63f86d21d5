using System.Diagnostics;
using System.Text.RegularExpressions;
using PgBackup.Engine.Repository;
using PgBackup.Engine.Repository.Encryption;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Tools;

namespace PgBackup.Engine.Logical;

/// <summary>
/// Runs pg_dump (or pg_dumpall --globals-only) into a ".partial" name (<see cref="PartialBackup"/>), and only when the
/// tool succeeded records its SHA-256 and commits it: the metadata that makes it part of the catalog, then the rename.
/// </summary>
public static class DumpService
{
    private static readonly Regex TableDataLine = new(@"dumping contents of table ""(?<name>.+)""", RegexOptions.Compiled);

    public static async Task<DumpBackup> DumpAsync(DumpRequest request, IOperationReporter reporter, CancellationToken ct)
    {
        Validate(request);
        var target = request.Target;
        var what = request.Globals ? $"globals of {target.Display}" : $"{target.Display}/{target.Database}";
        var activity = $"Dumping {what}";

        reporter.Progress(activity, "Connecting", 0);
        ServerInfo info;
        int tablesToDump = 0;
        await using (var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false))
        {
            info = await ServerSession.GetInfoAsync(connection, ct).ConfigureAwait(false);
            if (!request.Globals)
                tablesToDump = (int)await ServerSession.ScalarAsync<long>(connection, CountTablesSql(request), ct).ConfigureAwait(false);
        }

        var tool = new ToolLocator(request.ToolPath).Find(request.Globals ? "pg_dumpall" : "pg_dump", info.Major, info.Major, reporter);
        var start = DateTimeOffset.UtcNow;
        var format = request.Globals ? DumpFormat.Plain : request.Format;
        // An encrypted repository's marker decides, on every write: nothing goes into it in clear.
        using var encryption = request.Path == null ? await RepositoryEncryption.LoadAsync(request.Repository!, ct).ConfigureAwait(false) : null;
        if (request.Path == null && request.Repository is { IsBlob: true } address)
            return await BlobDumps.DumpAsync(request, address, encryption, info, tool, tablesToDump, start, what, reporter, ct).ConfigureAwait(false);
        var finalPath = System.IO.Path.GetFullPath(request.Path ?? RepositoryLayout.DumpPath(request.Repository!.Folder!, target.Host, target.Port,
            request.Globals ? null : target.Database, format, start));
        PartialBackup.PrepareTarget(finalPath, request.Force);
        using var writing = PartialBackup.Begin(finalPath, $"Invoke-PgDump of {what}", reporter);
        var partial = writing.PartialPath;

        reporter.Milestone($"Starting {tool.Name} {tool.VersionText} for {what} into {finalPath}{(encryption != null ? ", encrypted" : "")}");
        var (dumped, stored, storedFiles) = encryption == null
            ? (await RunToolAsync(tool, request.Globals ? GlobalsArguments(partial, target) : DumpArguments(request, format, partial), target, activity, tablesToDump, reporter, ct, null,
                result => ToolFailure(tool, result, finalPath, what)).ConfigureAwait(false), null, null)
            : await DumpEncryptedAsync(request, format, tool, encryption, RepositoryEncryption.NameIn(request.Repository!, finalPath), partial, activity, tablesToDump, what, reporter, ct).ConfigureAwait(false);

        reporter.Progress(activity, "Computing SHA-256", 99);
        var (sha, files) = stored != null ? (stored, storedFiles) : await BackupChecksum.ComputeWithFilesAsync(partial, ct).ConfigureAwait(false);
        var backup = Describe(request, info, tool, format, start, finalPath, dumped, sha, files, BackupChecksum.SizeOf(partial));
        backup.Repository = request.Path == null ? request.Repository!.Display : null;
        backup.Encrypted = encryption != null;
        try { writing.Commit(backup, request.Force); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { throw PartialBackup.WriteFailure(System.IO.Path.GetDirectoryName(finalPath)!, ex.Message, ex); }
        reporter.ProgressCompleted(activity);
        reporter.Milestone($"Dumped {what}: {backup.SizeBytes} bytes in {backup.Duration.TotalSeconds:0.0}s, SHA-256 {sha}");
        return backup;
    }

    /// <summary>
    /// Into an encrypted folder repository: a single-file dump streams from the tool's standard output through the
    /// encryption into the partial file; a Directory dump is written into a temporary folder on this machine, whose files
    /// are encrypted into the partial folder and which is removed afterwards.
    /// </summary>
    /// <returns>The tables dumped, and the SHA-256 of what was stored (for a Directory dump, of each file too), hashed as it was written.</returns>
    private static async Task<(int Dumped, string Sha256, Dictionary<string, string>? Files)> DumpEncryptedAsync(DumpRequest request, DumpFormat format, PgTool tool, RepositoryEncryption encryption, string name, string partial,
        string activity, int tablesToDump, string what, IOperationReporter reporter, CancellationToken ct)
    {
        var target = request.Target;
        if (format != DumpFormat.Directory)
        {
            await using var file = new FollowedFileTarget.ToFile(partial, encryption, name);
            var dumped = await RunToolAsync(tool, request.Globals ? GlobalsArguments(null, target) : DumpArguments(request, format, null), target, activity, tablesToDump, reporter, ct,
                stdout =>
                {
                    // On the reader's own thread: blocking writes cost less CPU than asynchronous ones, as blocking reads of the pipe do.
                    stdout.CopyTo(file.Input, 1 << 20);
                    return Task.CompletedTask;
                }, result => ToolFailure(tool, result, partial, what)).ConfigureAwait(false);
            return (dumped, await file.CompleteAsync().ConfigureAwait(false), null);
        }
        var temp = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "pgbackup-dump-" + Guid.NewGuid().ToString("N"));
        try
        {
            var local = System.IO.Path.Combine(temp, "dump");
            Directory.CreateDirectory(temp);
            var dumped = await RunToolAsync(tool, DumpArguments(request, format, local), target, activity, tablesToDump, reporter, ct, null,
                result => ToolFailure(tool, result, null, what)).ConfigureAwait(false);
            reporter.Progress(activity, "Encrypting into the repository", 95);
            Directory.CreateDirectory(partial);
            var (sha, files) = await encryption.EncryptTreeAsync(local, partial, name, durable: true, ct).ConfigureAwait(false);
            return (dumped, sha, files);
        }
        finally { PartialBackup.DeletePath(temp); }
    }

    /// <summary>Runs pg_dump (or pg_dumpall) with its progress; <paramref name="stdout"/> takes its output when it writes to standard output.</summary>
    /// <returns>The number of tables whose data it dumped.</returns>
    internal static async Task<int> RunToolAsync(PgTool tool, List<string> args, ConnectionTarget target, string activity, int tablesToDump, IOperationReporter reporter,
        CancellationToken ct, Func<Stream, Task>? stdout, Func<ToolResult, PgBackupException> failure)
    {
        var done = 0;
        ToolResult result;
        try
        {
            result = await ToolRunner.RunAsync(tool, args, target.ToolEnvironment(), line =>
            {
                if (TableDataLine.Match(line) is { Success: true } m)
                {
                    var n = Interlocked.Increment(ref done);
                    var percent = tablesToDump > 0 ? Math.Min(99, n * 100 / tablesToDump) : -1;
                    reporter.Progress(activity, $"Table {n} of {Math.Max(n, tablesToDump)}: {m.Groups["name"].Value}", percent);
                }
                reporter.Verbose(line);
            }, ct, reporter: reporter, consumeOutput: stdout).ConfigureAwait(false);
        }
        catch
        {
            reporter.ProgressCompleted(activity);
            throw;
        }
        if (!result.Succeeded)
        {
            reporter.ProgressCompleted(activity);
            throw failure(result);
        }
        return done;
    }

    internal static DumpBackup Describe(DumpRequest request, ServerInfo info, PgTool tool, DumpFormat format, DateTimeOffset start, string path, int dumped,
        string sha, Dictionary<string, string>? files, long size)
    {
        var target = request.Target;
        var end = DateTimeOffset.UtcNow;
        return new DumpBackup
        {
            Id = path[(path.LastIndexOfAny(['/', '\\']) + 1)..],
            Kind = request.Globals ? BackupKind.Globals : BackupKind.Dump,
            Server = target.Host,
            Port = target.Port,
            ServerProfile = target.Profile,
            Database = request.Globals ? "" : target.Database,
            Format = format,
            Path = path,
            SizeBytes = size,
            StartTime = start,
            EndTime = end,
            Duration = end - start,
            ServerVersion = info.Version,
            ToolVersion = tool.VersionText,
            Sha256 = sha,
            FileChecksums = files,
            Compression = request.Compress,
            Jobs = request.Format == DumpFormat.Directory ? request.Jobs : 1,
            Encoding = info.Encoding,
            TableCount = dumped,
            Schemas = request.Schemas,
            ExcludeSchemas = request.ExcludeSchemas,
            Tables = request.Tables,
            ExcludeTables = request.ExcludeTables,
            VerificationState = VerificationState.Unverified,
        };
    }

    private static void Validate(DumpRequest r)
    {
        if (r.Path == null && r.Repository == null)
            throw new PgBackupException("NoDestination", ErrorKind.InvalidArgument, "No destination was given for the dump.", null,
                "Pass -Repository (a folder; dumps are filed by server and database) or -Path, or set the Repository setting (PGBACKUP_REPOSITORY or pgbackup.json).");
        if (r.Jobs < 1)
            throw new PgBackupException("InvalidJobs", ErrorKind.InvalidArgument, $"-Jobs must be at least 1, not {r.Jobs}.", r.Jobs, "Pass -Jobs 1 or more.");
        if (r.Jobs > 1 && r.Format != DumpFormat.Directory && !r.Globals)
            throw new PgBackupException("JobsNeedDirectoryFormat", ErrorKind.InvalidArgument,
                $"pg_dump can run parallel jobs only for the Directory format, not for {r.Format}.", r.Jobs,
                "Use -Format Directory with -Jobs, or leave -Jobs out.");
        if (r.Compress is { } c && (c < 0 || c > 9))
            throw new PgBackupException("InvalidCompression", ErrorKind.InvalidArgument, $"-Compress must be from 0 to 9, not {c}.", c, "Pass a gzip level from 0 (none) to 9 (smallest).");
        if (r.Compress is > 0 && r.Format is DumpFormat.Tar && !r.Globals)
            throw new PgBackupException("TarNotCompressible", ErrorKind.InvalidArgument, "pg_dump cannot compress Tar-format dumps.", r.Compress,
                "Use -Format Custom or Directory (both compress), or leave -Compress out.");
        if (r.Compress is > 0 && r.Globals)
            throw new PgBackupException("GlobalsNotCompressible", ErrorKind.InvalidArgument, "pg_dumpall cannot compress its output.", r.Compress,
                "Leave -Compress out for -Globals; the globals of a cluster are small.");
    }

    /// <param name="output">The file or folder to write; null for standard output.</param>
    internal static List<string> DumpArguments(DumpRequest r, DumpFormat format, string? output)
    {
        var args = new List<string>
        {
            "--format=" + format switch { DumpFormat.Plain => "plain", DumpFormat.Custom => "custom", DumpFormat.Directory => "directory", _ => "tar" },
            "--verbose",
        };
        if (output != null) args.Add("--file=" + output);
        if (format == DumpFormat.Directory && r.Jobs > 1) args.Add("--jobs=" + r.Jobs);
        if (r.Compress is { } c) args.Add("--compress=" + c);
        args.AddRange(r.Schemas.Select(s => "--schema=" + s));
        args.AddRange(r.ExcludeSchemas.Select(s => "--exclude-schema=" + s));
        args.AddRange(r.Tables.Select(t => "--table=" + t));
        args.AddRange(r.ExcludeTables.Select(t => "--exclude-table=" + t));
        args.Add(ConnectionTarget.DbNameArgument(r.Target.Database));
        return args;
    }

    internal static List<string> GlobalsArguments(string? output, ConnectionTarget target) =>
        ["--globals-only", .. output == null ? Array.Empty<string>() : ["--file=" + output], "--verbose", "--dbname=dbname=" + ConnectionTarget.QuoteConnInfoValue(target.Database)];

    /// <summary>An estimate of the tables whose data pg_dump will write, for the progress bar only.</summary>
    private static string CountTablesSql(DumpRequest r)
    {
        static string Like(IEnumerable<string> patterns, string column) =>
            string.Join(" or ", patterns.Select(p => $"{column} ~ '{NamePattern.ToRegex(p)}'"));
        var where = new List<string>
        {
            "c.relkind = 'r'",
            "n.nspname not in ('pg_catalog','information_schema')",
            "n.nspname !~ '^pg_(toast|temp)'",
            "not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')",
        };
        if (r.Schemas.Length > 0) where.Add("(" + Like(r.Schemas, "n.nspname") + ")");
        if (r.ExcludeSchemas.Length > 0) where.Add("not (" + Like(r.ExcludeSchemas, "n.nspname") + ")");
        if (r.Tables.Length > 0) where.Add("(" + Like(r.Tables.Select(t => t.Contains('.') ? t : "*." + t), "n.nspname || '.' || c.relname") + ")");
        if (r.ExcludeTables.Length > 0) where.Add("not (" + Like(r.ExcludeTables.Select(t => t.Contains('.') ? t : "*." + t), "n.nspname || '.' || c.relname") + ")");
        return "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace where " + string.Join(" and ", where);
    }

    /// <param name="writtenPath">The file or folder the tool wrote, whose volume a write error is about; null when it wrote to standard output.</param>
    internal static PgBackupException ToolFailure(PgTool tool, ToolResult result, string? writtenPath, string what)
    {
        var summary = result.ErrorSummary();
        var all = string.Join("\n", result.ErrorLines);
        if (writtenPath != null && (PartialBackup.IsDiskFull(all) || all.Contains("could not write", StringComparison.OrdinalIgnoreCase) || all.Contains("could not open output", StringComparison.OrdinalIgnoreCase) ||
            all.Contains("Read-only file system", StringComparison.OrdinalIgnoreCase) || all.Contains("could not create directory", StringComparison.OrdinalIgnoreCase)))
            return PartialBackup.WriteFailure(System.IO.Path.GetDirectoryName(writtenPath)!, summary);
        return new PgBackupException("DumpFailed", ErrorKind.ToolFailed,
            $"{tool.Name} failed (exit code {result.ExitCode}) while dumping {what}; nothing was kept. {tool.Name} said:{Environment.NewLine}{summary}", what,
            "Read the tool's message above (run with -Verbose for its full output); a permission error needs a role that can read every object, such as the table owner or pg_read_all_data.");
    }

}
