#Requires -Version 7.4
# Remove-PgBackup against the built module: a real PostgreSQL cluster, the real pg_* tools.

Describe 'Remove-PgBackup' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $cluster = Start-PgTestCluster -Name 'remove'
        $environment = Enter-PgTestEnvironment -Cluster $cluster
        $server = $cluster.Server
        New-PgTestSampleDatabase -Cluster $cluster -Database shop -ItemRows 20000
        New-PgTestSampleDatabase -Cluster $cluster -Database shop_eu -ItemRows 500

    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $cluster
        Remove-PgTestRepository
    }

    It 'applies -KeepLast, and -WhatIf removes nothing' {
        $repo = New-PgTestDumpRepository -Server $server -ShopDumps 3 -EuDumps 1
        Remove-PgBackup -Repository $repo -KeepLast 1 -WhatIf -ErrorAction Stop
        Get-PgBackup -Repository $repo | Should -HaveCount 4

        $removed = Remove-PgBackup -Repository $repo -KeepLast 1 -PassThru -ErrorAction Stop
        $removed | Should -HaveCount 2
        foreach ($backup in $removed) {
            Test-Path -LiteralPath $backup.Path | Should -BeFalse -Because "$($backup.Path) was removed"
            Test-Path -LiteralPath $backup.MetadataPath | Should -BeFalse -Because "$($backup.MetadataPath) was removed"
        }
        Get-PgBackup -Repository $repo | Should -HaveCount 2
    }

    It 'refuses to remove the last valid backup without -Force' {
        $repo = New-PgTestDumpRepository -Server $server -ShopDumps 0 -EuDumps 1
        Get-PgBackup -Repository $repo -ErrorAction Stop | Remove-PgBackup -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.LastValidBackup,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidOperation)
        Get-PgBackup -Repository $repo | Should -HaveCount 1

        Start-Sleep -Milliseconds 1100
        Remove-PgBackup -Repository $repo -OlderThan ([timespan] '00:00:01') -WarningVariable warnings -WarningAction SilentlyContinue -ErrorAction Stop
        $warnings | Where-Object { $_.Message.Contains('only valid backup') } | Should -Not -BeNullOrEmpty -Because (@($warnings) -join "`n")
        Get-PgBackup -Repository $repo | Should -HaveCount 1

        Get-PgBackup -Repository $repo -ErrorAction Stop | Remove-PgBackup -Force -ErrorAction Stop
        Get-PgBackup -Repository $repo | Should -BeNullOrEmpty
    }

    It 'refuses an age that is really a number of ticks' {
        $repo = New-PgTestDumpRepository -Server $server -ShopDumps 0 -EuDumps 1
        # PowerShell binds a bare number to a TimeSpan as ticks: 30 is 3 microseconds, which would select everything.
        Remove-PgBackup -Repository $repo -OlderThan 30 -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.InvalidOlderThan,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
        Get-PgBackup -Repository $repo | Should -HaveCount 1
    }
}
