#Requires -Version 7.4
<#
.SYNOPSIS
    Throwaway PostgreSQL clusters and small helpers for the PgBackup Pester suites.

.DESCRIPTION
    The one cluster harness of the Pester side (the engine's xUnit tests have tests/PgBackup.Testing), also used by
    tools/demo.ps1:

    - Start-PgTestCluster / Stop-PgTestCluster: initdb into a temp folder, a free port on 127.0.0.1, scram-sha-256
      for TCP, started as the postgres user when running as root on Linux; always removed again.
    - Invoke-PgTestSql, New-PgTestSampleDatabase, Get-PgTestRowCount, Remove-PgTestDatabase: the oracle side.
    - Enter-PgTestEnvironment / Exit-PgTestEnvironment: the process environment a suite runs the module in.
    - New-PgTestRunspace / Invoke-PgTestRunspace: a second runspace, to see progress records and to stop a pipeline
      as Ctrl+C does.
    - New-PgTestTmpfs / Remove-PgTestTmpfs: a full or read-only folder for real (Linux, needs root).
    - Get-PgBackupModuleManifest: the built module the suites import, copied where the server's OS user can run its
      WAL archive tool.
#>

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
# Native commands are checked through $LASTEXITCODE, with messages that say what failed.
$PSNativeCommandUseErrorActionPreference = $false

$script:SuperUser = 'postgres'
$script:HandedOutPorts = [System.Collections.Generic.HashSet[int]]::new()
$script:Repositories = [System.Collections.Generic.List[string]]::new()
$script:Utf8 = [System.Text.UTF8Encoding]::new($false)

#region Locating things

function Get-PgTestRepositoryRoot {
    <# The repository root: the folder above tests/pester that holds PgBackup.sln. #>
    [CmdletBinding()]
    [OutputType([string])]
    param()
    $root = [System.IO.Path]::GetFullPath((Join-Path $PSScriptRoot '..' '..'))
    if (-not (Test-Path -LiteralPath (Join-Path $root 'PgBackup.sln') -PathType Leaf)) {
        throw "PgBackup.sln not found in '$root' (expected two folders above $PSScriptRoot)."
    }
    $root
}

function Get-PgBackupModuleManifest {
    <#
    .SYNOPSIS
        The manifest of the module the suites test: $env:PGBACKUP_MODULE_PATH when set, else a copy of the only
        out/PgBackup/<version>/ of the repository in a folder the database server's OS user can reach.
    .DESCRIPTION
        The server runs the module's WAL archive tool (WalArchive/pgbackup-wal) as its own OS user. A clone may live where
        that user cannot enter (a folder made by mktemp -d, a home folder of mode 0700), and Enable-PgWalArchiving rightly
        refuses a tool the server cannot run (PgBackup.WalToolNotRunnable). So the suites import a copy of the built
        module under <temp>/pgbackup-pester-module/, with every folder on the way readable by all, made once per build
        and process; copies of processes that have ended are removed.
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param()
    if (-not [string]::IsNullOrWhiteSpace($env:PGBACKUP_MODULE_PATH)) {
        if (-not (Test-Path -LiteralPath $env:PGBACKUP_MODULE_PATH -PathType Leaf)) {
            throw "PGBACKUP_MODULE_PATH is '$env:PGBACKUP_MODULE_PATH', but there is no module manifest there. Build with ./build.ps1 -Task Build, or clear PGBACKUP_MODULE_PATH to use the module under out/PgBackup."
        }
        return (Resolve-Path -LiteralPath $env:PGBACKUP_MODULE_PATH).ProviderPath
    }
    $root = Get-PgTestRepositoryRoot
    $pattern = Join-Path $root 'out' 'PgBackup' '*' 'PgBackup.psd1'
    $manifests = @(Get-ChildItem -Path $pattern -File -ErrorAction SilentlyContinue)
    if ($manifests.Count -eq 0) {
        throw "No built module found at $pattern. Run ./build.ps1 -Task Build (or dotnet build PgBackup.sln) first, or set PGBACKUP_MODULE_PATH to a PgBackup.psd1."
    }
    if ($manifests.Count -gt 1) {
        throw "Expected exactly one built module version under $(Join-Path $root 'out' 'PgBackup'), found $($manifests.Count): $($manifests.FullName -join ', '). Delete the old ones, or set PGBACKUP_MODULE_PATH."
    }
    Copy-PgTestModuleWhereServerCanReach -ModuleFolder $manifests[0].Directory.FullName
}

function Copy-PgTestModuleWhereServerCanReach {
    # <temp>/pgbackup-pester-module/<pid>-<build stamp>/PgBackup/<version>/, all folders 0755 and files 0644 (0755 for
    # executables), so the postgres OS user can run WalArchive/pgbackup-wal from it. Returns the copy's manifest.
    param([Parameter(Mandatory)] [string] $ModuleFolder)
    $version = Split-Path -Leaf $ModuleFolder
    $stamp = (Get-Item -LiteralPath (Join-Path $ModuleFolder 'PgBackup.dll')).LastWriteTimeUtc.Ticks
    $base = Join-Path ([System.IO.Path]::GetTempPath()) 'pgbackup-pester-module'
    $copyRoot = Join-Path $base "$PID-$stamp"
    $manifest = Join-Path $copyRoot 'PgBackup' $version 'PgBackup.psd1'
    if (Test-Path -LiteralPath $manifest -PathType Leaf) { return $manifest }

    $null = New-Item -ItemType Directory -Path $base -Force
    foreach ($old in Get-ChildItem -LiteralPath $base -Directory -ErrorAction SilentlyContinue) {
        $owner = 0
        if ($old.Name -match '^(\d+)-' -and [int]::TryParse($Matches[1], [ref] $owner) -and $owner -ne $PID -and
            -not (Get-Process -Id $owner -ErrorAction SilentlyContinue)) {
            Remove-PgTestFolder -Path $old.FullName
        }
    }
    $destination = Join-Path $copyRoot 'PgBackup' $version
    $null = New-Item -ItemType Directory -Path $destination -Force
    Copy-Item -Path (Join-Path $ModuleFolder '*') -Destination $destination -Recurse -Force
    if (-not $IsWindows) {
        $folderMode = [System.IO.UnixFileMode] 'UserRead, UserWrite, UserExecute, GroupRead, GroupExecute, OtherRead, OtherExecute'
        $fileMode = [System.IO.UnixFileMode] 'UserRead, UserWrite, GroupRead, OtherRead'
        $path = $destination
        while ($path.Length -ge $base.Length) {
            [System.IO.File]::SetUnixFileMode($path, $folderMode)
            $path = Split-Path -Parent $path
        }
        foreach ($item in Get-ChildItem -LiteralPath $destination -Recurse -Force) {
            if ($item.PSIsContainer) { [System.IO.File]::SetUnixFileMode($item.FullName, $folderMode) }
            elseif (-not ($item.UnixFileMode -band [System.IO.UnixFileMode]::UserExecute)) { [System.IO.File]::SetUnixFileMode($item.FullName, $fileMode) }
        }
    }
    $manifest
}

function Get-PgTestKnownCmdlet {
    <# The cmdlets the suites know; a new cmdlet fails Module.Tests.ps1 until it is added here (and so gets all its checks). #>
    [CmdletBinding()]
    [OutputType([string])]
    param()
    'Complete-PgLogicalMigration', 'Disable-PgWalArchiving', 'Enable-PgWalArchiving', 'Get-PgBackup', 'Get-PgBackupConfig', 'Get-PgReplicationStatus', 'Get-PgRepository', 'Get-PgWalArchive', 'Invoke-PgDump', 'Invoke-PgRecoveryDrill', 'Join-PgStandby', 'New-PgRepository', 'New-PgStandby', 'Remove-PgBackup', 'Remove-PgInstance', 'Restore-PgDump', 'Restore-PgPointInTime', 'Set-PgRepository', 'Set-PgSynchronousStandby', 'Start-PgBaseBackup', 'Start-PgInstance', 'Start-PgLogicalMigration', 'Stop-PgInstance', 'Stop-PgLogicalMigration', 'Switch-PgPrimary', 'Test-PgBackup', 'Test-PgReplication', 'Wait-PgReplication'
}

function Get-NewestBinFolder {
    # <Parent>/<Filter>/bin folders, the highest version number (at the end of the folder name) first.
    param([string] $Parent, [string] $Filter)
    if ([string]::IsNullOrEmpty($Parent) -or -not (Test-Path -LiteralPath $Parent -PathType Container)) { return }
    Get-ChildItem -LiteralPath $Parent -Directory -Filter $Filter -ErrorAction SilentlyContinue |
        Sort-Object -Descending -Property { if ($_.Name -match '(\d+(?:\.\d+)?)$') { [double] $Matches[1] } else { 0.0 } } |
        ForEach-Object { Join-Path $_.FullName 'bin' }
}

function Find-PgServerBinDirectory {
    <# The folder holding initdb and pg_ctl: `pg_config --bindir`, else the newest versioned install folder. Throws naming what to install. #>
    [CmdletBinding()]
    [OutputType([string])]
    param()
    $suffix = if ($IsWindows) { '.exe' } else { '' }
    $candidates = [System.Collections.Generic.List[string]]::new()

    $pgConfig = Get-Command -Name pg_config -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
    if ($pgConfig) {
        try {
            $bindir = & $pgConfig.Source --bindir 2>$null
            if ($LASTEXITCODE -eq 0 -and $bindir) { $candidates.Add(([string]($bindir | Select-Object -First 1)).Trim()) }
        }
        catch { Write-Verbose "pg_config --bindir failed: $_" }
    }
    if ($IsWindows) {
        foreach ($programFiles in @($env:ProgramFiles, ${env:ProgramFiles(x86)})) {
            if ($programFiles) { foreach ($bin in Get-NewestBinFolder (Join-Path $programFiles 'PostgreSQL') '*') { $candidates.Add($bin) } }
        }
    }
    else {
        foreach ($bin in Get-NewestBinFolder '/usr/lib/postgresql' '*') { $candidates.Add($bin) }
        foreach ($bin in Get-NewestBinFolder '/usr' 'pgsql-*') { $candidates.Add($bin) }
    }

    foreach ($dir in $candidates) {
        if ((Test-Path -LiteralPath (Join-Path $dir "initdb$suffix") -PathType Leaf) -and
            (Test-Path -LiteralPath (Join-Path $dir "pg_ctl$suffix") -PathType Leaf)) {
            return $dir
        }
    }
    throw ('PostgreSQL server binaries (initdb, pg_ctl) not found, so the PgBackup Pester suites cannot start a test cluster. ' +
        'Install them: Debian/Ubuntu "apt-get install -y postgresql postgresql-contrib", RHEL/Fedora "dnf install postgresql-server postgresql-contrib", ' +
        'macOS "brew install postgresql@17", Windows the EDB installer; and make sure initdb and pg_ctl are in "pg_config --bindir", ' +
        '/usr/lib/postgresql/<version>/bin, /usr/pgsql-<version>/bin or C:\Program Files\PostgreSQL\<version>\bin. ' +
        "Searched: $(if ($candidates.Count) { $candidates -join ', ' } else { '(no candidate folder exists)' }).")
}

function Get-PgTestFreePort {
    <# A TCP port that is free on 127.0.0.1 right now (and not handed out before by this module). #>
    [CmdletBinding()]
    [OutputType([int])]
    param()
    for ($attempt = 0; $attempt -lt 1000; $attempt++) {
        $listener = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0)
        $listener.Start()
        try { $port = ([System.Net.IPEndPoint] $listener.LocalEndpoint).Port }
        finally { $listener.Stop() }
        if ($script:HandedOutPorts.Add($port)) { return $port }
    }
    throw 'Could not find a TCP port that was not already handed out.'
}

#endregion

#region Environment

function Set-ProcessEnvironmentVariable {
    # $null or '' removes the variable. (PowerShell turns $null into '' when it calls a .NET method with a string
    # parameter, and .NET on Unix would then keep an empty variable, so the removal needs [NullString]::Value.)
    param([string] $Name, [AllowNull()] [string] $Value)
    if ([string]::IsNullOrEmpty($Value)) { [System.Environment]::SetEnvironmentVariable($Name, [NullString]::Value) }
    else { [System.Environment]::SetEnvironmentVariable($Name, $Value) }
}

function Test-PgVariableName {
    # PG* variables are libpq's and PgBackup's configuration, AZURE_STORAGE_* and AZURE_CLIENT_ID the blob credentials;
    # PGBACKUP_MODULE_PATH only tells the suites which build to test.
    param([string] $Name)
    ($Name.StartsWith('PG', [System.StringComparison]::Ordinal) -and $Name -ne 'PGBACKUP_MODULE_PATH') -or
        $Name.StartsWith('AZURE_STORAGE_', [System.StringComparison]::Ordinal) -or $Name -eq 'AZURE_CLIENT_ID'
}

function Push-PgEnvironment {
    # Removes every PG* variable (PGHOST, PGPASSFILE, PGBACKUP_*, ...) from the process environment, so none can
    # redirect a child, then sets the given ones. Returns what Pop-PgEnvironment needs to put everything back.
    param([hashtable] $Set = @{})
    $saved = @{}
    foreach ($entry in [System.Environment]::GetEnvironmentVariables().GetEnumerator()) {
        $key = [string] $entry.Key
        if (Test-PgVariableName $key) {
            $saved[$key] = [string] $entry.Value
            Set-ProcessEnvironmentVariable -Name $key -Value $null
        }
    }
    foreach ($key in $Set.Keys) {
        if (-not $saved.ContainsKey($key)) { $saved[$key] = [System.Environment]::GetEnvironmentVariable($key) }
        Set-ProcessEnvironmentVariable -Name $key -Value ([string] $Set[$key])
    }
    $saved
}

function Pop-PgEnvironment {
    param([hashtable] $Saved)
    foreach ($entry in [System.Environment]::GetEnvironmentVariables().GetEnumerator()) {
        $key = [string] $entry.Key
        if ((Test-PgVariableName $key) -and -not $Saved.ContainsKey($key)) {
            Set-ProcessEnvironmentVariable -Name $key -Value $null
        }
    }
    foreach ($key in $Saved.Keys) { Set-ProcessEnvironmentVariable -Name $key -Value $Saved[$key] }
}

function Write-PrivateFile {
    # Creates a new file readable and writable by its owner only (mode 600 on Unix), as libpq wants for .pgpass.
    param([string] $Path, [string] $Content)
    $options = [System.IO.FileStreamOptions]::new()
    $options.Mode = [System.IO.FileMode]::CreateNew
    $options.Access = [System.IO.FileAccess]::Write
    if (-not $IsWindows) { $options.UnixCreateMode = [System.IO.UnixFileMode] 'UserRead, UserWrite' }
    $stream = [System.IO.FileStream]::new($Path, $options)
    try {
        $bytes = $script:Utf8.GetBytes($Content)
        $stream.Write($bytes, 0, $bytes.Length)
    }
    finally { $stream.Dispose() }
}

function Remove-PgTestFolder {
    # Best effort, a few attempts (a server that just stopped may still hold files for a moment); never throws.
    param([string] $Path)
    if ([string]::IsNullOrEmpty($Path)) { return }
    for ($attempt = 0; $attempt -lt 3; $attempt++) {
        try {
            if (Test-Path -LiteralPath $Path) { Remove-Item -LiteralPath $Path -Recurse -Force -ErrorAction Stop }
            return
        }
        catch { Start-Sleep -Milliseconds 200 }
    }
    Write-Warning "Could not remove $Path."
}

function Enter-PgTestEnvironment {
    <#
    .SYNOPSIS
        Sets the process environment as the C# ModuleFixture does, and returns the state Exit-PgTestEnvironment restores.
    .DESCRIPTION
        Every PG* and PGBACKUP_* variable of the user's shell is removed (so a PGHOST or PGBACKUP_REPOSITORY cannot change
        what the tests see); PGUSER is postgres; PGPASSFILE is the cluster's .pgpass (the module finds the password as psql
        would), or an empty one without a cluster; PGBACKUP_CONFIG names an empty pgbackup.json, so the user's own
        configuration file is not read either; PGBACKUP_WAL_TOOL_ROOT is a folder of this run (the servers can enter it),
        so Enable-PgWalArchiving installs pgbackup-wal there and not into /usr/local/lib/pgbackup/wal.
    #>
    [CmdletBinding()]
    param([psobject] $Cluster)
    $folder = [System.IO.Directory]::CreateTempSubdirectory('pgbackup-pester-env-').FullName
    $config = Join-Path $folder 'pgbackup.json'
    [System.IO.File]::WriteAllText($config, '{}', $script:Utf8)
    $pgPass = if ($Cluster) { $Cluster.PgPassFile } else {
        $path = Join-Path $folder '.pgpass'
        Write-PrivateFile -Path $path -Content ''
        $path
    }
    $toolRoot = Join-Path ([System.IO.Path]::GetTempPath()) 'pgbackup-pester-tests' ('wal-tools-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
    $saved = Push-PgEnvironment -Set @{ PGUSER = $script:SuperUser; PGPASSFILE = $pgPass; PGBACKUP_CONFIG = $config; PGBACKUP_WAL_TOOL_ROOT = $toolRoot }
    [pscustomobject]@{ PSTypeName = 'PgBackup.TestEnvironment'; Saved = $saved; Folder = $folder; ToolRoot = $toolRoot }
}

function Exit-PgTestEnvironment {
    <# Puts back the environment Enter-PgTestEnvironment found. Accepts $null (when BeforeAll failed early); never throws. #>
    [CmdletBinding()]
    param([AllowNull()] [psobject] $State)
    if ($null -eq $State) { return }
    try { Pop-PgEnvironment -Saved $State.Saved }
    catch { Write-Warning "Could not restore the environment: $_" }
    Remove-PgTestFolder -Path $State.Folder
    Remove-PgTestFolder -Path $State.ToolRoot
}

function New-PgTestRepository {
    <# A new empty folder under the temp folder, removed by Remove-PgTestRepository. #>
    [CmdletBinding()]
    [OutputType([string])]
    param()
    $path = Join-Path ([System.IO.Path]::GetTempPath()) 'pgbackup-pester-tests' ([guid]::NewGuid().ToString('N').Substring(0, 8))
    $null = New-Item -ItemType Directory -Path $path -Force
    $script:Repositories.Add($path)
    $path
}

function Remove-PgTestRepository {
    <# Removes every folder New-PgTestRepository made since the module was imported; never throws. #>
    [CmdletBinding()]
    param()
    foreach ($path in $script:Repositories) { Remove-PgTestFolder -Path $path }
    $script:Repositories.Clear()
}

#endregion

#region Clusters

function ConvertTo-PgConfString {
    param([string] $Value)
    "'" + $Value.Replace('\', '\\').Replace("'", "''") + "'"
}

function ConvertTo-PgIdentifier {
    param([string] $Name)
    '"' + $Name.Replace('"', '""') + '"'
}

function Get-PgToolPath {
    param([psobject] $Cluster, [string] $Tool)
    Join-Path $Cluster.BinDirectory ($(if ($IsWindows) { "$Tool.exe" } else { $Tool }))
}

function Invoke-PgServerTool {
    # Runs initdb/pg_ctl without any inherited PG* variable; as the postgres user (runuser) when this process is root on
    # Linux, as PostgreSQL refuses to run as root; from the cluster's own folder, so that user never sits in an unreadable
    # working directory such as /root. Returns the exit code and the merged output.
    # -Environment sets a few variables (PGPASSWORD) for this call only.
    param([psobject] $Cluster, [string] $Tool, [string[]] $ArgumentList, [hashtable] $Environment = @{})
    $exe = Get-PgToolPath -Cluster $Cluster -Tool $Tool
    $saved = Push-PgEnvironment -Set $Environment
    Push-Location -LiteralPath $Cluster.Root
    try {
        if ($Cluster.RunAsPostgres) {
            $runuserArguments = @('-u', $script:SuperUser, '--', $exe) + $ArgumentList
            $output = & runuser @runuserArguments 2>&1
        }
        else { $output = & $exe @ArgumentList 2>&1 }
        $code = $LASTEXITCODE
    }
    finally {
        Pop-Location
        Pop-PgEnvironment -Saved $saved
    }
    [pscustomobject]@{ ExitCode = $code; Output = (@($output | ForEach-Object { "$_" }) -join [System.Environment]::NewLine) }
}

function Get-PgTestLogTail {
    param([psobject] $Cluster, [int] $Lines = 40)
    try {
        if (Test-Path -LiteralPath $Cluster.LogFile) { (Get-Content -LiteralPath $Cluster.LogFile -Tail $Lines) -join "`n" } else { '(no server log)' }
    }
    catch { "(server log unreadable: $_)" }
}

function Start-PgTestServer {
    param([psobject] $Cluster)
    $r = Invoke-PgServerTool -Cluster $Cluster -Tool pg_ctl -ArgumentList @('-D', $Cluster.DataDirectory, '-l', $Cluster.LogFile, '-w', '-t', '60', 'start')
    if ($r.ExitCode -ne 0) {
        throw "pg_ctl start failed on port $($Cluster.Port) (exit code $($r.ExitCode)): $($r.Output)`n--- tail of $($Cluster.LogFile) ---`n$(Get-PgTestLogTail -Cluster $Cluster)"
    }
}

function Add-PgConf {
    param([psobject] $Cluster, [string[]] $Lines)
    $text = "`n# added by PgBackup.TestCluster.psm1`n" + ($Lines -join "`n") + "`n"
    [System.IO.File]::AppendAllText((Join-Path $Cluster.DataDirectory 'postgresql.conf'), $text, $script:Utf8)
}

function New-PgTestClusterFolder {
    # The temp folder of a test cluster and its Unix socket folder. A socket path is limited to about 100 bytes
    # (macOS' temp folder is long), so the socket then lives in a short folder under /tmp.
    param([Parameter(Mandatory)] [string] $Name)
    $tag = $Name -replace '[^A-Za-z0-9_-]', ''
    if ($tag.Length -gt 20) { $tag = $tag.Substring(0, 20) }
    $root = [System.IO.Directory]::CreateTempSubdirectory("pgbackup-pester-$tag-").FullName
    $socketRoot = $null
    $socketDirectory = Join-Path $root 'sock'
    if (-not $IsWindows -and ($socketDirectory.Length + '/.s.PGSQL.65535'.Length) -ge 100) {
        $socketDirectory = $socketRoot = Join-Path '/tmp' ('pgbt-' + [System.Convert]::ToHexString([System.Security.Cryptography.RandomNumberGenerator]::GetBytes(4)).ToLowerInvariant())
    }
    $null = New-Item -ItemType Directory -Path $socketDirectory -Force
    [pscustomobject]@{ Tag = $tag; Root = $root; SocketRoot = $socketRoot; SocketDirectory = $socketDirectory }
}

function Start-PgTestCluster {
    <#
    .SYNOPSIS
        Creates and starts a throwaway PostgreSQL cluster; Stop-PgTestCluster stops and removes it.
    .DESCRIPTION
        initdb (UTF8, data checksums, trust for the local socket, scram-sha-256 with a random password for TCP) into a new
        temp folder; listen_addresses 127.0.0.1 on a free port, the Unix socket in a temp folder, fsync off. When this
        process is root on Linux, the folder is given to the postgres user and initdb/pg_ctl run through runuser.
        Throws, naming what to install, when the PostgreSQL server binaries are missing: a suite never skips silently.
        Returns Host, Port, Server ('127.0.0.1:port'), DataDirectory, Password and PgPassFile (a .pgpass for this cluster,
        mode 600; suites point PGPASSFILE at it through Enter-PgTestEnvironment), among others.
    .PARAMETER Settings
        Extra postgresql.conf settings, appended after the defaults (so they win). Values that are not a plain word or
        number are quoted. Do not set port.
    .EXAMPLE
        $cluster = Start-PgTestCluster -Name restore
    #>
    [CmdletBinding()]
    param(
        [string] $Name = 'pester',
        [hashtable] $Settings = @{}
    )
    $bin = Find-PgServerBinDirectory # fail fast, before creating anything

    $folders = New-PgTestClusterFolder -Name $Name
    $tag, $root, $socketRoot, $socketDirectory = $folders.Tag, $folders.Root, $folders.SocketRoot, $folders.SocketDirectory

    $cluster = [pscustomobject]@{
        PSTypeName      = 'PgBackup.TestCluster'
        Name            = $tag
        Host            = '127.0.0.1'
        Port            = 0
        Server          = $null
        User            = $script:SuperUser
        Password        = 'pgbackup-test-' + [System.Convert]::ToHexString([System.Security.Cryptography.RandomNumberGenerator]::GetBytes(12)).ToLowerInvariant()
        PgPassFile      = $null
        DataDirectory   = Join-Path $root 'data'
        LogFile         = Join-Path $root 'server.log'
        SocketDirectory = $socketDirectory
        SocketRoot      = $socketRoot
        Root            = $root
        BinDirectory    = $bin
        RunAsPostgres   = [bool] ($IsLinux -and [System.Environment]::IsPrivilegedProcess)
    }

    try {
        $pwFile = Join-Path $root 'pwfile'
        Write-PrivateFile -Path $pwFile -Content ($cluster.Password + "`n")
        if ($cluster.RunAsPostgres) {
            foreach ($folder in @($root, $socketRoot)) {
                if (-not $folder) { continue }
                $out = & chown -R "$($script:SuperUser):$($script:SuperUser)" $folder 2>&1
                if ($LASTEXITCODE -ne 0) { throw "chown -R postgres:postgres $folder failed (is there a postgres user?): $($out -join ' ')" }
            }
        }
        try {
            # initdb creates the data directory itself (mode 0700, owned by whoever runs it).
            # --no-sync: a throwaway cluster does not need the final fsync of every file.
            $initdb = @('--auth-local=trust', '--auth-host=scram-sha-256', "--username=$($script:SuperUser)", "--pwfile=$pwFile",
                '--encoding=UTF8', '--data-checksums', '--no-sync', '-D', $cluster.DataDirectory)
            $r = Invoke-PgServerTool -Cluster $cluster -Tool initdb -ArgumentList ($initdb + '--locale=C.UTF-8')
            if ($r.ExitCode -ne 0) { $r = Invoke-PgServerTool -Cluster $cluster -Tool initdb -ArgumentList ($initdb + '--locale=C') } # no C.UTF-8 here
            if ($r.ExitCode -ne 0) { throw "initdb failed (exit code $($r.ExitCode)):`n$($r.Output)" }
        }
        finally {
            Remove-Item -LiteralPath $pwFile -Force -ErrorAction SilentlyContinue
        }

        $cluster.Port = Get-PgTestFreePort
        $conf = @(
            "listen_addresses = '127.0.0.1'"
            "port = $($cluster.Port)"
            "unix_socket_directories = $(if ($IsWindows) { "''" } else { ConvertTo-PgConfString $socketDirectory })"
            "cluster_name = $(ConvertTo-PgConfString ('pgbackup-pester-' + $tag))"
            'fsync = off'
            'synchronous_commit = off'
            'full_page_writes = on'
            'max_connections = 50'
            'shared_buffers = 32MB'
            'logging_collector = off'
        )
        foreach ($key in $Settings.Keys) {
            $value = [string] $Settings[$key]
            if (-not ($value.StartsWith("'") -or $value -match '^[A-Za-z0-9_.+-]+$')) { $value = ConvertTo-PgConfString $value }
            $conf += "$key = $value"
        }
        Add-PgConf -Cluster $cluster -Lines $conf

        try { Start-PgTestServer -Cluster $cluster }
        catch {
            if ((Get-PgTestLogTail -Cluster $cluster -Lines 200) -notmatch 'could not bind') { throw }
            # Someone took the port between Get-PgTestFreePort and the server binding it.
            $cluster.Port = Get-PgTestFreePort
            Add-PgConf -Cluster $cluster -Lines @("port = $($cluster.Port)")
            Start-PgTestServer -Cluster $cluster
        }
        $cluster.Server = "$($cluster.Host):$($cluster.Port)"

        $passFolder = [System.IO.Directory]::CreateTempSubdirectory('pgbackup-pgpass-').FullName
        $cluster.PgPassFile = Join-Path $passFolder '.pgpass'
        Write-PrivateFile -Path $cluster.PgPassFile -Content (
            "127.0.0.1:*:*:$($script:SuperUser):$($cluster.Password)`n" +
            "localhost:*:*:$($script:SuperUser):$($cluster.Password)`n")
        $cluster
    }
    catch {
        Stop-PgTestCluster -Cluster $cluster
        throw
    }
}

function Start-PgTestStandby {
    <#
    .SYNOPSIS
        Makes a streaming standby of a test primary with pg_basebackup -R and starts it; Stop-PgTestCluster stops and removes it.
    .DESCRIPTION
        The standby has the shape of a Start-PgTestCluster result (Host, Port, Server, DataDirectory, ...), so Invoke-PgTestSql
        and Stop-PgTestCluster work on it. It has the primary's password (pg_basebackup copies the roles), so the primary's
        .pgpass (127.0.0.1:*) serves both; its own PgPassFile is $null. pg_basebackup connects over the primary's Unix socket
        (trust), so no password is written into primary_conninfo; Windows has no socket folder and uses TCP with PGPASSWORD.
        The standby's application name (as the primary's pg_stat_replication shows it) is its cluster_name. It does not wait
        for the standby to stream: use Wait-PgTestCondition.
    .PARAMETER ClusterName
        The standby's cluster_name, and so its application name; 'pester_<Name>' (with - turned into _) by default.
    .PARAMETER Tcp
        Stream over TCP from 127.0.0.1 (the primary then shows the standby's client address) instead of the Unix socket;
        primary_conninfo then holds the test password.
    .EXAMPLE
        $standby = Start-PgTestStandby -Primary $primary -Name replstandby -ClusterName pester_standby
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)] [psobject] $Primary,
        [Parameter(Mandatory)] [string] $Name,
        [string] $ClusterName,
        [switch] $Tcp
    )
    if ([string]::IsNullOrEmpty($ClusterName)) { $ClusterName = 'pester_' + $Name.Replace('-', '_') }
    $bin = Find-PgServerBinDirectory # fail fast, before creating anything

    $folders = New-PgTestClusterFolder -Name $Name
    $tag, $root, $socketRoot, $socketDirectory = $folders.Tag, $folders.Root, $folders.SocketRoot, $folders.SocketDirectory
    $standby = [pscustomobject]@{
        PSTypeName      = 'PgBackup.TestCluster'
        Name            = $Name
        Host            = '127.0.0.1'
        Port            = Get-PgTestFreePort
        Server          = $null
        User            = $Primary.User
        Password        = $Primary.Password
        PgPassFile      = $null
        DataDirectory   = Join-Path $root 'data'
        LogFile         = Join-Path $root 'server.log'
        SocketDirectory = $socketDirectory
        SocketRoot      = $socketRoot
        Root            = $root
        BinDirectory    = $bin
        RunAsPostgres   = [bool] ($IsLinux -and [System.Environment]::IsPrivilegedProcess)
    }
    $standby.Server = "$($standby.Host):$($standby.Port)"

    try {
        if ($standby.RunAsPostgres) {
            foreach ($folder in @($root, $socketRoot)) {
                if (-not $folder) { continue }
                $out = & chown -R "$($script:SuperUser):$($script:SuperUser)" $folder 2>&1
                if ($LASTEXITCODE -ne 0) { throw "chown -R postgres:postgres $folder failed: $($out -join ' ')" }
            }
        }

        # -R writes standby.signal and primary_conninfo; Invoke-PgServerTool clears every inherited PG* variable, so none
        # redirects pg_basebackup or ends up in primary_conninfo.
        $basebackup = @('-D', $standby.DataDirectory, '-U', $Primary.User, '-R', '-X', 'stream', '-c', 'fast', '--no-sync')
        $passwordEnvironment = @{}
        if ($IsWindows -or $Tcp) {
            $basebackup += @('-h', $Primary.Host, '-p', [string] $Primary.Port)
            $passwordEnvironment = @{ PGPASSWORD = $Primary.Password }
        }
        else { $basebackup += @('-h', $Primary.SocketDirectory, '-p', [string] $Primary.Port) }
        $r = Invoke-PgServerTool -Cluster $standby -Tool pg_basebackup -ArgumentList $basebackup -Environment $passwordEnvironment
        if ($r.ExitCode -ne 0) { throw "pg_basebackup failed (exit code $($r.ExitCode)): $($r.Output)" }

        $conf = @(
            "port = $($standby.Port)"
            "unix_socket_directories = $(if ($IsWindows) { "''" } else { ConvertTo-PgConfString $socketDirectory })"
            'hot_standby = on'
            "cluster_name = $(ConvertTo-PgConfString $ClusterName)"
        )
        $text = "`n# added by PgBackup.TestCluster.psm1`n" + ($conf -join "`n") + "`n"
        [System.IO.File]::AppendAllText((Join-Path $standby.DataDirectory 'postgresql.auto.conf'), $text, $script:Utf8)
        Start-PgTestServer -Cluster $standby
        $standby
    }
    catch {
        Stop-PgTestCluster -Cluster $standby
        throw
    }
}

function Wait-PgTestCondition {
    <#
    .SYNOPSIS
        Runs -Condition every 200 ms until it returns a true value; throws "<What> did not happen within <Seconds> s." if it
        has not by then.
    .EXAMPLE
        Wait-PgTestCondition -What 'The standby streaming' -Condition { (Invoke-PgTestSql -Cluster $standby -Sql 'select 1') -eq '1' }
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)] [string] $What,
        [Parameter(Mandatory)] [scriptblock] $Condition,
        [int] $Seconds = 30
    )
    $deadline = [datetime]::UtcNow.AddSeconds($Seconds)
    while (-not (& $Condition)) {
        if ([datetime]::UtcNow -ge $deadline) { throw "$What did not happen within $Seconds s." }
        Start-Sleep -Milliseconds 200
    }
}

function Save-PgTestWalSegment {
    <#
    .SYNOPSIS
        Switches the cluster to a new WAL segment and waits until the one it finished is archived; returns its name.
    .DESCRIPTION
        pg_switch_wal returns the end of the segment it finished, which pg_walfile_name names. On a server that wrote
        nothing since the last switch there is nothing to finish, and the segment named is the one archived before.
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param([Parameter(Mandatory)] [psobject] $Cluster, [int] $Seconds = 60)
    $segment = Invoke-PgTestSql -Cluster $Cluster -Sql 'select pg_walfile_name(pg_switch_wal())'
    Wait-PgTestCondition -What "Archiving $segment" -Seconds $Seconds -Condition {
        [string]::CompareOrdinal((Invoke-PgTestSql -Cluster $Cluster -Sql "select coalesce(last_archived_wal, '') from pg_stat_archiver"), $segment) -ge 0
    }
    $segment
}

function Stop-PgTestCluster {
    <#
    .SYNOPSIS
        Stops a test cluster (fast shutdown, else immediate, else kill) and removes its folders. Accepts $null; never throws.
    .EXAMPLE
        Stop-PgTestCluster -Cluster $cluster
    #>
    [CmdletBinding()]
    param([Parameter(ValueFromPipeline)] [AllowNull()] [psobject] $Cluster)
    process {
        if ($null -eq $Cluster) { return }
        try {
            $pidFile = Join-Path $Cluster.DataDirectory 'postmaster.pid'
            if (Test-Path -LiteralPath $pidFile) {
                $r = Invoke-PgServerTool -Cluster $Cluster -Tool pg_ctl -ArgumentList @('-D', $Cluster.DataDirectory, '-m', 'fast', '-w', '-t', '60', 'stop')
                if ($r.ExitCode -ne 0) {
                    Write-Warning "pg_ctl stop -m fast failed (exit code $($r.ExitCode)): $($r.Output); trying an immediate shutdown."
                    $r = Invoke-PgServerTool -Cluster $Cluster -Tool pg_ctl -ArgumentList @('-D', $Cluster.DataDirectory, '-m', 'immediate', '-w', '-t', '30', 'stop')
                }
                if ($r.ExitCode -ne 0 -and (Test-Path -LiteralPath $pidFile)) {
                    $postmasterId = 0
                    if ([int]::TryParse((Get-Content -LiteralPath $pidFile -TotalCount 1), [ref] $postmasterId)) {
                        # The pid file may be stale: only a postgres process is killed.
                        Get-Process -Id $postmasterId -ErrorAction SilentlyContinue |
                            Where-Object ProcessName -eq 'postgres' |
                            ForEach-Object { $_.Kill($true) }
                    }
                }
            }
        }
        catch { Write-Warning "Stopping the test cluster in $($Cluster.DataDirectory) failed: $_" }
        Remove-PgTestFolder -Path $Cluster.Root
        Remove-PgTestFolder -Path $Cluster.SocketRoot
        if ($Cluster.PgPassFile) { Remove-PgTestFolder -Path (Split-Path -Parent $Cluster.PgPassFile) }
    }
}

function Stop-PgTestServer {
    <#
    .SYNOPSIS
        Stops a test cluster's server and keeps its folders: -Mode fast for a clean stop, immediate for a crash. Throws when pg_ctl fails.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory)] [psobject] $Cluster, [ValidateSet('fast', 'immediate')] [string] $Mode = 'fast')
    $r = Invoke-PgServerTool -Cluster $Cluster -Tool pg_ctl -ArgumentList @('stop', '-D', $Cluster.DataDirectory, '-m', $Mode, '-w', '-t', '60')
    if ($r.ExitCode -ne 0) { throw "pg_ctl stop -m $Mode failed (exit code $($r.ExitCode)): $($r.Output)" }
}

function Stop-PgTestClusterPair {
    <#
    .SYNOPSIS
        Stops a primary and its standby after tests that may have swapped their roles: whichever is the standby now goes
        first, so the primary's fast shutdown does not wait for its WAL sender. Never throws.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory)] [psobject[]] $Cluster)
    $first, $second = $Cluster[1], $Cluster[0]
    try { if ((Invoke-PgTestSql -Cluster $Cluster[0] -Sql 'select pg_is_in_recovery()') -eq 't') { $first, $second = $Cluster[0], $Cluster[1] } }
    catch { Write-Warning "Reading the role of $($Cluster[0].Server) failed: $_" }
    Stop-PgTestCluster -Cluster $first
    Stop-PgTestCluster -Cluster $second
}

function Invoke-PgTestSql {
    <#
    .SYNOPSIS
        Runs SQL with psql (-X -q -A -t, ON_ERROR_STOP) as the superuser over TCP and returns its trimmed output.
    .DESCRIPTION
        The SQL goes through a UTF-8 file (-f), so non-ASCII names survive on every platform. The password reaches psql
        through PGPASSWORD, set for this call only: every PG* variable is put back as it was afterwards.
    .EXAMPLE
        Invoke-PgTestSql -Cluster $cluster -Database shop -Sql 'select count(*) from public.items'
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)] [psobject] $Cluster,
        [string] $Database = 'postgres',
        [Parameter(Mandatory)] [string] $Sql
    )
    $file = Join-Path ([System.IO.Path]::GetTempPath()) ("pgbackup-pester-$([guid]::NewGuid().ToString('N')).sql")
    [System.IO.File]::WriteAllText($file, $Sql, $script:Utf8)
    $psql = Get-PgToolPath -Cluster $Cluster -Tool psql
    $saved = Push-PgEnvironment -Set @{ PGPASSWORD = $Cluster.Password; PGCLIENTENCODING = 'UTF8' }
    try {
        $output = & $psql -X -q -A -t -v ON_ERROR_STOP=1 -h $Cluster.Host -p ([string] $Cluster.Port) -U $script:SuperUser -d $Database -f $file 2>&1
        $code = $LASTEXITCODE
    }
    finally {
        Pop-PgEnvironment -Saved $saved
        Remove-Item -LiteralPath $file -Force -ErrorAction SilentlyContinue
    }
    $stdout = @($output | Where-Object { $_ -isnot [System.Management.Automation.ErrorRecord] } | ForEach-Object { "$_" })
    if ($code -ne 0) {
        $stderr = @($output | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] } | ForEach-Object { "$_" })
        throw "psql failed on database '$Database' (exit code $code): $($stderr -join "`n")"
    }
    ($stdout -join "`n").Trim()
}

function Remove-PgTestDatabase {
    <# DROP DATABASE IF EXISTS ... WITH (FORCE). #>
    [CmdletBinding()]
    param([Parameter(Mandatory)] [psobject] $Cluster, [Parameter(Mandatory)] [string] $Database)
    $null = Invoke-PgTestSql -Cluster $Cluster -Sql "DROP DATABASE IF EXISTS $(ConvertTo-PgIdentifier $Database) WITH (FORCE)"
}

function New-PgTestSampleDatabase {
    <#
    .SYNOPSIS
        Creates a database worth backing up, as tests/PgBackup.Testing/SampleDatabase.cs does.
    .DESCRIPTION
        Schemas sales and "Ünïcode schema"; public.items with -ItemRows rows; sales.orders (5000 rows) with a foreign key
        to items and an index; a view, a function and a sequence (at 42) in sales; a jsonb table in the non-ASCII schema;
        two large objects.
    .EXAMPLE
        New-PgTestSampleDatabase -Cluster $cluster -Database shop -ItemRows 20000
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)] [psobject] $Cluster,
        [Parameter(Mandatory)] [string] $Database,
        [ValidateRange(1, [int]::MaxValue)] [int] $ItemRows = 100000
    )
    $null = Invoke-PgTestSql -Cluster $Cluster -Sql "CREATE DATABASE $(ConvertTo-PgIdentifier $Database)"
    $sqlFile = Join-Path (Get-PgTestRepositoryRoot) 'tests' 'PgBackup.Testing' 'sample-database.sql'
    $sql = (Get-Content -LiteralPath $sqlFile -Raw -Encoding utf8).Replace('{ITEM_ROWS}', [string] $ItemRows)
    $null = Invoke-PgTestSql -Cluster $Cluster -Database $Database -Sql $sql
}

function New-PgTestDumpRepository {
    <#
    .SYNOPSIS
        A fresh repository holding the given number of dumps of the sample databases shop (sales schema only) and shop_eu.
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param([Parameter(Mandatory)] [string] $Server, [int] $ShopDumps = 0, [int] $EuDumps = 0)
    $repo = New-PgTestRepository
    for ($i = 0; $i -lt $ShopDumps; $i++) { $null = Invoke-PgDump -Server $Server -Database shop -Repository $repo -Schema sales -ErrorAction Stop }
    for ($i = 0; $i -lt $EuDumps; $i++) { $null = Invoke-PgDump -Server $Server -Database shop_eu -Repository $repo -ErrorAction Stop }
    $repo
}

function Get-PgTestRowCount {
    <#
    .SYNOPSIS
        The oracle of SampleDatabase.RowCounts: "schema.table=count" for every user table, a digest of the large objects
        and the sequence's value, one per line; equal strings mean the same data.
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param([Parameter(Mandatory)] [psobject] $Cluster, [Parameter(Mandatory)] [string] $Database)
    $tables = (Invoke-PgTestSql -Cluster $Cluster -Database $Database -Sql @'
select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'r' and n.nspname not in ('pg_catalog','information_schema') and n.nspname !~ '^pg_' order by 1
'@) -split '\r?\n' | Where-Object { $_.Trim() }
    $lines = [System.Collections.Generic.List[string]]::new()
    foreach ($table in $tables) {
        $lines.Add("$table=$(Invoke-PgTestSql -Cluster $Cluster -Database $Database -Sql "select count(*) from $table")")
    }
    $lines.Add('largeobjects=' + (Invoke-PgTestSql -Cluster $Cluster -Database $Database -Sql @'
select count(*) || ':' || coalesce(md5(string_agg(md5(lo_get(oid)), ',' order by md5(lo_get(oid)))), '') from pg_largeobject_metadata
'@))
    $lines.Add('sequence=' + (Invoke-PgTestSql -Cluster $Cluster -Database $Database -Sql @'
select coalesce((select last_value::text from pg_sequences where sequencename = 'invoice_no'), 'none')
'@))
    $lines -join "`n"
}

#endregion

#region Runspaces (progress records, stopping a pipeline)

function Invoke-PgTestRunspace {
    <#
    .SYNOPSIS
        Runs a script in another runspace and returns what it wrote on every stream, as the C# PowerShellSession does.
    .DESCRIPTION
        Progress records cannot be redirected in a script, so the tests that look at them (or stop a pipeline as Ctrl+C does)
        run the cmdlet here. -Variables become global variables of that runspace. With -StopWhen, the pipeline is stopped
        ($ps.Stop(), what Ctrl+C does) as soon as a progress record satisfies it; Stopped says whether that happened.
        A terminating error is caught and returned in Terminating (and AllErrors), not thrown.
    .EXAMPLE
        Invoke-PgTestRunspace -Runspace $rs -Script 'Invoke-PgDump -Server $s -Database shop' -Variables @{ s = $cluster.Server }
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)] [System.Management.Automation.Runspaces.Runspace] $Runspace,
        [Parameter(Mandatory)] [string] $Script,
        [hashtable] $Variables = @{},
        [scriptblock] $StopWhen,
        [timespan] $Timeout = [timespan]::FromMinutes(5)
    )
    foreach ($key in $Variables.Keys) { $Runspace.SessionStateProxy.SetVariable($key, $Variables[$key]) }
    $ps = [powershell]::Create()
    try {
        $ps.Runspace = $Runspace
        $null = $ps.AddScript($Script)
        $handle = $ps.BeginInvoke()
        $stopped = $false
        if ($StopWhen) {
            $seen = 0
            $deadline = [datetime]::UtcNow + $Timeout
            while (-not $handle.IsCompleted -and -not $stopped -and [datetime]::UtcNow -lt $deadline) {
                $count = $ps.Streams.Progress.Count
                while ($seen -lt $count) {
                    if (& $StopWhen $ps.Streams.Progress[$seen]) { $stopped = $true; break }
                    $seen++
                }
                if ($stopped) { $ps.Stop() } else { Start-Sleep -Milliseconds 5 }
            }
        }
        $output = @()
        $terminating = $null
        try { $output = @($ps.EndInvoke($handle)) }
        catch {
            $exception = $_.Exception
            while ($exception -is [System.Management.Automation.MethodInvocationException] -and $null -ne $exception.InnerException) {
                $exception = $exception.InnerException
            }
            if ($exception -is [System.Management.Automation.PipelineStoppedException]) { }
            elseif ($exception -is [System.Management.Automation.RuntimeException]) { $terminating = $exception.ErrorRecord }
            else { throw }
        }
        $errors = @($ps.Streams.Error)
        $allErrors = [System.Collections.Generic.List[object]]::new()
        foreach ($record in $errors) { $allErrors.Add($record) }
        if ($null -ne $terminating) { $allErrors.Add($terminating) }
        [pscustomobject]@{
            PSTypeName  = 'PgBackup.TestRunResult'
            Output      = $output
            Errors      = $errors
            AllErrors   = $allErrors.ToArray()
            Terminating = $terminating
            Warnings    = @($ps.Streams.Warning | ForEach-Object { $_.Message })
            Verbose     = @($ps.Streams.Verbose | ForEach-Object { $_.Message })
            Progress    = @($ps.Streams.Progress)
            Information = @($ps.Streams.Information)
            Stopped     = $stopped
        }
    }
    finally { $ps.Dispose() }
}

function New-PgTestRunspace {
    <# A new PowerShell runspace with the built module imported through its manifest. Dispose it in AfterAll. #>
    [CmdletBinding()]
    [OutputType([System.Management.Automation.Runspaces.Runspace])]
    param([Parameter(Mandatory)] [string] $ModulePath)
    $runspace = [runspacefactory]::CreateRunspace([System.Management.Automation.Runspaces.InitialSessionState]::CreateDefault2())
    $runspace.Open()
    $r = Invoke-PgTestRunspace -Runspace $runspace -Script 'Import-Module -Name $PgBackupManifest -ErrorAction Stop' -Variables @{ PgBackupManifest = $ModulePath }
    if ($r.AllErrors.Count -gt 0) {
        $runspace.Dispose()
        throw "Importing $ModulePath into a new runspace failed: $($r.AllErrors -join '; ')"
    }
    $runspace
}

function Format-PgTestError {
    <# One line per error with its id, message and recommended action, for -Because texts. #>
    [CmdletBinding()]
    [OutputType([string])]
    param([AllowNull()] [object[]] $ErrorRecord)
    @($ErrorRecord | Where-Object { $null -ne $_ } | ForEach-Object {
            if ($_ -is [System.Management.Automation.ErrorRecord]) {
                $action = if ($_.ErrorDetails) { " $($_.ErrorDetails.RecommendedAction)" } else { '' }
                "$($_.FullyQualifiedErrorId): $_$action"
            }
            else { "$_" }
        }) -join ' | '
}

#endregion

#region Processes (a pwsh to kill, a server to hang)

function Start-PgTestPwsh {
    <#
    .SYNOPSIS
        Runs a script in a new pwsh process (the engine itself, not a launcher), with the built module imported, and
        returns at once: the test can kill it, hang it or wait for it (Wait-PgTestPwsh).
    .DESCRIPTION
        The child inherits this process's environment (PGPASSFILE, PGUSER, PGBACKUP_CONFIG as Enter-PgTestEnvironment
        set them). -Variables become variables of the script. What the script outputs and every error it writes are saved
        as JSON (ErrorId, Category, TargetObject, Message) for Wait-PgTestPwsh. When pwsh runs from the PowerShell .NET
        tool, the pwsh on PATH is a launcher whose child is the engine; this starts the engine directly (dotnet pwsh.dll),
        so Process is the process that holds the module.
    .EXAMPLE
        $job = Start-PgTestPwsh -Script 'Invoke-PgDump -Server $s -Database shop -Repository $r' -Variables @{ s = $server; r = $repo }
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)] [string] $Script,
        [hashtable] $Variables = @{}
    )
    $folder = [System.IO.Directory]::CreateTempSubdirectory('pgbackup-pester-pwsh-').FullName
    $resultFile = Join-Path $folder 'result.json'
    $quote = { param($text) "'" + ([string] $text).Replace("'", "''") + "'" }
    $assignments = foreach ($key in $Variables.Keys) {
        $value = $Variables[$key]
        $literal = if ($value -is [int] -or $value -is [long]) { [string] $value } else { & $quote $value }
        "`$$key = $literal"
    }
    $child = @(
        "`$ErrorActionPreference = 'Continue'"
        "Import-Module -Name $(& $quote (Get-PgBackupModuleManifest)) -ErrorAction Stop"
        $assignments
        '$Error.Clear(); $output = @()'
        "try { `$output = @(& { $Script }) } catch { }"
        '$errors = @($Error | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] }); [array]::Reverse($errors)'
        '$record = [pscustomobject]@{'
        '    Output = @($output | ForEach-Object { if ($_ -is [string]) { $_ } else { $_ | Select-Object -Property * } })'
        '    Errors = @($errors | ForEach-Object { [pscustomobject]@{ ErrorId = $_.FullyQualifiedErrorId.Split(",")[0]; Category = "$($_.CategoryInfo.Category)"; TargetObject = "$($_.TargetObject)"; Message = "$_" } })'
        '}'
        "`$record | ConvertTo-Json -Depth 4 | Set-Content -LiteralPath $(& $quote $resultFile) -Encoding utf8"
    ) -join [System.Environment]::NewLine
    $encoded = [System.Convert]::ToBase64String([System.Text.Encoding]::Unicode.GetBytes($child))
    $engine = [System.Environment]::ProcessPath
    $startInfo = [System.Diagnostics.ProcessStartInfo]::new($engine)
    if ([System.IO.Path]::GetFileNameWithoutExtension($engine) -eq 'dotnet') { $startInfo.ArgumentList.Add((Join-Path $PSHOME 'pwsh.dll')) }
    foreach ($argument in '-NoProfile', '-NonInteractive', '-OutputFormat', 'Text', '-EncodedCommand', $encoded) { $startInfo.ArgumentList.Add($argument) }
    $startInfo.UseShellExecute = $false
    $startInfo.RedirectStandardOutput = $true
    $startInfo.RedirectStandardError = $true
    $process = [System.Diagnostics.Process]::Start($startInfo)
    # Both streams are read as they come, so a chatty child never blocks on a full pipe.
    $stdout = $process.StandardOutput.ReadToEndAsync()
    $stderr = $process.StandardError.ReadToEndAsync()
    [pscustomobject]@{ PSTypeName = 'PgBackup.TestPwsh'; Process = $process; Folder = $folder; ResultFile = $resultFile; StdOut = $stdout; StdErr = $stderr }
}

function Wait-PgTestPwsh {
    <#
    .SYNOPSIS
        Waits for a Start-PgTestPwsh process to end and returns what it did: ExitCode, Output, Errors (ErrorId, Category,
        TargetObject, Message), Killed (it ended without writing its result) and its console text.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory)] [psobject] $Job, [int] $Seconds = 300)
    if (-not $Job.Process.WaitForExit($Seconds * 1000)) {
        $Job.Process.Kill($true)
        throw "The pwsh process $($Job.Process.Id) did not end within $Seconds s."
    }
    $Job.Process.WaitForExit()
    $result = if (Test-Path -LiteralPath $Job.ResultFile) { Get-Content -LiteralPath $Job.ResultFile -Raw | ConvertFrom-Json } else { $null }
    $summary = [pscustomobject]@{
        ExitCode = $Job.Process.ExitCode
        Killed   = $null -eq $result
        Output   = if ($result) { @($result.Output) } else { @() }
        Errors   = if ($result) { @($result.Errors) } else { @() }
        Console  = $Job.StdOut.Result + $Job.StdErr.Result
    }
    Remove-PgTestFolder -Path $Job.Folder
    $summary
}

function Send-PgTestSignal {
    <# Sends a signal (KILL, STOP, CONT) to processes. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)] [int[]] $ProcessId, [Parameter(Mandatory)] [ValidateSet('KILL', 'STOP', 'CONT')] [string] $Signal)
    $out = & kill "-$Signal" -- @($ProcessId | ForEach-Object { [string] $_ }) 2>&1
    if ($LASTEXITCODE -ne 0) { throw "kill -$Signal $($ProcessId -join ' ') failed: $($out -join ' ')" }
}

function Suspend-PgTestServer {
    <#
    .SYNOPSIS
        Hangs a server: SIGSTOP to its postmaster and every process the postmaster started (each of them leads a session
        of its own, so a process group does not reach them). Returns the process ids, for Resume-PgTestServer.
        With -Backend, only the server processes of that type (checkpointer, startup, walreceiver...) are stopped.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory)] [string] $DataDirectory, [string] $Backend)
    $postmaster = Get-PgTestPostmasterId -DataDirectory $DataDirectory
    if (-not $postmaster) { throw "No server runs from $DataDirectory." }
    $children = @(Get-Process -ErrorAction SilentlyContinue | Where-Object { $null -ne $_.Parent -and $_.Parent.Id -eq $postmaster })
    $targets = @(if ($Backend) { $children | Where-Object { $_.CommandLine -match ": $([regex]::Escape($Backend))( |$)" } | ForEach-Object Id }
        else { @($postmaster) + @($children | ForEach-Object Id) })
    if ($targets.Count -eq 0) { throw "No '$Backend' process of the server in $DataDirectory." }
    Send-PgTestSignal -ProcessId $targets -Signal STOP
    $targets
}

function Resume-PgTestServer {
    <# Lets processes that Suspend-PgTestServer hung go on (SIGCONT); those that have gone meanwhile are skipped. Never throws. #>
    [CmdletBinding()]
    param([AllowNull()] [int[]] $ProcessId)
    foreach ($id in @($ProcessId)) {
        if ($id -and (Get-Process -Id $id -ErrorAction SilentlyContinue)) {
            try { Send-PgTestSignal -ProcessId $id -Signal CONT } catch { Write-Warning "$_" }
        }
    }
}

function Start-PgTestSession {
    <#
    .SYNOPSIS
        Opens a psql session that runs -Sql and then stays open (a transaction holding a lock, for instance) until
        Stop-PgTestSession ends it. Waits until -Sql has run.
    .EXAMPLE
        $session = Start-PgTestSession -Cluster $cluster -Database shop -Sql 'begin; lock table public.items in access exclusive mode;'
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory)] [psobject] $Cluster, [string] $Database = 'postgres', [Parameter(Mandatory)] [string] $Sql)
    $startInfo = [System.Diagnostics.ProcessStartInfo]::new((Get-PgToolPath -Cluster $Cluster -Tool psql))
    foreach ($argument in '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', $Cluster.Host, '-p', [string] $Cluster.Port, '-U', $script:SuperUser, '-d', $Database) {
        $startInfo.ArgumentList.Add($argument)
    }
    foreach ($name in @($startInfo.Environment.Keys | Where-Object { Test-PgVariableName $_ })) { $null = $startInfo.Environment.Remove($name) }
    $startInfo.Environment['PGPASSWORD'] = $Cluster.Password
    $startInfo.Environment['PGCLIENTENCODING'] = 'UTF8'
    $startInfo.UseShellExecute = $false
    $startInfo.RedirectStandardInput = $true
    $startInfo.RedirectStandardOutput = $true
    $startInfo.RedirectStandardError = $true
    $process = [System.Diagnostics.Process]::Start($startInfo)
    $stdout = $process.StandardOutput
    $stderr = $process.StandardError.ReadToEndAsync()
    $marker = 'pgbackup-session-ready-' + [guid]::NewGuid().ToString('N')
    $process.StandardInput.WriteLine($Sql)
    $process.StandardInput.WriteLine("select '$marker';")
    $process.StandardInput.Flush()
    $reading = $stdout.ReadLineAsync()
    $deadline = [datetime]::UtcNow.AddSeconds(60)
    while ($true) {
        if (-not $reading.Wait(200)) {
            if ($process.HasExited) { throw "psql ended before '$Sql' ran: $($stderr.Result)" }
            if ([datetime]::UtcNow -gt $deadline) { $process.Kill(); throw "'$Sql' did not run within 60 s." }
            continue
        }
        if ($null -eq $reading.Result) { throw "psql ended before '$Sql' ran: $($stderr.Result)" }
        if ($reading.Result.Trim() -eq $marker) { break }
        $reading = $stdout.ReadLineAsync()
    }
    [pscustomobject]@{ PSTypeName = 'PgBackup.TestSession'; Process = $process; StdErr = $stderr }
}

function Stop-PgTestSession {
    <# Ends a Start-PgTestSession session (rolls back what it holds). Accepts $null; never throws. #>
    [CmdletBinding()]
    param([AllowNull()] [psobject] $Session)
    if ($null -eq $Session) { return }
    try {
        if (-not $Session.Process.HasExited) {
            $Session.Process.StandardInput.WriteLine('rollback;')
            $Session.Process.StandardInput.Close()
            if (-not $Session.Process.WaitForExit(10000)) { $Session.Process.Kill() }
        }
    }
    catch { Write-Warning "Ending the test session failed: $_" }
    finally { $Session.Process.Dispose() }
}

function Get-PgTestPostmasterId {
    <# The process id of the postmaster running from a data directory (its postmaster.pid), or $null when none runs. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)] [string] $DataDirectory)
    $pidFile = Join-Path $DataDirectory 'postmaster.pid'
    $processId = 0
    if ((Test-Path -LiteralPath $pidFile) -and [int]::TryParse((Get-Content -LiteralPath $pidFile -TotalCount 1 -ErrorAction SilentlyContinue), [ref] $processId) -and
        (Test-PgTestProcessRunning -ProcessId $processId)) { return $processId }
    $null
}

function Test-PgTestProcessRunning {
    <# Whether a process runs: it exists and is not a zombie (exited, not reaped yet; not every init reaps at once). #>
    [CmdletBinding()]
    [OutputType([bool])]
    param([Parameter(Mandatory)] [int] $ProcessId)
    $statFile = "/proc/$ProcessId/stat"
    if ($IsLinux) {
        $stat = Get-Content -LiteralPath $statFile -Raw -ErrorAction SilentlyContinue
        if (-not $stat) { return $false }
        return $stat.Substring($stat.LastIndexOf(')') + 2).TrimStart()[0] -notin 'Z', 'X'
    }
    $null -ne (Get-Process -Id $ProcessId -ErrorAction SilentlyContinue)
}

function Get-PgTestProcess {
    <# The processes named -Name whose command line holds -CommandLineLike (a path): what outlived a killed pwsh. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)] [string] $Name, [Parameter(Mandatory)] [string] $CommandLineLike)
    @(Get-Process -Name $Name -ErrorAction SilentlyContinue | Where-Object { $_.CommandLine -and $_.CommandLine.Contains($CommandLineLike) -and (Test-PgTestProcessRunning -ProcessId $_.Id) })
}

#endregion

#region tmpfs (a full or read-only folder for real)

function New-PgTestTmpfs {
    <#
    .SYNOPSIS
        Mounts a tmpfs with the given options on a new temp folder and returns its path (Linux; needs root or CAP_SYS_ADMIN).
    .DESCRIPTION
        Fails with a clear message when mount fails, as the C# TmpfsMount does: a test that needs a full or read-only
        disk must not pass without one.
    .EXAMPLE
        $path = New-PgTestTmpfs -Options 'size=256k'
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param([Parameter(Mandatory)] [string] $Options)
    $path = Join-Path ([System.IO.Path]::GetTempPath()) ('pgbackup-tmpfs-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
    $null = New-Item -ItemType Directory -Path $path
    $detail = $null
    try {
        $out = & mount -t tmpfs -o $Options tmpfs $path 2>&1
        if ($LASTEXITCODE -ne 0) { $detail = (@($out | ForEach-Object { "$_" }) -join ' ').Trim() }
    }
    catch { $detail = "$_" }
    if ($null -ne $detail) {
        Remove-PgTestFolder -Path $path
        throw "mounting a tmpfs failed ($detail); these tests need root (or CAP_SYS_ADMIN) to simulate a full or read-only disk"
    }
    $path
}

function Remove-PgTestTmpfs {
    <# Unmounts (lazily) and removes a folder made by New-PgTestTmpfs. Accepts $null; never throws. #>
    [CmdletBinding()]
    param([AllowNull()] [string] $Path)
    if ([string]::IsNullOrEmpty($Path)) { return }
    try { $null = & umount -l $Path 2>&1 }
    catch { Write-Warning "umount -l $Path failed: $_" }
    Remove-PgTestFolder -Path $Path
}

#endregion


#region Azurite

function Start-PgTestAzurite {
    <#
    .SYNOPSIS
        Starts Azurite's blob service (npm package azurite, installed by scripts/prerequisites.sh --tests) on a free
        loopback port with a fresh data folder; Stop-PgTestAzurite stops it and removes the folder.
    .DESCRIPTION
        Fails, saying what to install, when Azurite is not there. Returns an object with the service URL of the
        well-known development account, its connection string, and a NewContainerUrl() script method.
    #>
    [CmdletBinding()]
    param()
    $dataHome = if ($env:XDG_DATA_HOME) { $env:XDG_DATA_HOME } else { Join-Path $HOME '.local/share' }
    $candidates = @($env:PGBACKUP_AZURITE, (Join-Path $dataHome 'pgbackup-test/azurite/node_modules/.bin/azurite-blob')) +
        @(Get-Command azurite-blob -CommandType Application -ErrorAction SilentlyContinue | ForEach-Object Source)
    $program = $candidates | Where-Object { $_ -and (Test-Path -LiteralPath $_ -PathType Leaf) } | Select-Object -First 1
    if (-not $program) {
        throw ('Azurite (the Azure Storage emulator) is not installed, and the blob repository tests need it. Run scripts/prerequisites.sh --tests, ' +
            'which installs it with: npm install --prefix ~/.local/share/pgbackup-test/azurite azurite@3.37.0 (or set PGBACKUP_AZURITE to an azurite-blob program).')
    }
    $folder = [System.IO.Directory]::CreateTempSubdirectory('pgbackup-pester-azurite-').FullName
    $psi = [System.Diagnostics.ProcessStartInfo]::new($program)
    foreach ($a in @('--blobHost', '127.0.0.1', '--blobPort', '0', '--location', $folder, '--skipApiVersionCheck')) { $psi.ArgumentList.Add($a) }
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $psi.UseShellExecute = $false
    $process = [System.Diagnostics.Process]::Start($psi)
    $port = $null
    $deadline = [DateTime]::UtcNow.AddSeconds(60)
    $seen = [System.Collections.Generic.List[string]]::new()
    while (-not $port -and [DateTime]::UtcNow -lt $deadline) {
        $line = $process.StandardOutput.ReadLine()
        if ($null -eq $line) { break }
        $seen.Add($line)
        if ($line -match 'listens on https?://[^:]+:(\d+)') { $port = [int] $Matches[1] }
    }
    if (-not $port) {
        try { $process.Kill($true) } catch { }
        throw "Azurite did not start listening: $($seen -join ' | ') $($process.StandardError.ReadToEnd())"
    }
    # Its further output is not read; drain it so a full pipe can never block it.
    $null = $process.StandardOutput.ReadToEndAsync()
    $null = $process.StandardError.ReadToEndAsync()
    $account = 'devstoreaccount1'
    $key = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
    $serviceUrl = "http://127.0.0.1:$port/$account"
    $azurite = [pscustomobject]@{
        PSTypeName       = 'PgBackup.TestAzurite'
        Process          = $process
        Folder           = $folder
        Port             = $port
        Account          = $account
        AccountKey       = $key
        ServiceUrl       = $serviceUrl
        ConnectionString = "DefaultEndpointsProtocol=http;AccountName=$account;AccountKey=$key;BlobEndpoint=$serviceUrl;"
    }
    $azurite | Add-Member -MemberType ScriptMethod -Name NewContainerUrl -Value { "$($this.ServiceUrl)/t$([guid]::NewGuid().ToString('N').Substring(0, 20))" }
    $azurite
}

function Stop-PgTestAzurite {
    <# Stops Azurite started by Start-PgTestAzurite and removes its data; accepts $null, never throws. #>
    [CmdletBinding()]
    param([AllowNull()] [psobject] $Azurite)
    if ($null -eq $Azurite) { return }
    try { if (-not $Azurite.Process.HasExited) { $Azurite.Process.Kill($true); $null = $Azurite.Process.WaitForExit(10000) } } catch { }
    Remove-PgTestFolder -Path $Azurite.Folder
}

function Start-PgTestPgBouncer {
    <#
    .SYNOPSIS
        Starts a PgBouncer (Debian package pgbouncer, installed by scripts/prerequisites.sh --tests) on a free loopback
        port in front of a test cluster, in transaction pooling, with the cluster's password; Stop-PgTestPgBouncer stops it.
    .DESCRIPTION
        Its [databases] section sends each of -Database to the cluster. postgres is an admin user of its console. Runs
        as the postgres user when this process is root (PgBouncer refuses root). Returns Port, Server ('127.0.0.1:port'),
        ConfigPath (its pgbouncer.ini, which Switch-PgPrimary -PgBouncerConfig rewrites), Folder and Process.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory)] [psobject] $Cluster, [string[]] $Database = @('postgres'))
    $program = @('/usr/sbin/pgbouncer', '/usr/bin/pgbouncer') + @(Get-Command pgbouncer -CommandType Application -ErrorAction SilentlyContinue | ForEach-Object Source) |
        Where-Object { $_ -and (Test-Path -LiteralPath $_ -PathType Leaf) } | Select-Object -First 1
    if (-not $program) {
        throw 'PgBouncer is not installed, and the Switch-PgPrimary -PgBouncer tests need it. Run scripts/prerequisites.sh --tests, which installs it (Debian/Ubuntu: apt-get install -y pgbouncer).'
    }
    $folder = [System.IO.Directory]::CreateTempSubdirectory('pgbackup-pester-pgbouncer-').FullName
    $port = Get-PgTestFreePort
    $config = Join-Path $folder 'pgbouncer.ini'
    $databases = ($Database | ForEach-Object { "$_ = host=$($Cluster.Host) port=$($Cluster.Port) dbname=$_" }) -join "`n"
    [System.IO.File]::WriteAllText($config, @"
[databases]
$databases

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $(Join-Path $folder 'users.txt')
admin_users = $($script:SuperUser)
pool_mode = transaction
logfile = $(Join-Path $folder 'pgbouncer.log')
"@, $script:Utf8)
    Write-PrivateFile -Path (Join-Path $folder 'users.txt') -Content "`"$($script:SuperUser)`" `"$($Cluster.Password)`"`n"
    $psi = if (-not $IsWindows -and [System.Environment]::IsPrivilegedProcess) {
        $out = & chown -R "$($script:SuperUser):$($script:SuperUser)" $folder 2>&1
        if ($LASTEXITCODE -ne 0) { throw "chown -R postgres:postgres $folder failed: $($out -join ' ')" }
        $start = [System.Diagnostics.ProcessStartInfo]::new('runuser')
        foreach ($a in @('-u', $script:SuperUser, '--', $program, $config)) { $start.ArgumentList.Add($a) }
        $start
    }
    else {
        $start = [System.Diagnostics.ProcessStartInfo]::new($program)
        $start.ArgumentList.Add($config)
        $start
    }
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $psi.UseShellExecute = $false
    $process = [System.Diagnostics.Process]::Start($psi)
    $null = $process.StandardOutput.ReadToEndAsync()
    $null = $process.StandardError.ReadToEndAsync()
    $bouncer = [pscustomobject]@{
        PSTypeName = 'PgBackup.TestPgBouncer'; Process = $process; Folder = $folder; Port = $port; Server = "127.0.0.1:$port"; ConfigPath = $config; Password = $Cluster.Password
        BinDirectory = $Cluster.BinDirectory
    }
    try {
        Wait-PgTestCondition -What "PgBouncer listening on port $port" -Condition { $null -ne (Invoke-PgTestPgBouncerAdmin -PgBouncer $bouncer -Command 'SHOW VERSION' -ErrorAction SilentlyContinue) }
    }
    catch {
        $log = Join-Path $folder 'pgbouncer.log'
        Stop-PgTestPgBouncer -PgBouncer $bouncer
        throw "PgBouncer did not start: $_ $(if (Test-Path -LiteralPath $log) { Get-Content -LiteralPath $log -Tail 5 })"
    }
    $bouncer
}

function Invoke-PgTestPgBouncerAdmin {
    <# Runs one command on a test PgBouncer's admin console with psql; returns its rows, fields separated by '|'. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)] [psobject] $PgBouncer, [Parameter(Mandatory)] [string] $Command)
    $psql = Get-PgToolPath -Cluster $PgBouncer -Tool 'psql'
    $saved = Push-PgEnvironment -Set @{ PGPASSWORD = $PgBouncer.Password }
    try { $output = & $psql -X -q -A -t -F '|' -h 127.0.0.1 -p $PgBouncer.Port -U $script:SuperUser -d pgbouncer -c $Command 2>&1 }
    finally { Pop-PgEnvironment -Saved $saved }
    if ($LASTEXITCODE -ne 0) { Write-Error "PgBouncer refused '$Command': $($output -join ' ')"; return }
    @($output | ForEach-Object { "$_" } | Where-Object { $_ })
}

function Stop-PgTestPgBouncer {
    <# Stops a PgBouncer started by Start-PgTestPgBouncer and removes its folder; accepts $null, never throws. #>
    [CmdletBinding()]
    param([AllowNull()] [psobject] $PgBouncer)
    if ($null -eq $PgBouncer) { return }
    try { if (-not $PgBouncer.Process.HasExited) { $PgBouncer.Process.Kill($true); $null = $PgBouncer.Process.WaitForExit(10000) } } catch { }
    Remove-PgTestFolder -Path $PgBouncer.Folder
}

function Start-PgTestPatroni {
    <#
    .SYNOPSIS
        Starts a Patroni cluster on loopback: one etcd (v2 API on, as Patroni 3.0's etcd client needs) and -Members
        Patroni nodes running PostgreSQL as the postgres user; Stop-PgTestPatroni stops all of it and removes its folder.
    .DESCRIPTION
        Debian packages patroni and etcd-server, installed by scripts/prerequisites.sh --tests. The first node bootstraps
        and leads, the others clone from it. loop_wait is 1 second so switchovers finish quickly. The REST API asks for
        basic auth (RestUser/RestPassword) on its unsafe methods. Returns Members (Name, Server, RestUrl), RestUrl (the
        first node's), Password (the superuser postgres's, also for replication), Credential, RestCredential, Folder.
    #>
    [CmdletBinding()]
    param([int] $Members = 2)
    $patroni = @('/usr/bin/patroni') + @(Get-Command patroni -CommandType Application -ErrorAction SilentlyContinue | ForEach-Object Source) | Where-Object { $_ -and (Test-Path -LiteralPath $_) } | Select-Object -First 1
    $etcd = @('/usr/bin/etcd') + @(Get-Command etcd -CommandType Application -ErrorAction SilentlyContinue | ForEach-Object Source) | Where-Object { $_ -and (Test-Path -LiteralPath $_) } | Select-Object -First 1
    if (-not $patroni -or -not $etcd) {
        throw 'Patroni and etcd are not installed, and the Patroni tests need them. Run scripts/prerequisites.sh --tests, which installs them (Debian/Ubuntu: apt-get install -y patroni etcd-server).'
    }
    $bin = Find-PgServerBinDirectory
    $folder = [System.IO.Directory]::CreateTempSubdirectory('pgbackup-pester-patroni-').FullName
    $password = 'pgbackup-patroni-' + [System.Convert]::ToHexString([System.Security.Cryptography.RandomNumberGenerator]::GetBytes(8)).ToLowerInvariant()
    $restPassword = 'rest-' + [System.Convert]::ToHexString([System.Security.Cryptography.RandomNumberGenerator]::GetBytes(8)).ToLowerInvariant()
    $clientPort, $peerPort = (Get-PgTestFreePort), (Get-PgTestFreePort)
    $nodes = foreach ($i in 0..($Members - 1)) {
        $rest, $pg = (Get-PgTestFreePort), (Get-PgTestFreePort)
        $config = Join-Path $folder "node$i.yml"
        [System.IO.File]::WriteAllText($config, @"
scope: pgbackup-test
name: node$i
restapi:
  listen: 127.0.0.1:$rest
  connect_address: 127.0.0.1:$rest
  authentication:
    username: patroni
    password: $restPassword
etcd:
  host: 127.0.0.1:$clientPort
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - host replication postgres 127.0.0.1/32 scram-sha-256
  - host all all 127.0.0.1/32 scram-sha-256
  - local all all trust
postgresql:
  listen: 127.0.0.1:$pg
  connect_address: 127.0.0.1:$pg
  data_dir: $(Join-Path $folder "data$i")
  bin_dir: $bin
  pgpass: $(Join-Path $folder "pgpass$i")
  authentication:
    replication:
      username: postgres
      password: $password
    superuser:
      username: postgres
      password: $password
    rewind:
      username: postgres
      password: $password
  parameters:
    unix_socket_directories: '$folder'
    password_encryption: scram-sha-256
"@, $script:Utf8)
        [pscustomobject]@{ Name = "node$i"; Server = "127.0.0.1:$pg"; Port = $pg; RestUrl = "http://127.0.0.1:$rest"; Config = $config; Process = $null }
    }
    $asRoot = -not $IsWindows -and [System.Environment]::IsPrivilegedProcess
    if ($asRoot) {
        $out = & chown -R "$($script:SuperUser):$($script:SuperUser)" $folder 2>&1
        if ($LASTEXITCODE -ne 0) { throw "chown -R postgres:postgres $folder failed: $($out -join ' ')" }
    }
    function Start-Child([string] $Program, [string[]] $Arguments, [string] $Log) {
        $psi = if ($asRoot) { [System.Diagnostics.ProcessStartInfo]::new('runuser') } else { [System.Diagnostics.ProcessStartInfo]::new('/bin/sh') }
        $command = "exec '$Program' $(($Arguments | ForEach-Object { "'$_'" }) -join ' ') >'$Log' 2>&1"
        foreach ($a in $(if ($asRoot) { @('-u', $script:SuperUser, '--', '/bin/sh', '-c', $command) } else { @('-c', $command) })) { $psi.ArgumentList.Add($a) }
        $psi.UseShellExecute = $false
        [System.Diagnostics.Process]::Start($psi)
    }
    $cluster = [pscustomobject]@{
        PSTypeName = 'PgBackup.TestPatroni'; Folder = $folder; Members = @($nodes); RestUrl = $nodes[0].RestUrl; Password = $password; Etcd = $null
        Credential = [pscredential]::new('postgres', (ConvertTo-SecureString $password -AsPlainText -Force))
        RestCredential = [pscredential]::new('patroni', (ConvertTo-SecureString $restPassword -AsPlainText -Force))
    }
    try {
        $cluster.Etcd = Start-Child $etcd @('--name', 'e1', '--data-dir', (Join-Path $folder 'etcd'), '--listen-client-urls', "http://127.0.0.1:$clientPort", '--advertise-client-urls', "http://127.0.0.1:$clientPort",
            '--listen-peer-urls', "http://127.0.0.1:$peerPort", '--initial-advertise-peer-urls', "http://127.0.0.1:$peerPort", '--initial-cluster', "e1=http://127.0.0.1:$peerPort", '--enable-v2=true') (Join-Path $folder 'etcd.log')
        Wait-PgTestCondition -What 'etcd answering' -Condition { try { $null -ne (Invoke-RestMethod "http://127.0.0.1:$clientPort/version" -TimeoutSec 2) } catch { $false } }
        foreach ($node in $nodes) {
            $node.Process = Start-Child $patroni @($node.Config) (Join-Path $folder "$($node.Name).log")
            if ($node -eq $nodes[0]) {
                Wait-PgTestCondition -What 'the first Patroni node leading' -Seconds 90 -Condition {
                    try { (Invoke-RestMethod "$($node.RestUrl)/cluster" -TimeoutSec 2).members | Where-Object { $_.role -eq 'leader' -and $_.state -eq 'running' } } catch { $null }
                }
            }
        }
        Wait-PgTestCondition -What 'every Patroni replica following the leader' -Seconds 90 -Condition {
            try { @((Invoke-RestMethod "$($nodes[0].RestUrl)/cluster" -TimeoutSec 2).members | Where-Object { $_.role -ne 'leader' -and $_.state -in 'running', 'streaming' -and $_.lag -eq 0 }).Count -eq $Members - 1 } catch { $false }
        }
    }
    catch {
        $logs = Get-ChildItem -LiteralPath $folder -Filter '*.log' | ForEach-Object { "$($_.Name): $(Get-Content -LiteralPath $_.FullName -Tail 5)" }
        Stop-PgTestPatroni -Patroni $cluster
        throw "The Patroni test cluster did not start: $_ $($logs -join ' | ')"
    }
    $cluster
}

function Stop-PgTestPatroni {
    <# Stops the Patroni nodes (and the PostgreSQL servers they run), then etcd, and removes the folder; accepts $null, never throws. #>
    [CmdletBinding()]
    param([AllowNull()] [psobject] $Patroni)
    if ($null -eq $Patroni) { return }
    foreach ($process in @($Patroni.Members | ForEach-Object Process) + @($Patroni.Etcd)) {
        try { if ($process -and -not $process.HasExited) { $process.Kill($true); $null = $process.WaitForExit(15000) } } catch { }
    }
    # A postmaster Patroni started is not its child process: stop whatever still runs in the data folders.
    foreach ($data in Get-ChildItem -LiteralPath $Patroni.Folder -Directory -Filter 'data*' -ErrorAction SilentlyContinue) {
        $pidFile = Join-Path $data.FullName 'postmaster.pid'
        if (Test-Path -LiteralPath $pidFile) {
            $postmaster = [int] (Get-Content -LiteralPath $pidFile -TotalCount 1)
            try { Stop-Process -Id $postmaster -Force -ErrorAction Stop; Start-Sleep -Milliseconds 500 } catch { }
        }
    }
    Remove-PgTestFolder -Path $Patroni.Folder
}

#endregion

Export-ModuleMember -Function @(
    'Start-PgTestAzurite'
    'Stop-PgTestAzurite'
    'Start-PgTestPgBouncer'
    'Stop-PgTestPgBouncer'
    'Stop-PgTestClusterPair'
    'Stop-PgTestServer'
    'Start-PgTestPatroni'
    'Stop-PgTestPatroni'
    'Invoke-PgTestPgBouncerAdmin'
    'New-PgTestDumpRepository'
    'Get-PgTestRepositoryRoot'
    'Get-PgBackupModuleManifest'
    'Get-PgTestKnownCmdlet'
    'Find-PgServerBinDirectory'
    'Get-PgToolPath'
    'Get-PgTestFreePort'
    'Enter-PgTestEnvironment'
    'Exit-PgTestEnvironment'
    'New-PgTestRepository'
    'Remove-PgTestRepository'
    'Start-PgTestCluster'
    'Stop-PgTestCluster'
    'Start-PgTestStandby'
    'Wait-PgTestCondition'
    'Save-PgTestWalSegment'
    'Invoke-PgTestSql'
    'Remove-PgTestDatabase'
    'New-PgTestSampleDatabase'
    'Get-PgTestRowCount'
    'Invoke-PgTestRunspace'
    'New-PgTestRunspace'
    'Format-PgTestError'
    'New-PgTestTmpfs'
    'Remove-PgTestTmpfs'
    'Start-PgTestPwsh'
    'Wait-PgTestPwsh'
    'Send-PgTestSignal'
    'Start-PgTestSession'
    'Stop-PgTestSession'
    'Suspend-PgTestServer'
    'Resume-PgTestServer'
    'Get-PgTestPostmasterId'
    'Get-PgTestProcess'
    'Test-PgTestProcessRunning'
)
