namespace PgBackup;

/// <summary>One effective configuration value and the layer it came from.</summary>
public sealed class ConfigSetting
{
    public string Name { get; set; } = "";
    public string? Value { get; set; }
    /// <summary>Default, File (with its path), Environment (with the variable name) or Parameter.</summary>
    public string Source { get; set; } = "";
    public string Description { get; set; } = "";

    public override string ToString() => $"{Name}={Value}";
}
