namespace PgBackup;

/// <summary>One effective configuration value and the layer it came from.</summary>
public sealed class ConfigSetting
{
    public string Name { get; set; } = "";
    public string? Value { get; set; }
    /// <summary>Default, File: path, Environment: variable name, Parameter, or Unset when no layer gives a value.</summary>
    public string Source { get; set; } = "";
    public string Description { get; set; } = "";

    public override string ToString() => $"{Name}={Value}";
}
