using System.Text.Json;

namespace PgBackup.Engine.Repository.Blob;

/// <summary>
/// What pgbackup-wal needs to reach a blob WAL archive as the database server's OS user: a SAS token, or the account's
/// name and key. Enable-PgWalArchiving and New-PgStandby write it into a file only that user can read (the path goes into
/// archive_command and restore_command, the secret never does). BCL only: the tool compiles this file in.
/// </summary>
public sealed record WalStorageCredentials(string? SasToken, string? AccountName, string? AccountKey)
{
    public bool IsSharedKey => AccountKey != null;

    public override string ToString() => "WalStorageCredentials { (hidden) }";

    public string Serialize()
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteString("format", "pgbackup-wal-credentials/1");
            if (SasToken != null) json.WriteString("sasToken", SasToken);
            if (AccountName != null) json.WriteString("accountName", AccountName);
            if (AccountKey != null) json.WriteString("accountKey", AccountKey);
            json.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    /// <exception cref="FormatException">The file holds neither a SAS token nor an account name and key.</exception>
    public static WalStorageCredentials Parse(string text)
    {
        using var document = JsonDocument.Parse(text);
        string? Field(string name) => document.RootElement.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String && value.GetString() is { Length: > 0 } s ? s : null;
        var credentials = new WalStorageCredentials(Field("sasToken")?.TrimStart('?'), Field("accountName"), Field("accountKey"));
        if (credentials.SasToken == null && (credentials.AccountName == null || credentials.AccountKey == null))
            throw new FormatException("it holds neither a sasToken nor an accountName with its accountKey");
        return credentials;
    }
}
