namespace PgBackup.HelpGen;

/// <summary>One <c>### -Name</c> entry under <c>## PARAMETERS</c>.</summary>
/// <remarks>
/// Values come from the first yaml block; <see cref="ParameterSets"/> is the union over all blocks.
/// <see cref="PerSet"/> keeps each set's own Required/Position for the MAML syntax section.
/// </remarks>
public sealed record ParameterHelp(
    string Name, string Type, string Description, IReadOnlyList<string> ParameterSets, IReadOnlyList<string> Aliases,
    bool Required, string Position, string? DefaultValue, string AcceptPipelineInput, bool AcceptWildcardCharacters)
{
    public const string AllSets = "(All)";

    /// <summary>The yaml "Accepted values" list (ValidateSet); rendered as parameterValueGroup in the syntax.</summary>
    public IReadOnlyList<string> AcceptedValues { get; init; } = [];

    public IReadOnlyDictionary<string, (bool Required, string Position)> PerSet { get; init; } =
        new Dictionary<string, (bool Required, string Position)>(StringComparer.OrdinalIgnoreCase);

    public bool IsSwitch => Type is "SwitchParameter" or "System.Management.Automation.SwitchParameter";

    public bool IsInSet(string setName) =>
        setName == SyntaxHelp.DefaultSetName
        || ParameterSets.Any(s => s == AllSets || string.Equals(s, setName, StringComparison.OrdinalIgnoreCase));
}

public sealed record ExampleHelp(string Title, string Code, string Remarks);

/// <summary>The code block under <c>## SYNTAX</c> / <c>### SetName</c>.</summary>
public sealed record SyntaxHelp(string ParameterSetName, string Text)
{
    /// <summary>Set name used when the SYNTAX code block has no <c>###</c> heading (single-set cmdlets).</summary>
    public const string DefaultSetName = "__AllParameterSets";

    /// <summary>True when the heading carried PlatyPS's <c>(Default)</c> marker (stripped from the name).</summary>
    public bool IsDefault { get; init; }
}

public sealed record CommandHelp(
    string Name, string Synopsis, string Description, IReadOnlyList<SyntaxHelp> Syntax, IReadOnlyList<ExampleHelp> Examples,
    IReadOnlyList<ParameterHelp> Parameters, bool CommonParameters,
    IReadOnlyList<(string Type, string Description)> Inputs, IReadOnlyList<(string Type, string Description)> Outputs,
    string Notes, IReadOnlyList<(string Text, string? Uri)> RelatedLinks, string SourceFile)
{
    public string Verb => Name.Split('-', 2)[0];
    public string Noun => Name.Contains('-') ? Name.Split('-', 2)[1] : "";
}

/// <summary>A markdown file violates the help schema. <see cref="Exception.Message"/> is <c>file:line: reason</c>.</summary>
public sealed class HelpFormatException : Exception
{
    public HelpFormatException(string file, int line, string reason)
        : base($"{file}:{line}: {reason}")
    {
        File = file;
        Line = line;
        Reason = reason;
    }

    public string File { get; }
    public int Line { get; }
    public string Reason { get; }
}
