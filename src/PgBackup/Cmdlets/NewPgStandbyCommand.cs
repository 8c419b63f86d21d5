using System.Management.Automation;
using PgBackup.Engine;
using PgBackup.Engine.Replication;
using PgBackup.Engine.Wal;
using PgBackup.Engine.Repository;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.New, "PgStandby", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(StandbyStatus))]
public sealed class NewPgStandbyCommand : PgCmdlet
{
    /// <summary>The upstream: a primary, or a standby for cascading. host:port names its port; -Port is the new standby's.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string? Server { get; set; }

    [Parameter]
    [Credential]
    public PSCredential? Credential { get; set; }

    [Parameter(Mandatory = true)]
    [ValidateNotNullOrEmpty]
    public string? DataDirectory { get; set; }

    [Parameter(Mandatory = true)]
    [ValidateRange(1, 65535)]
    public int Port { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? ListenAddress { get; set; }

    [Parameter]
    [ValidatePattern("^[a-z0-9_]{1,63}$")]
    public string? Slot { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Repository { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>The passphrase of an encrypted -Repository: the standby decrypts what it fetches from the archive.</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    /// <summary>A certificate, with its private key, that reads an encrypted -Repository.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public object[]? Certificate { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        try
        {
            var upstream = ResolveServer(settings, Server, null, null, Credential);
            var directory = GetUnresolvedProviderPathFromPSPath(DataDirectory!);
            var archive = Repository != null ? RepositoryAddress.Parse(Repository, settings, GetUnresolvedProviderPathFromPSPath) : null;
            if (!ShouldProcess(directory, $"Create a standby of {upstream.Display} listening on port {Port}" + (Slot != null ? $" with slot {Slot}" : ""))) return;
            if (Force && Directory.Exists(directory) && Directory.EnumerateFileSystemEntries(directory).Any() &&
                !ShouldProcessHighImpact(directory, "Delete the contents of the data directory", "Everything in the folder is deleted before the standby is copied into it.")) return;
            var request = new NewStandbyRequest
            {
                Upstream = upstream, DataDirectory = directory, Port = Port, ListenAddress = ListenAddress, Slot = Slot,
                ArchiveRepository = archive, WalTool = archive != null ? WalArchiveTool.InModuleFolder(ModuleFolder) : null, ToolInstallRoot = WalToolInstallation.Root,
                Force = Force, ToolPath = settings.ToolPath, Keys = archive != null ? ResolveKeys(settings, Passphrase, Certificate) : Engine.Repository.Encryption.RepositoryKeys.None,
            };
            WriteObject(RunEngine((reporter, ct) => StandbyBuilder.CreateAsync(request, reporter, ct)));
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
