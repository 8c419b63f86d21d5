#Requires -Version 7.4
# Get-PgReplicationStatus, Test-PgReplication and Wait-PgReplication against the built module, with a real primary, a
# standby made from it with pg_basebackup that streams over TCP, and a cascading standby that streams from that standby.

Describe 'Replication' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $primary = Start-PgTestCluster -Name 'replprimary'
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'create table ticks(id serial primary key, at timestamptz default now())'

        # A streaming standby made with pg_basebackup -R; its application name is its cluster_name.
        $standby = Start-PgTestStandby -Primary $primary -Name 'replstandby' -ClusterName 'pester_standby' -Tcp
        $cascade = Start-PgTestStandby -Primary $standby -Name 'replcascade' -ClusterName 'pester_cascade'
        Wait-PgTestCondition -What 'The standby streaming from the primary' -Condition {
            (Invoke-PgTestSql -Cluster $primary -Sql "select count(*) from pg_stat_replication where application_name = 'pester_standby' and state = 'streaming'") -eq '1'
        }
        Wait-PgTestCondition -What 'The cascading standby streaming from the standby' -Condition {
            (Invoke-PgTestSql -Cluster $standby -Sql "select count(*) from pg_stat_replication where application_name = 'pester_cascade' and state = 'streaming'") -eq '1'
        }
        Wait-PgTestCondition -What "The standby's WAL receiver streaming" -Condition {
            (Invoke-PgTestSql -Cluster $standby -Sql "select count(*) from pg_stat_wal_receiver where status = 'streaming'") -eq '1'
        }

        $environment = Enter-PgTestEnvironment -Cluster $primary
        $primaryServer = $primary.Server
        $standbyServer = $standby.Server
        $cascadeServer = $cascade.Server
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        # Stopping the standbys first keeps the upstream's fast shutdown from waiting for its WAL sender.
        Stop-PgTestCluster -Cluster $cascade
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
            $link.ClientAddress | Should -BeExactly '127.0.0.1'
            $link.ReplayLagBytes | Should -BeOfType [long]
            $link.ReplayLagBytes | Should -BeGreaterOrEqual 0
            "$($link.CurrentLsn)" | Should -MatchExactly '^[0-9A-F]+/[0-9A-F]+$'
        }

        It 'Get-PgReplicationStatus shows a standby its receiver and replay, and the standby that cascades from it' {
            $out = @(Get-PgReplicationStatus -Server $standbyServer -ErrorAction Stop)
            $out | Should -HaveCount 2
            $status = @($out | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.StandbyStatus' })
            $status | Should -HaveCount 1
            $status[0].Role | Should -BeExactly 'Standby'
            $status[0].ReceiverStatus | Should -BeExactly 'streaming'
            $status[0].UpstreamPort | Should -BeOfType [int]
            $status[0].UpstreamPort | Should -Be $primary.Port
            $status[0].ReplayPaused | Should -BeFalse
            $status[0].SystemIdentifier | Should -BeExactly (Invoke-PgTestSql -Cluster $primary -Sql 'select system_identifier from pg_control_system()')
            $cascadeLink = @($out | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.ReplicationLink' })
            $cascadeLink | Should -HaveCount 1
            $cascadeLink[0].Role | Should -BeExactly 'Standby'
            $cascadeLink[0].ApplicationName | Should -BeExactly 'pester_cascade'
            $cascadeLink[0].State | Should -BeExactly 'streaming'
        }

        It 'Get-PgReplicationStatus takes several servers from the pipeline' {
            $out = @($primaryServer, $standbyServer, $cascadeServer | Get-PgReplicationStatus -ErrorAction Stop)
            $out | Should -HaveCount 4
            @($out | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.ReplicationLink' }) | Should -HaveCount 2
            @($out | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.StandbyStatus' }) | Should -HaveCount 2
        }

        It 'Get-PgReplicationStatus -IncludeSlots lists the slots with the WAL they retain' {
            $null = Invoke-PgTestSql -Cluster $primary -Sql "select pg_create_physical_replication_slot('pester_slot', true)"
            try {
                # WAL written after the slot was made is WAL the slot retains.
                $null = Invoke-PgTestSql -Cluster $primary -Sql 'insert into ticks default values; select pg_switch_wal()'
                $out = @(Get-PgReplicationStatus -Server $primaryServer -IncludeSlots -ErrorAction Stop)
                @($out | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.ReplicationLink' }) | Should -HaveCount 1
                $slots = @($out | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.ReplicationSlot' })
                $slots | Should -HaveCount 1
                $slots[0].SlotName | Should -BeExactly 'pester_slot'
                $slots[0].SlotType | Should -BeExactly 'physical'
                $slots[0].Active | Should -BeFalse
                $slots[0].RetainedBytes | Should -BeOfType [long]
                $slots[0].RetainedBytes | Should -BeGreaterThan 0
            }
            finally { $null = Invoke-PgTestSql -Cluster $primary -Sql "select pg_drop_replication_slot('pester_slot')" }
        }

        It 'Test-PgReplication passes on both servers with generous thresholds' {
            $results = @(Test-PgReplication -Server $primaryServer, $standbyServer -MaxLagBytes 1GB -MaxReplayLag (New-TimeSpan -Minutes 10) -ErrorAction Stop)
            $results | Should -HaveCount 2
            foreach ($result in $results) {
                $result.PSObject.TypeNames | Should -Contain 'PgBackup.ReplicationTestResult'
                $result.Success | Should -BeTrue -Because ($result.Failures -join ' ')
            }
            $results[0].Role | Should -BeExactly 'Primary'
            $results[0].StandbysChecked | Should -Be 1
            # The standby's own replay, and the standby that cascades from it.
            $results[1].Role | Should -BeExactly 'Standby'
            $results[1].StandbysChecked | Should -Be 2
            $quiet = Test-PgReplication -Server $primaryServer -MaxLagBytes 1GB -MaxReplayLag '00:05:00' -Quiet -ErrorAction Stop
            $quiet | Should -BeOfType [bool]
            $quiet | Should -BeTrue
        }

        It 'Test-PgReplication fails a primary that has no standby, and says so' {
            $lonely = Start-PgTestCluster -Name 'repllonely'
            try {
                $credential = [pscredential]::new('postgres', (ConvertTo-SecureString -String $lonely.Password -AsPlainText -Force))
                $out = @(Test-PgReplication -Server $lonely.Server -Credential $credential -ErrorAction Stop)
                $out | Should -HaveCount 1
                $out[0].Success | Should -BeFalse
                $out[0].Failures | Where-Object { $_ -clike '*No standby*' } | Should -Not -BeNullOrEmpty -Because ($out[0].Failures -join ' | ')
            }
            finally { Stop-PgTestCluster -Cluster $lonely }
        }

        It 'Test-PgReplication -Quiet answers $false for a server that cannot be reached' {
            $answer = @(Test-PgReplication -Server "127.0.0.1:$(Get-PgTestFreePort)" -Quiet -ErrorVariable err -ErrorAction SilentlyContinue)
            $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
            $answer | Should -HaveCount 1
            $answer[0] | Should -BeOfType [bool]
            $answer[0] | Should -BeFalse
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
            Wait-PgTestCondition -What 'The paused standby receiving WAL it does not replay' -Condition {
                (Invoke-PgTestSql -Cluster $standby -Sql 'select pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()') -eq 't'
            }
        }

        AfterAll {
            # Never leave the standby paused, even when a test failed.
            $null = Invoke-PgTestSql -Cluster $standby -Sql 'select pg_wal_replay_resume()'
        }

        It 'Get-PgReplicationStatus shows the standby paused and behind' {
            $status = @(Get-PgReplicationStatus -Server $standbyServer -ErrorAction Stop | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.StandbyStatus' })
            $status | Should -HaveCount 1
            $status[0].ReplayPaused | Should -BeTrue
            $status[0].ReplayLagBytes | Should -BeOfType [long]
            $status[0].ReplayLagBytes | Should -BeGreaterThan 0
        }

        It 'Test-PgReplication fails the standby and says replay is paused' {
            $result = @(Test-PgReplication -Server $standbyServer -MaxLagBytes 0 -ErrorAction Stop)
            $result | Should -HaveCount 1
            $result[0].Success | Should -BeFalse
            ($result[0].Failures -join ' ') | Should -BeLikeExactly '*paused*'
            Test-PgReplication -Server $standbyServer -Quiet -ErrorAction Stop | Should -BeExactly $false
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
            Invoke-PgTestSql -Cluster $primary -Sql "select '$($out[0].ReplayLsn)'::pg_lsn >= '$target'::pg_lsn" | Should -BeExactly 't'
            # The oracle: the standby itself says it has replayed the position.
            Invoke-PgTestSql -Cluster $standby -Sql "select pg_last_wal_replay_lsn() >= '$target'::pg_lsn" | Should -BeExactly 't'

            # An explicit position already replayed, for one standby by name, returns at once.
            $again = @(Wait-PgReplication -Server $primaryServer -Lsn $target -ApplicationName 'pester_standby' -Timeout 00:00:05 -ErrorAction Stop)
            $again | Should -HaveCount 1
            $again[0].ApplicationName | Should -BeExactly 'pester_standby'
            Test-PgReplication -Server $standbyServer -Quiet -ErrorAction Stop | Should -BeExactly $true
        }
    }
}
