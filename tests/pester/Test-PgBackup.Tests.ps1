#Requires -Version 7.4
# Test-PgBackup against the built module: a real PostgreSQL cluster, the real pg_* tools.

Describe 'Test-PgBackup' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $cluster = Start-PgTestCluster -Name 'test'
        $environment = Enter-PgTestEnvironment -Cluster $cluster
        $server = $cluster.Server
        New-PgTestSampleDatabase -Cluster $cluster -Database shop_eu -ItemRows 500

    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $cluster
        Remove-PgTestRepository
    }

    It 'restores into a throwaway database and drops it' {
        $repo = New-PgTestDumpRepository -Server $server -EuDumps 1
        $result = Get-PgBackup -Repository $repo -ErrorAction Stop | Test-PgBackup -Restore -ErrorAction Stop
        $result | Should -HaveCount 1
        $result.PSObject.TypeNames | Should -Contain 'PgBackup.BackupTestResult'
        $result.Success | Should -Be $true -Because ($result.Failures -join '; ')
        $result.RestoreTested | Should -Be $true
        $result.TablesRestored | Should -Be 3
        $result.TestDatabase | Should -Not -BeNullOrEmpty
        Invoke-PgTestSql -Cluster $cluster -Sql "select datname from pg_database where datname = '$($result.TestDatabase)'" | Should -BeNullOrEmpty
        "$((Get-PgBackup -Repository $repo -ErrorAction Stop).VerificationState)" | Should -BeExactly 'Verified'
    }

    It 'answers $true or $false with -Quiet' {
        $repo = New-PgTestDumpRepository -Server $server -EuDumps 1
        $ok = Get-PgBackup -Repository $repo -ErrorAction Stop | Test-PgBackup -Quiet -ErrorAction Stop
        $ok | Should -BeOfType ([bool])
        $ok | Should -Be $true

        $path = (Get-PgBackup -Repository $repo -ErrorAction Stop).Path
        [System.IO.File]::AppendAllText($path, 'tampered')
        $tampered = Test-PgBackup -Path $path -Quiet -ErrorAction Stop
        $tampered | Should -BeOfType ([bool])
        $tampered | Should -Be $false
        (Test-PgBackup -Path $path -ErrorAction Stop).ChecksumValid | Should -Be $false
    }

    It 'creates no database with -WhatIf' {
        $repo = New-PgTestDumpRepository -Server $server -EuDumps 1
        $before = Invoke-PgTestSql -Cluster $cluster -Sql 'select count(*) from pg_database'
        $null = Get-PgBackup -Repository $repo -ErrorAction Stop | Test-PgBackup -Restore -WhatIf -ErrorAction Stop
        Invoke-PgTestSql -Cluster $cluster -Sql 'select count(*) from pg_database' | Should -BeExactly $before
    }
}
