#Requires -Version 7.4
# Mirrors the module tests in tests/PgBackup.Module.Tests/SwitchPgPrimaryTests.cs against the built module: a real
# primary and a streaming standby made from it with pg_basebackup, built the way Set-PgSynchronousStandby.Tests.ps1
# builds them, whose roles Switch-PgPrimary swaps and swaps back.

Describe 'Switch-PgPrimary' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $runAsPostgres = [bool] ($IsLinux -and [System.Environment]::IsPrivilegedProcess)

        function Invoke-TestServerTool {
            # Runs a PostgreSQL server program without any inherited PG* variable (so none redirects it or ends up in the
            # primary_conninfo that pg_basebackup -R writes), as the postgres user when this process is root on Linux,
            # from a folder that user can enter. Throws with the tool's output when it fails.
            param([string] $Root, [string] $Tool, [string[]] $ArgumentList, [hashtable] $Environment = @{})
            $exe = Join-Path $primary.BinDirectory ($(if ($IsWindows) { "$Tool.exe" } else { $Tool }))
            $saved = @{}
            foreach ($entry in [System.Environment]::GetEnvironmentVariables().GetEnumerator()) {
                $key = [string] $entry.Key
                if ($key.StartsWith('PG', [System.StringComparison]::Ordinal) -and $key -ne 'PGBACKUP_MODULE_PATH') {
                    $saved[$key] = [string] $entry.Value
                    [System.Environment]::SetEnvironmentVariable($key, [NullString]::Value)
                }
            }
            foreach ($key in $Environment.Keys) { [System.Environment]::SetEnvironmentVariable($key, [string] $Environment[$key]) }
            Push-Location -LiteralPath $Root
            try {
                if ($runAsPostgres) { $output = & runuser -u postgres -- $exe @ArgumentList 2>&1 }
                else { $output = & $exe @ArgumentList 2>&1 }
                $code = $LASTEXITCODE
            }
            finally {
                Pop-Location
                foreach ($key in $Environment.Keys) { [System.Environment]::SetEnvironmentVariable($key, [NullString]::Value) }
                foreach ($key in $saved.Keys) { [System.Environment]::SetEnvironmentVariable($key, $saved[$key]) }
            }
            if ($code -ne 0) { throw "$Tool failed (exit code $code): $(@($output | ForEach-Object { "$_" }) -join "`n")" }
        }

        function Wait-TestCondition {
            param([string] $What, [scriptblock] $Condition, [int] $Seconds = 30)
            $deadline = [datetime]::UtcNow.AddSeconds($Seconds)
            while (-not (& $Condition)) {
                if ([datetime]::UtcNow -ge $deadline) { throw "$What did not happen within $Seconds s." }
                Start-Sleep -Milliseconds 200
            }
        }

        $primary = Start-PgTestCluster -Name 'switchprimary'
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'create table ledger(id int primary key)'

        # The standby: same password (pg_basebackup copies the roles), so the primary's .pgpass (127.0.0.1:*) serves both.
        # It has the shape of a Start-PgTestCluster result, so Invoke-PgTestSql and Stop-PgTestCluster work on it.
        $root = [System.IO.Directory]::CreateTempSubdirectory('pgbackup-pester-switchstandby-').FullName
        $socketRoot = $null
        $socketDirectory = Join-Path $root 'sock'
        if (-not $IsWindows -and ($socketDirectory.Length + '/.s.PGSQL.65535'.Length) -ge 100) {
            $socketDirectory = $socketRoot = Join-Path '/tmp' ('pgbt-' + [System.Convert]::ToHexString([System.Security.Cryptography.RandomNumberGenerator]::GetBytes(4)).ToLowerInvariant())
        }
        $null = New-Item -ItemType Directory -Path $socketDirectory -Force
        $standby = [pscustomobject]@{
            PSTypeName      = 'PgBackup.TestCluster'
            Name            = 'switchstandby'
            Host            = '127.0.0.1'
            Port            = Get-PgTestFreePort
            Server          = $null
            User            = $primary.User
            Password        = $primary.Password
            PgPassFile      = $null
            DataDirectory   = Join-Path $root 'data'
            LogFile         = Join-Path $root 'server.log'
            SocketDirectory = $socketDirectory
            SocketRoot      = $socketRoot
            Root            = $root
            BinDirectory    = Find-PgServerBinDirectory
            RunAsPostgres   = $runAsPostgres
        }
        $standby.Server = "$($standby.Host):$($standby.Port)"
        if ($runAsPostgres) {
            foreach ($folder in @($root, $socketRoot)) {
                if (-not $folder) { continue }
                $out = & chown -R postgres:postgres $folder 2>&1
                if ($LASTEXITCODE -ne 0) { throw "chown -R postgres:postgres $folder failed: $($out -join ' ')" }
            }
        }

        # -R writes standby.signal and primary_conninfo. Over the primary's Unix socket (trust) no password is needed, so
        # none is written into the standby's configuration; Windows has no socket folder and uses TCP with PGPASSWORD.
        $basebackup = @('-D', $standby.DataDirectory, '-U', $primary.User, '-R', '-X', 'stream', '-c', 'fast', '--no-sync')
        $passwordEnvironment = @{}
        if ($IsWindows) {
            $basebackup += @('-h', $primary.Host, '-p', [string] $primary.Port)
            $passwordEnvironment = @{ PGPASSWORD = $primary.Password }
        }
        else { $basebackup += @('-h', $primary.SocketDirectory, '-p', [string] $primary.Port) }
        Invoke-TestServerTool -Root $root -Tool pg_basebackup -ArgumentList $basebackup -Environment $passwordEnvironment

        $socketSetting = if ($IsWindows) { "''" } else { "'" + $socketDirectory.Replace("'", "''") + "'" }
        $standbyConf = "`n# added by Switch-PgPrimary.Tests.ps1`nport = $($standby.Port)`nunix_socket_directories = $socketSetting`nhot_standby = on`ncluster_name = 'pester_switch_standby'`n"
        [System.IO.File]::AppendAllText((Join-Path $standby.DataDirectory 'postgresql.auto.conf'), $standbyConf)
        try { Invoke-TestServerTool -Root $root -Tool pg_ctl -ArgumentList @('-D', $standby.DataDirectory, '-l', $standby.LogFile, '-w', '-t', '60', 'start') }
        catch {
            $log = if (Test-Path -LiteralPath $standby.LogFile) { (Get-Content -LiteralPath $standby.LogFile -Tail 40) -join "`n" } else { '(no server log)' }
            throw "$_`n--- tail of $($standby.LogFile) ---`n$log"
        }

        # The standby's application name is its cluster_name.
        Wait-TestCondition -What 'The standby streaming from the primary' -Condition {
            (Invoke-PgTestSql -Cluster $primary -Sql "select count(*) from pg_stat_replication where application_name = 'pester_switch_standby' and state = 'streaming'") -eq '1'
        }
        Wait-TestCondition -What "The standby's WAL receiver streaming" -Condition {
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
            Wait-TestCondition -What 'The candidate streaming' -Condition {
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
                Wait-TestCondition -What 'The writer committing' -Condition { $acknowledged.Count -ge 20 }
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
            Wait-TestCondition -What 'The old primary streaming from the new one' -Condition {
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
        Wait-TestCondition -What 'The standby streaming' -Condition {
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
            Wait-TestCondition -What 'The standby lagging' -Condition {
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

        $runAsPostgres = [bool] ($IsLinux -and [System.Environment]::IsPrivilegedProcess)

        function Invoke-TestServerTool {
            # As in the suite above: no inherited PG* variable, as postgres when root on Linux, from a folder it can enter.
            param([string] $Root, [string] $Tool, [string[]] $ArgumentList, [hashtable] $Environment = @{})
            $exe = Join-Path $primary.BinDirectory ($(if ($IsWindows) { "$Tool.exe" } else { $Tool }))
            $saved = @{}
            foreach ($entry in [System.Environment]::GetEnvironmentVariables().GetEnumerator()) {
                $key = [string] $entry.Key
                if ($key.StartsWith('PG', [System.StringComparison]::Ordinal) -and $key -ne 'PGBACKUP_MODULE_PATH') {
                    $saved[$key] = [string] $entry.Value
                    [System.Environment]::SetEnvironmentVariable($key, [NullString]::Value)
                }
            }
            foreach ($key in $Environment.Keys) { [System.Environment]::SetEnvironmentVariable($key, [string] $Environment[$key]) }
            Push-Location -LiteralPath $Root
            try {
                if ($runAsPostgres) { $output = & runuser -u postgres -- $exe @ArgumentList 2>&1 }
                else { $output = & $exe @ArgumentList 2>&1 }
                $code = $LASTEXITCODE
            }
            finally {
                Pop-Location
                foreach ($key in $Environment.Keys) { [System.Environment]::SetEnvironmentVariable($key, [NullString]::Value) }
                foreach ($key in $saved.Keys) { [System.Environment]::SetEnvironmentVariable($key, $saved[$key]) }
            }
            if ($code -ne 0) { throw "$Tool failed (exit code $code): $(@($output | ForEach-Object { "$_" }) -join "`n")" }
        }

        function Wait-TestCondition {
            param([string] $What, [scriptblock] $Condition, [int] $Seconds = 30)
            $deadline = [datetime]::UtcNow.AddSeconds($Seconds)
            while (-not (& $Condition)) {
                if ([datetime]::UtcNow -ge $deadline) { throw "$What did not happen within $Seconds s." }
                Start-Sleep -Milliseconds 200
            }
        }

        function Start-TestStandbyServer {
            param([psobject] $Cluster)
            try { Invoke-TestServerTool -Root $Cluster.Root -Tool pg_ctl -ArgumentList @('-D', $Cluster.DataDirectory, '-l', $Cluster.LogFile, '-w', '-t', '60', 'start') }
            catch {
                $log = if (Test-Path -LiteralPath $Cluster.LogFile) { (Get-Content -LiteralPath $Cluster.LogFile -Tail 40) -join "`n" } else { '(no server log)' }
                throw "$_`n--- tail of $($Cluster.LogFile) ---`n$log"
            }
        }

        function New-TestStandby {
            # A streaming standby of $primary made with pg_basebackup -R, shaped like a Start-PgTestCluster result, so
            # Invoke-PgTestSql and Stop-PgTestCluster work on it. Its application name is its cluster_name.
            param([string] $Name)
            $root = [System.IO.Directory]::CreateTempSubdirectory("pgbackup-pester-$Name-").FullName
            $socketRoot = $null
            $socketDirectory = Join-Path $root 'sock'
            if (-not $IsWindows -and ($socketDirectory.Length + '/.s.PGSQL.65535'.Length) -ge 100) {
                $socketDirectory = $socketRoot = Join-Path '/tmp' ('pgbt-' + [System.Convert]::ToHexString([System.Security.Cryptography.RandomNumberGenerator]::GetBytes(4)).ToLowerInvariant())
            }
            $null = New-Item -ItemType Directory -Path $socketDirectory -Force
            $cluster = [pscustomobject]@{
                PSTypeName      = 'PgBackup.TestCluster'
                Name            = $Name
                Host            = '127.0.0.1'
                Port            = Get-PgTestFreePort
                Server          = $null
                User            = $primary.User
                Password        = $primary.Password
                PgPassFile      = $null
                DataDirectory   = Join-Path $root 'data'
                LogFile         = Join-Path $root 'server.log'
                SocketDirectory = $socketDirectory
                SocketRoot      = $socketRoot
                Root            = $root
                BinDirectory    = Find-PgServerBinDirectory
                RunAsPostgres   = $runAsPostgres
            }
            $cluster.Server = "$($cluster.Host):$($cluster.Port)"
            if ($runAsPostgres) {
                foreach ($folder in @($root, $socketRoot)) {
                    if (-not $folder) { continue }
                    $out = & chown -R postgres:postgres $folder 2>&1
                    if ($LASTEXITCODE -ne 0) { throw "chown -R postgres:postgres $folder failed: $($out -join ' ')" }
                }
            }

            $basebackup = @('-D', $cluster.DataDirectory, '-U', $primary.User, '-R', '-X', 'stream', '-c', 'fast', '--no-sync')
            $passwordEnvironment = @{}
            if ($IsWindows) {
                $basebackup += @('-h', $primary.Host, '-p', [string] $primary.Port)
                $passwordEnvironment = @{ PGPASSWORD = $primary.Password }
            }
            else { $basebackup += @('-h', $primary.SocketDirectory, '-p', [string] $primary.Port) }
            Invoke-TestServerTool -Root $root -Tool pg_basebackup -ArgumentList $basebackup -Environment $passwordEnvironment

            $socketSetting = if ($IsWindows) { "''" } else { "'" + $socketDirectory.Replace("'", "''") + "'" }
            $conf = "`n# added by Switch-PgPrimary.Tests.ps1`nport = $($cluster.Port)`nunix_socket_directories = $socketSetting`nhot_standby = on`ncluster_name = 'pester_$($Name.Replace('-', '_'))'`n"
            [System.IO.File]::AppendAllText((Join-Path $cluster.DataDirectory 'postgresql.auto.conf'), $conf)
            Start-TestStandbyServer -Cluster $cluster
            $cluster
        }

        function Stop-TestServer {
            # Stops a server without removing its folders: -m fast for a clean stop, -m immediate for a crash.
            param([psobject] $Cluster, [ValidateSet('fast', 'immediate')] [string] $Mode)
            Invoke-TestServerTool -Root $Cluster.Root -Tool pg_ctl -ArgumentList @('stop', '-D', $Cluster.DataDirectory, '-m', $Mode, '-w', '-t', '60')
        }

        # wal_keep_size keeps the WAL back to the last common checkpoint, which pg_rewind needs to rejoin the old primary.
        $primary = Start-PgTestCluster -Name 'failprimary' -Settings @{ wal_keep_size = '256MB' }
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'create table ledger(id int primary key)'
        $standby1 = $standby2 = $null
        $standby1 = New-TestStandby -Name 'fail-s1'
        $standby2 = New-TestStandby -Name 'fail-s2'

        $environment = Enter-PgTestEnvironment -Cluster $primary
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $standby2
        Stop-PgTestCluster -Cluster $standby1
        Stop-PgTestCluster -Cluster $primary
    }

    It 'promotes the most advanced standby only once fenced, the other follows, and the old primary rejoins' {
        Wait-TestCondition -What 'Both standbys streaming' -Condition {
            (Invoke-PgTestSql -Cluster $primary -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '2'
        }
        $null = Switch-PgPrimary -Failover -Primary $primary.Server -Candidate $standby1.Server -Force -Confirm:$false -ErrorVariable reachable -ErrorAction SilentlyContinue
        $reachable | Should -HaveCount 1 -Because (Format-PgTestError $reachable)
        $reachable[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PrimaryReachable,*'

        # Standby 2 misses the second hundred rows, so standby 1 is the most advanced when the primary crashes.
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'insert into ledger select generate_series(1, 100)'
        Wait-TestCondition -What 'Standby 2 having the first rows' -Condition {
            (Invoke-PgTestSql -Cluster $standby2 -Sql 'select count(*) from ledger') -eq '100'
        }
        Stop-TestServer -Cluster $standby2 -Mode fast
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'insert into ledger select generate_series(101, 200)'
        Wait-TestCondition -What 'Standby 1 having every row' -Condition {
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
        Wait-TestCondition -What 'Standby 2 following the new primary' -Condition {
            (Invoke-PgTestSql -Cluster $standby2 -Sql 'select count(*) from ledger') -eq '201'
        }

        # The crashed old primary rejoins through pg_rewind as a standby of the new primary.
        $joined = @(Join-PgStandby -Server $standby1.Server -DataDirectory $primary.DataDirectory -Timeout 00:00:20 -Confirm:$false -ErrorVariable joinErr -ErrorAction SilentlyContinue)
        $joinErr | Should -BeNullOrEmpty -Because (Format-PgTestError $joinErr)
        $joined | Should -HaveCount 1
        $joined[0].PSObject.TypeNames | Should -Contain 'PgBackup.StandbyStatus'
        $joined[0].ReceiverStatus | Should -BeExactly 'streaming'
        $joined[0].UpstreamPort | Should -Be $standby1.Port
        Wait-TestCondition -What "The old primary replaying the new primary's writes" -Condition {
            (Invoke-PgTestSql -Cluster $primary -Sql 'select count(*) from ledger') -eq '201'
        }
        Invoke-PgTestSql -Cluster $primary -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'

        # Now it runs, so a second rejoin is refused.
        $null = Join-PgStandby -Server $standby1.Server -DataDirectory $primary.DataDirectory -Confirm:$false -ErrorVariable running -ErrorAction SilentlyContinue
        $running | Should -HaveCount 1 -Because (Format-PgTestError $running)
        $running[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.DataDirectoryInUse,*'
    }
}
