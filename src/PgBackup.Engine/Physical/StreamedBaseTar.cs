using System.Buffers.Binary;
using System.Text;
using Npgsql;
using PgBackup.Engine.Connection;
using PgBackup.Engine.Repository;

namespace PgBackup.Engine.Physical;

/// <summary>
/// A Tar base backup taken from pg_basebackup's standard output (--pgdata=-) instead of a spool: the tar stream is
/// checked member by member against nothing yet (each member's CRC-32C is computed on the way, for the manifest that
/// comes last) and written straight into its <see cref="FollowedFileTarget"/> (encrypted), so the backup is written once.
/// pg_basebackup puts the manifest into the stream as its last member (PostgreSQL 15 and later); it is taken out into
/// the local folder where the verification expects it, and the stored base.tar is the archive without it. WAL cannot be
/// streamed beside a tar on standard output, so it is fetched at the end into base.tar's pg_wal/, and a temporary
/// replication slot, held by this session for as long as the backup runs, keeps the server from recycling it first.
/// </summary>
public sealed class StreamedBaseTar : IAsyncDisposable
{
    public const string ArchiveName = "base.tar";
    private const int Block = 512;

    private readonly NpgsqlConnection? _walHold;
    private IReadOnlyDictionary<string, FileDigest>? _digests;

    private StreamedBaseTar(NpgsqlConnection? walHold) => _walHold = walHold;

    /// <summary>
    /// A streamed backup of <paramref name="target"/> when the server can give one: PostgreSQL 15 or later, no tablespace
    /// of its own (pg_basebackup writes only one tar to standard output) and, when WAL is included, a free replication slot.
    /// Null otherwise, and the backup goes through a spool as before.
    /// </summary>
    public static async Task<StreamedBaseTar?> TryStartAsync(ConnectionTarget target, int major, bool holdWal, IOperationReporter reporter, CancellationToken ct)
    {
        if (major < 15) return null;
        var connection = await ServerSession.OpenAsync(target, ct).ConfigureAwait(false);
        try
        {
            if (await ServerSession.ScalarAsync<long>(connection, "select count(*) from pg_tablespace where spcname not in ('pg_default', 'pg_global')", ct).ConfigureAwait(false) > 0)
                return null;
            if (!holdWal) return new StreamedBaseTar(null);
            // Temporary: dropped by the server when this session ends, however the backup ends.
            await using var create = new NpgsqlCommand("select pg_create_physical_replication_slot(@name, true, true)", connection);
            create.Parameters.AddWithValue("name", "pgbackup_base_" + Guid.NewGuid().ToString("N")[..16]);
            await create.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            var streamed = new StreamedBaseTar(connection);
            connection = null;
            return streamed;
        }
        catch (PostgresException ex)
        {
            reporter.Verbose($"No temporary replication slot to hold the WAL of a streamed backup ({ex.MessageText}); pg_basebackup writes into a spool instead");
            return null;
        }
        finally
        {
            if (connection != null) await connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>pg_basebackup's arguments that differ from a backup into a folder.</summary>
    public IEnumerable<string> Arguments(WalMethod method) =>
        ["--pgdata=-", "--format=tar", "--wal-method=" + (method == WalMethod.None ? "none" : "fetch")];

    /// <summary>What was read of every regular member (pg_wal/ too; the verification ignores WAL), by manifest path, once the stream has ended.</summary>
    /// <summary>Whether the tar stream was read to its end-of-archive blocks.</summary>
    public bool Complete => _digests != null;

    public IReadOnlyDictionary<string, FileDigest> Digests => _digests ?? throw new InvalidOperationException("The tar stream has not been read to its end.");

    /// <summary>Reads pg_basebackup's standard output to its end (see <see cref="Split"/>).</summary>
    public void Copy(Stream tar, Stream output, string manifestPath, bool sha256, CancellationToken ct) =>
        _digests = Split(tar, output, manifestPath, sha256, ct);

    /// <summary>
    /// Copies a tar stream into <paramref name="output"/>, but for the manifest member, which goes into
    /// <paramref name="manifestPath"/>, and digests every regular member on the way. Synchronous: it runs on a thread
    /// of its own, and blocking reads and writes cost far less CPU than asynchronous ones at this rate.
    /// </summary>
    /// <returns>The digests by manifest path; null when the stream ends before the tar's end (pg_basebackup failed; its exit code says why).</returns>
    internal static Dictionary<string, FileDigest>? Split(Stream tar, Stream output, string manifestPath, bool sha256, CancellationToken ct)
    {
        var header = new byte[Block];
        var buffer = new byte[1 << 20];
        var digests = new Dictionary<string, FileDigest>(StringComparer.Ordinal);
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            if (tar.ReadAtLeast(header, Block, throwOnEndOfStream: false) < Block) return null;
            if (header.AsSpan().IndexOfAnyExcept((byte)0) < 0)
            {
                // The end-of-archive blocks, and whatever padding follows them.
                output.Write(header);
                tar.CopyTo(output);
                return digests;
            }
            var (name, size, regular) = ParseHeader(header);
            var isManifest = regular && name == "backup_manifest";
            using var manifest = isManifest ? new FileStream(manifestPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16) : null;
            using var digester = regular && !isManifest ? new FileDigester(crc32C: true, sha256) : null;
            if (!isManifest) output.Write(header);
            var padded = (size + Block - 1) / Block * Block;
            for (long left = padded; left > 0;)
            {
                var n = tar.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                if (n == 0) return null;
                var data = (int)Math.Clamp(size - (padded - left), 0, n);
                digester?.Append(buffer.AsSpan(0, data));
                if (manifest != null) manifest.Write(buffer, 0, data);
                else output.Write(buffer, 0, n);
                left -= n;
            }
            if (digester != null) digests[name] = digester.Finish();
        }
    }

    /// <summary>A ustar header as pg_basebackup and the server write it: the member's manifest path, its size and whether it is a regular file.</summary>
    internal static (string Name, long Size, bool Regular) ParseHeader(ReadOnlySpan<byte> header)
    {
        long sum = 0;
        for (var i = 0; i < Block; i++) sum += i is >= 148 and < 156 ? (byte)' ' : header[i];
        if (ParseNumber(header.Slice(148, 8)) != sum)
            throw new InvalidDataException("pg_basebackup's standard output is not a tar stream: a header's checksum does not match.");
        var name = Field(header[..100]);
        if (header.Slice(257, 5).SequenceEqual("ustar"u8) && Field(header.Slice(345, 155)) is { Length: > 0 } prefix) name = prefix + "/" + name;
        var type = header[156];
        return (name.TrimStart('.', '/'), ParseNumber(header.Slice(124, 12)), type is (byte)'0' or 0);
    }

    private static string Field(ReadOnlySpan<byte> field)
    {
        var end = field.IndexOf((byte)0);
        return Encoding.UTF8.GetString(end < 0 ? field : field[..end]);
    }

    /// <summary>Octal digits, or (for sizes over 8 GB) base-256 with the top bit of the first byte set.</summary>
    private static long ParseNumber(ReadOnlySpan<byte> field)
    {
        if ((field[0] & 0x80) != 0) return BinaryPrimitives.ReadInt64BigEndian(field[^8..]);
        long value = 0;
        foreach (var b in field)
        {
            if (b is (byte)' ' or 0) { if (value > 0) break; continue; }
            if (b is < (byte)'0' or > (byte)'7') throw new InvalidDataException("pg_basebackup's standard output is not a tar stream: a header holds a number that is not octal.");
            value = value * 8 + (b - '0');
        }
        return value;
    }

    public async ValueTask DisposeAsync()
    {
        if (_walHold != null) await _walHold.DisposeAsync().ConfigureAwait(false);
    }
}
