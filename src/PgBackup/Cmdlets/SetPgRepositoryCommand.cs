using System.Management.Automation;
using System.Security;
using PgBackup.Engine;
using PgBackup.Engine.Repository;

namespace PgBackup.Commands;

/// <summary>Changes who can read an encrypted repository by re-wrapping its key; no backup is rewritten.</summary>
[Cmdlet(VerbsCommon.Set, "PgRepository", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(BackupRepository))]
public sealed class SetPgRepositoryCommand : PgCmdlet
{
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Location")]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    /// <summary>A key that reads the repository now (the current passphrase).</summary>
    [Parameter]
    public SecureString? Passphrase { get; set; }

    /// <summary>A certificate with its private key that reads the repository now.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public object[]? Certificate { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public object[]? AddCertificate { get; set; }

    /// <summary>Thumbprints (or certificates) of recipients to remove.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public object[]? RemoveCertificate { get; set; }

    /// <summary>Sets or changes the passphrase.</summary>
    [Parameter]
    public SecureString? NewPassphrase { get; set; }

    [Parameter]
    public SwitchParameter RemovePassphrase { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Repository", nameof(Repository))));
        try
        {
            if (AddCertificate == null && RemoveCertificate == null && NewPassphrase == null && !RemovePassphrase)
                throw new PgBackupException("NothingToChange", ErrorKind.InvalidArgument, "No change was asked for.", null,
                    "Pass -AddCertificate, -RemoveCertificate, -NewPassphrase or -RemovePassphrase.");
            if (NewPassphrase != null && RemovePassphrase)
                throw new PgBackupException("ConflictingParameters", ErrorKind.InvalidArgument, "-NewPassphrase and -RemovePassphrase contradict each other.", null, "Pass one of them.");
            var repository = RequireRepositoryAddress(settings);
            var keys = ResolveKeys(settings, Passphrase, Certificate);
            var add = ToCertificates(AddCertificate);
            var remove = (RemoveCertificate ?? []).Select(v => v is PSObject ps ? ps.BaseObject : v)
                .Select(v => v is System.Security.Cryptography.X509Certificates.X509Certificate2 c ? c.Thumbprint : Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture)!.Replace(" ", "")).ToArray();
            var newPassphrase = NewPassphrase == null ? null : new System.Net.NetworkCredential("", NewPassphrase).Password;
            var changes = string.Join("; ", new[]
            {
                add.Length > 0 ? "add " + string.Join(", ", add.Select(c => $"{c.Subject} ({c.Thumbprint})")) : null,
                remove.Length > 0 ? "remove " + string.Join(", ", remove) : null,
                newPassphrase != null ? "set the passphrase" : null,
                RemovePassphrase ? "remove the passphrase" : null,
            }.OfType<string>());
            if (!ShouldProcess(repository.Display, $"Re-wrap the repository key to change who can read it ({changes})")) return;
            WriteObject(RunEngine((reporter, ct) => RepositoryService.SetRecipientsAsync(repository, keys, add, remove, newPassphrase, RemovePassphrase, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
