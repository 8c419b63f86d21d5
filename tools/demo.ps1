#Requires -Version 7.4
<#
.SYNOPSIS
    Runs an example script against a throwaway PostgreSQL with the built module, as a user would in pwsh.
.DESCRIPTION
    Starts a throwaway PostgreSQL cluster (tests/pester/PgBackup.TestCluster.psm1: initdb into a temp folder, a free port
    on 127.0.0.1) with the sample database "shop" (100,000 items), imports the built module, and runs the script with
    -Server and -Repository. What the script returns is shown by the module's own format views, one table per step (as at
    a prompt, where every command's output gets its own table), and the cmdlets' milestones (the Information stream) are
    shown as they happen. The cluster and the repository are removed afterwards.
.PARAMETER Script
    The example to run; examples/first-backup.ps1 by default.
.EXAMPLE
    pwsh -NoProfile -File tools/demo.ps1 examples/point-in-time.ps1
#>
[CmdletBinding()]
param([string] $Script)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$root = Split-Path -Parent $PSScriptRoot
# A terminal's width, or 160 columns when the output goes to a file or a pipe (where pwsh would assume 80), in plain text.
$width = 160
if ([Console]::IsOutputRedirected) { $PSStyle.OutputRendering = 'PlainText' }
else { $width = [Math]::Max(80, $Host.UI.RawUI.BufferSize.Width) }
if (-not $Script) { $Script = Join-Path $root 'examples' 'first-backup.ps1' }
$Script = (Resolve-Path -LiteralPath $Script).ProviderPath
Import-Module (Join-Path $root 'tests' 'pester' 'PgBackup.TestCluster.psm1') -Force

$cluster = $null
$environment = $null
# Not created here: the cmdlets create the repository folder themselves, as they do for a user.
$repository = Join-Path ([System.IO.Path]::GetTempPath()) ('pgbackup-demo-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
try {
    Write-Host "Starting a throwaway PostgreSQL and creating the sample database 'shop' (100,000 items)..."
    $cluster = Start-PgTestCluster -Name demo
    New-PgTestSampleDatabase -Cluster $cluster -Database shop -ItemRows 100000
    $environment = Enter-PgTestEnvironment -Cluster $cluster
    Import-Module (Get-PgBackupModuleManifest)
    Write-Host "Running $([System.IO.Path]::GetRelativePath($root, $Script)) -Server $($cluster.Server) -Repository $repository"
    Write-Host ''
    # Objects of one type in a row make one table; a string (a step's title), a milestone or another type ends it.
    # Out-Default alone would lay out every later type as a list under the first one's table.
    $batch = [System.Collections.Generic.List[object]]::new()
    $flush = {
        if ($batch.Count -gt 0) {
            ($batch | Out-String -Width $width).TrimEnd() | Out-Host
            Write-Host ''
            $batch.Clear()
        }
    }
    & $Script -Server $cluster.Server -Repository $repository 6>&1 | ForEach-Object {
        if ($_ -is [System.Management.Automation.InformationRecord]) { & $flush; Write-Host "  > $($_.MessageData)" }
        elseif ($_ -is [string]) { & $flush; Write-Host $_ }
        else {
            if ($batch.Count -gt 0 -and $batch[0].PSObject.TypeNames[0] -ne $_.PSObject.TypeNames[0]) { & $flush }
            $batch.Add($_)
        }
    }
    & $flush
}
finally {
    Exit-PgTestEnvironment -State $environment
    Stop-PgTestCluster -Cluster $cluster
    if (Test-Path -LiteralPath $repository) { Remove-Item -LiteralPath $repository -Recurse -Force -ErrorAction SilentlyContinue }
}
