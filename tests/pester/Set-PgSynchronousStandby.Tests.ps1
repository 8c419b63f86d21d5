#Requires -Version 7.4
# Set-PgSynchronousStandby against the built module, with a real primary and a streaming
# standby made from it with pg_basebackup, built the way Replication.Tests.ps1 builds them.

Describe 'Set-PgSynchronousStandby' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $primary = Start-PgTestCluster -Name 'syncprimary'
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'create table ticks(id serial primary key, at timestamptz default now())'

        # A streaming standby made with pg_basebackup -R; its application name is its cluster_name.
        $standby = Start-PgTestStandby -Primary $primary -Name 'syncstandby' -ClusterName 'pester_sync_standby'
        Wait-PgTestCondition -What 'The standby streaming from the primary' -Condition {
            (Invoke-PgTestSql -Cluster $primary -Sql "select count(*) from pg_stat_replication where application_name = 'pester_sync_standby' and state = 'streaming'") -eq '1'
        }
        Wait-PgTestCondition -What "The standby's WAL receiver streaming" -Condition {
            (Invoke-PgTestSql -Cluster $standby -Sql "select count(*) from pg_stat_wal_receiver where status = 'streaming'") -eq '1'
        }

        $environment = Enter-PgTestEnvironment -Cluster $primary
        $primaryServer = $primary.Server
        $standbyServer = $standby.Server
    }

    AfterAll {
        # A safety net: never leave the primary waiting for a standby that is about to stop.
        try { $null = Invoke-PgTestSql -Cluster $primary -Sql "alter system reset synchronous_standby_names;`nalter system reset synchronous_commit;`nselect pg_reload_conf();" }
        catch { Write-Warning "Resetting synchronous replication on the primary failed: $_" }
        Exit-PgTestEnvironment -State $environment
        # Stopping the standby first keeps the primary's fast shutdown from waiting for its WAL sender.
        Stop-PgTestCluster -Cluster $standby
        Stop-PgTestCluster -Cluster $primary
    }

    It 'sets a streaming standby synchronous, refuses one that is absent and resets' {
        $name = Invoke-PgTestSql -Cluster $primary -Sql 'select application_name from pg_stat_replication'
        $name | Should -BeExactly 'pester_sync_standby'
        try {
            $set = @(Set-PgSynchronousStandby -Server $primaryServer -Standby $name -SynchronousCommit remote_apply -ErrorVariable err -ErrorAction SilentlyContinue)
            $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
            $set | Should -HaveCount 1
            $result = $set[0]
            $result.PSObject.TypeNames | Should -Contain 'PgBackup.SynchronousReplicationResult'
            $result.SynchronousStandbyNames | Should -BeExactly "FIRST 1 (`"$name`")"
            $result.SynchronousCommit | Should -BeExactly 'remote_apply'
            $result.Forced | Should -BeFalse
            Invoke-PgTestSql -Cluster $primary -Sql 'select sync_state from pg_stat_replication' | Should -BeExactly 'sync'
            # Returns only because the standby confirms the commit.
            $null = Invoke-PgTestSql -Cluster $primary -Sql "insert into ticks default values"

            $before = Invoke-PgTestSql -Cluster $primary -Sql 'show synchronous_standby_names'
            $null = Set-PgSynchronousStandby -Server $primaryServer -Standby ghost -ErrorVariable refused -ErrorAction SilentlyContinue
            $refused | Should -HaveCount 1 -Because (Format-PgTestError $refused)
            $refused[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.SynchronousStandbyNotConnected,*'
            $refused[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidOperation)
            $refused[0].Exception.Message | Should -BeLikeExactly "*$name*"
            Invoke-PgTestSql -Cluster $primary -Sql 'show synchronous_standby_names' | Should -BeExactly $before
        }
        finally {
            $null = Set-PgSynchronousStandby -Server $primaryServer -Standby @() -SynchronousCommit on -ErrorVariable reset -ErrorAction SilentlyContinue
            $reset | Should -BeNullOrEmpty -Because (Format-PgTestError $reset)
        }
        Invoke-PgTestSql -Cluster $primary -Sql 'show synchronous_standby_names' | Should -BeNullOrEmpty
        Invoke-PgTestSql -Cluster $primary -Sql 'select sync_state from pg_stat_replication' | Should -BeExactly 'async'
    }

    It 'refuses a standby as the server with PgBackup.NotAPrimary' {
        $null = Set-PgSynchronousStandby -Server $standbyServer -Standby 'pester_sync_standby' -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.NotAPrimary,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidOperation)
    }

    It 'refuses a -Count above the number of standbys named and changes nothing' {
        $before = Invoke-PgTestSql -Cluster $primary -Sql 'show synchronous_standby_names'
        $null = Set-PgSynchronousStandby -Server $primaryServer -Standby 'pester_sync_standby' -Count 2 -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.InvalidSynchronousCount,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
        Invoke-PgTestSql -Cluster $primary -Sql 'show synchronous_standby_names' | Should -BeExactly $before
    }
}
