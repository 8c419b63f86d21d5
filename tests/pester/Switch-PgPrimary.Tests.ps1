#Requires -Version 7.4
# Mirrors the module tests in tests/PgBackup.Module.Tests/SwitchPgPrimaryTests.cs against the built module: a real
# primary and a streaming standby made from it with pg_basebackup, built the way Set-PgSynchronousStandby.Tests.ps1
# builds them, whose roles Switch-PgPrimary swaps and swaps back.

Describe 'Switch-PgPrimary' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $primary = Start-PgTestCluster -Name 'switchprimary'
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'create table ledger(id int primary key)'

        # A streaming standby made with pg_basebackup -R; its application name is its cluster_name.
        $standby = Start-PgTestStandby -Primary $primary -Name 'switchstandby' -ClusterName 'pester_switch_standby'
        Wait-PgTestCondition -What 'The standby streaming from the primary' -Condition {
            (Invoke-PgTestSql -Cluster $primary -Sql "select count(*) from pg_stat_replication where application_name = 'pester_switch_standby' and state = 'streaming'") -eq '1'
        }
        Wait-PgTestCondition -What "The standby's WAL receiver streaming" -Condition {
            (Invoke-PgTestSql -Cluster $standby -Sql "select count(*) from pg_stat_wal_receiver where status = 'streaming'") -eq '1'
        }

        $environment = Enter-PgTestEnvironment -Cluster $primary

        function Get-TestRoles {
            # Which of the two servers is the primary now (the tests swap the roles and swap them back).
            if ((Invoke-PgTestSql -Cluster $primary -Sql 'select pg_is_in_recovery()') -eq 'f') { return $primary, $standby }
            return $standby, $primary
        }

        function Invoke-TestSwitchover {
            # Switches over from $From to $To while a writer commits into $From one row at a time, and checks that
            # every acknowledged commit is on the new primary and that the old primary streams from it.
            param([psobject] $From, [psobject] $To, [int] $FirstId)
            Wait-PgTestCondition -What 'The candidate streaming' -Condition {
                (Invoke-PgTestSql -Cluster $From -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '1'
            }
            # The writer runs psql with its own connection string and never touches the process environment,
            # which the module reads at the same time.
            $acknowledged = [System.Collections.Concurrent.ConcurrentBag[int]]::new()
            $stop = [System.Threading.CancellationTokenSource]::new()
            $psql = Join-Path $From.BinDirectory ($(if ($IsWindows) { 'psql.exe' } else { 'psql' }))
            $conninfo = "host=$($From.Host) port=$($From.Port) user=$($From.User) password=$($From.Password) dbname=postgres connect_timeout=2"
            $writer = Start-ThreadJob -ArgumentList $psql, $conninfo, $FirstId, $acknowledged, $stop.Token -ScriptBlock {
                param($Psql, $ConnInfo, $Id, $Bag, $Token)
                while (-not $Token.IsCancellationRequested) {
                    $null = & $Psql -X -q -d $ConnInfo -c "insert into ledger values ($Id)" 2>&1
                    # Refused while the primary is down or read-only: not acknowledged.
                    if ($LASTEXITCODE -eq 0) { $Bag.Add($Id); $Id++ } else { Start-Sleep -Milliseconds 20 }
                }
            }
            try {
                Wait-PgTestCondition -What 'The writer committing' -Condition { $acknowledged.Count -ge 20 }
                $result = @(Switch-PgPrimary -Primary $From.Server -Candidate $To.Server -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
                Start-Sleep -Milliseconds 200
            }
            finally {
                $stop.Cancel()
                $null = $writer | Wait-Job -Timeout 60
                $writer | Remove-Job -Force
            }
            $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
            $result | Should -HaveCount 1
            $switched = $result[0]
            $switched.PSObject.TypeNames | Should -Contain 'PgBackup.SwitchoverResult'
            $switched.BytesLost | Should -Be 0
            $switched.OldPrimaryRejoined | Should -BeTrue
            $switched.WriteUnavailable | Should -BeLessThan ([timespan]::FromSeconds(30))
            @($switched.Steps) | Should -HaveCount 5

            # Every acknowledged commit is on the new primary; the old primary is now its streaming standby.
            Invoke-PgTestSql -Cluster $To -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
            Invoke-PgTestSql -Cluster $From -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'
            $present = [System.Collections.Generic.HashSet[int]]::new()
            foreach ($id in (Invoke-PgTestSql -Cluster $To -Sql "select id from ledger where id >= $FirstId") -split "`n") {
                if ($id.Trim()) { $null = $present.Add([int] $id.Trim()) }
            }
            $missing = @($acknowledged.ToArray() | Where-Object { -not $present.Contains($_) })
            $missing | Should -BeNullOrEmpty -Because 'every acknowledged commit must survive the switchover'
            Wait-PgTestCondition -What 'The old primary streaming from the new one' -Condition {
                (Invoke-PgTestSql -Cluster $To -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '1'
            }
        }
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        # Stopping the standby (whichever server that is now) first keeps the primary's fast shutdown from waiting
        # for its WAL sender.
        $first, $second = $standby, $primary
        try { if ((Invoke-PgTestSql -Cluster $primary -Sql 'select pg_is_in_recovery()') -eq 't') { $first, $second = $primary, $standby } }
        catch { Write-Warning "Reading the role of $($primary.Server) failed: $_" }
        Stop-PgTestCluster -Cluster $first
        Stop-PgTestCluster -Cluster $second
    }

    It 'prints the plan with -WhatIf and changes nothing, and the guards refuse' {
        $current, $candidate = Get-TestRoles
        Wait-PgTestCondition -What 'The standby streaming' -Condition {
            (Invoke-PgTestSql -Cluster $current -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '1'
        }
        $planned = @(Switch-PgPrimary -Primary $current.Server -Candidate $candidate.Server -WhatIf -ErrorVariable err -ErrorAction SilentlyContinue)
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $planned | Should -HaveCount 0
        Invoke-PgTestSql -Cluster $current -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
        Invoke-PgTestSql -Cluster $candidate -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'

        $null = Switch-PgPrimary -Primary $candidate.Server -Candidate $current.Server -Confirm:$false -ErrorVariable reversed -ErrorAction SilentlyContinue
        $reversed | Should -HaveCount 1 -Because (Format-PgTestError $reversed)
        $reversed[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.NotAPrimary,*'

        # A candidate that accepts writes (here the primary itself) is never promoted.
        $null = Switch-PgPrimary -Primary $current.Server -Candidate $current.Server -Confirm:$false -ErrorVariable foreign -ErrorAction SilentlyContinue
        $foreign | Should -HaveCount 1 -Because (Format-PgTestError $foreign)
        $foreign[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.CandidateNotStandby,*'
        $foreign[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidOperation)

        $null = Invoke-PgTestSql -Cluster $candidate -Sql 'select pg_wal_replay_pause()'
        try {
            $null = Invoke-PgTestSql -Cluster $current -Sql 'insert into ledger select g from generate_series(500000, 520000) g'
            Wait-PgTestCondition -What 'The standby lagging' -Condition {
                (Invoke-PgTestSql -Cluster $candidate -Sql 'select pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()') -eq 't'
            }
            $null = Switch-PgPrimary -Primary $current.Server -Candidate $candidate.Server -MaxLagBytes 0 -Confirm:$false -ErrorVariable lagging -ErrorAction SilentlyContinue
            $lagging | Should -HaveCount 1 -Because (Format-PgTestError $lagging)
            $lagging[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.CandidateLagging,*'
            Invoke-PgTestSql -Cluster $current -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
        }
        finally { $null = Invoke-PgTestSql -Cluster $candidate -Sql 'select pg_wal_replay_resume()' }
    }

    It 'loses no acknowledged commit, and a second switchover brings the roles back' {
        Invoke-TestSwitchover -From $primary -To $standby -FirstId 1
        Invoke-TestSwitchover -From $standby -To $primary -FirstId 100000
    }
}

# Mirrors FailoverTests in tests/PgBackup.Module.Tests/SwitchPgPrimaryTests.cs: a primary and two standbys made from it
# the way the suite above makes its standby; the primary crashes (pg_ctl stop -m immediate) and -Failover promotes the
# most advanced standby only once fenced, and the other follows it; then Join-PgStandby rejoins the crashed old primary
# through pg_rewind as a standby of the new primary.
Describe 'Switch-PgPrimary -Failover' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        # pg_ctl start/stop through the test-cluster module's own runner (no inherited PG* variable, as postgres when root
        # on Linux, from the cluster's folder): a server stopped here keeps its folders, to be started again or rejoined.
        $testCluster = Get-Module -Name PgBackup.TestCluster

        function Start-TestStandbyServer {
            param([psobject] $Cluster)
            & $testCluster { param($c) Start-PgTestServer -Cluster $c } $Cluster
        }

        function Stop-TestServer {
            # Stops a server without removing its folders: -m fast for a clean stop, -m immediate for a crash.
            param([psobject] $Cluster, [ValidateSet('fast', 'immediate')] [string] $Mode)
            $r = & $testCluster { param($c, $m) Invoke-PgServerTool -Cluster $c -Tool pg_ctl -ArgumentList @('stop', '-D', $c.DataDirectory, '-m', $m, '-w', '-t', '60') } $Cluster $Mode
            if ($r.ExitCode -ne 0) { throw "pg_ctl failed (exit code $($r.ExitCode)): $($r.Output)" }
        }

        # wal_keep_size keeps the WAL back to the last common checkpoint, which pg_rewind needs to rejoin the old primary.
        $primary = Start-PgTestCluster -Name 'failprimary' -Settings @{ wal_keep_size = '256MB' }
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'create table ledger(id int primary key)'
        $standby1 = $standby2 = $null
        # Their application names (cluster_name) are pester_fail_s1 and pester_fail_s2.
        $standby1 = Start-PgTestStandby -Primary $primary -Name 'fail-s1'
        $standby2 = Start-PgTestStandby -Primary $primary -Name 'fail-s2'

        $environment = Enter-PgTestEnvironment -Cluster $primary
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $standby2
        Stop-PgTestCluster -Cluster $standby1
        Stop-PgTestCluster -Cluster $primary
    }

    It 'promotes the most advanced standby only once fenced, the other follows, and the old primary rejoins' {
        Wait-PgTestCondition -What 'Both standbys streaming' -Condition {
            (Invoke-PgTestSql -Cluster $primary -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '2'
        }
        $null = Switch-PgPrimary -Failover -Primary $primary.Server -Candidate $standby1.Server -Force -Confirm:$false -ErrorVariable reachable -ErrorAction SilentlyContinue
        $reachable | Should -HaveCount 1 -Because (Format-PgTestError $reachable)
        $reachable[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PrimaryReachable,*'

        # Standby 2 misses the second hundred rows, so standby 1 is the most advanced when the primary crashes.
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'insert into ledger select generate_series(1, 100)'
        Wait-PgTestCondition -What 'Standby 2 having the first rows' -Condition {
            (Invoke-PgTestSql -Cluster $standby2 -Sql 'select count(*) from ledger') -eq '100'
        }
        Stop-TestServer -Cluster $standby2 -Mode fast
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'insert into ledger select generate_series(101, 200)'
        Wait-PgTestCondition -What 'Standby 1 having every row' -Condition {
            (Invoke-PgTestSql -Cluster $standby1 -Sql 'select count(*) from ledger') -eq '200'
        }
        Stop-TestServer -Cluster $primary -Mode immediate
        Start-TestStandbyServer -Cluster $standby2

        $candidates = @($standby2.Server, $standby1.Server)
        $null = Switch-PgPrimary -Failover -Primary $primary.Server -Candidate $candidates -Confirm:$false -ErrorVariable unfenced -ErrorAction SilentlyContinue
        $unfenced | Should -HaveCount 1 -Because (Format-PgTestError $unfenced)
        $unfenced[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.NotFenced,*'
        Invoke-PgTestSql -Cluster $standby1 -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'
        Invoke-PgTestSql -Cluster $standby2 -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'

        $result = @(Switch-PgPrimary -Failover -Primary $primary.Server -Candidate $candidates -FenceScript 'exit 0' -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $result | Should -HaveCount 1
        $failedOver = $result[0]
        $failedOver.NewPrimary | Should -BeExactly $standby1.Server
        $failedOver.Failover | Should -BeTrue
        $null -eq $failedOver.BytesLost | Should -BeTrue
        @($failedOver.Repointed) | Should -Contain $standby2.Server
        @($failedOver.CandidatesBehind | Where-Object { $_.StartsWith($standby2.Server, [System.StringComparison]::Ordinal) }) | Should -Not -BeNullOrEmpty

        Invoke-PgTestSql -Cluster $standby1 -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
        Invoke-PgTestSql -Cluster $standby1 -Sql 'select count(*) from ledger' | Should -BeExactly '200'
        $null = Invoke-PgTestSql -Cluster $standby1 -Sql 'insert into ledger values (201)'
        Wait-PgTestCondition -What 'Standby 2 following the new primary' -Condition {
            (Invoke-PgTestSql -Cluster $standby2 -Sql 'select count(*) from ledger') -eq '201'
        }

        # The crashed old primary rejoins through pg_rewind as a standby of the new primary.
        $joined = @(Join-PgStandby -Server $standby1.Server -DataDirectory $primary.DataDirectory -Timeout 00:00:20 -Confirm:$false -ErrorVariable joinErr -ErrorAction SilentlyContinue)
        $joinErr | Should -BeNullOrEmpty -Because (Format-PgTestError $joinErr)
        $joined | Should -HaveCount 1
        $joined[0].PSObject.TypeNames | Should -Contain 'PgBackup.StandbyStatus'
        $joined[0].ReceiverStatus | Should -BeExactly 'streaming'
        $joined[0].UpstreamPort | Should -Be $standby1.Port
        Wait-PgTestCondition -What "The old primary replaying the new primary's writes" -Condition {
            (Invoke-PgTestSql -Cluster $primary -Sql 'select count(*) from ledger') -eq '201'
        }
        Invoke-PgTestSql -Cluster $primary -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'

        # Now it runs, so a second rejoin is refused.
        $null = Join-PgStandby -Server $standby1.Server -DataDirectory $primary.DataDirectory -Confirm:$false -ErrorVariable running -ErrorAction SilentlyContinue
        $running | Should -HaveCount 1 -Because (Format-PgTestError $running)
        $running[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.DataDirectoryInUse,*'
    }
}
