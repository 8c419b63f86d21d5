#Requires -Version 7.4
<#
.SYNOPSIS
    Builds, tests, documents and packages the PgBackup module.

.DESCRIPTION
    Build    dotnet build PgBackup.sln: lays out out/PgBackup/<version>/ (psd1, dlls, Dependencies/, format file, en-US
             with the MAML help generated from docs/help by tools/PgBackup.HelpGen).
    Test     Build, dotnet test (unless -SkipDotnetTests), then the Pester 5 suites in tests/pester, in a fresh
             `pwsh -NoProfile -NonInteractive` process (a loaded module's assemblies cannot be unloaded) that imports the
             module just built (PGBACKUP_MODULE_PATH).
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
    Test runs only the Pester suites, for callers (such as scripts/test.sh) that have already run dotnet test.

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

function Invoke-TestTask {
    Invoke-BuildTask
    if ($SkipDotnetTests) { Write-Step 'dotnet test skipped (-SkipDotnetTests)' }
    else { Invoke-Native -FilePath 'dotnet' -ArgumentList @('test', $Solution, '-c', $Configuration, '--no-build') }

    $pester = Get-Module -ListAvailable -Name Pester | Where-Object { $_.Version -ge [version] '5.0' } |
        Sort-Object -Property Version -Descending | Select-Object -First 1
    if (-not $pester) {
        Write-Host 'Pester 5 or later is not installed, so the suites in tests/pester cannot run. Install it with:' -ForegroundColor Yellow
        Write-Host '    Install-Module Pester -MinimumVersion 5.0 -Scope CurrentUser' -ForegroundColor Yellow
        Write-Host '(on Windows, where Pester 3.4 ships with the system, add -Force -SkipPublisherCheck), then run ./build.ps1 -Task Test again.' -ForegroundColor Yellow
        throw 'Pester 5 or later is required for the Test task.'
    }
    Write-Step "Pester $($pester.Version) from $($pester.ModuleBase)"

    $testsPath = Join-Path $RepositoryRoot 'tests' 'pester'
    # -CI writes testResults.xml to the current folder: keep it out of the source tree.
    $resultsFolder = Join-Path $RepositoryRoot 'out' 'pester'
    $null = New-Item -ItemType Directory -Path $resultsFolder -Force
    $childScript = @(
        "`$ErrorActionPreference = 'Stop'"
        "Import-Module -Name Pester -MinimumVersion 5.0"
        "Set-Location -LiteralPath $(ConvertTo-SingleQuoted $resultsFolder)"
        "Invoke-Pester -Path $(ConvertTo-SingleQuoted $testsPath) -Output Detailed -CI"
    ) -join [System.Environment]::NewLine
    $pwsh = Join-Path $PSHOME $(if ($IsWindows) { 'pwsh.exe' } else { 'pwsh' })
    $pwshArguments = @('-NoProfile', '-NonInteractive')
    if ($IsWindows) { $pwshArguments += @('-ExecutionPolicy', 'Bypass') }
    # -EncodedCommand: the script reaches the child intact, whatever quotes or spaces its paths hold.
    $pwshArguments += @('-EncodedCommand', [System.Convert]::ToBase64String([System.Text.Encoding]::Unicode.GetBytes($childScript)))

    $previous = $env:PGBACKUP_MODULE_PATH
    $env:PGBACKUP_MODULE_PATH = $Manifest
    try {
        $display = "PGBACKUP_MODULE_PATH=$Manifest $pwsh $(($pwshArguments | Select-Object -SkipLast 1) -join ' ') <<`n    $($childScript -replace "`r?`n", "`n    ")"
        Invoke-Native -FilePath $pwsh -ArgumentList $pwshArguments -Display $display `
            -FailureMessage "The Pester suites failed; see the output above and $(Join-Path $resultsFolder 'testResults.xml')"
    }
    finally { $env:PGBACKUP_MODULE_PATH = $previous }
    Write-Step "Pester results: $(Join-Path $resultsFolder 'testResults.xml')"
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
