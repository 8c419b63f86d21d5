#Requires -Version 7.4
# Invoke-PgDump against the built module: a real PostgreSQL cluster, the real pg_* tools.

Describe 'Invoke-PgDump' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        $manifest = Get-PgBackupModuleManifest
        Import-Module $manifest -Force

        $cluster = Start-PgTestCluster -Name 'invoke'
        $environment = Enter-PgTestEnvironment -Cluster $cluster
        $server = $cluster.Server
        # More rows than the C# fixture's 20,000: the stop test polls for progress and must catch pg_dump while it works.
        New-PgTestSampleDatabase -Cluster $cluster -Database shop -ItemRows 100000
        New-PgTestSampleDatabase -Cluster $cluster -Database shop_eu -ItemRows 500
        # A second runspace sees progress records and can be stopped as Ctrl+C does.
        $runspace = New-PgTestRunspace -ModulePath $manifest
    }

    AfterAll {
        if ($runspace) { $runspace.Dispose() }
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $cluster
        Remove-PgTestRepository
    }

    It 'dumps a database into the repository and returns a DumpBackup' {
        $repo = New-PgTestRepository
        $r = Invoke-PgTestRunspace -Runspace $runspace -Script 'Invoke-PgDump -Server $s -Database shop -Repository $r -Format Custom -Verbose' -Variables @{ s = $server; r = $repo }
        $r.AllErrors | Should -BeNullOrEmpty -Because (Format-PgTestError $r.AllErrors)
        $r.Output | Should -HaveCount 1
        $dump = $r.Output[0]
        $dump.PSObject.TypeNames | Should -Contain 'PgBackup.DumpBackup'
        $dump.Database | Should -BeExactly 'shop'
        $dump.Server | Should -BeExactly '127.0.0.1'
        $dump.Port | Should -Be $cluster.Port
        $prefix = Join-Path $repo "127.0.0.1_$($cluster.Port)" 'shop'
        $dump.Path.StartsWith($prefix, [System.StringComparison]::Ordinal) | Should -BeTrue -Because "'$($dump.Path)' should be under '$prefix'"
        Test-Path -LiteralPath $dump.Path -PathType Leaf | Should -BeTrue
        $dump.Sha256 | Should -MatchExactly '^[0-9a-f]{64}$'
        $dump.SizeBytes | Should -BeOfType ([long])
        $dump.SizeBytes | Should -BeGreaterThan 0
        $dump.Duration | Should -BeOfType ([timespan])
        $dump.StartTime | Should -BeOfType ([System.DateTimeOffset])
        $r.Progress | Where-Object { $_.PercentComplete -gt 0 -and $_.StatusDescription.StartsWith('Table ') } | Should -Not -BeNullOrEmpty
        $r.Verbose | Where-Object { $_.Contains('Using pg_dump') } | Should -Not -BeNullOrEmpty
        $r.Information | Where-Object { "$($_.MessageData)".StartsWith('Dumped ') } | Should -Not -BeNullOrEmpty
    }

    It 'makes one backup per matching database for a wildcard' {
        $repo = New-PgTestRepository
        $dumps = Invoke-PgDump -Server $server -Database shop* -Repository $repo -Format Directory -Jobs 2 -ErrorAction Stop
        (@($dumps.Database | Sort-Object) -join ',') | Should -BeExactly 'shop,shop_eu'
        foreach ($dump in $dumps) { Test-Path -LiteralPath $dump.Path -PathType Container | Should -BeTrue -Because $dump.Path }
    }

    It 'dumps the globals with pg_dumpall' {
        $repo = New-PgTestRepository
        $dump = Invoke-PgDump -Server $server -Globals -Repository $repo -ErrorAction Stop
        $dump | Should -HaveCount 1
        "$($dump.Kind)" | Should -BeExactly 'Globals'
        Get-Content -LiteralPath $dump.Path -Raw | Should -BeLikeExactly '*CREATE ROLE postgres*'
    }

    It 'writes nothing with -WhatIf' {
        $repo = New-PgTestRepository
        $result = Invoke-PgDump -Server $server -Database shop -Repository $repo -WhatIf -ErrorAction Stop
        $result | Should -BeNullOrEmpty
        Get-ChildItem -LiteralPath $repo -Force | Should -BeNullOrEmpty
    }

    It 'reports an unreachable server as a connection error' {
        $port = Get-PgTestFreePort
        $null = Invoke-PgDump -Server "127.0.0.1:$port" -Database shop -Repository (New-PgTestRepository) -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $e = $err[0]
        $e.FullyQualifiedErrorId | Should -BeExactly 'PgBackup.ServerUnreachable,PgBackup.Commands.InvokePgDumpCommand'
        $e.CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ConnectionError)
        $e.TargetObject | Should -BeExactly "127.0.0.1:$port"
        $e.ErrorDetails.RecommendedAction | Should -Not -BeNullOrEmpty
    }

    It 'reports a wrong password as an authentication error that never shows the password' {
        $cred = [pscredential]::new('postgres', [System.Net.NetworkCredential]::new('', 'Wr0ng-Secret!').SecurePassword)
        $streams = Invoke-PgDump -Server $server -Database shop -Repository (New-PgTestRepository) -Credential $cred -Verbose -ErrorVariable err -ErrorAction SilentlyContinue 4>&1
        $verbose = @($streams | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] } | ForEach-Object { $_.Message })
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $e = $err[0]
        $e.FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.AuthenticationFailed,*'
        $e.CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::AuthenticationError)
        $e.ErrorDetails.RecommendedAction | Should -BeLikeExactly '*credential*'
        ($e.ToString() + $e.ErrorDetails.RecommendedAction + $e.TargetObject + ($verbose -join '')) | Should -Not -BeLike '*Wr0ng-Secret!*'
    }

    It 'reports a missing database as object not found' {
        $null = Invoke-PgDump -Server $server -Database no_such_db -Repository (New-PgTestRepository) -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.DatabaseNotFound,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ObjectNotFound)
        $err[0].TargetObject | Should -BeExactly 'no_such_db'

        $null = Invoke-PgDump -Server $server -Database 'nothing*' -Repository (New-PgTestRepository) -ErrorVariable wildcardErr -ErrorAction SilentlyContinue
        $wildcardErr | Should -HaveCount 1 -Because (Format-PgTestError $wildcardErr)
        $wildcardErr[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.DatabaseNotFound,*'
        $wildcardErr[0].TargetObject | Should -BeExactly 'nothing*'
    }

    It 'says what to install when pg_dump is missing' {
        $empty = New-PgTestRepository
        $env:PGBACKUP_TOOLPATH = $empty
        try {
            $null = Invoke-PgDump -Server $server -Database shop -Repository (New-PgTestRepository) -ErrorVariable err -ErrorAction SilentlyContinue
        }
        finally { $env:PGBACKUP_TOOLPATH = $null }
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.ToolNotFound,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::NotInstalled)
        $err[0].TargetObject | Should -BeExactly 'pg_dump'
        $err[0].ErrorDetails.RecommendedAction | Should -BeLikeExactly '*apt-get install*'
    }

    It 'refuses a pg_dump older than the server (a shell script posing as pg_dump 9.6)' -Skip:$IsWindows {
        $tools = New-PgTestRepository
        $fake = Join-Path $tools 'pg_dump'
        [System.IO.File]::WriteAllText($fake, "#!/bin/sh`necho 'pg_dump (PostgreSQL) 9.6.24'`n")
        [System.IO.File]::SetUnixFileMode($fake, [System.IO.UnixFileMode] 'UserRead, UserWrite, UserExecute')
        $env:PGBACKUP_TOOLPATH = $tools
        try {
            $streams = Invoke-PgDump -Server $server -Database shop -Repository (New-PgTestRepository) -Verbose -ErrorVariable err -ErrorAction SilentlyContinue 4>&1
        }
        finally { $env:PGBACKUP_TOOLPATH = $null }
        $verbose = @($streams | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] } | ForEach-Object { $_.Message })
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.ToolTooOld,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::NotInstalled)
        $err[0].ToString() | Should -BeLikeExactly '*9.6.24*'
        $verbose | Where-Object { $_.Contains('Refused pg_dump') -and $_.Contains($fake) } | Should -Not -BeNullOrEmpty -Because ($verbose -join "`n")
    }

    # tmpfs exists on Linux only; there these tests need root (or CAP_SYS_ADMIN) and fail, not skip, without it.
    It 'reports a read-only target folder as permission denied' -Skip:(-not $IsLinux) {
        $mount = New-PgTestTmpfs -Options 'ro,size=1m'
        try {
            $null = Invoke-PgDump -Server $server -Database shop -Repository $mount -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetNotWritable,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::PermissionDenied)
        }
        finally { Remove-PgTestTmpfs -Path $mount }
    }

    It 'reports a full target folder as a write error and leaves no partial dump' -Skip:(-not $IsLinux) {
        $mount = New-PgTestTmpfs -Options 'size=256k'
        try {
            $null = Invoke-PgDump -Server $server -Database shop -Repository $mount -Format Plain -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetFull,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::WriteError)
            Get-ChildItem -LiteralPath $mount -Recurse -File -Force | Should -BeNullOrEmpty
        }
        finally { Remove-PgTestTmpfs -Path $mount }
    }

    It 'does not overwrite an existing path without -Force' {
        $file = Join-Path (New-PgTestRepository) 'shop.dump'
        Set-Content -LiteralPath $file -Value 'precious' -NoNewline
        $null = Invoke-PgDump -Server $server -Database shop -Path $file -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetExists,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ResourceExists)
        Get-Content -LiteralPath $file -Raw | Should -BeExactly 'precious'

        $null = Invoke-PgDump -Server $server -Database shop -Path $file -Force -ErrorAction Stop
        [System.Text.Encoding]::ASCII.GetString([System.IO.File]::ReadAllBytes($file), 0, 5) | Should -BeExactly 'PGDMP'
    }

    It 'needs the Directory format for -Jobs' {
        $null = Invoke-PgDump -Server $server -Database shop -Repository (New-PgTestRepository) -Format Custom -Jobs 4 -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.JobsNeedDirectoryFormat,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
    }

    It 'kills pg_dump and leaves nothing behind when the pipeline is stopped' {
        $repo = New-PgTestRepository
        $r = Invoke-PgTestRunspace -Runspace $runspace -Script 'Invoke-PgDump -Server $s -Database shop -Repository $r -Format Plain' `
            -Variables @{ s = $server; r = $repo } -StopWhen { param($progress) $progress.StatusDescription.StartsWith('Table ') } -Timeout ([timespan]::FromSeconds(60))
        $r.Stopped | Should -BeTrue -Because "the dump finished before it could be stopped: $(Format-PgTestError $r.AllErrors)"
        Get-ChildItem -LiteralPath $repo -Recurse -File -Force | Should -BeNullOrEmpty
        # The cmdlet returns only once pg_dump is gone: no pg_dump writing into this repository may outlive the pipeline.
        Get-Process -Name pg_dump -ErrorAction SilentlyContinue |
            Where-Object { $_.CommandLine -and $_.CommandLine.Contains($repo) } |
            Should -BeNullOrEmpty -Because 'no pg_dump started by this process may outlive the stopped pipeline'
    }
}
