#Requires -Version 7.4
# Start-PgBaseBackup against the built module: a real PostgreSQL cluster, the real pg_* tools.

Describe 'Start-PgBaseBackup' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        $manifest = Get-PgBackupModuleManifest
        Import-Module $manifest -Force

        $cluster = Start-PgTestCluster -Name 'basebackup'
        $environment = Enter-PgTestEnvironment -Cluster $cluster
        $server = $cluster.Server
        New-PgTestSampleDatabase -Cluster $cluster -Database shop -ItemRows 20000
        # A second runspace sees progress records and can be stopped as Ctrl+C does.
        $runspace = New-PgTestRunspace -ModulePath $manifest
    }

    AfterAll {
        if ($runspace) { $runspace.Dispose() }
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $cluster
        Remove-PgTestRepository
    }

    It 'pipes a base backup into a test that starts it' {
        $repo = New-PgTestRepository
        $r = Invoke-PgTestRunspace -Runspace $runspace -Script 'Start-PgBaseBackup -Server $s -Repository $r -Format Tar -Compress client-gzip:1 | Test-PgBackup -Restore' -Variables @{ s = $server; r = $repo }
        $r.AllErrors | Should -BeNullOrEmpty -Because (Format-PgTestError $r.AllErrors)
        $r.Output | Should -HaveCount 1
        $test = $r.Output[0]
        $test.PSObject.TypeNames | Should -Contain 'PgBackup.BackupTestResult'
        $test.Success | Should -BeTrue -Because ($test.Failures -join ' ')
        $test.RestoreTested | Should -BeTrue
        $test.Format | Should -BeExactly 'Tar'
        $r.Progress | Where-Object { $_.PercentComplete -gt 0 -and $_.StatusDescription.Contains(' MB') } | Should -Not -BeNullOrEmpty

        $backup = Get-PgBackup -Repository $repo -Kind Base -ErrorAction Stop
        $backup | Should -HaveCount 1
        $backup.PSObject.TypeNames | Should -Contain 'PgBackup.BaseBackup'
        "$($backup.VerificationState)" | Should -BeExactly 'Verified'
        $backup.SystemIdentifier | Should -BeExactly (Invoke-PgTestSql -Cluster $cluster -Sql 'select system_identifier from pg_control_system()')
        "$($backup.StartLsn)" | Should -MatchExactly '^[0-9A-F]+/[0-9A-F]+$'
        $backup.StartSegment | Should -MatchExactly '^[0-9A-F]{24}$'
    }

    It 'verifies and starts a Tar backup compressed with <Compress>' -ForEach @(@{ Compress = 'client-lz4' }, @{ Compress = 'server-zstd' }) {
        $test = Start-PgBaseBackup -Server $server -Repository (New-PgTestRepository) -Format Tar -Compress $Compress -ErrorAction Stop | Test-PgBackup -Restore -ErrorAction Stop
        $test.Success | Should -BeTrue -Because ($test.Failures -join ' ')
        $test.RestoreTested | Should -BeTrue
    }

    It 'writes a SHA-256 manifest that pg_verifybackup accepts on its own' {
        $backup = Start-PgBaseBackup -Server $server -Repository (New-PgTestRepository) -ErrorAction Stop
        $text = [System.IO.File]::ReadAllText($backup.ManifestPath)
        $text | Should -Match '"Checksum-Algorithm":"SHA256"'
        $text | Should -Not -Match 'CRC32C'
        $verify = & (Get-PgToolPath -Cluster $cluster -Tool 'pg_verifybackup') --quiet $backup.Path 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "$verify"
    }

    It 'writes nothing with -WhatIf' {
        $repo = New-PgTestRepository
        Start-PgBaseBackup -Server $server -Repository $repo -WhatIf -ErrorAction Stop
        Get-ChildItem -LiteralPath $repo -Force | Should -BeNullOrEmpty
    }

    # tmpfs exists on Linux only; there these tests need root (or CAP_SYS_ADMIN) and fail, not skip, without it.
    It 'reports an unwritable repository as permission denied' -Skip:(-not $IsLinux) {
        $mount = New-PgTestTmpfs -Options 'ro,size=1m'
        try {
            $null = Start-PgBaseBackup -Server $server -Repository $mount -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetNotWritable,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::PermissionDenied)
        }
        finally { Remove-PgTestTmpfs -Path $mount }
    }

    It 'fails on a full disk and leaves nothing behind' -Skip:(-not $IsLinux) {
        $mount = New-PgTestTmpfs -Options 'size=2m'
        try {
            $null = Start-PgBaseBackup -Server $server -Repository $mount -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetFull,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::WriteError)
            # Only the lock that keeps two base backups of one server apart stays; no file of the backup does.
            Get-ChildItem -LiteralPath $mount -Recurse -File -Force | Where-Object Name -ne 'backup.lock' | Should -BeNullOrEmpty
            Get-PgBackup -Repository $mount -ErrorAction Stop | Should -BeNullOrEmpty
        }
        finally { Remove-PgTestTmpfs -Path $mount }
    }

    It 'cancels the backup and leaves nothing behind when the pipeline is stopped' {
        $repo = New-PgTestRepository
        $r = Invoke-PgTestRunspace -Runspace $runspace -Script 'Start-PgBaseBackup -Server $s -Repository $r -MaxRate 1024k' `
            -Variables @{ s = $server; r = $repo } -StopWhen { param($progress) $progress.StatusDescription.Contains(' MB') } -Timeout ([timespan]::FromSeconds(60))
        $r.Stopped | Should -BeTrue -Because "the backup finished before it could be stopped: $(Format-PgTestError $r.AllErrors)"
        Get-ChildItem -LiteralPath $repo -Recurse -File -Force | Where-Object Name -ne 'backup.lock' | Should -BeNullOrEmpty
    }

    It 'refuses client-side compression of a Plain backup' {
        $null = Start-PgBaseBackup -Server $server -Repository (New-PgTestRepository) -Format Plain -Compress client-gzip -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PlainNotCompressible,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
    }

    It 'removes base backups by retention like dumps' {
        $repo = New-PgTestRepository
        1..2 | ForEach-Object { $null = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop }
        $removed = Remove-PgBackup -Repository $repo -KeepLast 1 -PassThru -ErrorAction Stop
        $removed | Should -HaveCount 1
        $removed.PSObject.TypeNames | Should -Contain 'PgBackup.BaseBackup'
        Test-Path -LiteralPath $removed.Path | Should -BeFalse
        Get-PgBackup -Repository $repo -Kind Base -ErrorAction Stop | Should -HaveCount 1
    }
}
