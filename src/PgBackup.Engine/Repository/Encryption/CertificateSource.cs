using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;

namespace PgBackup.Engine.Repository.Encryption;

/// <summary>
/// Certificates as users name them: a file (.cer/.crt/.der or .pem with only the certificate, which can write; .pfx/.p12,
/// or a .pem that holds the private key too, which can also read), or a thumbprint found in the CurrentUser or
/// LocalMachine "My" store (on Windows the certificate store, where Azure Automation puts its certificates).
/// </summary>
public static partial class CertificateSource
{
    [GeneratedRegex("^[0-9A-Fa-f]{40}$")]
    private static partial Regex Thumbprint();

    public static bool LooksLikeThumbprint(string value) => Thumbprint().IsMatch(value.Replace(" ", ""));

    /// <param name="value">A path (already resolved against the current location) or a thumbprint.</param>
    public static X509Certificate2 Load(string value)
    {
        var thumbprint = value.Replace(" ", "");
        if (LooksLikeThumbprint(thumbprint) && !File.Exists(value)) return FromStore(thumbprint);
        if (!File.Exists(value))
            throw new PgBackupException("CertificateNotFound", ErrorKind.ObjectNotFound, $"The certificate file '{value}' does not exist.", value,
                "Give the path of a .cer, .pem or .pfx file, the thumbprint of a certificate in the CurrentUser or LocalMachine My store, or an X509Certificate2 object.");
        try
        {
            var extension = Path.GetExtension(value).ToLowerInvariant();
            if (extension is ".pfx" or ".p12") return new X509Certificate2(value, (string?)null, OperatingSystem.IsMacOS() ? X509KeyStorageFlags.DefaultKeySet : X509KeyStorageFlags.EphemeralKeySet);
            var text = File.ReadAllText(value);
            if (text.Contains("-----BEGIN CERTIFICATE-----", StringComparison.Ordinal))
                return text.Contains("PRIVATE KEY-----", StringComparison.Ordinal) ? X509Certificate2.CreateFromPem(text, text) : X509Certificate2.CreateFromPem(text);
            return new X509Certificate2(value);
        }
        catch (CryptographicException ex)
        {
            throw new PgBackupException("CertificateNotUsable", ErrorKind.InvalidData, $"'{value}' is not a certificate PgBackup can read: {ex.Message}", value,
                "Give a DER or PEM certificate (.cer, .crt, .pem; a .pem may hold its unencrypted private key too) or a .pfx without a password; for a .pfx with a password, pass Get-PfxCertificate's result.", ex);
        }
    }

    private static X509Certificate2 FromStore(string thumbprint)
    {
        foreach (var location in new[] { StoreLocation.CurrentUser, StoreLocation.LocalMachine })
        {
            try
            {
                using var store = new X509Store(StoreName.My, location);
                store.Open(OpenFlags.ReadOnly | OpenFlags.OpenExistingOnly);
                var found = store.Certificates.Find(X509FindType.FindByThumbprint, thumbprint, validOnly: false);
                if (found.Count > 0) return found[0];
            }
            catch (CryptographicException) { } // a store that does not exist on this machine
        }
        throw new PgBackupException("CertificateNotFound", ErrorKind.ObjectNotFound, $"No certificate with the thumbprint {thumbprint} is in the CurrentUser or LocalMachine My store.", thumbprint,
            "Import the certificate into the store (Import-PfxCertificate on Windows), or give the path of its file.");
    }
}
