using System.Text;
using System.Text.RegularExpressions;

namespace PgBackup.HelpGen;

/// <summary>
/// Parses one PlatyPS 0.14 (schema 2.0.0) cmdlet markdown file. Only the subset of markdown that
/// New-MarkdownHelp writes is understood: ATX headings, fenced code blocks and plain paragraphs.
/// </summary>
public static class HelpMarkdownParser
{
    private enum Kind { Heading, Code, Para }

    // Text = heading text, code content or joined paragraph; Info = code fence language; Lines = raw paragraph lines.
    private sealed record Block(Kind Kind, int Line, int Level, string Text, string Info, IReadOnlyList<string> Lines);

    private sealed record Section(Block Head, List<Block> Body);

    private static readonly string[] KnownSections =
        ["SYNOPSIS", "SYNTAX", "DESCRIPTION", "EXAMPLES", "PARAMETERS", "INPUTS", "OUTPUTS", "NOTES", "RELATED LINKS"];

    private static readonly string[] YamlKeys =
    [
        "Type", "Parameter Sets", "Aliases", "Accepted values", "Required", "Position", "Default value",
        "Accept pipeline input", "Accept wildcard characters", "Applicable",
    ];

    private static readonly Regex Heading = new(@"^(#{1,6})\s+(.*?)\s*$");
    private static readonly Regex Fence = new(@"^\s*(`{3,})\s*([^`\s]*)");
    private static readonly Regex ListItem = new(@"^([-*+]|\d+[.)])\s");
    private static readonly Regex Escape = new(@"\\([\\`*_{}\[\]()#+\-.!<>|~""'])");
    private static readonly Regex Placeholder = new(@"\{\{\s*(Fill|Add)\b[^}]*\}\}");
    private static readonly Regex CommandName = new(@"^[A-Za-z]+-[A-Za-z0-9]+$");
    private static readonly Regex ParameterName = new(@"^[A-Za-z_][A-Za-z0-9_]*$");
    private static readonly Regex Link = new(@"^\[(?<text>[^\]]*)\]\((?<uri>[^)\s]*)\)$");
    private static readonly Regex SyntaxParameter = new(@"(?<=[\s\[])-([A-Za-z_]\w*)");
    private static readonly Regex PipelineInput = new(@"^(?i:false|true(\s*\(.*\))?)$");

    public static CommandHelp ParseFile(string path)
    {
        var (help, nameLine) = ParseCore(File.ReadAllText(path), path);
        var fileName = Path.GetFileNameWithoutExtension(path);
        if (!string.Equals(fileName, help.Name, StringComparison.OrdinalIgnoreCase))
            throw new HelpFormatException(path, nameLine, $"command '{help.Name}' must live in a file named '{help.Name}.md'");
        return help;
    }

    public static CommandHelp Parse(string markdown, string sourceFile) => ParseCore(markdown, sourceFile).Help;

    private static (CommandHelp Help, int NameLine) ParseCore(string markdown, string file)
    {
        HelpFormatException Error(int line, string reason) => new(file, line, reason);

        var lines = markdown.Replace("\r\n", "\n").Replace('\r', '\n').Split('\n');
        var (meta, bodyStart) = ParseFrontMatter(lines, file);
        var blocks = Tokenize(lines, bodyStart, file);

        if (blocks.Count == 0 || blocks[0] is not { Kind: Kind.Heading, Level: 1 })
            throw Error(blocks.Count == 0 ? bodyStart + 1 : blocks[0].Line, "expected the command heading '# Verb-Noun'");
        var nameBlock = blocks[0];
        var name = nameBlock.Text;
        if (!CommandName.IsMatch(name))
            throw Error(nameBlock.Line, $"'{name}' is not a Verb-Noun command name");

        var sections = new Dictionary<string, Section>(StringComparer.OrdinalIgnoreCase);
        Section? current = null;
        foreach (var b in blocks.Skip(1))
        {
            if (b is { Kind: Kind.Heading, Level: 1 })
                throw Error(b.Line, "only one '# Command' heading is allowed per file");
            if (b is { Kind: Kind.Heading, Level: 2 })
            {
                var title = b.Text.ToUpperInvariant();
                if (!KnownSections.Contains(title))
                    throw Error(b.Line, $"unknown section '## {b.Text}' (expected one of: {string.Join(", ", KnownSections)})");
                if (!sections.TryAdd(title, current = new Section(b, [])))
                    throw Error(b.Line, $"duplicate section '## {b.Text}'");
            }
            else if (current is null)
                throw Error(b.Line, "expected a '## SECTION' heading");
            else
                current.Body.Add(b);
        }
        foreach (var required in new[] { "SYNOPSIS", "SYNTAX", "DESCRIPTION" })
            if (!sections.ContainsKey(required))
                throw Error(nameBlock.Line, $"missing section '## {required}'");

        string SimpleText(string key, bool required)
        {
            if (!sections.TryGetValue(key, out var s)) return "";
            var (preamble, subs) = Split(s, file);
            if (subs.Count > 0) throw Error(subs[0].Head.Line, $"'## {key}' takes no '###' headings");
            var text = BodyText(preamble);
            if (required && text.Length == 0) throw Error(s.Head.Line, $"'## {key}' is empty");
            return text;
        }

        List<Section> Subsections(string key)
        {
            if (!sections.TryGetValue(key, out var s)) return [];
            var (preamble, subs) = Split(s, file);
            if (preamble.Count > 0) throw Error(preamble[0].Line, $"unexpected text in '## {key}' before its first '###' heading");
            return subs;
        }

        var synopsis = SimpleText("SYNOPSIS", required: true);
        var description = SimpleText("DESCRIPTION", required: true);
        var notes = SimpleText("NOTES", required: false);
        var (syntax, syntaxLines) = ParseSyntax(sections["SYNTAX"], name, file);
        var examples = Subsections("EXAMPLES").Select(s => ParseExample(s, file)).ToList();
        var (parameters, parameterLines, common) = ParseParameters(Subsections("PARAMETERS"), file);
        var inputs = Subsections("INPUTS").Select(s => (Unescape(s.Head.Text), BodyText(s.Body))).ToList();
        var outputs = Subsections("OUTPUTS").Select(s => (Unescape(s.Head.Text), BodyText(s.Body))).ToList();
        var links = sections.TryGetValue("RELATED LINKS", out var linkSection) ? ParseLinks(linkSection, file) : [];

        if (meta.TryGetValue("online version", out var online) && online.Length > 0 && links.All(l => l.Uri != online))
            links.Insert(0, ("Online Version:", online));

        // Consistency between SYNTAX and PARAMETERS: catches typos and stale docs.
        var setNames = syntax.Select(s => s.ParameterSetName).ToHashSet(StringComparer.OrdinalIgnoreCase);
        foreach (var p in parameters)
            foreach (var set in p.ParameterSets.Where(s => s != ParameterHelp.AllSets && !setNames.Contains(s)))
                throw Error(parameterLines[p.Name], $"-{p.Name}: parameter set '{set}' has no '### {set}' entry under '## SYNTAX'");
        foreach (var s in syntax)
        {
            var inSet = parameters.Where(p => p.IsInSet(s.ParameterSetName)).ToList();
            foreach (var p in inSet.Where(p => !Regex.IsMatch(s.Text, $@"(?<![\w-])-{p.Name}\b", RegexOptions.IgnoreCase)))
                throw Error(syntaxLines[s], $"syntax of set '{s.ParameterSetName}' does not mention -{p.Name}");
            foreach (Match m in SyntaxParameter.Matches(s.Text))
                if (!inSet.Any(p => string.Equals(p.Name, m.Groups[1].Value, StringComparison.OrdinalIgnoreCase)))
                    throw Error(syntaxLines[s], $"syntax of set '{s.ParameterSetName}' mentions -{m.Groups[1].Value}, which is not documented for that set under '## PARAMETERS'");
            if (s.Text.Contains("<CommonParameters>") && !common)
                throw Error(syntaxLines[s], "syntax mentions <CommonParameters> but '## PARAMETERS' has no '### CommonParameters'");
        }

        var help = new CommandHelp(name, synopsis, description, syntax, examples, parameters, common, inputs, outputs, notes, links, file);
        return (help, nameBlock.Line);
    }

    private static (Dictionary<string, string> Meta, int BodyStart) ParseFrontMatter(string[] lines, string file)
    {
        if (lines[0].Trim() != "---")
            throw new HelpFormatException(file, 1, "expected YAML front matter starting with '---' on the first line");
        var meta = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 1; i < lines.Length; i++)
        {
            var line = lines[i].Trim();
            if (line == "---")
            {
                if (!meta.TryGetValue("schema", out var schema) || schema != "2.0.0")
                    throw new HelpFormatException(file, 1, "front matter must contain 'schema: 2.0.0' (PlatyPS 0.14 schema)");
                return (meta, i + 1);
            }
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var colon = line.IndexOf(':');
            if (colon <= 0) throw new HelpFormatException(file, i + 1, "expected 'key: value' in front matter");
            meta[line[..colon].Trim()] = line[(colon + 1)..].Trim().Trim('"', '\'');
        }
        throw new HelpFormatException(file, 1, "front matter is not closed by a '---' line");
    }

    private static List<Block> Tokenize(string[] lines, int start, string file)
    {
        var blocks = new List<Block>();
        var para = new List<string>();
        var paraLine = 0;

        void Flush()
        {
            if (para.Count > 0) blocks.Add(new Block(Kind.Para, paraLine, 0, JoinParagraph(para), "", para.ToList()));
            para.Clear();
        }

        for (var i = start; i < lines.Length; i++)
        {
            var line = lines[i];
            if (Placeholder.Match(line) is { Success: true } ph)
                throw new HelpFormatException(file, i + 1, $"PlatyPS placeholder '{ph.Value}' must be replaced by real text");

            if (Fence.Match(line) is { Success: true } fence)
            {
                Flush();
                var ticks = fence.Groups[1].Value;
                var content = new List<string>();
                var open = i;
                for (i++; i < lines.Length && !(lines[i].Trim().StartsWith(ticks) && lines[i].Trim().Trim('`').Length == 0); i++)
                    content.Add(lines[i]);
                if (i == lines.Length) throw new HelpFormatException(file, open + 1, "code block is not closed");
                blocks.Add(new Block(Kind.Code, open + 1, 0, string.Join("\n", content), fence.Groups[2].Value, []));
            }
            else if (line.Trim().Length == 0)
                Flush();
            else if (Heading.Match(line) is { Success: true } h)
            {
                Flush();
                blocks.Add(new Block(Kind.Heading, i + 1, h.Groups[1].Length, h.Groups[2].Value, "", []));
            }
            else
            {
                if (para.Count == 0) paraLine = i + 1;
                para.Add(line);
            }
        }
        Flush();
        return blocks;
    }

    // Soft line breaks become spaces; two trailing spaces (hard break) and list items keep their own line.
    private static string JoinParagraph(IReadOnlyList<string> lines)
    {
        var sb = new StringBuilder();
        for (var i = 0; i < lines.Count; i++)
        {
            var line = lines[i].Trim();
            if (i > 0) sb.Append(lines[i - 1].EndsWith("  ") || ListItem.IsMatch(line) ? "\n" : " ");
            sb.Append(line);
        }
        return Unescape(sb.ToString());
    }

    private static string Unescape(string text) => Escape.Replace(text, "$1");

    // Paragraphs (and code blocks kept verbatim) separated by a blank line; MamlWriter turns each into a maml:para.
    private static string BodyText(IEnumerable<Block> blocks) => string.Join("\n\n", blocks.Select(b => b.Text.Trim('\n')));

    private static (List<Block> Preamble, List<Section> Subs) Split(Section section, string file)
    {
        var preamble = new List<Block>();
        var subs = new List<Section>();
        foreach (var b in section.Body)
        {
            if (b.Kind == Kind.Heading)
            {
                if (b.Level != 3) throw new HelpFormatException(file, b.Line, $"unexpected heading level {b.Level} in '## {section.Head.Text}' (expected '###')");
                subs.Add(new Section(b, []));
            }
            else (subs.Count == 0 ? preamble : subs[^1].Body).Add(b);
        }
        return (preamble, subs);
    }

    private static (List<SyntaxHelp>, Dictionary<SyntaxHelp, int>) ParseSyntax(Section section, string command, string file)
    {
        var (preamble, subs) = Split(section, file);
        var entries = new List<(string Name, int Line, List<Block> Body)>();
        if (subs.Count == 0)
            entries.Add((SyntaxHelp.DefaultSetName, section.Head.Line, preamble));
        else if (preamble.Count > 0)
            throw new HelpFormatException(file, preamble[0].Line, "unexpected text in '## SYNTAX' before its first '### SetName' heading");
        else
            entries.AddRange(subs.Select(s => (s.Head.Text, s.Head.Line, s.Body)));

        var result = new List<SyntaxHelp>();
        var lines = new Dictionary<SyntaxHelp, int>(ReferenceEqualityComparer.Instance);
        foreach (var (heading, line, body) in entries)
        {
            if (body is not [{ Kind: Kind.Code } code])
                throw new HelpFormatException(file, line, "each syntax entry must be exactly one ``` code block");
            var isDefault = heading.EndsWith(" (Default)", StringComparison.Ordinal);
            var name = isDefault ? heading[..^" (Default)".Length].Trim() : heading;
            if (result.Any(r => string.Equals(r.ParameterSetName, name, StringComparison.OrdinalIgnoreCase)))
                throw new HelpFormatException(file, line, $"duplicate syntax entry '{name}'");
            var text = code.Text.Trim('\n');
            if (!text.StartsWith(command + " ", StringComparison.OrdinalIgnoreCase) && !string.Equals(text, command, StringComparison.OrdinalIgnoreCase))
                throw new HelpFormatException(file, code.Line, $"syntax must start with the command name '{command}'");
            var syntax = new SyntaxHelp(name, text) { IsDefault = isDefault };
            result.Add(syntax);
            lines[syntax] = code.Line;
        }
        return (result, lines);
    }

    private static ExampleHelp ParseExample(Section s, string file)
    {
        var code = s.Body.TakeWhile(b => b.Kind == Kind.Code).ToList();
        if (code.Count == 0) throw new HelpFormatException(file, s.Head.Line, $"example '{s.Head.Text}' must start with a code block");
        return new ExampleHelp(s.Head.Text, string.Join("\n\n", code.Select(b => b.Text.Trim('\n'))), BodyText(s.Body.Skip(code.Count)));
    }

    private static (List<ParameterHelp>, Dictionary<string, int>, bool Common) ParseParameters(List<Section> subs, string file)
    {
        var result = new List<ParameterHelp>();
        var lines = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        var common = false;
        foreach (var s in subs)
        {
            if (s.Head.Text.Equals("CommonParameters", StringComparison.OrdinalIgnoreCase))
            {
                common = true; // fixed boilerplate text, PowerShell adds the common parameters itself
                continue;
            }
            if (!s.Head.Text.StartsWith('-') || !ParameterName.IsMatch(s.Head.Text[1..]))
                throw new HelpFormatException(file, s.Head.Line, $"parameter heading must be '### -Name' (got '### {s.Head.Text}')");
            var name = s.Head.Text[1..];
            if (!lines.TryAdd(name, s.Head.Line))
                throw new HelpFormatException(file, s.Head.Line, $"duplicate parameter -{name}");

            var description = s.Body.TakeWhile(b => !(b.Kind == Kind.Code && b.Info == "yaml")).ToList();
            var yamlBlocks = s.Body.Skip(description.Count).ToList();
            if (yamlBlocks.Count == 0)
                throw new HelpFormatException(file, s.Head.Line, $"-{name} has no ```yaml metadata block");
            if (yamlBlocks.FirstOrDefault(b => !(b.Kind == Kind.Code && b.Info == "yaml")) is { } stray)
                throw new HelpFormatException(file, stray.Line, $"-{name}: only ```yaml blocks may follow the parameter's first yaml block");

            ParameterHelp? param = null;
            var sets = new List<string>();
            var perSet = new Dictionary<string, (bool Required, string Position)>(StringComparer.OrdinalIgnoreCase);
            foreach (var yaml in yamlBlocks)
            {
                var values = ParseYaml(yaml, file);
                string Get(string key, string fallback) => values.TryGetValue(key, out var v) && v.Value.Length > 0 ? v.Value : fallback;
                int LineOf(string key) => values.TryGetValue(key, out var v) ? v.Line : yaml.Line;
                bool Bool(string key)
                {
                    var v = Get(key, "False");
                    return bool.TryParse(v, out var b) ? b : throw new HelpFormatException(file, LineOf(key), $"-{name}: '{key}' must be True or False (got '{v}')");
                }

                var type = Get("Type", "");
                if (type.Length == 0) throw new HelpFormatException(file, LineOf("Type"), $"-{name}: 'Type' is required");
                if (type.Equals("switch", StringComparison.OrdinalIgnoreCase)) type = "SwitchParameter";
                var position = Get("Position", "Named");
                if (!position.Equals("Named", StringComparison.OrdinalIgnoreCase) && !int.TryParse(position, out _))
                    throw new HelpFormatException(file, LineOf("Position"), $"-{name}: 'Position' must be Named or a number (got '{position}')");
                var pipeline = Get("Accept pipeline input", "False");
                if (!PipelineInput.IsMatch(pipeline))
                    throw new HelpFormatException(file, LineOf("Accept pipeline input"), $"-{name}: 'Accept pipeline input' must be False or True (ByValue, ByPropertyName)");
                var required = Bool("Required");
                var wildcards = Bool("Accept wildcard characters");
                var blockSets = SplitList(Get("Parameter Sets", ParameterHelp.AllSets))
                    .Select(x => x == SyntaxHelp.DefaultSetName ? ParameterHelp.AllSets : x).ToList();

                if (param is null)
                {
                    var defaultValue = Get("Default value", "None");
                    param = new ParameterHelp(name, type, BodyText(description), [], SplitList(Get("Aliases", "")), required, position,
                        defaultValue.Equals("None", StringComparison.OrdinalIgnoreCase) ? null : defaultValue, pipeline, wildcards)
                    {
                        AcceptedValues = SplitList(Get("Accepted values", "")),
                    };
                }
                else if (!string.Equals(param.Type, type, StringComparison.OrdinalIgnoreCase))
                    throw new HelpFormatException(file, LineOf("Type"), $"-{name}: Type differs between yaml blocks ('{param.Type}' vs '{type}')");

                foreach (var set in blockSets)
                {
                    if (!perSet.TryAdd(set, (required, position)))
                        throw new HelpFormatException(file, LineOf("Parameter Sets"), $"-{name}: parameter set '{set}' is listed in more than one yaml block");
                    sets.Add(set);
                }
            }
            result.Add(param! with { ParameterSets = sets, PerSet = perSet });
        }
        return (result, lines, common);
    }

    private static Dictionary<string, (string Value, int Line)> ParseYaml(Block yaml, string file)
    {
        var values = new Dictionary<string, (string, int)>(StringComparer.OrdinalIgnoreCase);
        var rows = yaml.Text.Split('\n');
        for (var i = 0; i < rows.Length; i++)
        {
            var line = yaml.Line + 1 + i;
            if (rows[i].Trim().Length == 0) continue;
            var colon = rows[i].IndexOf(':');
            if (colon <= 0) throw new HelpFormatException(file, line, "expected 'Key: value' in parameter yaml");
            var key = YamlKeys.FirstOrDefault(k => k.Equals(rows[i][..colon].Trim(), StringComparison.OrdinalIgnoreCase))
                ?? throw new HelpFormatException(file, line, $"unknown parameter yaml key '{rows[i][..colon].Trim()}' (expected one of: {string.Join(", ", YamlKeys)})");
            if (!values.TryAdd(key, (rows[i][(colon + 1)..].Trim(), line)))
                throw new HelpFormatException(file, line, $"duplicate yaml key '{key}'");
        }
        return values;
    }

    private static List<(string Text, string? Uri)> ParseLinks(Section section, string file)
    {
        var links = new List<(string, string?)>();
        foreach (var b in section.Body)
        {
            if (b.Kind != Kind.Para) throw new HelpFormatException(file, b.Line, "'## RELATED LINKS' may only contain '[text](uri)' lines");
            for (var i = 0; i < b.Lines.Count; i++)
            {
                var m = Link.Match(b.Lines[i].Trim());
                if (!m.Success) throw new HelpFormatException(file, b.Line + i, $"expected a '[text](uri)' link, got '{b.Lines[i].Trim()}'");
                links.Add((Unescape(m.Groups["text"].Value), m.Groups["uri"].Value is { Length: > 0 } uri ? uri : null));
            }
        }
        return links;
    }

    private static List<string> SplitList(string value) =>
        value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToList();
}
