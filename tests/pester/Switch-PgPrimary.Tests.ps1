#Requires -Version 7.4
# Switch-PgPrimary against the built module: a real
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
        # Clusters a test starts for itself (it stops them when done); AfterAll stops whatever is left.
        $extraClusters = [System.Collections.Generic.List[psobject]]::new()

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
            $switched.WriteUnavailable | Should -BeOfType [timespan]
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
            # It reads its replication password from a pass file, so no base backup taken from it carries the password.
            Get-Content -Raw -LiteralPath (Join-Path $From.DataDirectory 'postgresql.auto.conf') | Should -Not -Match 'password='
        }
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        # Standbys before their primary (Stop-PgTestCluster accepts $null and clusters already removed).
        if ($null -ne $extraClusters) { for ($i = $extraClusters.Count - 1; $i -ge 0; $i--) { Stop-PgTestCluster -Cluster $extraClusters[$i] } }
        Stop-PgTestClusterPair -Cluster $primary, $standby
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

        # A standby of another cluster (another system identifier) is never promoted either. The other cluster gets this
        # cluster's password before its standby is made from it, so the one .pgpass (PGPASSFILE) serves all four servers.
        $strangerPrimary = $stranger = $null
        try {
            $strangerPrimary = Start-PgTestCluster -Name 'switchstrangerprimary'
            $extraClusters.Add($strangerPrimary)
            $null = Invoke-PgTestSql -Cluster $strangerPrimary -Sql "alter user postgres password '$($current.Password)'"
            $strangerPrimary.Password = $current.Password
            $stranger = Start-PgTestStandby -Primary $strangerPrimary -Name 'switch-stranger'
            $extraClusters.Add($stranger)
            Invoke-PgTestSql -Cluster $stranger -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'

            $null = Switch-PgPrimary -Primary $current.Server -Candidate $stranger.Server -Confirm:$false -ErrorVariable otherCluster -ErrorAction SilentlyContinue
            $otherCluster | Should -HaveCount 1 -Because (Format-PgTestError $otherCluster)
            $otherCluster[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.DifferentCluster,*'
            $otherCluster[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidOperation)
            Invoke-PgTestSql -Cluster $current -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
            Invoke-PgTestSql -Cluster $stranger -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'
        }
        finally {
            Stop-PgTestCluster -Cluster $stranger
            Stop-PgTestCluster -Cluster $strangerPrimary
        }

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

    It 'moves the clients with -RouteScript after the promotion, and reports a route script that fails or hangs with what it printed' -Skip:$IsWindows {
        $routed = Join-Path (New-PgTestRepository) 'routed.txt'
        $scripts = @(
            @{ Script = "echo moving; printf '%s %s %s' `"`$PGBACKUP_OLD_PRIMARY`" `"`$PGBACKUP_NEW_PRIMARY_HOST`" `"`$PGBACKUP_NEW_PRIMARY_PORT`" > '$routed'"; Timeout = '00:00:30' }
            @{ Script = 'echo the address is held by another host >&2; exit 3'; Timeout = '00:00:30' }
            @{ Script = 'echo waiting for the load balancer; sleep 30'; Timeout = '00:00:02' }
        )
        foreach ($case in $scripts) {
            $from, $to = Get-TestRoles
            Wait-PgTestCondition -What 'The candidate streaming' -Condition {
                (Invoke-PgTestSql -Cluster $from -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '1'
            }
            $result = @(Switch-PgPrimary -Primary $from.Server -Candidate $to.Server -RouteScript $case.Script -RouteTimeout $case.Timeout -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
            # The switchover stands whatever the route script did.
            $result | Should -HaveCount 1 -Because (Format-PgTestError $err)
            Invoke-PgTestSql -Cluster $to -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
            $result[0].Routing.Script | Should -BeExactly $case.Script
            @($result[0].Steps.Name) | Should -Contain "Moving the clients to $($to.Server) with the route script"
            if ($case -eq $scripts[0]) {
                $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
                $result[0].Routing.Succeeded | Should -BeTrue
                $result[0].Routing.Output | Should -BeExactly 'moving'
                Get-Content -Raw -LiteralPath $routed | Should -BeExactly "$($from.Server) $($to.Host) $($to.Port)"
            }
            else {
                $err | Should -HaveCount 1
                $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.RouteScriptFailed,*'
                $err[0].TargetObject | Should -BeExactly $case.Script
                $result[0].Routing.Succeeded | Should -BeFalse
                if ($case -eq $scripts[1]) {
                    $result[0].Routing.ExitCode | Should -Be 3
                    $err[0].Exception.Message | Should -BeLike '*the address is held by another host*'
                }
                else {
                    $result[0].Routing.TimedOut | Should -BeTrue
                    $result[0].Routing.Duration | Should -BeLessThan ([timespan]::FromSeconds(20))
                    $err[0].Exception.Message | Should -BeLike '*waiting for the load balancer*'
                }
            }
        }
    }
}

# Failover: a primary and two standbys made from it
# the way the suite above makes its standby; standby 1 stops receiving, the primary commits ten more rows and crashes
# (pg_ctl stop -m immediate), and -Failover promotes the most advanced standby only once fenced, reports the WAL those
# rows are in as lost (read from the crashed primary's pg_wal, -PrimaryDataDirectory), and the other standby follows
# it; then Join-PgStandby rejoins the crashed old primary through pg_rewind as a standby of the new primary.
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

    It 'promotes the most advanced standby only once fenced, reports the WAL it loses, the other follows, and the old primary rejoins' {
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
        Stop-PgTestServer -Cluster $standby2 -Mode fast
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'insert into ledger select generate_series(101, 200)'
        Wait-PgTestCondition -What 'Standby 1 having every row' -Condition {
            (Invoke-PgTestSql -Cluster $standby1 -Sql 'select count(*) from ledger') -eq '200'
        }
        # Standby 1 stops receiving, so the last rows the primary commits before it crashes reach no standby.
        $null = Invoke-PgTestSql -Cluster $standby1 -Sql "alter system set primary_conninfo = ''"
        $null = Invoke-PgTestSql -Cluster $standby1 -Sql 'select pg_reload_conf()'
        Wait-PgTestCondition -What 'Standby 1 no longer receiving' -Condition {
            (Invoke-PgTestSql -Cluster $standby1 -Sql 'show primary_conninfo') -eq '' -and
            (Invoke-PgTestSql -Cluster $standby1 -Sql 'select count(*) from pg_stat_wal_receiver') -eq '0'
        }
        # The test clusters run with synchronous_commit = off; on for this commit, so its WAL is written to pg_wal
        # (fsync stays off) before it returns, and the immediate shutdown below cannot drop it from the WAL buffers.
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'set synchronous_commit = on; insert into ledger select generate_series(1001, 1010)'
        Start-Sleep -Milliseconds 200
        Invoke-PgTestSql -Cluster $standby1 -Sql 'select count(*) from ledger where id > 1000' | Should -BeExactly '0'
        Stop-PgTestServer -Cluster $primary -Mode immediate
        Start-TestStandbyServer -Cluster $standby2

        $candidates = @($standby2.Server, $standby1.Server)
        $null = Switch-PgPrimary -Failover -Primary $primary.Server -Candidate $candidates -Confirm:$false -ErrorVariable unfenced -ErrorAction SilentlyContinue
        $unfenced | Should -HaveCount 1 -Because (Format-PgTestError $unfenced)
        $unfenced[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.NotFenced,*'
        Invoke-PgTestSql -Cluster $standby1 -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'
        Invoke-PgTestSql -Cluster $standby2 -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'

        $result = @(Switch-PgPrimary -Failover -Primary $primary.Server -Candidate $candidates -FenceScript 'exit 0' -PrimaryDataDirectory $primary.DataDirectory -Confirm:$false `
                -RouteScript 'echo "clients to $PGBACKUP_NEW_PRIMARY"' -WarningVariable warnings -WarningAction SilentlyContinue -ErrorVariable err -ErrorAction SilentlyContinue)
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $result | Should -HaveCount 1
        $failedOver = $result[0]
        $failedOver.NewPrimary | Should -BeExactly $standby1.Server
        $failedOver.Failover | Should -BeTrue
        $failedOver.Routing.Succeeded | Should -BeTrue
        $failedOver.Routing.Output | Should -BeExactly "clients to $($standby1.Server)"
        # The ten rows' WAL is the possible loss, read from the crashed primary's own pg_wal.
        $lost = $failedOver.BytesLost
        $steps = "steps: $(@($failedOver.Steps | ForEach-Object { $_.Name }) -join '; '); final $($failedOver.FinalLsn)"
        $null -eq $lost | Should -BeFalse -Because $steps
        $lost | Should -BeGreaterThan 0 -Because $steps
        $lost | Should -BeLessThan 1MB -Because $steps
        $warningText = @($warnings | ForEach-Object { $_.Message })
        @($warningText | Where-Object { $_.Contains("$lost bytes of WAL", [System.StringComparison]::Ordinal) }) | Should -Not -BeNullOrEmpty -Because "the warnings were: $($warningText -join ' | ')"
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
        Get-Content -Raw -LiteralPath (Join-Path $primary.DataDirectory 'postgresql.auto.conf') | Should -Not -Match 'password='
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

# Fenced switchover: a primary A with two standbys B and
# C made from it the way the suites above make theirs; Switch-PgPrimary -FenceScript stops the primary through the
# operator's script (as for a primary on another host), promotes B, leaves A stopped for Join-PgStandby, and points C
# at B; then a switchover back whose script prints no control data cannot prove zero loss; and the fence guards refuse.
Describe 'Switch-PgPrimary -FenceScript' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $a = $b = $c = $null
        $a = Start-PgTestCluster -Name 'fence-a'
        $null = Invoke-PgTestSql -Cluster $a -Sql 'create table ledger(id int primary key)'
        # Their application names (cluster_name) are pester_fence_b and pester_fence_c.
        $b = Start-PgTestStandby -Primary $a -Name 'fence-b'
        $c = Start-PgTestStandby -Primary $a -Name 'fence-c'

        $environment = Enter-PgTestEnvironment -Cluster $a

        function Get-TestStopScript {
            # What an operator's script would do over ssh (StopScript in the C# tests), in POSIX sh: a clean shutdown of the
            # primary (as postgres when this process is root on Linux, from the cluster's own folder, never from an
            # unreadable one such as /root) and, with -PrintControlData, its control data, whose "Latest checkpoint
            # location" lets the switchover prove that nothing was lost.
            param([psobject] $Cluster, [switch] $PrintControlData)
            $asPostgres = if ($Cluster.RunAsPostgres) { 'runuser -u postgres -- ' } else { '' }
            $pgCtl = Join-Path $Cluster.BinDirectory 'pg_ctl'
            $controlData = Join-Path $Cluster.BinDirectory 'pg_controldata'
            $stop = "cd '$($Cluster.Root)' && $asPostgres'$pgCtl' stop -D '$($Cluster.DataDirectory)' -m fast -w >/dev/null"
            if ($PrintControlData) { "$stop && '$controlData' '$($Cluster.DataDirectory)'" } else { $stop }
        }

        function Select-TestWarning {
            # The messages of the captured warnings that contain the text.
            param([AllowNull()] [object[]] $Warning, [string] $Text)
            @($Warning | Where-Object { $null -ne $_ -and $_.Message.Contains($Text, [System.StringComparison]::Ordinal) } | ForEach-Object { $_.Message })
        }
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        # The standbys (whichever servers those are now) first, so no primary's fast shutdown waits for a WAL sender; a
        # server that is stopped or unreachable is only removed.
        $roles = @(foreach ($cluster in @($c, $b, $a)) {
                if ($null -eq $cluster) { continue }
                $inRecovery = try { (Invoke-PgTestSql -Cluster $cluster -Sql 'select pg_is_in_recovery()') -eq 't' } catch { $false }
                [pscustomobject]@{ Cluster = $cluster; Standby = $inRecovery }
            })
        foreach ($role in @($roles | Where-Object { $_.Standby })) { Stop-PgTestCluster -Cluster $role.Cluster }
        foreach ($role in @($roles | Where-Object { -not $_.Standby })) { Stop-PgTestCluster -Cluster $role.Cluster }
    }

    # The fence scripts are POSIX sh (Switch-PgPrimary runs them with cmd.exe on Windows).
    It 'switches over to a standby once a fence script stopped the primary, and the other standby follows the new primary' -Skip:$IsWindows {
        Wait-PgTestCondition -What 'Both standbys streaming' -Condition {
            (Invoke-PgTestSql -Cluster $a -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '2'
        }
        $null = Invoke-PgTestSql -Cluster $a -Sql 'insert into ledger select generate_series(1, 100)'
        $stopA = Get-TestStopScript -Cluster $a -PrintControlData

        # -WhatIf checks everything and prints the plan, but neither runs the script nor changes a role.
        $planned = @(Switch-PgPrimary -Primary $a.Server -Candidate $b.Server -Standby @($c.Server) -FenceScript $stopA -WhatIf -ErrorVariable err -ErrorAction SilentlyContinue)
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $planned | Should -HaveCount 0
        Invoke-PgTestSql -Cluster $a -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
        Invoke-PgTestSql -Cluster $b -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'
        Invoke-PgTestSql -Cluster $c -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'
        Invoke-PgTestSql -Cluster $a -Sql "select count(*) from pg_stat_replication where state = 'streaming'" | Should -BeExactly '2'

        $result = @(Switch-PgPrimary -Primary $a.Server -Candidate $b.Server -Standby @($c.Server) -FenceScript $stopA -Confirm:$false `
                -WarningVariable warnings -WarningAction SilentlyContinue -ErrorVariable err -ErrorAction SilentlyContinue)
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $result | Should -HaveCount 1
        $switched = $result[0]
        $switched.PSObject.TypeNames | Should -Contain 'PgBackup.SwitchoverResult'
        $switched.NewPrimary | Should -BeExactly $b.Server
        # Proven against the final checkpoint the script printed.
        $switched.BytesLost | Should -Be 0
        $switched.OldPrimaryRejoined | Should -Be $false
        @($switched.Repointed) | Should -HaveCount 1
        @($switched.Repointed)[0] | Should -BeExactly $c.Server
        Select-TestWarning -Warning $warnings -Text 'Join-PgStandby' | Should -Not -BeNullOrEmpty -Because "the warnings were: $(@($warnings | ForEach-Object { $_.Message }) -join ' | ')"

        Invoke-PgTestSql -Cluster $b -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
        Invoke-PgTestSql -Cluster $b -Sql 'select count(*) from ledger' | Should -BeExactly '100'
        $null = Invoke-PgTestSql -Cluster $b -Sql 'insert into ledger values (101)'
        Wait-PgTestCondition -What 'The other standby following the new primary' -Condition {
            (Invoke-PgTestSql -Cluster $c -Sql 'select count(*) from ledger') -eq '101'
        }

        # The old primary rejoins on its host; a second fenced switchover without control data cannot prove zero loss.
        $joined = @(Join-PgStandby -Server $b.Server -DataDirectory $a.DataDirectory -Confirm:$false -ErrorVariable joinErr -ErrorAction SilentlyContinue)
        $joinErr | Should -BeNullOrEmpty -Because (Format-PgTestError $joinErr)
        $joined | Should -HaveCount 1
        $joined[0].UpstreamPort | Should -Be $b.Port
        Wait-PgTestCondition -What 'Both standbys streaming from the new primary' -Condition {
            (Invoke-PgTestSql -Cluster $b -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '2'
        }
        $back = @(Switch-PgPrimary -Primary $b.Server -Candidate $a.Server -Standby @($c.Server) -FenceScript (Get-TestStopScript -Cluster $b) -Confirm:$false `
                -WarningVariable unprovenWarnings -WarningAction SilentlyContinue -ErrorVariable backErr -ErrorAction SilentlyContinue)
        $backErr | Should -BeNullOrEmpty -Because (Format-PgTestError $backErr)
        $back | Should -HaveCount 1
        $null -eq $back[0].BytesLost | Should -BeTrue
        Select-TestWarning -Warning $unprovenWarnings -Text 'cannot be proven' | Should -Not -BeNullOrEmpty -Because "the warnings were: $(@($unprovenWarnings | ForEach-Object { $_.Message }) -join ' | ')"
        Invoke-PgTestSql -Cluster $a -Sql 'select count(*) from ledger' | Should -BeExactly '101'
        Invoke-PgTestSql -Cluster $a -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'

        $rejoined = @(Join-PgStandby -Server $a.Server -DataDirectory $b.DataDirectory -Confirm:$false -ErrorVariable rejoinErr -ErrorAction SilentlyContinue)
        $rejoinErr | Should -BeNullOrEmpty -Because (Format-PgTestError $rejoinErr)
        $rejoined | Should -HaveCount 1
        Invoke-PgTestSql -Cluster $b -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'
    }

    It 'promotes nothing when the fence script leaves the primary running or fails, and refuses a -Standby that is a primary' {
        $current, $candidate = if ((Invoke-PgTestSql -Cluster $a -Sql 'select pg_is_in_recovery()') -eq 'f') { $a, $b } else { $b, $a }
        Wait-PgTestCondition -What 'Both standbys streaming' -Condition {
            (Invoke-PgTestSql -Cluster $current -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '2'
        }

        # The script exits 0 but stops nothing ('true'; cmd.exe has no true, so 'exit 0' there).
        $doesNothing = if ($IsWindows) { 'exit 0' } else { 'true' }
        $null = Switch-PgPrimary -Primary $current.Server -Candidate $candidate.Server -FenceScript $doesNothing -Confirm:$false -ErrorVariable stillRunning -ErrorAction SilentlyContinue
        $stillRunning | Should -HaveCount 1 -Because (Format-PgTestError $stillRunning)
        $stillRunning[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PrimaryStillRunning,*'
        Invoke-PgTestSql -Cluster $candidate -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'
        Invoke-PgTestSql -Cluster $current -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'

        $null = Switch-PgPrimary -Primary $current.Server -Candidate $candidate.Server -FenceScript 'exit 3' -Confirm:$false -ErrorVariable fenceFailed -ErrorAction SilentlyContinue
        $fenceFailed | Should -HaveCount 1 -Because (Format-PgTestError $fenceFailed)
        $fenceFailed[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.FenceFailed,*'
        Invoke-PgTestSql -Cluster $current -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
        Invoke-PgTestSql -Cluster $candidate -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'

        # A server that accepts writes (here the primary itself) is never given a new primary_conninfo.
        $null = Switch-PgPrimary -Primary $current.Server -Candidate $candidate.Server -Standby @($current.Server) -Confirm:$false -ErrorVariable notStandby -ErrorAction SilentlyContinue
        $notStandby | Should -HaveCount 1 -Because (Format-PgTestError $notStandby)
        $notStandby[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.StandbyNotStandby,*'
        Invoke-PgTestSql -Cluster $current -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
        Invoke-PgTestSql -Cluster $candidate -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'

        # Control data of a crashed primary holds an older checkpoint: it proves nothing, so nothing is promoted.
        $crash = (Get-TestStopScript -Cluster $current -PrintControlData).Replace('-m fast', '-m immediate')
        $null = Switch-PgPrimary -Primary $current.Server -Candidate $candidate.Server -FenceScript $crash -Confirm:$false -ErrorVariable crashed -ErrorAction SilentlyContinue
        $crashed | Should -HaveCount 1 -Because (Format-PgTestError $crashed)
        $crashed[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PrimaryNotCleanlyStopped,*'
        Invoke-PgTestSql -Cluster $candidate -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'
        & (Get-Module -Name PgBackup.TestCluster) { param($c) Start-PgTestServer -Cluster $c } $current
        Wait-PgTestCondition -What 'Both standbys streaming again' -Condition {
            (Invoke-PgTestSql -Cluster $current -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '2'
        }
    }
}

# Switchover through PgBouncer: a writer connects through a PgBouncer (transaction pooling) in front of the primary and
# records every acknowledged commit while Switch-PgPrimary -PgBouncer pauses the pooler, switches over, points the
# pooler at the new primary (pgbouncer.ini and RELOAD) and resumes it.
Describe 'Switch-PgPrimary -PgBouncer' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $primary = Start-PgTestCluster -Name 'bouncerprimary'
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'create table ledger(id int primary key)'
        $standby = Start-PgTestStandby -Primary $primary -Name 'bouncerstandby' -ClusterName 'pester_bouncer_standby'
        Wait-PgTestCondition -What 'The standby streaming from the primary' -Condition {
            (Invoke-PgTestSql -Cluster $primary -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '1'
        }
        $bouncer = Start-PgTestPgBouncer -Cluster $primary
        $environment = Enter-PgTestEnvironment -Cluster $primary

        function Get-TestPgBouncerTarget {
            # host:port of the server PgBouncer sends the postgres database to, and whether it is paused.
            $row = @(Invoke-PgTestPgBouncerAdmin -PgBouncer $bouncer -Command 'SHOW DATABASES' | Where-Object { $_.StartsWith('postgres|', [System.StringComparison]::Ordinal) })
            $fields = $row[0].Split('|')
            [pscustomobject]@{ Server = "$($fields[1]):$($fields[2])"; Paused = $fields[11] -eq '1' }
        }
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestPgBouncer -PgBouncer $bouncer
        Stop-PgTestClusterPair -Cluster $primary, $standby
    }

    It 'checks the poolers before anything changes, and -WhatIf changes nothing' {
        $null = Switch-PgPrimary -Primary $primary.Server -Candidate $standby.Server -PgBouncer $bouncer.Server -PgBouncerConfig $bouncer.ConfigPath -WhatIf -ErrorAction Stop
        (Get-TestPgBouncerTarget).Paused | Should -BeFalse

        $null = Switch-PgPrimary -Primary $primary.Server -Candidate $standby.Server -PgBouncer $bouncer.Server -PgBouncerConfig $bouncer.ConfigPath, $bouncer.ConfigPath -Confirm:$false -ErrorVariable pairs -ErrorAction SilentlyContinue
        $pairs | Should -HaveCount 1 -Because (Format-PgTestError $pairs)
        $pairs[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PgBouncerConfigCount,*'

        # A pgbouncer.ini without the database PgBouncer serves from the primary cannot be what it runs with.
        $otherConfig = Join-Path (New-PgTestRepository) 'pgbouncer.ini'
        Set-Content -LiteralPath $otherConfig -Value "[databases]`nelsewhere = host=127.0.0.1 port=1 dbname=x`n`n[pgbouncer]`nlisten_port = 1`n"
        $null = Switch-PgPrimary -Primary $primary.Server -Candidate $standby.Server -PgBouncer $bouncer.Server -PgBouncerConfig $otherConfig -Confirm:$false -ErrorVariable mismatch -ErrorAction SilentlyContinue
        $mismatch | Should -HaveCount 1 -Because (Format-PgTestError $mismatch)
        $mismatch[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PgBouncerConfigMismatch,*'
        $mismatch[0].TargetObject | Should -BeExactly $otherConfig
        Invoke-PgTestSql -Cluster $primary -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
        (Get-TestPgBouncerTarget).Paused | Should -BeFalse
    }

    It 'moves the clients: no client error, no lost commit, PgBouncer sends them to the new primary and the old one streams from it' {
        $acknowledged = [System.Collections.Concurrent.ConcurrentBag[int]]::new()
        $failures = [System.Collections.Concurrent.ConcurrentBag[string]]::new()
        $stop = [System.Threading.CancellationTokenSource]::new()
        $psql = Join-Path $primary.BinDirectory ($(if ($IsWindows) { 'psql.exe' } else { 'psql' }))
        $conninfo = "host=127.0.0.1 port=$($bouncer.Port) user=postgres password=$($primary.Password) dbname=postgres connect_timeout=30"
        $writer = Start-ThreadJob -ArgumentList $psql, $conninfo, $acknowledged, $failures, $stop.Token -ScriptBlock {
            param($Psql, $ConnInfo, $Bag, $Failures, $Token)
            $id = 1
            while (-not $Token.IsCancellationRequested) {
                $out = & $Psql -X -q -d $ConnInfo -c "insert into ledger values ($id)" 2>&1
                if ($LASTEXITCODE -eq 0) { $Bag.Add($id) } else { $Failures.Add("${id}: $out") }
                $id++
            }
        }
        try {
            Wait-PgTestCondition -What 'The writer committing through PgBouncer' -Condition { $acknowledged.Count -ge 20 }
            $result = @(Switch-PgPrimary -Primary $primary.Server -Candidate $standby.Server -PgBouncer $bouncer.Server -PgBouncerConfig $bouncer.ConfigPath -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
            $after = $acknowledged.Count
            Wait-PgTestCondition -What 'The writer committing after the switchover' -Condition { $acknowledged.Count -ge $after + 20 }
        }
        finally {
            $stop.Cancel()
            $null = $writer | Wait-Job -Timeout 60
            $writer | Remove-Job -Force
        }
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        @($failures.ToArray()) | Should -BeNullOrEmpty -Because 'clients of a paused PgBouncer wait instead of failing'
        $result | Should -HaveCount 1
        $pooler = @($result[0].Poolers)
        $pooler | Should -HaveCount 1
        $pooler[0].PSObject.TypeNames | Should -Contain 'PgBackup.PoolerSwitch'
        $pooler[0].Databases | Should -Be @('postgres')
        $pooler[0].Resumed | Should -BeTrue
        $pooler[0].PointsTo | Should -BeExactly $standby.Server
        $pooler[0].ClientsWaited | Should -BeGreaterThan ([timespan]::Zero)
        $pooler[0].ClientsWaited | Should -BeLessThan ([timespan]::FromSeconds(30))

        $target = Get-TestPgBouncerTarget
        $target.Server | Should -BeExactly $standby.Server
        $target.Paused | Should -BeFalse
        Get-Content -Raw -LiteralPath $bouncer.ConfigPath | Should -Match "postgres = host='127.0.0.1' port='?$($standby.Port)'?"
        $present = [System.Collections.Generic.HashSet[int]]::new()
        foreach ($id in (Invoke-PgTestSql -Cluster $standby -Sql 'select id from ledger') -split "`n") { if ($id.Trim()) { $null = $present.Add([int] $id.Trim()) } }
        @($acknowledged.ToArray() | Where-Object { -not $present.Contains($_) }) | Should -BeNullOrEmpty -Because 'every acknowledged commit must survive the switchover'
        Wait-PgTestCondition -What 'The old primary streaming from the new one' -Condition {
            (Invoke-PgTestSql -Cluster $standby -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '1'
        }
    }

    It 'resumes PgBouncer toward the primary that still runs when the switchover fails midway' {
        # The roles are swapped now: the standby is the primary, PgBouncer points at it. The candidate (the first
        # primary) stops replaying, so the switchover cannot prove it has everything and gives up after the pause.
        Wait-PgTestCondition -What 'The candidate streaming' -Condition {
            (Invoke-PgTestSql -Cluster $standby -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '1'
        }
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'select pg_wal_replay_pause()'
        try {
            $null = Switch-PgPrimary -Primary $standby.Server -Candidate $primary.Server -PgBouncer $bouncer.Server -PgBouncerConfig $bouncer.ConfigPath -Timeout 00:00:05 -Confirm:$false `
                -WarningAction SilentlyContinue -ErrorVariable err -ErrorAction SilentlyContinue
        }
        finally { $null = Invoke-PgTestSql -Cluster $primary -Sql 'select pg_wal_replay_resume()' }
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.CandidateMissingWal,*'
        Invoke-PgTestSql -Cluster $standby -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
        $target = Get-TestPgBouncerTarget
        $target.Paused | Should -BeFalse
        $target.Server | Should -BeExactly $standby.Server
        $out = & (Join-Path $primary.BinDirectory 'psql') -X -q -d "host=127.0.0.1 port=$($bouncer.Port) user=postgres password=$($primary.Password) dbname=postgres connect_timeout=10" -c 'insert into ledger values (-1)' 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "PgBouncer sends its clients to the primary that runs: $out"
    }

    It 'moves PgBouncer to the promoted standby in a failover, and needs -Primary to know which databases to move' {
        # The standby is the primary now and PgBouncer points at it; it crashes, and its standby (the first primary) is failed over to.
        Wait-PgTestCondition -What 'The first primary streaming as a standby' -Condition {
            (Invoke-PgTestSql -Cluster $standby -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '1'
        }
        $null = Invoke-PgTestSql -Cluster $standby -Sql 'insert into ledger values (-2)'
        Wait-PgTestCondition -What 'The standby replaying the last commit' -Condition { (Invoke-PgTestSql -Cluster $primary -Sql 'select count(*) from ledger where id = -2') -eq '1' }
        Stop-PgTestServer -Cluster $standby -Mode immediate

        $null = Switch-PgPrimary -Failover -Candidate $primary.Server -Force -PgBouncer $bouncer.Server -PgBouncerConfig $bouncer.ConfigPath -Confirm:$false -ErrorVariable unnamed -ErrorAction SilentlyContinue
        $unnamed | Should -HaveCount 1 -Because (Format-PgTestError $unnamed)
        $unnamed[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PgBouncerNeedsPrimary,*'
        Invoke-PgTestSql -Cluster $primary -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't' -Because 'nothing was promoted'

        $result = @(Switch-PgPrimary -Failover -Primary $standby.Server -Candidate $primary.Server -Force -PgBouncer $bouncer.Server -PgBouncerConfig $bouncer.ConfigPath -Confirm:$false `
            -WarningAction SilentlyContinue -ErrorVariable err -ErrorAction SilentlyContinue)
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $result | Should -HaveCount 1
        $result[0].Failover | Should -BeTrue
        $result[0].NewPrimary | Should -BeExactly $primary.Server
        $pooler = @($result[0].Poolers)
        $pooler | Should -HaveCount 1
        $pooler[0].Resumed | Should -BeTrue
        $pooler[0].PointsTo | Should -BeExactly $primary.Server
        $target = Get-TestPgBouncerTarget
        $target.Paused | Should -BeFalse
        $target.Server | Should -BeExactly $primary.Server
        $out = & (Join-Path $primary.BinDirectory 'psql') -X -q -A -t -d "host=127.0.0.1 port=$($bouncer.Port) user=postgres password=$($primary.Password) dbname=postgres connect_timeout=10" -c 'insert into ledger values (-3) returning (select count(*) from ledger where id = -2)' 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "PgBouncer sends its clients to the promoted standby: $out"
        "$out".Trim() | Should -BeExactly '1' -Because 'the standby had replayed the row before the primary crashed'
    }
}
