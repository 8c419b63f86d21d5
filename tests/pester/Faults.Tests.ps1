#Requires -Version 7.4
# The fault matrix of docs/reliability.md: each fault injected into each long operation, with real servers and real
# tools, proving that nothing acknowledged is lost, nothing half-done looks valid, and a rerun succeeds. Every It here
# is a row of that matrix; keep the two in step. Linux: the faults are signals (SIGKILL, SIGSTOP) and root's tmpfs.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
    Import-Module (Get-PgBackupModuleManifest) -Force

    function Wait-TestState {
        # Polls -Condition every 20 ms; fails when -Job (a Start-PgTestPwsh process) ends first, since then the fault
        # would come too late to hit the operation in the middle.
        param([string] $What, [scriptblock] $Condition, [psobject] $Job, [int] $Seconds = 60)
        $deadline = [datetime]::UtcNow.AddSeconds($Seconds)
        while (-not (& $Condition)) {
            if ($Job -and $Job.Process.HasExited) {
                $result = Wait-PgTestPwsh -Job $Job
                throw "$What did not happen before the operation ended (exit code $($result.ExitCode), errors: $(@($result.Errors.Message) -join ' | ')): $($result.Console)"
            }
            if ([datetime]::UtcNow -ge $deadline) { throw "$What did not happen within $Seconds s." }
            Start-Sleep -Milliseconds 20
        }
    }

    function Stop-TestPwshHard {
        # SIGKILL: no finally block, no Dispose, no Ctrl+C handler runs. Returns what Wait-PgTestPwsh saw.
        param([psobject] $Job)
        Send-PgTestSignal -ProcessId $Job.Process.Id -Signal KILL
        $result = Wait-PgTestPwsh -Job $Job -Seconds 30
        $result.Killed | Should -BeTrue -Because 'the process was killed before it could write a result'
        $result
    }

    function Start-TestFixture {
        # A test cluster, with the sample database shop when -ItemRows is given, and the process environment for it.
        param([string] $Name, [int] $ItemRows = 0, [hashtable] $Settings = @{})
        $cluster = Start-PgTestCluster -Name $Name -Settings $Settings
        try {
            if ($ItemRows -gt 0) { New-PgTestSampleDatabase -Cluster $cluster -Database shop -ItemRows $ItemRows }
            [pscustomobject]@{ Cluster = $cluster; Server = $cluster.Server; Environment = (Enter-PgTestEnvironment -Cluster $cluster) }
        }
        catch {
            Stop-PgTestCluster -Cluster $cluster
            throw
        }
    }

    function Stop-TestFixture([psobject] $Fixture) {
        if ($null -eq $Fixture) { return }
        Exit-PgTestEnvironment -State $Fixture.Environment
        Stop-PgTestCluster -Cluster $Fixture.Cluster
        Remove-PgTestRepository
    }

    function Get-TestFolderSize([string] $Path) {
        if (-not (Test-Path -LiteralPath $Path)) { return 0 }
        (Get-ChildItem -LiteralPath $Path -Recurse -File -Force -ErrorAction SilentlyContinue | Measure-Object -Property Length -Sum).Sum + 0
    }

    function Get-TestLeftover([string] $Repository) {
        # Everything a backup writes while it is not finished: partials and their locks.
        @(Get-ChildItem -LiteralPath $Repository -Recurse -Force -ErrorAction SilentlyContinue | Where-Object { $_.Name -like '*.partial*' })
    }
}

Describe 'Fault: the pwsh running the operation is killed (SIGKILL) in the middle' -Tag 'Integration', 'Faults' {
    BeforeAll {
        $fixture = Start-TestFixture -Name 'faultkill' -ItemRows 300000 -Settings @{ max_wal_senders = '10' }
        $cluster = $fixture.Cluster
        $server = $fixture.Server
    }

    AfterAll {
        Stop-TestFixture $fixture
    }

    It 'Invoke-PgDump: pg_dump dies with it, Get-PgBackup lists nothing partial and names the leftover, the next dump removes it' {
        $repo = New-PgTestRepository
        # pg_dump opens its output, then waits for the lock this session holds: it is in the middle for as long as needed.
        $session = Start-PgTestSession -Cluster $cluster -Database shop -Sql 'begin; lock table public.items in access exclusive mode;'
        try {
            $job = Start-PgTestPwsh -Script 'Invoke-PgDump -Server $s -Database shop -Repository $r -Format Directory' -Variables @{ s = $server; r = $repo }
            Wait-TestState -What 'pg_dump waiting for its lock, its output started' -Job $job -Condition {
                (Get-TestLeftover $repo).Count -gt 0 -and
                (Invoke-PgTestSql -Cluster $cluster -Sql "select count(*) from pg_locks l join pg_stat_activity a using (pid) where not l.granted and a.application_name = 'PgBackup'") -ne '0'
            }
            $null = Stop-TestPwshHard $job
            Wait-TestState -What 'pg_dump ending with the pwsh that started it' -Seconds 10 -Condition { (Get-PgTestProcess -Name pg_dump -CommandLineLike $repo).Count -eq 0 }
        }
        finally { Stop-PgTestSession $session }

        $listed = @(Get-PgBackup -Repository $repo -WarningVariable warnings -WarningAction SilentlyContinue -ErrorAction Stop)
        $listed | Should -HaveCount 0
        @($warnings | Where-Object { "$_" -like '*.partial*is not a backup*interrupted*Invoke-PgDump*' }) | Should -HaveCount 1 -Because (@($warnings) -join "`n")

        $dump = @(Invoke-PgDump -Server $server -Database shop -Repository $repo -Format Directory -InformationVariable info -ErrorAction Stop)
        $dump | Should -HaveCount 1
        @($info | Where-Object { "$($_.MessageData)" -like "Removed '*.partial'*interrupted*" }) | Should -HaveCount 1 -Because (@($info.MessageData) -join "`n")
        Get-TestLeftover $repo | Should -BeNullOrEmpty
        @(Get-PgBackup -Repository $repo -ErrorAction Stop) | Should -HaveCount 1
        (Test-PgBackup -Path $dump[0].Path -Restore -Server $server -ErrorAction Stop).Success | Should -BeTrue
    }

    It 'Start-PgBaseBackup: pg_basebackup and its WAL streamer die with it, nothing is listed, the next backup removes the leftover and runs' {
        $repo = New-PgTestRepository
        # -MaxRate 256k: a backup that takes minutes, caught once it has written a little.
        $job = Start-PgTestPwsh -Script 'Start-PgBaseBackup -Server $s -Repository $r -MaxRate 256k' -Variables @{ s = $server; r = $repo }
        Wait-TestState -What 'the base backup half written' -Job $job -Condition {
            $partial = @(Get-TestLeftover $repo | Where-Object { $_.PSIsContainer -and $_.Name -like '*.partial' })
            $partial.Count -gt 0 -and (Get-TestFolderSize $partial[0].FullName) -gt 512KB
        }
        $null = Stop-TestPwshHard $job
        Wait-TestState -What 'pg_basebackup ending with the pwsh that started it' -Seconds 10 -Condition { (Get-PgTestProcess -Name pg_basebackup -CommandLineLike $repo).Count -eq 0 }
        Wait-TestState -What "the server ending the dead backup's WAL senders" -Seconds 30 -Condition {
            (Invoke-PgTestSql -Cluster $cluster -Sql "select count(*) from pg_stat_activity where backend_type = 'walsender'") -eq '0'
        }

        @(Get-PgBackup -Repository $repo -WarningVariable warnings -WarningAction SilentlyContinue -ErrorAction Stop) | Should -HaveCount 0
        @($warnings | Where-Object { "$_" -like '*.partial*interrupted*Start-PgBaseBackup*' }) | Should -HaveCount 1 -Because (@($warnings) -join "`n")

        $base = @(Start-PgBaseBackup -Server $server -Repository $repo -InformationVariable info -ErrorAction Stop)
        $base | Should -HaveCount 1
        @($info | Where-Object { "$($_.MessageData)" -like "Removed '*.partial'*" }) | Should -HaveCount 1 -Because (@($info.MessageData) -join "`n")
        @(Get-TestLeftover $repo | Where-Object Name -like '*.partial') | Should -BeNullOrEmpty
        @(Get-PgBackup -Repository $repo -ErrorAction Stop) | Should -HaveCount 1
        (Test-PgBackup -Path $base[0].Path -Restore -ErrorAction Stop).Success | Should -BeTrue
    }

    It 'Restore-PgDump into a new database: nothing appears under the name asked for, the next restore drops the leftover and restores' {
        $repo = New-PgTestRepository
        $dump = Invoke-PgDump -Server $server -Database shop -Repository $repo -Format Custom -ErrorAction Stop
        try {
            $job = Start-PgTestPwsh -Script 'Restore-PgDump -Path $p -Server $s -TargetDatabase shop_copy -Confirm:$false' -Variables @{ p = $dump.Path; s = $server }
            Wait-TestState -What 'the restore writing into its staging database' -Job $job -Condition {
                (Invoke-PgTestSql -Cluster $cluster -Sql "select count(*) from pg_stat_activity where datname like 'pgbackup_restoring_%'") -ne '0'
            }
            $null = Stop-TestPwshHard $job
            Wait-TestState -What 'pg_restore ending with the pwsh that started it' -Seconds 10 -Condition { (Get-PgTestProcess -Name pg_restore -CommandLineLike $dump.Path).Count -eq 0 }

            Invoke-PgTestSql -Cluster $cluster -Sql "select count(*) from pg_database where datname = 'shop_copy'" | Should -BeExactly '0' -Because 'a half-restored database never carries the name asked for'
            Invoke-PgTestSql -Cluster $cluster -Sql "select count(*) from pg_database where datname like 'pgbackup_restoring_%'" | Should -BeExactly '1'

            $restored = @(Restore-PgDump -Path $dump.Path -Server $server -TargetDatabase shop_copy -Confirm:$false -InformationVariable info -ErrorAction Stop)
            $restored | Should -HaveCount 1
            $restored[0].DatabaseCreated | Should -BeTrue
            @($info | Where-Object { "$($_.MessageData)" -like "Dropped 'pgbackup_restoring_*interrupted restore*" }) | Should -HaveCount 1 -Because (@($info.MessageData) -join "`n")
            Invoke-PgTestSql -Cluster $cluster -Sql "select count(*) from pg_database where datname like 'pgbackup_restoring_%'" | Should -BeExactly '0'
            Get-PgTestRowCount -Cluster $cluster -Database shop_copy | Should -BeExactly (Get-PgTestRowCount -Cluster $cluster -Database shop)
        }
        finally { Remove-PgTestDatabase -Cluster $cluster -Database shop_copy }
    }

    It 'Restore-PgDump -DataOnly into existing tables: the load is one transaction, so nothing of it stays, and the rerun loads every row' {
        $repo = New-PgTestRepository
        $items = Join-Path $repo 'items.dump'
        $null = Invoke-PgDump -Server $server -Database shop -Table public.items -Format Custom -Path $items -ErrorAction Stop
        try {
            $null = Restore-PgDump -Path $items -Server $server -TargetDatabase rows_target -Confirm:$false -ErrorAction Stop
            $null = Invoke-PgTestSql -Cluster $cluster -Database rows_target -Sql 'delete from public.items'
            $session = Start-PgTestSession -Cluster $cluster -Database rows_target -Sql 'begin; lock table public.items in access exclusive mode;'
            try {
                $job = Start-PgTestPwsh -Script 'Restore-PgDump -Path $p -Server $s -TargetDatabase rows_target -DataOnly -Confirm:$false' -Variables @{ p = $items; s = $server }
                Wait-TestState -What 'pg_restore waiting to load the rows' -Job $job -Condition {
                    (Invoke-PgTestSql -Cluster $cluster -Sql "select count(*) from pg_locks l join pg_stat_activity a using (pid) where not l.granted and a.application_name = 'PgBackup'") -ne '0'
                }
                $null = Stop-TestPwshHard $job
                Wait-TestState -What 'pg_restore ending with the pwsh that started it' -Seconds 10 -Condition { (Get-PgTestProcess -Name pg_restore -CommandLineLike $items).Count -eq 0 }
            }
            finally { Stop-PgTestSession $session }
            Invoke-PgTestSql -Cluster $cluster -Database rows_target -Sql 'select count(*) from public.items' | Should -BeExactly '0'

            $null = Restore-PgDump -Path $items -Server $server -TargetDatabase rows_target -DataOnly -Confirm:$false -ErrorAction Stop
            Invoke-PgTestSql -Cluster $cluster -Database rows_target -Sql 'select count(*) from public.items' | Should -BeExactly '300000'
        }
        finally { Remove-PgTestDatabase -Cluster $cluster -Database rows_target }
    }
}

Describe 'Fault: the pwsh running Restore-PgPointInTime is killed (SIGKILL) in the middle' -Tag 'Integration', 'Faults' {
    BeforeAll {
        $fixture = Start-TestFixture -Name 'faultpitr'
        $cluster = $fixture.Cluster
        $server = $fixture.Server
        $repo = New-PgTestRepository
        $null = Enable-PgWalArchiving -Server $server -Repository $repo -Restart -Confirm:$false -ErrorAction Stop
        $null = Invoke-PgTestSql -Cluster $cluster -Sql 'create table ledger(id int primary key, pad text)'
        $null = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop
        # WAL to replay, so the recovery is still replaying when the pwsh is killed.
        $null = Invoke-PgTestSql -Cluster $cluster -Sql "insert into ledger select g, repeat('x', 500) from generate_series(1, 100000) g"
        $null = Save-PgTestWalSegment -Cluster $cluster
        $expected = Invoke-PgTestSql -Cluster $cluster -Sql 'select count(*) from ledger'

        function Test-RecoveryRerun([string] $Directory) {
            # Start-PgInstance refuses what was left; the same command run again replaces it without -Force.
            $null = Start-PgInstance -DataDirectory $Directory -Confirm:$false -ErrorVariable refused -ErrorAction SilentlyContinue
            $refused | Should -HaveCount 1 -Because (Format-PgTestError $refused)
            $refused[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.RecoveryIncomplete,*'
            $refused[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidOperation)

            $again = @(Restore-PgPointInTime -Server $server -Repository $repo -Latest -DataDirectory $Directory -Confirm:$false -WarningVariable warnings -WarningAction SilentlyContinue -ErrorAction Stop)
            $again | Should -HaveCount 1
            @($warnings | Where-Object { "$_" -like '*Replacing what an interrupted recovery left*' }) | Should -HaveCount 1 -Because (@($warnings) -join "`n")
            $instance = [pscustomobject]@{ Host = $again[0].Server; Port = $again[0].Port; Password = $cluster.Password; BinDirectory = $cluster.BinDirectory }
            Invoke-PgTestSql -Cluster $instance -Sql 'select count(*) from ledger' | Should -BeExactly $expected
            Test-Path -LiteralPath (Join-Path $Directory 'pgbackup_recovery.lock') | Should -BeFalse
            $null = Remove-PgInstance -DataDirectory $Directory -Confirm:$false -ErrorAction Stop
        }
    }

    AfterAll {
        Stop-TestFixture $fixture
    }

    It 'while it copies the backup: what it left cannot be started, and the same command run again replaces it' {
        $directory = Join-Path (New-PgTestRepository) 'data'
        $job = Start-PgTestPwsh -Script 'Restore-PgPointInTime -Server $s -Repository $r -Latest -DataDirectory $d -Confirm:$false' -Variables @{ s = $server; r = $repo; d = $directory }
        Wait-TestState -What 'the recovery starting to write' -Job $job -Condition { Test-Path -LiteralPath (Join-Path $directory 'pgbackup_recovery.lock') }
        $null = Stop-TestPwshHard $job
        Test-Path -LiteralPath (Join-Path $directory 'pgbackup_recovery.lock') | Should -BeTrue -Because 'the marker of the unfinished recovery stays'
        Test-RecoveryRerun $directory
    }

    It 'a second recovery into the same folder while one writes there is refused with PgBackup.RecoveryInProgress' {
        $directory = Join-Path (New-PgTestRepository) 'data'
        $job = Start-PgTestPwsh -Script 'Restore-PgPointInTime -Server $s -Repository $r -Latest -DataDirectory $d -Confirm:$false' -Variables @{ s = $server; r = $repo; d = $directory }
        Wait-TestState -What 'the first recovery starting to write' -Job $job -Condition { Test-Path -LiteralPath (Join-Path $directory 'pgbackup_recovery.lock') }
        # Frozen, the first recovery holds the folder for as long as the test needs.
        Send-PgTestSignal -ProcessId $job.Process.Id -Signal STOP
        try {
            $null = Restore-PgPointInTime -Server $server -Repository $repo -Latest -DataDirectory $directory -Force -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.RecoveryInProgress,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ResourceBusy)
            "$($err[0])" | Should -BeLikeExactly "*process $($job.Process.Id) *"
        }
        finally { Send-PgTestSignal -ProcessId $job.Process.Id -Signal CONT }
        $first = Wait-PgTestPwsh -Job $job -Seconds 120
        $first.Errors | Should -BeNullOrEmpty -Because (@($first.Errors.Message) -join ' | ')
        $null = Remove-PgInstance -DataDirectory $directory -Confirm:$false -ErrorAction Stop
    }

    It 'while the server replays: the server it started is stopped and replaced by the rerun' {
        $directory = Join-Path (New-PgTestRepository) 'data'
        $job = Start-PgTestPwsh -Script 'Restore-PgPointInTime -Server $s -Repository $r -Latest -DataDirectory $d -Confirm:$false' -Variables @{ s = $server; r = $repo; d = $directory }
        Wait-TestState -What 'the recovered server starting' -Job $job -Condition { Test-Path -LiteralPath (Join-Path $directory 'postmaster.pid') }
        $null = Stop-TestPwshHard $job
        $stray = Get-PgTestPostmasterId -DataDirectory $directory
        Test-RecoveryRerun $directory
        if ($stray) { Test-PgTestProcessRunning -ProcessId $stray | Should -BeFalse -Because 'the server of the interrupted recovery was stopped' }
    }
}

Describe 'Fault: the server hangs (SIGSTOP) during a base backup' -Tag 'Integration', 'Faults' {
    BeforeAll {
        $fixture = Start-TestFixture -Name 'faultstall' -ItemRows 50000
        $cluster = $fixture.Cluster
        $server = $fixture.Server
    }

    AfterAll {
        Stop-TestFixture $fixture
    }

    It 'Start-PgBaseBackup gives up after -StallTimeout with PgBackup.BackupStalled, keeps nothing, and runs again once the server is back' {
        $repo = New-PgTestRepository
        $job = Start-PgTestPwsh -Script 'Start-PgBaseBackup -Server $s -Repository $r -MaxRate 256k -StallTimeout 00:00:03' -Variables @{ s = $server; r = $repo }
        $hung = $null
        try {
            Wait-TestState -What 'the base backup half written' -Job $job -Condition {
                $partial = @(Get-TestLeftover $repo | Where-Object { $_.PSIsContainer -and $_.Name -like '*.partial' })
                $partial.Count -gt 0 -and (Get-TestFolderSize $partial[0].FullName) -gt 256KB
            }
            $hung = Suspend-PgTestServer -DataDirectory $cluster.DataDirectory
            $clock = [System.Diagnostics.Stopwatch]::StartNew()
            $result = Wait-PgTestPwsh -Job $job -Seconds 120
            $clock.Stop()
        }
        finally { Resume-PgTestServer -ProcessId $hung }

        $result.Killed | Should -BeFalse -Because $result.Console
        $result.Output | Should -BeNullOrEmpty
        $result.Errors | Should -HaveCount 1 -Because (@($result.Errors.Message) -join ' | ')
        $result.Errors[0].ErrorId | Should -BeExactly 'PgBackup.BackupStalled'
        $result.Errors[0].Category | Should -BeExactly 'OperationTimeout'
        $result.Errors[0].TargetObject | Should -BeExactly $server
        $clock.Elapsed.TotalSeconds | Should -BeLessThan 60 -Because 'it gave up after its timeout (3 s, and 3 s for the server to answer a query)'
        @(Get-TestLeftover $repo | Where-Object Name -like '*.partial') | Should -BeNullOrEmpty
        (Get-PgTestProcess -Name pg_basebackup -CommandLineLike $repo) | Should -BeNullOrEmpty
        @(Get-PgBackup -Repository $repo -ErrorAction Stop) | Should -HaveCount 0

        $base = @(Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop)
        $base | Should -HaveCount 1
        $base[0].VerificationState | Should -Be ([PgBackup.VerificationState]::Verified)
    }
}

Describe 'Fault: a server hangs (SIGSTOP) during a switchover' -Tag 'Integration', 'Faults' {
    BeforeAll {
        $primary = Start-PgTestCluster -Name 'faultswitch'
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'create table ledger(id int primary key)'
        $standby = Start-PgTestStandby -Primary $primary -Name 'faultswitch-s' -ClusterName 'pester_fault_standby' -Tcp
        $environment = Enter-PgTestEnvironment -Cluster $primary

        function Wait-TestStreaming {
            Wait-PgTestCondition -What 'The standby streaming from the primary' -Seconds 60 -Condition {
                (Invoke-PgTestSql -Cluster $primary -Sql "select count(*) from pg_stat_replication where state = 'streaming'") -eq '1'
            }
        }
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $standby
        Stop-PgTestCluster -Cluster $primary
    }

    It 'the primary hangs at its shutdown: PgBackup.PrimaryStopFailed after -Timeout, nothing promoted, and the primary runs again once it is back' {
        Wait-TestStreaming
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'insert into ledger select generate_series(1, 100)'
        # The checkpointer writes the shutdown checkpoint: hung, the primary cannot finish shutting down.
        $hung = Suspend-PgTestServer -DataDirectory $primary.DataDirectory -Backend checkpointer
        try {
            $clock = [System.Diagnostics.Stopwatch]::StartNew()
            $null = Switch-PgPrimary -Primary $primary.Server -Candidate $standby.Server -Timeout 00:00:05 -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $clock.Stop()
        }
        finally { Resume-PgTestServer -ProcessId $hung }
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PrimaryStopFailed,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::OperationTimeout)
        "$($err[0])" | Should -BeLikeExactly '*Nothing was promoted*'
        $clock.Elapsed.TotalSeconds | Should -BeLessThan 60
        Invoke-PgTestSql -Cluster $standby -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't' -Because 'nothing was promoted'

        # Resumed, the primary finishes the fast shutdown it was asked for; started again, it is the primary it was.
        Wait-PgTestCondition -What 'The old primary finishing its shutdown' -Seconds 60 -Condition { -not (Get-PgTestPostmasterId -DataDirectory $primary.DataDirectory) }
        $null = Start-PgInstance -DataDirectory $primary.DataDirectory -Confirm:$false -ErrorAction Stop
        Invoke-PgTestSql -Cluster $primary -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
        Invoke-PgTestSql -Cluster $primary -Sql 'select count(*) from ledger' | Should -BeExactly '100'
        Wait-TestStreaming
    }

    It 'the candidate hangs before it replayed the last WAL: PgBackup.CandidateMissingWal after -Timeout, nothing promoted, the old primary started again' {
        Wait-TestStreaming
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'insert into ledger select generate_series(101, 200)'
        # The startup process replays WAL: hung, the candidate receives the shutdown checkpoint but never replays it.
        $hung = Suspend-PgTestServer -DataDirectory $standby.DataDirectory -Backend startup
        try {
            $clock = [System.Diagnostics.Stopwatch]::StartNew()
            $null = Switch-PgPrimary -Primary $primary.Server -Candidate $standby.Server -Timeout 00:00:05 -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $clock.Stop()
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.CandidateMissingWal,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::OperationTimeout)
            "$($err[0])" | Should -BeLikeExactly '*was not promoted*started again as the primary*'
            $clock.Elapsed.TotalSeconds | Should -BeLessThan 60
            # The old primary accepts writes again; every acknowledged commit is there.
            Invoke-PgTestSql -Cluster $primary -Sql 'select pg_is_in_recovery()' | Should -BeExactly 'f'
            $null = Invoke-PgTestSql -Cluster $primary -Sql 'insert into ledger values (201)'
            Invoke-PgTestSql -Cluster $primary -Sql 'select count(*) from ledger' | Should -BeExactly '201'
        }
        finally { Resume-PgTestServer -ProcessId $hung }
        Invoke-PgTestSql -Cluster $standby -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't' -Because 'nothing was promoted'
        Wait-TestStreaming
        Wait-PgTestCondition -What 'The standby replaying every commit' -Seconds 60 -Condition { (Invoke-PgTestSql -Cluster $standby -Sql 'select count(*) from ledger') -eq '201' }
    }
}

Describe 'Fault: a damaged file in the repository (one flipped byte, a truncated file)' -Tag 'Integration', 'Faults' {
    BeforeAll {
        $fixture = Start-TestFixture -Name 'faultdamage' -ItemRows 20000
        $cluster = $fixture.Cluster
        $server = $fixture.Server
        $repo = New-PgTestRepository
        $null = Enable-PgWalArchiving -Server $server -Repository $repo -Restart -Confirm:$false -ErrorAction Stop

        function Set-TestDamage([string] $Path, [string] $Damage) {
            # One byte in the middle inverted, or the second half cut off.
            $bytes = [System.IO.File]::ReadAllBytes($Path)
            if ($Damage -eq 'flipped byte') {
                $bytes[[int]($bytes.Length / 2)] = $bytes[[int]($bytes.Length / 2)] -bxor 0xFF
                [System.IO.File]::WriteAllBytes($Path, $bytes)
            }
            else { [System.IO.File]::WriteAllBytes($Path, $bytes[0..([int]($bytes.Length / 2) - 1)]) }
        }

        $damages = @(@{ Damage = 'flipped byte' }, @{ Damage = 'truncated' })
    }

    AfterAll {
        Stop-TestFixture $fixture
    }

    It 'a Custom-format dump (<Damage>): Test-PgBackup fails naming it, Restore-PgDump refuses with PgBackup.ChecksumMismatch and creates nothing' -ForEach @(@{ Damage = 'flipped byte' }, @{ Damage = 'truncated' }) {
        $dump = Invoke-PgDump -Server $server -Database shop -Repository (New-PgTestRepository) -Format Custom -ErrorAction Stop
        Set-TestDamage -Path $dump.Path -Damage $Damage

        $null = Restore-PgDump -InputObject $dump -TargetDatabase from_damaged -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.ChecksumMismatch,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidData)
        $err[0].TargetObject | Should -BeExactly $dump.Path
        Invoke-PgTestSql -Cluster $cluster -Sql "select count(*) from pg_database where datname in ('from_damaged') or datname like 'pgbackup_restoring_%'" | Should -BeExactly '0'

        $test = Test-PgBackup -InputObject $dump -Restore -ErrorAction Stop
        $test.Success | Should -BeFalse
        $test.ChecksumValid | Should -BeFalse
        $test.RestoreTested | Should -BeFalse
        ($test.Failures -join ' ') | Should -BeLikeExactly "*PgBackup.ChecksumMismatch*$($dump.Path)*"
        (Get-PgBackup -Repository (Split-Path (Split-Path (Split-Path $dump.Path))) -ErrorAction Stop).VerificationState | Should -Be ([PgBackup.VerificationState]::Failed)
    }

    It 'a file inside a Directory-format dump (<Damage>): the error and the test name that file' -ForEach @(@{ Damage = 'flipped byte' }, @{ Damage = 'truncated' }) {
        $dump = Invoke-PgDump -Server $server -Database shop -Repository (New-PgTestRepository) -Format Directory -ErrorAction Stop
        $member = Get-ChildItem -LiteralPath $dump.Path -Filter '*.dat.gz' | Sort-Object Length -Descending | Select-Object -First 1
        Set-TestDamage -Path $member.FullName -Damage $Damage

        $null = Restore-PgDump -InputObject $dump -TargetDatabase from_damaged -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.ChecksumMismatch,*'
        $err[0].TargetObject | Should -BeExactly $member.FullName
        "$($err[0])" | Should -BeLikeExactly "*$($member.Name)*"
        Invoke-PgTestSql -Cluster $cluster -Sql "select count(*) from pg_database where datname = 'from_damaged'" | Should -BeExactly '0'

        $test = Test-PgBackup -InputObject $dump -ErrorAction Stop
        $test.Success | Should -BeFalse
        ($test.Failures -join ' ') | Should -BeLikeExactly "*$($member.FullName)*"
    }

    It 'a file of a Plain base backup (<Damage>): Restore-PgPointInTime refuses with PgBackup.BackupFileDamaged naming it and writes nothing; Test-PgBackup names it' -ForEach @(@{ Damage = 'flipped byte' }, @{ Damage = 'truncated' }) {
        $base = Start-PgBaseBackup -Server $server -Repository (New-PgTestRepository) -ErrorAction Stop
        $relative = Invoke-PgTestSql -Cluster $cluster -Database shop -Sql "select pg_relation_filepath('public.items')"
        $file = Join-Path $base.Path $relative
        Set-TestDamage -Path $file -Damage $Damage

        $directory = Join-Path (New-PgTestRepository) 'data'
        $null = $base | Restore-PgPointInTime -Immediate -DataDirectory $directory -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.BackupFileDamaged,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidData)
        $err[0].TargetObject | Should -BeExactly $file
        Test-Path -LiteralPath $directory | Should -BeFalse -Because 'a recovery that fails removes what it wrote'

        $test = Test-PgBackup -InputObject $base -ErrorAction Stop
        $test.Success | Should -BeFalse
        ($test.Failures -join ' ') | Should -BeLikeExactly "*$relative*"
    }

    It 'the tar file of a Tar base backup (<Damage>): Restore-PgPointInTime refuses with PgBackup.BackupFileDamaged naming it; Test-PgBackup names it' -ForEach @(@{ Damage = 'flipped byte' }, @{ Damage = 'truncated' }) {
        $base = Start-PgBaseBackup -Server $server -Repository (New-PgTestRepository) -Format Tar -ErrorAction Stop
        $tar = Join-Path $base.Path 'base.tar'
        Set-TestDamage -Path $tar -Damage $Damage

        $directory = Join-Path (New-PgTestRepository) 'data'
        $null = $base | Restore-PgPointInTime -Immediate -DataDirectory $directory -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.BackupFileDamaged,*'
        "$($err[0].TargetObject)" | Should -BeLikeExactly "$tar*"
        Test-Path -LiteralPath $directory | Should -BeFalse

        $test = Test-PgBackup -InputObject $base -ErrorAction Stop
        $test.Success | Should -BeFalse
        # The tar file when it cannot be read to its end, else the member whose bytes changed.
        ($test.Failures -join ' ') | Should -Match 'base\.tar|base/\d+/\d+'
    }

    It 'an archived WAL segment (<Damage>): Restore-PgPointInTime refuses with PgBackup.WalSegmentDamaged naming it, and Get-PgWalArchive -Verify shows it' -ForEach @(@{ Damage = 'flipped byte' }, @{ Damage = 'truncated' }) {
        $base = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop
        $null = Invoke-PgTestSql -Cluster $cluster -Database shop -Sql 'insert into sales.orders(item_id, qty, note) select 1, 1, ''after the backup'' from generate_series(1, 1000)'
        $segment = Save-PgTestWalSegment -Cluster $cluster
        $archived = @(Get-ChildItem -LiteralPath $repo -Recurse -File -Filter $segment)
        $archived | Should -HaveCount 1
        $good = [System.IO.File]::ReadAllBytes($archived[0].FullName)
        try {
            Set-TestDamage -Path $archived[0].FullName -Damage $Damage
            $directory = Join-Path (New-PgTestRepository) 'data'
            $null = $base | Restore-PgPointInTime -Latest -DataDirectory $directory -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.WalSegmentDamaged,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidData)
            "$($err[0])" | Should -BeLikeExactly "*$segment*"
            Test-Path -LiteralPath $directory | Should -BeFalse

            $status = @(Get-PgWalArchive -Server $server -Repository $repo -Verify -ErrorAction Stop)
            (@($status.ChecksumFailures) -join ' ') | Should -BeLikeExactly "*$segment*"
        }
        finally { [System.IO.File]::WriteAllBytes($archived[0].FullName, $good) }
    }

    It "the archive's disk is full: the server keeps every segment it could not archive, nothing half-written is in the archive, and archiving catches up once there is room" -Skip:(-not $IsLinux) {
        $mount = New-PgTestTmpfs -Options 'size=64m,mode=0777'
        try {
            $archive = Join-Path $mount 'repo'
            $null = Enable-PgWalArchiving -Server $server -Repository $archive -Confirm:$false -ErrorAction Stop
            $null = Save-PgTestWalSegment -Cluster $cluster
            # Room for one more segment and its checksum, not for two.
            $filler = Join-Path $mount 'filler'
            $free = [System.IO.DriveInfo]::new($mount).AvailableFreeSpace
            $out = & fallocate -l ([string] ($free - 20MB)) $filler 2>&1
            if ($LASTEXITCODE -ne 0) { throw "fallocate failed: $out" }
            $null = Invoke-PgTestSql -Cluster $cluster -Database shop -Sql 'update sales.orders set qty = qty + 1'
            $fits = Save-PgTestWalSegment -Cluster $cluster
            $null = Invoke-PgTestSql -Cluster $cluster -Database shop -Sql 'update sales.orders set qty = qty + 1'
            $doesNotFit = Invoke-PgTestSql -Cluster $cluster -Sql 'select pg_walfile_name(pg_switch_wal())'
            Wait-PgTestCondition -What 'The archiver failing on the full disk' -Seconds 60 -Condition {
                (Invoke-PgTestSql -Cluster $cluster -Sql "select coalesce(last_failed_wal, '') from pg_stat_archiver") -eq $doesNotFit
            }
            Invoke-PgTestSql -Cluster $cluster -Sql "select count(*) from pg_ls_archive_statusdir() where name = '$doesNotFit.ready'" |
                Should -BeExactly '1' -Because 'the server keeps a segment it could not archive, marked ready'
            $files = @(Get-ChildItem -LiteralPath $archive -Recurse -File)
            $files | Where-Object Name -like '*.tmp*' | Should -BeNullOrEmpty -Because 'a push that failed removes its temporary file'
            $files | Where-Object Name -like "$doesNotFit*" | Should -BeNullOrEmpty -Because 'nothing half-written is in the archive'
            @($files | Where-Object Name -eq $fits) | Should -HaveCount 1

            Remove-Item -LiteralPath $filler
            $last = Save-PgTestWalSegment -Cluster $cluster
            $status = @(Get-PgWalArchive -Server $server -Repository $archive -Verify -ErrorAction Stop)
            $status.Count | Should -BeGreaterThan 0
            @($status.Gaps) | Should -BeNullOrEmpty
            @($status.ChecksumFailures) | Should -BeNullOrEmpty
            [string]::CompareOrdinal($status[-1].LastSegment, $last) | Should -BeGreaterOrEqual 0
        }
        finally {
            $null = Enable-PgWalArchiving -Server $server -Repository $repo -Confirm:$false -ErrorAction SilentlyContinue
            Remove-PgTestTmpfs -Path $mount
        }
    }
}

Describe 'Fault: two operations on one repository at once' -Tag 'Integration', 'Faults' {
    BeforeAll {
        $fixture = Start-TestFixture -Name 'faultconcurrent' -ItemRows 50000 -Settings @{ max_wal_senders = '10' }
        $cluster = $fixture.Cluster
        $server = $fixture.Server
    }

    AfterAll {
        Stop-TestFixture $fixture
    }

    It 'two base backups of one server: the second is refused with PgBackup.BackupInProgress naming the first, and runs once the first is gone' {
        $repo = New-PgTestRepository
        $job = Start-PgTestPwsh -Script 'Start-PgBaseBackup -Server $s -Repository $r -MaxRate 256k' -Variables @{ s = $server; r = $repo }
        try {
            Wait-TestState -What 'the first base backup writing' -Job $job -Condition { @(Get-TestLeftover $repo | Where-Object { $_.PSIsContainer -and $_.Name -like '*.partial' }).Count -gt 0 }
            $null = Start-PgBaseBackup -Server $server -Repository $repo -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.BackupInProgress,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ResourceBusy)
            "$($err[0])" | Should -BeLikeExactly "*process $($job.Process.Id) *"
        }
        finally { $null = Stop-TestPwshHard $job }
        # The operating system released the first one's lock with its process.
        $base = @(Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop)
        $base | Should -HaveCount 1
        @(Get-PgBackup -Repository $repo -ErrorAction Stop) | Should -HaveCount 1
    }

    It 'two dumps of one database: both run and both are listed, each under its own name' {
        $repo = New-PgTestRepository
        # Both wait for the same lock, so they are surely running at the same time when it is released.
        $session = Start-PgTestSession -Cluster $cluster -Database shop -Sql 'begin; lock table public.items in access exclusive mode;'
        $jobs = @()
        try {
            $jobs = @(1, 2 | ForEach-Object { Start-PgTestPwsh -Script 'Invoke-PgDump -Server $s -Database shop -Repository $r -Format Custom' -Variables @{ s = $server; r = $repo } })
            Wait-TestState -What 'both dumps waiting for the lock' -Job $jobs[0] -Condition {
                (Invoke-PgTestSql -Cluster $cluster -Sql "select count(distinct l.pid) from pg_locks l join pg_stat_activity a using (pid) where not l.granted and a.application_name = 'PgBackup'") -eq '2'
            }
        }
        finally { Stop-PgTestSession $session }
        $results = @($jobs | ForEach-Object { Wait-PgTestPwsh -Job $_ -Seconds 120 })
        foreach ($result in $results) {
            $result.Errors | Should -BeNullOrEmpty -Because (@($result.Errors.Message) -join ' | ')
            $result.Output | Should -HaveCount 1
        }
        $listed = @(Get-PgBackup -Repository $repo -ErrorAction Stop)
        $listed | Should -HaveCount 2
        @($listed.Path | Sort-Object -Unique) | Should -HaveCount 2
        foreach ($dump in $listed) { (Test-PgBackup -InputObject $dump -ErrorAction Stop).Success | Should -BeTrue }
    }

    It 'Remove-PgBackup -KeepLast 1 while a base backup runs: the running backup and the WAL it needs are untouched, and it recovers' {
        $repo = New-PgTestRepository
        $null = Enable-PgWalArchiving -Server $server -Repository $repo -Restart -Confirm:$false -ErrorAction Stop
        $null = Invoke-PgTestSql -Cluster $cluster -Sql 'create table ledger(id int primary key)'
        $old = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop
        $null = Invoke-PgTestSql -Cluster $cluster -Sql 'insert into ledger select generate_series(1, 10); select pg_switch_wal()'
        $kept = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop
        $null = Invoke-PgTestSql -Cluster $cluster -Sql 'insert into ledger select generate_series(11, 20)'

        $job = Start-PgTestPwsh -Script 'Start-PgBaseBackup -Server $s -Repository $r -MaxRate 4M' -Variables @{ s = $server; r = $repo }
        Wait-TestState -What 'the third base backup writing' -Job $job -Condition {
            $partial = @(Get-TestLeftover $repo | Where-Object { $_.PSIsContainer -and $_.Name -like '*.partial' })
            $partial.Count -gt 0 -and (Get-TestFolderSize $partial[0].FullName) -gt 1MB
        }
        $removed = @(Remove-PgBackup -Repository $repo -KeepLast 1 -PassThru -Confirm:$false -ErrorAction Stop)
        $removed | Should -HaveCount 1
        $removed[0].Id | Should -BeExactly $old.Id
        $job.Process.HasExited | Should -BeFalse -Because 'the retention ran while the third backup was being written'

        $null = Invoke-PgTestSql -Cluster $cluster -Sql 'insert into ledger select generate_series(21, 30)'
        $third = Wait-PgTestPwsh -Job $job -Seconds 300
        $third.Errors | Should -BeNullOrEmpty -Because (@($third.Errors.Message) -join ' | ')
        $third.Output | Should -HaveCount 1
        @(Get-PgBackup -Repository $repo -Kind Base -ErrorAction Stop).Id | Should -Be @($third.Output[0].Id, $kept.Id)

        $null = Save-PgTestWalSegment -Cluster $cluster
        @((Get-PgWalArchive -Server $server -Repository $repo -ErrorAction Stop).Gaps) | Should -BeNullOrEmpty
        foreach ($id in $third.Output[0].Id, $kept.Id) {
            $directory = Join-Path (New-PgTestRepository) 'data'
            $recovered = Restore-PgPointInTime -BackupId $id -Repository $repo -Latest -DataDirectory $directory -Confirm:$false -ErrorAction Stop
            $instance = [pscustomobject]@{ Host = $recovered.Server; Port = $recovered.Port; Password = $cluster.Password; BinDirectory = $cluster.BinDirectory }
            Invoke-PgTestSql -Cluster $instance -Sql 'select count(*) from ledger' | Should -BeExactly '30'
            $null = Remove-PgInstance -DataDirectory $directory -Confirm:$false -ErrorAction Stop
        }
    }
}
