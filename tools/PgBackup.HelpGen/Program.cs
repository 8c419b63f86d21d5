using System.Text.RegularExpressions;

namespace PgBackup.HelpGen;

public static class Program
{
    /// <summary>Usage: PgBackup.HelpGen &lt;markdownFolder&gt; &lt;outputXml&gt;. Exit 0 ok, 1 bad markdown, 2 bad usage.</summary>
    public static int Main(string[] args)
    {
        if (args.Length != 2)
        {
            Console.Error.WriteLine("usage: PgBackup.HelpGen <markdownFolder> <outputXml>");
            return 2;
        }
        var (folder, output) = (args[0], args[1]);
        if (!Directory.Exists(folder))
        {
            Console.Error.WriteLine($"{folder}: markdown folder not found");
            return 2;
        }

        var commands = new List<CommandHelp>();
        var failed = false;
        foreach (var file in Directory.GetFiles(folder, "*.md").Order(StringComparer.Ordinal))
        {
            // about_*.md topics and the module page (New-MarkdownHelp -WithModulePage) are not cmdlet help.
            if (Path.GetFileName(file).StartsWith("about_", StringComparison.OrdinalIgnoreCase)
                || Regex.IsMatch(File.ReadAllText(file), @"^Module Guid:", RegexOptions.Multiline))
                continue;
            try
            {
                var help = HelpMarkdownParser.ParseFile(file);
                if (commands.Find(c => string.Equals(c.Name, help.Name, StringComparison.OrdinalIgnoreCase)) is { } other)
                    throw new HelpFormatException(file, 1, $"command '{help.Name}' is also documented in {other.SourceFile}");
                commands.Add(help);
            }
            catch (HelpFormatException e)
            {
                Console.Error.WriteLine(e.Message);
                failed = true;
            }
        }

        if (failed) return 1;
        if (commands.Count == 0)
        {
            Console.Error.WriteLine($"{folder}: no cmdlet markdown files found");
            return 1;
        }
        MamlWriter.Write(commands, output);
        Console.WriteLine($"Wrote help for {commands.Count} command(s) to {output}");
        return 0;
    }
}
