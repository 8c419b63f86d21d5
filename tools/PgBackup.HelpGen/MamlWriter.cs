using System.Text;
using System.Text.RegularExpressions;
using System.Xml;
using System.Xml.Linq;

namespace PgBackup.HelpGen;

/// <summary>Renders <see cref="CommandHelp"/> as MAML in the shape PlatyPS's New-ExternalHelp produces.</summary>
public static class MamlWriter
{
    private static readonly XNamespace Msh = "http://msh";
    private static readonly XNamespace Maml = "http://schemas.microsoft.com/maml/2004/10";
    private static readonly XNamespace Command = "http://schemas.microsoft.com/maml/dev/command/2004/10";
    private static readonly XNamespace Dev = "http://schemas.microsoft.com/maml/dev/2004/10";
    private static readonly XNamespace MSHelp = "http://msdn.microsoft.com/mshelp";

    public static XDocument Build(IEnumerable<CommandHelp> commands) =>
        new(new XDeclaration("1.0", "utf-8", null),
            new XElement(Msh + "helpItems", new XAttribute("schema", "maml"), commands.Select(CommandElement)));

    public static void Write(IEnumerable<CommandHelp> commands, string path)
    {
        var target = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        var document = Build(commands);
        var temp = $"{target}.{Guid.NewGuid():N}.tmp";
        var settings = new XmlWriterSettings { Encoding = new UTF8Encoding(false), Indent = true, IndentChars = "  ", NewLineChars = "\n" };
        try
        {
            using (var writer = XmlWriter.Create(temp, settings))
                document.Save(writer);
            File.Move(temp, target, overwrite: true);
        }
        finally
        {
            File.Delete(temp); // no-op after a successful move
        }
    }

    private static XElement CommandElement(CommandHelp c) =>
        new(Command + "command",
            new XAttribute(XNamespace.Xmlns + "maml", Maml),
            new XAttribute(XNamespace.Xmlns + "command", Command),
            new XAttribute(XNamespace.Xmlns + "dev", Dev),
            new XAttribute(XNamespace.Xmlns + "MSHelp", MSHelp),
            new XElement(Command + "details",
                new XElement(Command + "name", c.Name),
                new XElement(Command + "verb", c.Verb),
                new XElement(Command + "noun", c.Noun),
                new XElement(Maml + "description", Paras(c.Synopsis))),
            new XElement(Maml + "description", Paras(c.Description)),
            new XElement(Command + "syntax", c.Syntax.Select(s => SyntaxItem(c, s))),
            new XElement(Command + "parameters", c.Parameters.Select(p => Parameter(p, p.Required, p.Position, inSyntax: false))),
            new XElement(Command + "inputTypes", c.Inputs.Select(i => TypeEntry("inputType", i.Type, i.Description))),
            new XElement(Command + "returnValues", c.Outputs.Select(o => TypeEntry("returnValue", o.Type, o.Description))),
            new XElement(Maml + "alertSet", new XElement(Maml + "alert", Paras(c.Notes))),
            new XElement(Command + "examples", c.Examples.Select(e =>
                new XElement(Command + "example",
                    new XElement(Maml + "title", PadTitle(e.Title)),
                    new XElement(Dev + "code", e.Code),
                    new XElement(Dev + "remarks", Paras(e.Remarks))))),
            new XElement(Command + "relatedLinks", c.RelatedLinks.Select(l =>
                new XElement(Maml + "navigationLink",
                    new XElement(Maml + "linkText", l.Text),
                    // Get-Help -Online and the help engine choke on relative URIs, so (like PlatyPS) only absolute ones are kept.
                    new XElement(Maml + "uri", Uri.TryCreate(l.Uri, UriKind.Absolute, out _) ? l.Uri : "")))));

    private static XElement SyntaxItem(CommandHelp c, SyntaxHelp syntax)
    {
        var parameters = c.Parameters
            .Where(p => p.IsInSet(syntax.ParameterSetName))
            .Select(p => p.PerSet.TryGetValue(syntax.ParameterSetName, out var own) ? (p, own.Required, own.Position) : (p, p.Required, p.Position))
            .OrderBy(x => int.TryParse(x.Position, out var n) ? n : int.MaxValue); // stable: named ones keep document order
        return new XElement(Command + "syntaxItem",
            new XElement(Maml + "name", c.Name),
            parameters.Select(x => Parameter(x.p, x.Required, x.Position, inSyntax: true)));
    }

    private static XElement Parameter(ParameterHelp p, bool required, string position, bool inSyntax) =>
        new(Command + "parameter",
            new XAttribute("required", Bool(required)),
            new XAttribute("variableLength", "true"),
            new XAttribute("globbing", Bool(p.AcceptWildcardCharacters)),
            new XAttribute("pipelineInput", p.AcceptPipelineInput),
            new XAttribute("position", position.ToLowerInvariant()),
            new XAttribute("aliases", p.Aliases.Count > 0 ? string.Join(", ", p.Aliases) : "none"),
            new XElement(Maml + "name", p.Name),
            new XElement(Maml + "description", Paras(p.Description)),
            inSyntax && p.AcceptedValues.Count > 0
                ? new XElement(Command + "parameterValueGroup", p.AcceptedValues.Select(v =>
                    new XElement(Command + "parameterValue", new XAttribute("required", "false"), new XAttribute("variableLength", "false"), v)))
                : null,
            // PlatyPS quirk kept on purpose: switches get no value placeholder in the syntax, so Get-Help shows [-Force] not [-Force <SwitchParameter>].
            inSyntax && p.IsSwitch
                ? null
                : new XElement(Command + "parameterValue", new XAttribute("required", Bool(!p.IsSwitch)), new XAttribute("variableLength", "false"), p.Type),
            new XElement(Dev + "type", new XElement(Maml + "name", p.Type), new XElement(Maml + "uri")),
            new XElement(Dev + "defaultValue", p.DefaultValue ?? (p.IsSwitch ? "False" : "None")));

    private static XElement TypeEntry(string element, string type, string description) =>
        new(Command + element,
            new XElement(Dev + "type", new XElement(Maml + "name", type)),
            new XElement(Maml + "description", Paras(description)));

    /// <summary>One maml:para per blank-line separated paragraph.</summary>
    private static IEnumerable<XElement> Paras(string text) =>
        Regex.Split(text.Trim('\n'), @"\n[ \t]*\n\s*")
            .Where(p => p.Length > 0)
            .Select(p => new XElement(Maml + "para", p));

    // Same padding as PlatyPS: "Example 1: Foo" -> "------- Example 1: Foo -------", 64 characters wide.
    private static string PadTitle(string title)
    {
        if (string.IsNullOrWhiteSpace(title) || title.Length >= 62) return title;
        var dashes = new string('-', (64 - title.Length - 2) / 2);
        return $"{dashes} {title} {dashes}";
    }

    private static string Bool(bool value) => value ? "true" : "false";
}
