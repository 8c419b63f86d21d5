using System.Management.Automation;
using System.Security;
using PgBackup.Engine;
using PgBackup.Engine.Repository;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.New, "PgRepository", SupportsShouldProcess = true, DefaultParameterSetName = "Plain")]
[OutputType(typeof(BackupRepository))]
public sealed class NewPgRepositoryCommand : PgCmdlet
{
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Location")]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    /// <summary>Encrypt everything written into the repository; -Passphrase and/or -Certificate say who can read it.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Encrypted")]
    public SwitchParameter Encrypt { get; set; }

    [Parameter(ParameterSetName = "Encrypted")]
    public SecureString? Passphrase { get; set; }

    [Parameter(ParameterSetName = "Encrypted")]
    [ValidateNotNullOrEmpty]
    public object[]? Certificate { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings(BoundSettings(("Repository", nameof(Repository))));
        try
        {
            var repository = RequireRepositoryAddress(settings);
            var encrypt = Encrypt ? new RepositoryService.EncryptionChoice(Passphrase == null ? null : new System.Net.NetworkCredential("", Passphrase).Password, ToCertificates(Certificate)) : null;
            var action = "Create the repository (folder or container) if missing, test writing, listing, reading and deleting in it, and write its format marker" +
                (encrypt == null ? "" : ", with a new encryption key readable by " + string.Join(" or ", new[] { encrypt.Passphrase != null ? "the passphrase" : null }.Concat(encrypt.Certificates.Select(c => c.Subject)).OfType<string>()));
            if (!ShouldProcess(repository.Display, action)) return;
            WriteObject(RunEngine((reporter, ct) => RepositoryService.CreateAsync(repository, encrypt, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
