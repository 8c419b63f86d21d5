#Requires -Version 7.4
# Get-PgBackupConfig against the built module: a real PostgreSQL cluster, the real pg_* tools.
# Needs no server: it only reads the configuration layers.

Describe 'Get-PgBackupConfig' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force
        # No PG*/PGBACKUP_* variable of the user's shell, an empty pgbackup.json, and PGPASSFILE set (to an empty .pgpass).
        $environment = Enter-PgTestEnvironment
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
    }

    It 'shows values and their sources' {
        $env:PGBACKUP_JOBS = '3'
        try { $settings = Get-PgBackupConfig -ErrorAction Stop }
        finally { $env:PGBACKUP_JOBS = $null }

        $settings | Should -Not -BeNullOrEmpty
        foreach ($setting in $settings) { $setting.PSObject.TypeNames | Should -Contain 'PgBackup.ConfigSetting' }
        $jobs = @($settings | Where-Object { $_.Name -ceq 'Jobs' })
        $jobs | Should -HaveCount 1
        $jobs[0].Value | Should -BeExactly '3'
        $jobs[0].Source | Should -BeExactly 'Environment: PGBACKUP_JOBS'
        $settings | Where-Object { $_.Name -ceq 'DefaultFormat' -and $_.Source -ceq 'Default' } | Should -Not -BeNullOrEmpty
        $settings | Where-Object { $_.Name -ceq 'PGPASSFILE' } | Should -Not -BeNullOrEmpty
        Get-PgBackupConfig -Name Default* -ErrorAction Stop | Should -HaveCount 1
    }

    It 'filters by name' {
        $repository = Get-PgBackupConfig -Name Repository -ErrorAction Stop
        $repository | Should -HaveCount 1
        $repository.Name | Should -BeExactly 'Repository'
    }
}
