using System.Text;
using System.Text.RegularExpressions;

namespace PgBackup.Engine.Connection;

/// <summary>psql-style name patterns (* and ?, unquoted parts folded to lower case), as pg_dump's -t and -n take them.</summary>
public static class NamePattern
{
    /// <summary>The pattern as an anchored regular expression (quotes doubled, for use inside an SQL literal too).</summary>
    public static string ToRegex(string pattern)
    {
        var sb = new StringBuilder("^");
        var quoted = false;
        foreach (var ch in pattern)
        {
            if (ch == '"') { quoted = !quoted; continue; }
            var c = quoted ? ch : char.ToLowerInvariant(ch);
            sb.Append(c switch { '*' when !quoted => ".*", '?' when !quoted => ".", '\'' => "''", _ => Regex.Escape(c.ToString()) });
        }
        return sb.Append('$').ToString();
    }

    /// <summary>Whether schema.table matches a table pattern (one without a schema matches the table in any schema).</summary>
    public static bool MatchesTable(string pattern, string schema, string table) =>
        Regex.IsMatch(schema + "." + table, ToRegex(pattern.Contains('.') ? pattern : "*." + pattern).Replace("''", "'"));

    public static bool MatchesSchema(string pattern, string schema) => Regex.IsMatch(schema, ToRegex(pattern).Replace("''", "'"));
}
