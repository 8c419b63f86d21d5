using System.Text.Json;

namespace PgBackup.Engine.Repository.Encryption;

/// <summary>
/// What pgbackup-wal needs to encrypt into, or decrypt from, an encrypted repository's WAL archive, written by the cmdlets
/// into a file of the server's OS user: the repository's public key and key id, and the archive's name prefix inside the
/// repository ("wal/&lt;system identifier&gt;/"), which is bound into every file's encryption. Only a standby's file also
/// holds the private key (it must decrypt); an archive_command's file never does. BCL only: the tool compiles this in.
/// </summary>
public sealed record WalKeyFile(byte[] PublicKey, byte[] KeyId, string NamePrefix, byte[]? PrivateKey)
{
    public override string ToString() => "WalKeyFile { (hidden) }";

    public string Serialize()
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteString("format", "pgbackup-wal-key/1");
            json.WriteBase64String("publicKey", PublicKey);
            json.WriteString("keyId", Convert.ToHexString(KeyId).ToLowerInvariant());
            json.WriteString("namePrefix", NamePrefix);
            if (PrivateKey != null) json.WriteBase64String("privateKey", PrivateKey);
            json.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    /// <exception cref="FormatException">Not a key file.</exception>
    public static WalKeyFile Parse(string text)
    {
        using var document = JsonDocument.Parse(text);
        var root = document.RootElement;
        if (!root.TryGetProperty("format", out var format) || format.GetString() != "pgbackup-wal-key/1")
            throw new FormatException("it is not a pgbackup-wal key file");
        return new WalKeyFile(root.GetProperty("publicKey").GetBytesFromBase64(), Convert.FromHexString(root.GetProperty("keyId").GetString()!),
            root.GetProperty("namePrefix").GetString()!, root.TryGetProperty("privateKey", out var key) ? key.GetBytesFromBase64() : null);
    }
}
