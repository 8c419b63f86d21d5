using System.Management.Automation;
using System.Runtime.Loader;
using System.Xml.Linq;
using PgBackup.HelpGen;

namespace PgBackup.Module.Tests;

/// <summary>Checks every exported cmdlet against the module's conventions, as dbatools does for all of its commands.</summary>
[Collection("module")]
public sealed class ConventionTests(ModuleFixture fx)
{
    public static TheoryData<string> Cmdlets => new(CompiledCmdlets());

    /// <summary>The cmdlets this test suite knows; a new cmdlet fails the export test until it is added here (and so gets all checks below).</summary>
    private static string[] CompiledCmdlets() => ["Disable-PgWalArchiving", "Enable-PgWalArchiving", "Get-PgBackup", "Get-PgBackupConfig", "Get-PgReplicationStatus", "Get-PgWalArchive", "Invoke-PgDump", "Invoke-PgRecoveryDrill", "Join-PgStandby", "New-PgStandby", "Remove-PgBackup", "Remove-PgInstance", "Restore-PgDump", "Restore-PgPointInTime", "Set-PgSynchronousStandby", "Start-PgBaseBackup", "Start-PgInstance", "Stop-PgInstance", "Switch-PgPrimary", "Test-PgBackup", "Test-PgReplication", "Wait-PgReplication"];

    private CommandInfo Command(string name) => (CommandInfo)fx.Shell.Run("Get-Command $n -Module PgBackup", ("n", name)).AssertNoErrors().Output.Single().BaseObject;

    [Fact]
    public void The_manifest_exports_exactly_the_compiled_cmdlets_and_this_list_is_complete()
    {
        var exported = fx.Shell.Run("(Get-Module PgBackup).ExportedCmdlets.Keys").Output.Select(o => o.ToString()).Order().ToArray();
        var compiled = fx.Shell.Run("(Get-Module PgBackup).ImplementingAssembly.GetTypes() | Where-Object { $_.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false) } | ForEach-Object { $a = $_.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0]; \"$($a.VerbName)-$($a.NounName)\" }")
            .AssertNoErrors().Output.Select(o => o.ToString()).Order().ToArray();
        Assert.Equal(compiled, exported);
        Assert.Equal(CompiledCmdlets().Order(), compiled);
    }

    [Fact]
    public void The_module_version_matches_its_folder_and_the_build()
    {
        var version = fx.Shell.Run("(Get-Module PgBackup).Version.ToString()").Output[0].ToString();
        Assert.Equal(Path.GetFileName(ModuleLayout.ModuleFolder), version);
        Assert.Contains($"<ModuleVersion>{version}</ModuleVersion>", File.ReadAllText(Path.Combine(ModuleLayout.RepositoryRoot, "Directory.Build.props")));
    }

    [Fact]
    public void The_engine_and_npgsql_load_into_the_private_context_and_result_types_are_public()
    {
        fx.Shell.Run("Get-PgBackupConfig -Name Repository").AssertNoErrors();
        var context = Assert.Single(AssemblyLoadContext.All, c => c.Name == "PgBackup.Dependencies");
        Assert.Contains(context.Assemblies, a => a.GetName().Name == "PgBackup.Engine");
        Assert.Contains(context.Assemblies, a => a.GetName().Name == "Microsoft.Extensions.Configuration");
        Assert.DoesNotContain(AssemblyLoadContext.Default.Assemblies, a => a.GetName().Name is "PgBackup.Engine" or "Npgsql");
        Assert.Equal("PgBackup.DumpBackup", fx.Shell.Run("[PgBackup.DumpBackup].FullName").AssertNoErrors().Output[0].ToString());
        Assert.True(File.Exists(Path.Combine(ModuleLayout.ModuleFolder, "Dependencies", "Npgsql.dll")));
        Assert.False(File.Exists(Path.Combine(ModuleLayout.ModuleFolder, "Npgsql.dll")));
    }

    [Theory]
    [MemberData(nameof(Cmdlets))]
    public void Every_cmdlet_declares_its_output_and_has_a_format_view_for_it(string name)
    {
        var command = Command(name);
        var outputs = command.OutputType.Select(t => t.Name).Where(n => n.StartsWith("PgBackup.", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(command.OutputType);
        var format = XDocument.Load(Path.Combine(ModuleLayout.ModuleFolder, "PgBackup.Format.ps1xml"));
        var viewed = format.Descendants("TypeName").Select(t => t.Value).ToHashSet();
        Assert.All(outputs, o => Assert.Contains(o, viewed));
    }

    [Theory]
    [MemberData(nameof(Cmdlets))]
    public void Every_cmdlet_that_changes_something_supports_ShouldProcess(string name)
    {
        var command = (CmdletInfo)Command(name);
        var attribute = (CmdletAttribute)command.ImplementingType.GetCustomAttributes(typeof(CmdletAttribute), false)[0];
        if (OnlyReads(name)) Assert.False(attribute.SupportsShouldProcess, name + " only reads");
        else Assert.True(attribute.SupportsShouldProcess, name + " changes files or servers");
    }

    [Theory]
    [MemberData(nameof(Cmdlets))]
    public void Every_cmdlet_has_complete_help_from_the_maml(string name)
    {
        var help = fx.Shell.Run("Get-Help $n -Full", ("n", name)).AssertNoErrors().Output.Single();
        Assert.Contains(help.TypeNames, t => t.StartsWith("MamlCommandHelpInfo", StringComparison.Ordinal));
        var synopsis = help.Properties["Synopsis"].Value?.ToString();
        Assert.False(string.IsNullOrWhiteSpace(synopsis));
        Assert.DoesNotContain(name + " [", synopsis); // PowerShell's generated stub repeats the syntax as synopsis
        Assert.NotEmpty(Texts(help.Properties["description"].Value));

        var documented = Items(((PSObject)help.Properties["parameters"].Value).Properties["parameter"].Value)
            .Select(p => (PSObject)p).ToDictionary(p => p.Properties["name"].Value.ToString()!, p => string.Join(" ", Texts(p.Properties["description"]?.Value)));
        foreach (var parameter in RealParameters(name))
        {
            Assert.True(documented.ContainsKey(parameter), $"{name} -{parameter} has no help");
            Assert.False(string.IsNullOrWhiteSpace(documented[parameter]), $"{name} -{parameter} has an empty description");
        }
        var examples = fx.Shell.Run("(Get-Help $n -Examples).examples.example", ("n", name)).AssertNoErrors().Output;
        Assert.NotEmpty(examples);
        Assert.All(examples, e => Assert.Contains(name, e.Properties["code"].Value.ToString()));
    }

    [Theory]
    [MemberData(nameof(Cmdlets))]
    public void The_markdown_the_maml_and_the_real_parameters_agree(string name)
    {
        var markdown = HelpMarkdownParser.ParseFile(Path.Combine(ModuleLayout.RepositoryRoot, "docs", "help", name + ".md"));
        Assert.Equal(RealParameters(name).Order(), markdown.Parameters.Select(p => p.Name).Order());
        var command = Command(name);
        foreach (var documented in markdown.Parameters)
        {
            var real = command.Parameters[documented.Name];
            Assert.True(real.ParameterSets.Keys.Count > 0);
            var realSets = real.ParameterSets.Keys.Where(k => k != "__AllParameterSets").Order().ToList();
            if (realSets.Count > 0 && !documented.ParameterSets.Contains("(All)"))
                Assert.Equal(realSets, documented.ParameterSets.Order().ToList());
            var mandatory = real.ParameterSets.Values.Any(s => s.IsMandatory);
            Assert.True(mandatory == documented.Required, $"{name} -{documented.Name}: Required is {documented.Required} in the markdown, {mandatory} in the code");
            var wildcards = real.Attributes.OfType<SupportsWildcardsAttribute>().Any();
            Assert.True(wildcards == documented.AcceptWildcardCharacters, $"{name} -{documented.Name}: Accept wildcard characters is {documented.AcceptWildcardCharacters} in the markdown, {wildcards} in the code");
            var byValue = real.ParameterSets.Values.Any(s => s.ValueFromPipeline);
            var byName = real.ParameterSets.Values.Any(s => s.ValueFromPipelineByPropertyName);
            Assert.True(byValue == documented.AcceptPipelineInput.Contains("ByValue") && byName == documented.AcceptPipelineInput.Contains("ByPropertyName"),
                $"{name} -{documented.Name}: Accept pipeline input is '{documented.AcceptPipelineInput}' in the markdown; the code says ByValue={byValue}, ByPropertyName={byName}");
        }
        var maml = XDocument.Load(Path.Combine(ModuleLayout.ModuleFolder, "en-US", "PgBackup.dll-Help.xml"));
        XNamespace command_ = "http://schemas.microsoft.com/maml/dev/command/2004/10";
        XNamespace maml_ = "http://schemas.microsoft.com/maml/2004/10";
        var entry = maml.Descendants(command_ + "command").Single(c => c.Element(command_ + "details")!.Element(command_ + "name")!.Value == name);
        var mamlParameters = entry.Element(command_ + "parameters")!.Elements(command_ + "parameter").Select(p => p.Element(maml_ + "name")!.Value).Order();
        Assert.Equal(markdown.Parameters.Select(p => p.Name).Order(), mamlParameters);
    }

    [Theory]
    [MemberData(nameof(Cmdlets))]
    public void Every_cmdlet_has_module_tests_and_a_pester_suite(string name)
    {
        var testsFolder = Path.Combine(ModuleLayout.RepositoryRoot, "tests");
        var moduleTests = Directory.GetFiles(Path.Combine(testsFolder, "PgBackup.Module.Tests"), "*Tests.cs").Where(f => !f.EndsWith("ConventionTests.cs")).Select(File.ReadAllText);
        Assert.Contains(moduleTests, t => t.Contains(name + " "));
        var pester = Directory.GetFiles(Path.Combine(testsFolder, "pester"), "*.Tests.ps1").Select(File.ReadAllText);
        Assert.Contains(pester, t => t.Contains(name + " "));
    }

    [Fact]
    public void There_is_an_about_topic()
    {
        var about = fx.Shell.Run("Get-Help about_PgBackup").AssertNoErrors().Output;
        Assert.Contains("PgBackup", string.Join("\n", about.Select(o => o.ToString())));
    }

    /// <summary>Cmdlets that change nothing anywhere: no ShouldProcess for them.</summary>
    private static bool OnlyReads(string name) => name.StartsWith("Get-", StringComparison.Ordinal) || name is "Test-PgReplication" or "Wait-PgReplication";

    private IEnumerable<string> RealParameters(string name) =>
        Command(name).Parameters.Keys.Where(k => !Cmdlet.CommonParameters.Contains(k) && !Cmdlet.OptionalCommonParameters.Contains(k) || k is "WhatIf" or "Confirm");

    /// <summary>Help properties hold one object or an array of them, as PowerShell's help objects do.</summary>
    private static IEnumerable<object> Items(object? value) =>
        value == null ? [] : LanguagePrimitives.GetEnumerable(value)?.Cast<object>() ?? [value];

    private static List<string> Texts(object? value) =>
        value == null ? [] : LanguagePrimitives.GetEnumerable(value) is { } items
            ? items.Cast<object>().Select(i => (i as PSObject)?.Properties["Text"]?.Value?.ToString() ?? i.ToString() ?? "").Where(t => t.Trim().Length > 0).ToList()
            : [value.ToString() ?? ""];
}
