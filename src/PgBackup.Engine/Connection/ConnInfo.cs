using System.Text;

namespace PgBackup.Engine.Connection;

/// <summary>libpq's keyword=value connection strings, as primary_conninfo and pgbouncer.ini's [databases] hold them.</summary>
public static class ConnInfo
{
    /// <summary>libpq's keyword=value connection string: values bare or in single quotes, with backslash escapes.</summary>
    public static List<KeyValuePair<string, string>> Parse(string conninfo)
    {
        var parts = new List<KeyValuePair<string, string>>();
        var i = 0;
        while (true)
        {
            while (i < conninfo.Length && char.IsWhiteSpace(conninfo[i])) i++;
            if (i == conninfo.Length) return parts;
            var equals = conninfo.IndexOf('=', i);
            if (equals < 0) throw new FormatException($"'{conninfo[i..]}' is not keyword=value.");
            var key = conninfo[i..equals].Trim();
            i = equals + 1;
            while (i < conninfo.Length && char.IsWhiteSpace(conninfo[i])) i++;
            var value = new StringBuilder();
            if (i < conninfo.Length && conninfo[i] == '\'')
            {
                for (i++; ; i++)
                {
                    if (i == conninfo.Length) throw new FormatException($"The value of '{key}' has no closing quote.");
                    if (conninfo[i] == '\'') { i++; break; }
                    if (conninfo[i] == '\\' && i + 1 < conninfo.Length) i++;
                    value.Append(conninfo[i]);
                }
            }
            else
                for (; i < conninfo.Length && !char.IsWhiteSpace(conninfo[i]); i++)
                {
                    if (conninfo[i] == '\\' && i + 1 < conninfo.Length) i++;
                    value.Append(conninfo[i]);
                }
            parts.Add(new(key, value.ToString()));
        }
    }

    /// <summary>Keyword=value pairs joined back into a connection string, every value quoted.</summary>
    public static string Format(IEnumerable<KeyValuePair<string, string>> parts) =>
        string.Join(" ", parts.Select(p => p.Key + "=" + ConnectionTarget.QuoteConnInfoValue(p.Value)));
}
