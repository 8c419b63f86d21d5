using System.Globalization;
using System.Text;

namespace PgBackup.Engine.Recovery;

/// <summary>The drill report as Markdown, readable as it is and fit to be filed as evidence of the drill.</summary>
public static class DrillReportWriter
{
    public static string Render(DrillReport report)
    {
        var md = new StringBuilder();
        md.Append("# PostgreSQL recovery drill: ").Append(Cell($"{report.Server}:{report.Port}")).Append("\n\n");
        md.Append("**Result: ").Append(report.Passed ? "PASSED" : "FAILED").Append("**\n\n");
        md.Append("| | |\n|---|---|\n");
        Row(md, "Drill started", Time(report.StartTime));
        Row(md, "Drill took", RecoveryDrill.Format(report.Duration));
        Row(md, "Source", $"{report.Server}:{report.Port} (system identifier {report.SystemIdentifier})");
        Row(md, "Repository", report.Repository);
        Row(md, "Base backup", report.BackupId.Length == 0 ? "none" : $"{report.BackupId}, taken {Time(report.BackupTime)}");
        Row(md, "Recovered to", report.RecoveredLsn is { } lsn ? $"LSN {lsn}, last commit {Time(report.RecoveredTime)}" : "not recovered");
        Row(md, "Newest commit on the source", $"{Time(report.SourceNewestCommit)} (LSN {report.SourceLsn})");
        Row(md, "Recovery time (RTO)", Measured(report.Rto, report.RtoObjective, report.RtoMet));
        Row(md, "Recovery point (RPO)", Measured(report.Rpo, report.RpoObjective, report.RpoMet) + (report.RpoBytes is { } bytes ? $", {bytes.ToString("N0", CultureInfo.InvariantCulture)} bytes of WAL" : ""));
        Row(md, "RPO measured as", report.RpoMethod);
        Row(md, "Recovered instance", report.Kept ? $"kept in {report.DataDirectory} on port {report.RecoveredPort}" : "removed after the drill");
        md.Append("\n## Checks\n\n| Check | Result | Detail |\n|---|---|---|\n");
        foreach (var check in report.Checks)
        {
            var detail = check.Detail;
            if (!check.Passed && (check.SourceValue != null || check.RecoveredValue != null))
                detail += $" (source: {check.SourceValue}; recovered: {check.RecoveredValue})";
            md.Append("| ").Append(Cell(check.Name)).Append(" | ").Append(check.Passed ? "pass" : "**FAIL**").Append(" | ").Append(Cell(detail)).Append(" |\n");
        }
        if (report.Failures.Length > 0)
        {
            md.Append("\n## Failures\n\n");
            foreach (var failure in report.Failures) md.Append("- ").Append(failure.Replace("\n", " ", StringComparison.Ordinal)).Append('\n');
        }
        md.Append("\nMeasured by PgBackup Invoke-PgRecoveryDrill ").Append(typeof(DrillReportWriter).Assembly.GetName().Version?.ToString(3)).Append(".\n");
        return md.ToString();
    }

    /// <summary>Writes through a temporary file, so an interrupted write never leaves half a report under the real name.</summary>
    public static void Write(DrillReport report, string path)
    {
        var full = Path.GetFullPath(path);
        var folder = Path.GetDirectoryName(full)!;
        var temporary = Path.Combine(folder, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            Directory.CreateDirectory(folder);
            File.WriteAllText(temporary, Render(report), new UTF8Encoding(false));
            File.Move(temporary, full, overwrite: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            try { File.Delete(temporary); } catch (Exception cleanup) when (cleanup is IOException or UnauthorizedAccessException) { }
            throw new PgBackupException("ReportWriteFailed", ErrorKind.WriteFailed, $"The drill report could not be written to '{full}': {ex.Message}", full,
                "Give -ReportPath a file in a folder this account can write to.", ex);
        }
    }

    private static void Row(StringBuilder md, string name, string value) => md.Append("| ").Append(name).Append(" | ").Append(Cell(value)).Append(" |\n");

    private static string Cell(string text) => text.Replace("|", "\\|", StringComparison.Ordinal).Replace("\r", "", StringComparison.Ordinal).Replace("\n", "<br>", StringComparison.Ordinal);

    private static string Time(DateTimeOffset? time) => time is { } t ? t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss.fff", CultureInfo.InvariantCulture) + " UTC" : "-";

    private static string Measured(TimeSpan? value, TimeSpan? objective, bool? met) =>
        (value is { } v ? RecoveryDrill.Format(v) : "-") + (objective is { } o ? $" (objective {RecoveryDrill.Format(o)}: {(met == true ? "met" : "NOT met")})" : "");
}
