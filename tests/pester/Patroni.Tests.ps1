#Requires -Version 7.4
# A cluster that Patroni runs (two nodes and etcd, on loopback): PgBackup reads it through Patroni's REST API, switches
# it over through Patroni, and refuses to act behind Patroni's back.

Describe 'Patroni clusters' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $patroni = Start-PgTestPatroni -Members 2
        $environment = Enter-PgTestEnvironment
        $credential = $patroni.Credential

        function Get-TestLeader {
            # The member Patroni reports as the leader, and the other one.
            $cluster = Get-PgReplicationStatus -Patroni $patroni.RestUrl -ErrorAction Stop
            $leader = $patroni.Members | Where-Object Name -EQ $cluster.Leader
            $leader, ($patroni.Members | Where-Object Name -NE $cluster.Leader)
        }
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestPatroni -Patroni $patroni
    }

    It 'shows the members, the leader, the timeline and the lag as Patroni sees them' {
        $cluster = Get-PgReplicationStatus -Patroni $patroni.RestUrl -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $cluster.PSObject.TypeNames | Should -Contain 'PgBackup.PatroniCluster'
        $cluster.Scope | Should -BeExactly 'pgbackup-test'
        $cluster.Leader | Should -BeExactly 'node0'
        $cluster.Timeline | Should -Be 1
        $cluster.Paused | Should -BeFalse
        $cluster.Members | Should -HaveCount 2
        $replica = $cluster.Members | Where-Object Name -EQ 'node1'
        $replica.Role | Should -BeExactly 'replica'
        $replica.Server | Should -BeExactly $patroni.Members[1].Server
        $replica.LagBytes | Should -Be 0

        # The checks of monitoring runbooks, on Patroni's view.
        $waited = Wait-PgReplication -Patroni $patroni.RestUrl -Timeout 00:00:30 -ErrorAction Stop
        $waited.Leader | Should -BeExactly 'node0'
        $test = Test-PgReplication -Patroni $patroni.RestUrl -MaxLagBytes 0 -ErrorAction Stop
        $test.Success | Should -BeTrue -Because ($test.Failures -join '; ')
        $test.Role | Should -BeExactly 'patroni'
        $test.StandbysChecked | Should -Be 1
        Test-PgReplication -Patroni $patroni.RestUrl -Quiet | Should -BeTrue

        $null = Get-PgReplicationStatus -Patroni 'ftp://nowhere' -ErrorVariable bad -ErrorAction SilentlyContinue
        $bad[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.InvalidPatroniUrl,*'
        # A login is not sent in clear to another machine.
        $null = Get-PgReplicationStatus -Patroni 'http://patroni.example.invalid:8008' -PatroniCredential $patroni.RestCredential -ErrorVariable clear -ErrorAction SilentlyContinue
        $clear[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.InsecurePatroni,*'
    }

    It 'refuses to switch over, fail over, add a standby or change synchronous replication behind Patroni''s back, and nothing changes' {
        $leader, $replica = Get-TestLeader
        $refusals = @(
            { Switch-PgPrimary -Primary $leader.Server -Candidate $replica.Server -Credential $credential -Confirm:$false -ErrorVariable e -ErrorAction SilentlyContinue; $e }
            { Switch-PgPrimary -Failover -Candidate $replica.Server -Force -Credential $credential -Confirm:$false -ErrorVariable e -ErrorAction SilentlyContinue; $e }
            { New-PgStandby -Server $leader.Server -Credential $credential -DataDirectory (Join-Path (New-PgTestRepository) 'never') -Port (Get-PgTestFreePort) -Confirm:$false -ErrorVariable e -ErrorAction SilentlyContinue; $e }
            { Set-PgSynchronousStandby -Server $leader.Server -Credential $credential -Standby $replica.Name -Force -Confirm:$false -ErrorVariable e -ErrorAction SilentlyContinue; $e }
        )
        foreach ($attempt in $refusals) {
            $errors = @(& $attempt | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] })
            $errors | Should -HaveCount 1 -Because "$attempt gave: $(Format-PgTestError $errors)"
            $errors[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.ManagedByPatroni,*'
            $errors[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidOperation)
            $errors[0].ErrorDetails.RecommendedAction | Should -BeLike '*Patroni*'
        }
        (Get-PgReplicationStatus -Patroni $patroni.RestUrl).Leader | Should -BeExactly $leader.Name
    }

    It 'switches over through Patroni: -WhatIf shows the plan, then Patroni names the new leader, the old one streams from it and PgBouncer follows' {
        $leader, $replica = Get-TestLeader
        $null = Switch-PgPrimary -Patroni $patroni.RestUrl -PatroniCredential $patroni.RestCredential -Primary $leader.Name -Candidate $replica.Name -Credential $credential -WhatIf -ErrorAction Stop
        (Get-PgReplicationStatus -Patroni $patroni.RestUrl).Leader | Should -BeExactly $leader.Name

        # Without the REST API's login, Patroni refuses and nothing changes.
        $null = Switch-PgPrimary -Patroni $patroni.RestUrl -Primary $leader.Name -Candidate $replica.Name -Credential $credential -Confirm:$false -ErrorVariable noLogin -ErrorAction SilentlyContinue
        $noLogin[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PatroniAuthenticationFailed,*'

        # A PgBouncer in front of the leader moves with Patroni's switchover.
        $bouncer = Start-PgTestPgBouncer -Cluster ([pscustomobject]@{ Host = '127.0.0.1'; Port = $leader.Port; Password = $patroni.Password; BinDirectory = (Find-PgServerBinDirectory) })
        # The admin console's login comes from PGPASSWORD here (a password file or the connection string would do as well).
        $env:PGPASSWORD = $patroni.Password
        try {
            $result = @(Switch-PgPrimary -Patroni $patroni.RestUrl -PatroniCredential $patroni.RestCredential -Primary $leader.Server -Candidate $replica.Server -Credential $credential `
                    -RouteScript 'echo "to $PGBACKUP_NEW_PRIMARY"' -PgBouncer $bouncer.Server -PgBouncerConfig $bouncer.ConfigPath -Timeout 00:01:00 -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
            $pooled = & (Join-Path $bouncer.BinDirectory 'psql') -X -q -A -t -d "host=127.0.0.1 port=$($bouncer.Port) user=postgres password=$($patroni.Password) dbname=postgres connect_timeout=10" -c 'select pg_is_in_recovery()' 2>&1
            $shown = @(Invoke-PgTestPgBouncerAdmin -PgBouncer $bouncer -Command 'SHOW DATABASES' | Where-Object { $_.StartsWith('postgres|', [System.StringComparison]::Ordinal) })
        }
        finally {
            Remove-Item Env:PGPASSWORD -ErrorAction SilentlyContinue
            Stop-PgTestPgBouncer -PgBouncer $bouncer
        }
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        @($result[0].Poolers) | Should -HaveCount 1
        $result[0].Poolers[0].Resumed | Should -BeTrue
        $result[0].Poolers[0].PointsTo | Should -BeExactly $replica.Server
        $shown[0].Split('|')[2] | Should -BeExactly "$($replica.Port)"
        "$pooled".Trim() | Should -BeExactly 'f' -Because "PgBouncer sends its clients to the new leader: $pooled"
        $result | Should -HaveCount 1
        $result[0].NewPrimary | Should -BeExactly $replica.Server
        $result[0].OldPrimary | Should -BeExactly $leader.Server
        $result[0].OldPrimaryRejoined | Should -BeTrue
        $result[0].NewTimeline | Should -BeGreaterThan 1
        $result[0].Routing.Output | Should -BeExactly "to $($replica.Server)"

        $cluster = Get-PgReplicationStatus -Patroni $patroni.RestUrl
        $cluster.Leader | Should -BeExactly $replica.Name
        $cluster.History | Should -Not -BeNullOrEmpty
        # The old leader streams from the new one, as PostgreSQL itself says.
        $standby = Get-PgReplicationStatus -Server $leader.Server -Credential $credential -ErrorAction Stop | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.StandbyStatus' }
        $standby.ReceiverStatus | Should -BeExactly 'streaming'
        $standby.UpstreamPort | Should -Be $replica.Port
    }

    It 'fails over through Patroni to the member it is given' {
        $leader, $replica = Get-TestLeader
        Wait-PgTestCondition -What "$($replica.Name) replicating again" -Seconds 60 -Condition {
            @((Get-PgReplicationStatus -Patroni $patroni.RestUrl).Members | Where-Object { $_.Name -eq $replica.Name -and $_.LagBytes -eq 0 }).Count -eq 1
        }
        $result = @(Switch-PgPrimary -Failover -Patroni $patroni.RestUrl -PatroniCredential $patroni.RestCredential -Candidate $replica.Name -Credential $credential -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $result[0].Failover | Should -BeTrue
        $result[0].NewPrimary | Should -BeExactly $replica.Server
        (Get-PgReplicationStatus -Patroni $patroni.RestUrl).Leader | Should -BeExactly $replica.Name
    }

    It 'schedules a switchover in Patroni with -At, which Patroni carries out at that time' {
        $leader, $replica = Get-TestLeader
        Wait-PgTestCondition -What "$($replica.Name) replicating again" -Seconds 60 -Condition {
            @((Get-PgReplicationStatus -Patroni $patroni.RestUrl).Members | Where-Object { $_.Name -eq $replica.Name -and $_.LagBytes -eq 0 }).Count -eq 1
        }
        $null = Switch-PgPrimary -Patroni $patroni.RestUrl -PatroniCredential $patroni.RestCredential -Primary $leader.Name -Candidate $replica.Name -Credential $credential `
            -At ([DateTimeOffset]::Now.AddSeconds(4)) -RouteScript 'true' -Confirm:$false -ErrorVariable withClients -ErrorAction SilentlyContinue
        $withClients[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.ScheduledWithClients,*'

        $result = @(Switch-PgPrimary -Patroni $patroni.RestUrl -PatroniCredential $patroni.RestCredential -Primary $leader.Name -Candidate $replica.Name -Credential $credential `
                -At ([DateTimeOffset]::Now.AddSeconds(4)) -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $result | Should -HaveCount 1
        # Returned at once: the leader is still the old one, and Patroni switches over at the time asked.
        (Get-PgReplicationStatus -Patroni $patroni.RestUrl).Leader | Should -BeExactly $leader.Name
        Wait-PgTestCondition -What "Patroni switching over to $($replica.Name) at the scheduled time" -Seconds 60 -Condition {
            (Get-PgReplicationStatus -Patroni $patroni.RestUrl).Leader -eq $replica.Name
        }
    }

    It 'goes through Patroni for a server whose profile names its REST API, without -Patroni' {
        $leader, $replica = Get-TestLeader
        Wait-PgTestCondition -What "$($replica.Name) replicating again" -Seconds 60 -Condition {
            @((Get-PgReplicationStatus -Patroni $patroni.RestUrl).Members | Where-Object { $_.Name -eq $replica.Name -and $_.LagBytes -eq 0 }).Count -eq 1
        }
        $config = @{ Servers = @{ 'patroni-leader' = @{ Host = '127.0.0.1'; Port = $leader.Port; Patroni = $patroni.RestUrl } } } | ConvertTo-Json -Depth 4
        Set-Content -LiteralPath $env:PGBACKUP_CONFIG -Value $config
        try {
            $cluster = Get-PgReplicationStatus -Server patroni-leader -Credential $credential -ErrorAction Stop
            $cluster.PSObject.TypeNames | Should -Contain 'PgBackup.PatroniCluster'
            $cluster.Leader | Should -BeExactly $leader.Name
            (Test-PgReplication -Server patroni-leader -Credential $credential -ErrorAction Stop).Role | Should -BeExactly 'patroni'

            $result = @(Switch-PgPrimary -Primary patroni-leader -Candidate $replica.Name -PatroniCredential $patroni.RestCredential -Credential $credential -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
            $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
            $result[0].NewPrimary | Should -BeExactly $replica.Server
            (Get-PgReplicationStatus -Patroni $patroni.RestUrl).Leader | Should -BeExactly $replica.Name
        }
        finally { Set-Content -LiteralPath $env:PGBACKUP_CONFIG -Value '{}' }
    }
}
