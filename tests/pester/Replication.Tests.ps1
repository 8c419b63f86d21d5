#Requires -Version 7.4
# Mirrors the module tests of Get-PgReplicationStatus, Test-PgReplication and Wait-PgReplication against the built
# module, with a real primary and a streaming standby made from it with pg_basebackup.

Describe 'Replication' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $primary = Start-PgTestCluster -Name 'replprimary'
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'create table ticks(id serial primary key, at timestamptz default now())'

        # A streaming standby made with pg_basebackup -R; its application name is its cluster_name.
        $standby = Start-PgTestStandby -Primary $primary -Name 'replstandby' -ClusterName 'pester_standby'
        Wait-PgTestCondition -What 'The standby streaming from the primary' -Condition {
            (Invoke-PgTestSql -Cluster $primary -Sql "select count(*) from pg_stat_replication where application_name = 'pester_standby' and state = 'streaming'") -eq '1'
        }
        Wait-PgTestCondition -What "The standby's WAL receiver streaming" -Condition {
            (Invoke-PgTestSql -Cluster $standby -Sql "select count(*) from pg_stat_wal_receiver where status = 'streaming'") -eq '1'
        }

        $environment = Enter-PgTestEnvironment -Cluster $primary
        $primaryServer = $primary.Server
        $standbyServer = $standby.Server
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        # Stopping the standby first keeps the primary's fast shutdown from waiting for its WAL sender.
        Stop-PgTestCluster -Cluster $standby
        Stop-PgTestCluster -Cluster $primary
    }

    Context 'while the standby streams' {
        It 'Get-PgReplicationStatus shows the standby as a link of the primary' {
            $out = @(Get-PgReplicationStatus -Server $primaryServer -ErrorAction Stop)
            $out | Should -HaveCount 1
            $link = $out[0]
            $link.PSObject.TypeNames | Should -Contain 'PgBackup.ReplicationLink'
            $link.Role | Should -BeExactly 'Primary'
            $link.ApplicationName | Should -BeExactly 'pester_standby'
            $link.State | Should -BeExactly 'streaming'
            $link.ReplayLagBytes | Should -Not -BeNullOrEmpty
            $link.ReplayLagBytes | Should -BeGreaterOrEqual 0
            "$($link.CurrentLsn)" | Should -MatchExactly '^[0-9A-F]+/[0-9A-F]+$'
        }

        It 'Get-PgReplicationStatus shows a standby its receiver and replay' {
            $out = @(Get-PgReplicationStatus -Server $standbyServer -ErrorAction Stop)
            $out | Should -HaveCount 1
            $status = $out[0]
            $status.PSObject.TypeNames | Should -Contain 'PgBackup.StandbyStatus'
            $status.Role | Should -BeExactly 'Standby'
            $status.ReceiverStatus | Should -BeExactly 'streaming'
            $status.ReplayPaused | Should -BeFalse
            $status.SystemIdentifier | Should -BeExactly (Invoke-PgTestSql -Cluster $primary -Sql 'select system_identifier from pg_control_system()')
        }

        It 'Get-PgReplicationStatus takes several servers from the pipeline' {
            $out = @($primaryServer, $standbyServer | Get-PgReplicationStatus -ErrorAction Stop)
            $out | Should -HaveCount 2
            @($out | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.ReplicationLink' }) | Should -HaveCount 1
            @($out | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.StandbyStatus' }) | Should -HaveCount 1
        }

        It 'Get-PgReplicationStatus -IncludeSlots lists the slots with the WAL they retain' {
            $null = Invoke-PgTestSql -Cluster $primary -Sql "select pg_create_physical_replication_slot('pester_slot', true)"
            try {
                $slots = @(Get-PgReplicationStatus -Server $primaryServer -IncludeSlots -ErrorAction Stop |
                        Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.ReplicationSlot' })
                $slots | Should -HaveCount 1
                $slots[0].SlotName | Should -BeExactly 'pester_slot'
                $slots[0].SlotType | Should -BeExactly 'physical'
                $slots[0].Active | Should -BeFalse
                $slots[0].RetainedBytes | Should -Not -BeNullOrEmpty
                $slots[0].RetainedBytes | Should -BeGreaterOrEqual 0
            }
            finally { $null = Invoke-PgTestSql -Cluster $primary -Sql "select pg_drop_replication_slot('pester_slot')" }
        }

        It 'Test-PgReplication passes on both servers with generous thresholds' {
            $results = @(Test-PgReplication -Server $primaryServer, $standbyServer -MaxLagBytes 1GB -MaxReplayLag (New-TimeSpan -Minutes 10) -ErrorAction Stop)
            $results | Should -HaveCount 2
            foreach ($result in $results) {
                $result.PSObject.TypeNames | Should -Contain 'PgBackup.ReplicationTestResult'
                $result.Success | Should -BeTrue -Because ($result.Failures -join ' ')
                $result.StandbysChecked | Should -Be 1
            }
            $results[0].Role | Should -BeExactly 'Primary'
            $results[1].Role | Should -BeExactly 'Standby'
            Test-PgReplication -Server $primaryServer -MaxLagBytes 1GB -Quiet | Should -BeExactly $true
        }

        It 'Test-PgReplication -Quiet answers $false for a server that cannot be reached' {
            $answer = @(Test-PgReplication -Server "127.0.0.1:$(Get-PgTestFreePort)" -Quiet -ErrorVariable err -ErrorAction SilentlyContinue)
            $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
            $answer | Should -HaveCount 1
            $answer[0] | Should -BeExactly $false
        }

        It 'Wait-PgReplication rejects a value that is not an LSN' {
            $null = Wait-PgReplication -Server $primaryServer -Lsn 'not-an-lsn' -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.InvalidLsn,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
        }

        It 'Wait-PgReplication times out for an application name that is not connected' {
            $null = Wait-PgReplication -Server $primaryServer -ApplicationName 'pester_standby', 'no_such_standby' -Timeout 00:00:01 -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.ReplicationTimeout,*'
            "$($err[0])" | Should -BeLike "*'no_such_standby' is not connected*"
        }
    }

    Context 'while replay on the standby is paused' {
        BeforeAll {
            $null = Invoke-PgTestSql -Cluster $standby -Sql 'select pg_wal_replay_pause()'
            $null = Invoke-PgTestSql -Cluster $primary -Sql 'insert into ticks (at) select now() from generate_series(1, 1000)'
            $null = Invoke-PgTestSql -Cluster $primary -Sql 'insert into ticks default values'
        }

        AfterAll {
            # Never leave the standby paused, even when a test failed.
            $null = Invoke-PgTestSql -Cluster $standby -Sql 'select pg_wal_replay_resume()'
        }

        It 'Test-PgReplication fails the standby and says replay is paused' {
            $result = Test-PgReplication -Server $standbyServer -ErrorAction Stop
            $result.Success | Should -BeFalse
            ($result.Failures -join ' ') | Should -BeLike '*paused*'
            Test-PgReplication -Server $standbyServer -Quiet | Should -BeExactly $false
        }

        It 'Wait-PgReplication times out with PgBackup.ReplicationTimeout' {
            $clock = [System.Diagnostics.Stopwatch]::StartNew()
            $out = Wait-PgReplication -Server $primaryServer -Timeout 00:00:02 -ErrorVariable err -ErrorAction SilentlyContinue
            $clock.Stop()
            $out | Should -BeNullOrEmpty
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.ReplicationTimeout,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::OperationTimeout)
            $err[0].ErrorDetails.RecommendedAction | Should -Not -BeNullOrEmpty
            $clock.Elapsed.TotalSeconds | Should -BeGreaterOrEqual 2
        }

        It 'Wait-PgReplication returns the link once replay is resumed' {
            $null = Invoke-PgTestSql -Cluster $standby -Sql 'select pg_wal_replay_resume()'
            # Taken before the call, so the default target (the primary's position when the cmdlet starts) is at least this.
            $target = Invoke-PgTestSql -Cluster $primary -Sql 'select pg_current_wal_lsn()'
            $out = @(Wait-PgReplication -Server $primaryServer -Timeout 00:00:30 -ErrorAction Stop)
            $out | Should -HaveCount 1
            $out[0].PSObject.TypeNames | Should -Contain 'PgBackup.ReplicationLink'
            $out[0].ApplicationName | Should -BeExactly 'pester_standby'
            $out[0].State | Should -BeExactly 'streaming'
            # The oracle: the standby itself says it has replayed the position.
            Invoke-PgTestSql -Cluster $standby -Sql "select pg_last_wal_replay_lsn() >= '$target'::pg_lsn" | Should -BeExactly 't'

            # An explicit position already replayed, for one standby by name, returns at once.
            $again = @(Wait-PgReplication -Server $primaryServer -Lsn $target -ApplicationName 'pester_standby' -Timeout 00:00:05 -ErrorAction Stop)
            $again | Should -HaveCount 1
            $again[0].ApplicationName | Should -BeExactly 'pester_standby'
            Test-PgReplication -Server $standbyServer -Quiet | Should -BeExactly $true
        }
    }
}
