#Requires -Version 7.4
<#
.SYNOPSIS
    Builds, tests, documents and packages the PgBackup module.

.DESCRIPTION
    Build    dotnet build PgBackup.sln: lays out out/PgBackup/<version>/ (psd1, dlls, Dependencies/, format file, en-US
             with the MAML help generated from docs/help by tools/PgBackup.HelpGen).
    Test     Build, dotnet test (the engine tests; unless -SkipDotnetTests), then the Pester 5 suites in tests/pester
             (every cmdlet's behaviour, the conventions and the fault matrix) in a fresh
             `pwsh -NoProfile -NonInteractive -OutputFormat Text` process (a loaded module's assemblies cannot be unloaded)
             that imports the module just built. Both suites run even when one fails; the run ends with their summaries
             and fails when either failed.
    Docs     Regenerates only the MAML help (en-US/PgBackup.dll-Help.xml) from docs/help.
    Package  Build, then out/package/<version>/PgBackup.zip for Azure Automation: a folder named PgBackup at the zip
             root with the module in it, no version folder, and the zip named like the module, as
             New-AzAutomationModule requires ("the name of the .zip file, the name of the folder, and the name of the
             file in the folder must be the same"; "do not include a version folder").
    All      Build, Docs, Test, Package.

    Every step prints what it runs; a native command that fails (non-zero exit code) fails the script.

.PARAMETER Task
    What to do: Build (default), Test, Docs, Package or All.

.PARAMETER Configuration
    The dotnet build configuration, Release (default) or Debug. Both lay out the same out/PgBackup/<version>/ folder.

.PARAMETER SkipDotnetTests
    Test runs only the Pester suites, for a quicker round while working on cmdlets.

.EXAMPLE
    ./build.ps1 -Task Test

.EXAMPLE
    ./build.ps1 -Task Package -Configuration Release
#>
[CmdletBinding()]
param(
    [ValidateSet('Build', 'Test', 'Docs', 'Package', 'All')]
    [string] $Task = 'Build',

    [ValidateSet('Debug', 'Release')]
    [string] $Configuration = 'Release',

    [switch] $SkipDotnetTests
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
# In a CI log or a file, colours would be escape sequences.
if ([Console]::IsOutputRedirected) { $PSStyle.OutputRendering = 'PlainText' }
# Native commands are checked through $LASTEXITCODE below, with a message naming the command that failed.
$PSNativeCommandUseErrorActionPreference = $false

$RepositoryRoot = $PSScriptRoot
$Solution = Join-Path $RepositoryRoot 'PgBackup.sln'

function Get-ModuleVersion {
    $propsPath = Join-Path $RepositoryRoot 'Directory.Build.props'
    $props = [xml] (Get-Content -LiteralPath $propsPath -Raw)
    $node = $props.SelectSingleNode("//*[local-name()='ModuleVersion']")
    if ($null -eq $node -or [string]::IsNullOrWhiteSpace($node.InnerText)) { throw "No <ModuleVersion> found in $propsPath." }
    $node.InnerText.Trim()
}

$ModuleVersion = Get-ModuleVersion
$ModuleFolder = Join-Path $RepositoryRoot 'out' 'PgBackup' $ModuleVersion
$Manifest = Join-Path $ModuleFolder 'PgBackup.psd1'
$script:Built = $false

function Format-CommandLine {
    param([string] $FilePath, [string[]] $ArgumentList = @())
    @(@($FilePath) + $ArgumentList | ForEach-Object {
            if ($_ -eq '' -or $_ -match '[\s"'']') { '"' + ($_ -replace '"', '\"') + '"' } else { $_ }
        }) -join ' '
}

function Write-Step {
    param([string] $Text)
    Write-Host "==> $Text" -ForegroundColor Cyan
}

function Invoke-Native {
    # Runs a native command with its output going straight through, and fails when it exits non-zero.
    param(
        [Parameter(Mandatory)] [string] $FilePath,
        [string[]] $ArgumentList = @(),
        # What to print instead of the plain command line.
        [string] $Display,
        # What to say when the command fails, instead of "'<command line>' failed".
        [string] $FailureMessage
    )
    $commandLine = Format-CommandLine -FilePath $FilePath -ArgumentList $ArgumentList
    Write-Step $(if ($Display) { $Display } else { $commandLine })
    & $FilePath @ArgumentList
    if ($LASTEXITCODE -ne 0) {
        if ($FailureMessage) { throw "$FailureMessage (exit code $LASTEXITCODE)." }
        throw "'$commandLine' failed with exit code $LASTEXITCODE."
    }
}

function ConvertTo-SingleQuoted {
    param([string] $Value)
    "'" + $Value.Replace("'", "''") + "'"
}

function Invoke-BuildTask {
    if ($script:Built) { return }
    Invoke-Native -FilePath 'dotnet' -ArgumentList @('build', $Solution, '-c', $Configuration)
    if (-not (Test-Path -LiteralPath $Manifest -PathType Leaf)) {
        throw "The build succeeded but did not lay out $Manifest; check the AssembleModule target of src/PgBackup/PgBackup.csproj."
    }
    $script:Built = $true
    Write-Step "Module: $ModuleFolder"
}

function Invoke-DotnetTest {
    # dotnet test of the solution (the engine tests). Its output streams through; the summary line of each test assembly
    # ("Passed!  - Failed: 0, Passed: 180, ...") is kept for the summary at the end of the run.
    $arguments = @('test', $Solution, '-c', $Configuration, '--no-build', '-nologo')
    Write-Step (Format-CommandLine -FilePath 'dotnet' -ArgumentList $arguments)
    $summaries = [System.Collections.Generic.List[string]]::new()
    & dotnet @arguments 2>&1 | ForEach-Object {
        $line = "$_"
        if ($line -match '^\s*(Passed|Failed)!\s+-') { $summaries.Add($line.Trim()) }
        $line
    } | Out-Host
    $exitCode = $LASTEXITCODE
    if ($summaries.Count -eq 0) { $summaries.Add("$(if ($exitCode -eq 0) { 'Passed!' } else { 'Failed!' })  - dotnet test exited with code $exitCode without a test summary; see the output above.") }
    [pscustomobject]@{ Succeeded = $exitCode -eq 0; ExitCode = $exitCode; Summaries = $summaries.ToArray() }
}

function Invoke-PesterSuites {
    # The Pester suites in a fresh pwsh (a loaded module's assemblies cannot be unloaded). -OutputFormat Text: when this
    # script's output goes to a file or a pipe (CI, | tee), the child would otherwise write its information, warning and
    # progress records as CLIXML.
    $pester = Get-Module -ListAvailable -Name Pester | Where-Object { $_.Version -ge [version] '5.0' -and $_.Version -lt [version] '6.0' } |
        Sort-Object -Property Version -Descending | Select-Object -First 1
    if (-not $pester) {
        throw ('Pester 5 is not installed, so the suites in tests/pester cannot run. Run scripts/prerequisites.sh (it installs ' +
            'Pester 5.9.1 from NuGet), or Install-Module Pester -MaximumVersion 5.99 -Scope CurrentUser (on Windows, where Pester ' +
            '3.4 ships with the system, add -Force -SkipPublisherCheck), then run ./build.ps1 -Task Test again.')
    }
    Write-Step "Pester $($pester.Version) from $($pester.ModuleBase)"

    $testsPath = Join-Path $RepositoryRoot 'tests' 'pester'
    # -CI writes testResults.xml to the current folder: keep it out of the source tree.
    $resultsFolder = Join-Path $RepositoryRoot 'out' 'pester'
    $resultsFile = Join-Path $resultsFolder 'testResults.xml'
    $null = New-Item -ItemType Directory -Path $resultsFolder -Force
    Remove-Item -LiteralPath $resultsFile -Force -ErrorAction SilentlyContinue
    $childScript = @(
        "`$ErrorActionPreference = 'Stop'"
        "if ([Console]::IsOutputRedirected) { `$PSStyle.OutputRendering = 'PlainText' }"
        "Import-Module -Name $(ConvertTo-SingleQuoted $pester.Path)"
        "Set-Location -LiteralPath $(ConvertTo-SingleQuoted $resultsFolder)"
        "Invoke-Pester -Path $(ConvertTo-SingleQuoted $testsPath) -Output Detailed -CI"
    ) -join [System.Environment]::NewLine
    $pwsh = Join-Path $PSHOME $(if ($IsWindows) { 'pwsh.exe' } else { 'pwsh' })
    $pwshArguments = @('-NoProfile', '-NonInteractive', '-OutputFormat', 'Text')
    if ($IsWindows) { $pwshArguments += @('-ExecutionPolicy', 'Bypass') }
    # -EncodedCommand: the script reaches the child intact, whatever quotes or spaces its paths hold.
    $pwshArguments += @('-EncodedCommand', [System.Convert]::ToBase64String([System.Text.Encoding]::Unicode.GetBytes($childScript)))

    Write-Step "$pwsh $(($pwshArguments | Select-Object -SkipLast 1) -join ' ') <<`n    $($childScript -replace "`r?`n", "`n    ")"
    & $pwsh @pwshArguments | Out-Host
    $exitCode = $LASTEXITCODE
    $summary = if (Test-Path -LiteralPath $resultsFile -PathType Leaf) {
        $run = ([xml] (Get-Content -LiteralPath $resultsFile -Raw)).'test-results'
        $failed = [int] $run.failures + [int] $run.errors
        $passed = [int] $run.total - $failed - [int] $run.'not-run' - [int] $run.skipped - [int] $run.ignored - [int] $run.inconclusive
        "$(if ($exitCode -eq 0) { 'Passed!' } else { 'Failed!' })  - Failed: $failed, Passed: $passed, Skipped: $([int] $run.skipped + [int] $run.ignored), NotRun: $([int] $run.'not-run'), Total: $($run.total) - Pester $($pester.Version), tests/pester ($resultsFile)"
    }
    else { "Failed!  - Pester wrote no results (exit code $exitCode): it did not get to run the suites; see the output above." }
    [pscustomobject]@{ Succeeded = $exitCode -eq 0; ExitCode = $exitCode; Summaries = @($summary) }
}

function Invoke-TestTask {
    Invoke-BuildTask
    # Both suites run even when the first fails, so one run shows everything that is broken; the summary comes last.
    $results = [System.Collections.Generic.List[object]]::new()
    if ($SkipDotnetTests) { Write-Step 'dotnet test skipped (-SkipDotnetTests)' }
    else { $results.Add((Invoke-DotnetTest)) }
    $results.Add((Invoke-PesterSuites))

    Write-Step 'Summary'
    foreach ($line in $results.Summaries) { Write-Host "    $line" }
    $failures = @($results | Where-Object { -not $_.Succeeded })
    if ($failures.Count -gt 0) {
        Write-Host "$($failures.Count) of $($results.Count) test suites failed; their output above says which tests and why."
        exit 1
    }
}

function Invoke-DocsTask {
    $helpFolder = Join-Path $ModuleFolder 'en-US'
    $null = New-Item -ItemType Directory -Path $helpFolder -Force
    Invoke-Native -FilePath 'dotnet' -ArgumentList @(
        'run', '--project', (Join-Path $RepositoryRoot 'tools' 'PgBackup.HelpGen'), '-c', $Configuration, '--',
        (Join-Path $RepositoryRoot 'docs' 'help'), (Join-Path $helpFolder 'PgBackup.dll-Help.xml'))
}

function Invoke-PackageTask {
    Invoke-BuildTask
    $packageFolder = Join-Path $RepositoryRoot 'out' 'package' $ModuleVersion
    $staging = Join-Path $packageFolder 'PgBackup'
    $zip = Join-Path $packageFolder 'PgBackup.zip'
    if (Test-Path -LiteralPath $packageFolder) {
        Write-Step "Remove-Item $packageFolder -Recurse"
        Remove-Item -LiteralPath $packageFolder -Recurse -Force
    }
    $null = New-Item -ItemType Directory -Path $packageFolder
    Write-Step "Copy-Item $ModuleFolder $staging -Recurse"
    Copy-Item -LiteralPath $ModuleFolder -Destination $staging -Recurse
    Write-Step "Compress-Archive -LiteralPath $staging -DestinationPath $zip"
    Compress-Archive -LiteralPath $staging -DestinationPath $zip -CompressionLevel Optimal -Force
    Remove-Item -LiteralPath $staging -Recurse -Force

    # Azure Automation finds the module as PgBackup/PgBackup.psd1 inside PgBackup.zip.
    Add-Type -AssemblyName System.IO.Compression.ZipFile
    $archive = [System.IO.Compression.ZipFile]::OpenRead($zip)
    try { $entries = @($archive.Entries | ForEach-Object { $_.FullName.Replace('\', '/') }) }
    finally { $archive.Dispose() }
    if ('PgBackup/PgBackup.psd1' -notin $entries) {
        throw "$zip does not hold PgBackup/PgBackup.psd1; its entries: $($entries -join ', ')"
    }
    Write-Step "Package: $zip ($($entries.Count) entries, module version $ModuleVersion)"
}

Push-Location -LiteralPath $RepositoryRoot
try {
    switch ($Task) {
        'Build' { Invoke-BuildTask }
        'Test' { Invoke-TestTask }
        'Docs' { Invoke-DocsTask }
        'Package' { Invoke-PackageTask }
        'All' {
            Invoke-BuildTask
            Invoke-DocsTask
            Invoke-TestTask
            Invoke-PackageTask
        }
    }
}
finally { Pop-Location }
