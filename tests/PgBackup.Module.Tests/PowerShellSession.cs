using System.Collections.ObjectModel;
using System.Management.Automation;
using System.Management.Automation.Runspaces;

namespace PgBackup.Module.Tests;

/// <summary>What one script run produced on each stream; a terminating error is caught and kept, not thrown.</summary>
public sealed record RunResult(Collection<PSObject> Output, IReadOnlyList<ErrorRecord> Errors, IReadOnlyList<string> Warnings,
    IReadOnlyList<string> Verbose, IReadOnlyList<ProgressRecord> Progress, IReadOnlyList<InformationRecord> Information, ErrorRecord? Terminating)
{
    public IEnumerable<ErrorRecord> AllErrors => Terminating == null ? Errors : Errors.Append(Terminating);

    public ErrorRecord SingleError()
    {
        var all = AllErrors.ToList();
        Assert.True(all.Count == 1, $"expected one error, got {all.Count}: {string.Join(" | ", all.Select(e => e.FullyQualifiedErrorId + ": " + e))}");
        return all[0];
    }

    public RunResult AssertNoErrors()
    {
        Assert.True(!AllErrors.Any(), "unexpected errors: " + string.Join(Environment.NewLine, AllErrors.Select(e => e.FullyQualifiedErrorId + ": " + e + " " + e.ErrorDetails?.RecommendedAction)));
        return this;
    }

    public T Property<T>(int index, string name) => (T)LanguagePrimitives.ConvertTo(Output[index].Properties[name].Value, typeof(T));
}

/// <summary>
/// A PowerShell 7 runspace (System.Management.Automation, in this process) with the built module imported through its
/// manifest from out/PgBackup/&lt;version&gt;/, exactly as a user imports it.
/// </summary>
public sealed class PowerShellSession : IDisposable
{
    private readonly Runspace _runspace;

    public PowerShellSession()
    {
        var state = InitialSessionState.CreateDefault2();
        _runspace = RunspaceFactory.CreateRunspace(state);
        _runspace.Open();
        Run($"Import-Module '{ModuleLayout.Manifest}' -ErrorAction Stop").AssertNoErrors();
    }

    public RunResult Run(string script, params (string Name, object? Value)[] variables)
    {
        using var ps = PowerShell.Create();
        ps.Runspace = _runspace;
        foreach (var (name, value) in variables) _runspace.SessionStateProxy.SetVariable(name, value);
        ps.AddScript(script);
        Collection<PSObject> output = [];
        ErrorRecord? terminating = null;
        try { output = ps.Invoke(); }
        catch (RuntimeException ex) { terminating = ex.ErrorRecord; }
        return new RunResult(output, [.. ps.Streams.Error], ps.Streams.Warning.Select(w => w.Message).ToList(),
            ps.Streams.Verbose.Select(v => v.Message).ToList(), [.. ps.Streams.Progress], [.. ps.Streams.Information], terminating);
    }

    /// <summary>Starts a script and stops it (as Ctrl+C does) once <paramref name="stopWhen"/> sees a progress record it likes.</summary>
    public (RunResult Result, bool Stopped) RunAndStop(string script, Func<ProgressRecord, bool> stopWhen, TimeSpan timeout)
    {
        using var ps = PowerShell.Create();
        ps.Runspace = _runspace;
        ps.AddScript(script);
        var stop = new ManualResetEventSlim();
        ps.Streams.Progress.DataAdded += (_, e) => { if (stopWhen(ps.Streams.Progress[e.Index])) stop.Set(); };
        var handle = ps.BeginInvoke();
        var stopped = false;
        if (WaitHandle.WaitAny([stop.WaitHandle, handle.AsyncWaitHandle], timeout) == 0)
        {
            ps.Stop();
            stopped = true;
        }
        ErrorRecord? terminating = null;
        Collection<PSObject> output = [];
        try { output = ps.EndInvoke(handle) is { } o ? new Collection<PSObject>(o.ToList()) : []; }
        catch (PipelineStoppedException) { }
        catch (RuntimeException ex) { terminating = ex.ErrorRecord; }
        return (new RunResult(output, [.. ps.Streams.Error], ps.Streams.Warning.Select(w => w.Message).ToList(),
            ps.Streams.Verbose.Select(v => v.Message).ToList(), [.. ps.Streams.Progress], [.. ps.Streams.Information], terminating), stopped);
    }

    public void Dispose() => _runspace.Dispose();
}

public static class ModuleLayout
{
    public static string RepositoryRoot { get; } = FindRoot();

    public static string ModuleFolder
    {
        get
        {
            var folders = Directory.GetDirectories(Path.Combine(RepositoryRoot, "out", "PgBackup"));
            Assert.True(folders.Length == 1, "expected exactly one built module version under out/PgBackup; run dotnet build");
            return folders[0];
        }
    }

    public static string Manifest => Path.Combine(ModuleFolder, "PgBackup.psd1");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PgBackup.sln"))) return dir.FullName;
        throw new InvalidOperationException("PgBackup.sln not found above " + AppContext.BaseDirectory);
    }
}
