#Requires -Version 7.4
# Get-PgBackup against the built module: a real PostgreSQL cluster, the real pg_* tools.

Describe 'Get-PgBackup' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $cluster = Start-PgTestCluster -Name 'get'
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

    It 'lists, filters and picks the latest' {
        $repo = New-PgTestDumpRepository -Server $server -ShopDumps 2 -EuDumps 1
        $all = Get-PgBackup -Repository $repo -ErrorAction Stop
        $all | Should -HaveCount 3
        foreach ($backup in $all) { $backup.PSObject.TypeNames | Should -Contain 'PgBackup.DumpBackup' }
        Get-PgBackup -Repository $repo -Database 'shop' | Should -HaveCount 2
        Get-PgBackup -Repository $repo -Database 'shop*' -Server $server | Should -HaveCount 3
        Get-PgBackup -Repository $repo -Server 'elsewhere:5432' | Should -BeNullOrEmpty
        Get-PgBackup -Repository $repo -Latest -ErrorAction Stop | Should -HaveCount 2
        Get-PgBackup -Repository $repo | Where-Object Database -EQ 'shop_eu' | Should -HaveCount 1
    }

    It 'reports a missing repository' {
        $missing = Join-Path ([System.IO.Path]::GetTempPath()) "pgbackup-nonexistent-$([guid]::NewGuid().ToString('N'))" 'repo'
        $null = Get-PgBackup -Repository $missing -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.RepositoryNotFound,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ObjectNotFound)
    }

    It 'takes the repository from the environment' {
        $repo = New-PgTestDumpRepository -Server $server -ShopDumps 0 -EuDumps 1
        $env:PGBACKUP_REPOSITORY = $repo
        try { $backups = Get-PgBackup -ErrorAction Stop }
        finally { $env:PGBACKUP_REPOSITORY = $null }
        $backups | Should -HaveCount 1
    }
}
