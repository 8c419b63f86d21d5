using System.Management.Automation;
using PgBackup.Engine;

namespace PgBackup.Commands;

[Cmdlet(VerbsCommon.Get, "PgBackupConfig")]
[OutputType(typeof(ConfigSetting))]
public sealed class GetPgBackupConfigCommand : PgCmdlet
{
    [Parameter(Position = 0)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[]? Name { get; set; }

    protected override void ProcessRecord()
    {
        var settings = LoadSettings();
        var patterns = (Name ?? ["*"]).Select(n => new WildcardPattern(n, WildcardOptions.IgnoreCase)).ToList();
        try
        {
            foreach (var setting in settings.Describe())
                if (patterns.Any(p => p.IsMatch(setting.Name))) WriteObject(setting);
        }
        catch (PgBackupException ex) { WriteEngineError(ex); }
    }
}
