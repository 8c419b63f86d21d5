#Requires -Version 7.4
# Restore-PgPointInTime and Invoke-PgRecoveryDrill against the built module: a cluster with track_commit_timestamp
# archiving into a repository (Enable-PgWalArchiving), a base backup, then a ledger of 20 rows committed one per
# transaction with each row's commit time, xid and the WAL position after its commit; a restore point and a second base
# backup follow row 10, and the segment holding it all is archived. Restore-PgPointInTime recovers that backup to each kind of target on a
# local instance; Invoke-PgRecoveryDrill recovers it to the end of the archive and measures RTO and RPO.

Describe 'Restore-PgPointInTime and Invoke-PgRecoveryDrill' -Tag 'Integration' {
    BeforeAll {
        # Every data directory a test recovers into; AfterEach removes them (Remove-PgInstance for a data directory).
        $dataDirectories = [System.Collections.Generic.List[string]]::new()

        function New-TestDataDirectory {
            # A path for a recovered instance that does not exist yet, in a new folder the server's OS user can reach.
            $path = Join-Path (New-PgTestRepository) 'data'
            $dataDirectories.Add($path)
            $path
        }

        function Remove-TestDataDirectory {
            # Remove-PgInstance for every recovered instance (stops it if it runs, deletes its folder); other folders are deleted.
            foreach ($path in @($dataDirectories)) {
                try {
                    if (Test-Path -LiteralPath (Join-Path $path 'PG_VERSION')) { Remove-PgInstance -DataDirectory $path -Force -Confirm:$false -ErrorAction Stop }
                    elseif (Test-Path -LiteralPath $path) { Remove-Item -LiteralPath $path -Recurse -Force -ErrorAction Stop }
                }
                catch { Write-Warning "Could not remove the recovered instance in ${path}: $_" }
            }
            $dataDirectories.Clear()
        }

        function Get-TestLedger {
            # The ids in the ledger of an instance, in order, as "1,2,3" ('' when it is empty).
            param([Parameter(Mandatory)] [string] $Server, [Parameter(Mandatory)] [int] $Port)
            $instance = [pscustomobject]@{ Host = $Server; Port = $Port; Password = $cluster.Password; BinDirectory = $cluster.BinDirectory }
            Invoke-PgTestSql -Cluster $instance -Sql "select coalesce(string_agg(id::text, ',' order by id), '') from ledger"
        }

        function Get-TestRange {
            # "1,2,...,Last", as Get-TestLedger returns a ledger of the rows 1 to Last.
            param([int] $Last)
            (1..$Last) -join ','
        }

        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $cluster = Start-PgTestCluster -Name 'pitr' -Settings @{ track_commit_timestamp = 'on' }
        $environment = Enter-PgTestEnvironment -Cluster $cluster
        $server = $cluster.Server
        $repo = New-PgTestRepository

        $null = Enable-PgWalArchiving -Server $server -Repository $repo -Restart -Confirm:$false -ErrorAction Stop
        $null = Invoke-PgTestSql -Cluster $cluster -Sql 'create table ledger(id int primary key)'
        $backup = @(Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop)
        if ($backup.Count -ne 1) { throw "Start-PgBaseBackup returned $($backup.Count) objects instead of one base backup." }
        $backup = $backup[0]

        # The ledger: one transaction per row, its xid and the WAL insert position right after its commit.
        $xids = @{}
        $after = @{}
        for ($id = 1; $id -le 20; $id++) {
            $lines = (Invoke-PgTestSql -Cluster $cluster -Sql "insert into ledger values ($id) returning xmin::text; select pg_current_wal_insert_lsn()::text;") -split '\r?\n'
            $xids[$id] = [uint64] $lines[0].Trim()
            $after[$id] = $lines[1].Trim()
            if ($id -eq 10) {
                $null = Invoke-PgTestSql -Cluster $cluster -Sql "select pg_create_restore_point('after-10')"
                $second = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop
            }
            Start-Sleep -Milliseconds 5
        }
        # Each row's commit time (track_commit_timestamp), in UTC to the microsecond.
        $committed = @{}
        $times = Invoke-PgTestSql -Cluster $cluster -Sql @'
select id || '|' || to_char(pg_xact_commit_timestamp(xmin) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') from ledger order by id
'@
        foreach ($line in $times -split '\r?\n') {
            $id, $time = $line.Trim().Split('|')
            $committed[[int] $id] = [datetimeoffset]::Parse($time, [cultureinfo]::InvariantCulture)
        }
        $null = Save-PgTestWalSegment -Cluster $cluster
    }

    AfterEach {
        Remove-TestDataDirectory
    }

    AfterAll {
        if (Get-Command -Name Remove-TestDataDirectory -ErrorAction SilentlyContinue) { Remove-TestDataDirectory }
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $cluster
        Remove-PgTestRepository
    }

    Context 'recovering to a target' {
        It 'recovers exactly the rows committed by the commit time of row <Row> (<What>)' -ForEach @(
            @{ Row = 7; Exclusive = $false; Last = 7; What = 'inclusive: row 7 is in' }
            @{ Row = 7; Exclusive = $true; Last = 6; What = '-Exclusive: row 7 is not' }
        ) {
            $directory = New-TestDataDirectory
            $result = $backup | Restore-PgPointInTime -TargetTime $committed[$Row] -Exclusive:$Exclusive -DataDirectory $directory -Confirm:$false -ErrorAction Stop

            $result | Should -HaveCount 1
            $result.PSObject.TypeNames | Should -Contain 'PgBackup.RecoveryResult'
            Get-TestLedger -Server $result.Server -Port $result.Port | Should -BeExactly (Get-TestRange $Last)
            $result.DataDirectory | Should -BeExactly $directory
            $result.Server | Should -BeExactly 'localhost'
            $result.BackupId | Should -BeExactly $backup.Id
            $result.Promoted | Should -BeTrue
            $result.State | Should -BeExactly 'Running'
            $result.ReachedTime | Should -Be $committed[$Last]
            $result.Timeline | Should -Be ($backup.Timeline + 1)
            $result.ReachedLsn | Should -BeGreaterThan $backup.StopLsn
            $result.WalReplayedBytes | Should -BeGreaterThan 0
            $result.RestoreDuration | Should -BeGreaterThan ([timespan]::Zero)
            $result.ReplayDuration | Should -BeGreaterThan ([timespan]::Zero)
            # The recovered instance never archives into the source's archive.
            Get-Content -LiteralPath (Join-Path $directory 'postgresql.auto.conf') -Raw | Should -BeLikeExactly '*archive_mode = off*'
        }

        It 'stops at an LSN, at a transaction id (inclusive and -Exclusive) and at a named restore point' {
            $atLsn = $backup | Restore-PgPointInTime -TargetLsn $after[12] -DataDirectory (New-TestDataDirectory) -Confirm:$false -ErrorAction Stop
            Get-TestLedger -Server $atLsn.Server -Port $atLsn.Port | Should -BeExactly (Get-TestRange 12)

            $atXid = $backup | Restore-PgPointInTime -TargetXid $xids[15] -DataDirectory (New-TestDataDirectory) -Confirm:$false -ErrorAction Stop
            Get-TestLedger -Server $atXid.Server -Port $atXid.Port | Should -BeExactly (Get-TestRange 15)

            $beforeXid = $backup | Restore-PgPointInTime -TargetXid $xids[15] -Exclusive -DataDirectory (New-TestDataDirectory) -Confirm:$false -ErrorAction Stop
            Get-TestLedger -Server $beforeXid.Server -Port $beforeXid.Port | Should -BeExactly (Get-TestRange 14)

            # Given -Server, the newest base backup of that server that can reach the target is recovered: the second
            # backup began after the restore point.
            $atName = Restore-PgPointInTime -Server $server -Repository $repo -TargetName 'after-10' -DataDirectory (New-TestDataDirectory) -Confirm:$false -ErrorAction Stop
            $atName.BackupId | Should -BeExactly $backup.Id
            Get-TestLedger -Server $atName.Server -Port $atName.Port | Should -BeExactly (Get-TestRange 10)
        }

        It 'picks, given -Server, the newest base backup that can reach the target' {
            $bases = @(Get-PgBackup -Repository $repo -Kind Base -ErrorAction Stop | Sort-Object StartTime)
            $bases | Should -HaveCount 2
            $bases[0].Id | Should -BeExactly $backup.Id
            $bases[1].Id | Should -BeExactly $second.Id

            $early = @(Restore-PgPointInTime -Server $server -Repository $repo -TargetTime $committed[5] -DataDirectory (New-TestDataDirectory) -Confirm:$false -ErrorAction Stop)
            $early | Should -HaveCount 1
            $early[0].BackupId | Should -BeExactly $backup.Id
            Get-TestLedger -Server $early[0].Server -Port $early[0].Port | Should -BeExactly (Get-TestRange 5)

            # A time given as text, as a runbook passes it.
            $late = @(Restore-PgPointInTime -Server $server -Repository $repo -TargetTime $committed[15].ToString('o') -Exclusive -DataDirectory (New-TestDataDirectory) -Confirm:$false -ErrorAction Stop)
            $late | Should -HaveCount 1
            $late[0].BackupId | Should -BeExactly $second.Id
            Get-TestLedger -Server $late[0].Server -Port $late[0].Port | Should -BeExactly (Get-TestRange 14)

            $byId = @(Restore-PgPointInTime -BackupId $second.Id -Repository $repo -Immediate -TargetAction Pause -DataDirectory (New-TestDataDirectory) -Confirm:$false -ErrorAction Stop)
            $byId | Should -HaveCount 1
            $byId[0].Promoted | Should -BeFalse
            Get-TestLedger -Server $byId[0].Server -Port $byId[0].Port | Should -BeExactly (Get-TestRange 10)
        }

        It 'recovers everything archived with -Latest' {
            $latest = $backup | Restore-PgPointInTime -Latest -DataDirectory (New-TestDataDirectory) -Confirm:$false -ErrorAction Stop
            $latest.Promoted | Should -BeTrue
            Get-TestLedger -Server $latest.Server -Port $latest.Port | Should -BeExactly (Get-TestLedger -Server $cluster.Host -Port $cluster.Port)
            Get-TestLedger -Server $latest.Server -Port $latest.Port | Should -BeExactly (Get-TestRange 20)
            $latest.ReachedTime | Should -BeGreaterOrEqual $committed[20]
        }

        It 'leaves the instance in recovery at the target with -TargetAction Pause, and stopped there with Shutdown' {
            $paused = $backup | Restore-PgPointInTime -TargetTime $committed[5] -TargetAction Pause -DataDirectory (New-TestDataDirectory) -Confirm:$false -ErrorAction Stop
            $paused.Promoted | Should -BeFalse
            $paused.State | Should -BeExactly 'Running'
            $paused.Timeline | Should -Be $backup.Timeline
            Get-TestLedger -Server $paused.Server -Port $paused.Port | Should -BeExactly (Get-TestRange 5)
            $instance = [pscustomobject]@{ Host = $paused.Server; Port = $paused.Port; Password = $cluster.Password; BinDirectory = $cluster.BinDirectory }
            Invoke-PgTestSql -Cluster $instance -Sql 'select pg_is_in_recovery()' | Should -BeExactly 't'

            $directory = New-TestDataDirectory
            $stopped = $backup | Restore-PgPointInTime -TargetTime $committed[5] -TargetAction Shutdown -DataDirectory $directory -Confirm:$false -ErrorAction Stop
            $stopped.State | Should -BeExactly 'Stopped'
            $stopped.Promoted | Should -BeFalse
            $stopped.ReachedLsn | Should -Not -BeNullOrEmpty
            Test-Path -LiteralPath (Join-Path $directory 'postmaster.pid') | Should -BeFalse
            Test-Path -LiteralPath (Join-Path $directory 'PG_VERSION') | Should -BeTrue
        }

        It 'recovers a backup given by -BackupId to its own end with -Immediate, and the result pipes into Stop-PgInstance' {
            $directory = New-TestDataDirectory
            $immediate = Restore-PgPointInTime -BackupId $backup.Id -Repository $repo -Immediate -DataDirectory $directory -Confirm:$false -ErrorAction Stop
            $immediate.Promoted | Should -BeTrue
            # The ledger was created before the backup and filled after it.
            Get-TestLedger -Server $immediate.Server -Port $immediate.Port | Should -BeExactly ''

            $stopped = @($immediate | Stop-PgInstance -PassThru -Confirm:$false -ErrorAction Stop)
            $stopped | Should -HaveCount 1
            $stopped[0].PSObject.TypeNames | Should -Contain 'PgBackup.PgInstance'
            "$($stopped[0].State)" | Should -BeExactly 'Stopped'
            $stopped[0].DataDirectory | Should -BeExactly $directory
            Test-Path -LiteralPath (Join-Path $directory 'postmaster.pid') | Should -BeFalse
        }
    }

    Context 'refusing what cannot be done, before anything is written' {
        It 'refuses a time before the base backup became consistent (TargetBeforeBackupEnd)' {
            $directory = New-TestDataDirectory
            $null = $backup | Restore-PgPointInTime -TargetTime ($backup.StartTime.AddMinutes(-1)) -DataDirectory $directory -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeExactly 'PgBackup.TargetBeforeBackupEnd,PgBackup.Commands.RestorePgPointInTimeCommand'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
            $err[0].TargetObject | Should -BeExactly $backup.Id
            $err[0].Exception.Message | Should -BeLikeExactly '*earliest point*'
            Test-Path -LiteralPath $directory | Should -BeFalse

            # Given -Server, no backup in the repository reaches back that far.
            $null = Restore-PgPointInTime -Server $server -Repository $repo -TargetTime '2001-01-01Z' -DataDirectory $directory -Confirm:$false -ErrorVariable old -ErrorAction SilentlyContinue
            $old | Should -HaveCount 1 -Because (Format-PgTestError $old)
            $old[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetBeforeBackupEnd,*'
            Test-Path -LiteralPath $directory | Should -BeFalse
        }

        It 'refuses a time, an LSN, a transaction id and a restore point beyond the archived WAL (TargetBeyondArchive), and a timeline it does not hold' {
            $directory = New-TestDataDirectory
            $null = Get-PgBackup -Repository $repo -Kind Base -Latest | Restore-PgPointInTime -TargetTime ([datetimeoffset]::UtcNow.AddHours(1)) -DataDirectory $directory -Confirm:$false -ErrorVariable future -ErrorAction SilentlyContinue
            $future | Should -HaveCount 1 -Because (Format-PgTestError $future)
            $future[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetBeyondArchive,*'
            $future[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
            $future[0].TargetObject.GetType().FullName | Should -BeExactly 'PgBackup.RecoveryTarget'
            # The message names the newest point that can be reached: the commit of row 20.
            $newest = $committed[20].UtcDateTime.ToString('yyyy-MM-dd HH:mm:ss.ffffff', [cultureinfo]::InvariantCulture)
            $future[0].Exception.Message | Should -BeLikeExactly "*$newest*"
            $future[0].ErrorDetails.RecommendedAction | Should -BeLikeExactly '*-Latest*'

            $high, $low = $after[20].Split('/')
            $farLsn = '{0:X}/{1}' -f ([System.Convert]::ToUInt32($high, 16) + 1), $low
            $null = $backup | Restore-PgPointInTime -TargetLsn $farLsn -DataDirectory $directory -Confirm:$false -ErrorVariable lsn -ErrorAction SilentlyContinue
            $lsn | Should -HaveCount 1 -Because (Format-PgTestError $lsn)
            $lsn[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetBeyondArchive,*'

            $null = $backup | Restore-PgPointInTime -TargetXid ($xids[20] + [uint64] 1000) -DataDirectory $directory -Confirm:$false -ErrorVariable xid -ErrorAction SilentlyContinue
            $xid | Should -HaveCount 1 -Because (Format-PgTestError $xid)
            $xid[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetBeyondArchive,*'

            $null = $backup | Restore-PgPointInTime -TargetName 'no-such-point' -DataDirectory $directory -Confirm:$false -ErrorVariable name -ErrorAction SilentlyContinue
            $name | Should -HaveCount 1 -Because (Format-PgTestError $name)
            $name[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetBeyondArchive,*'

            $null = $backup | Restore-PgPointInTime -Latest -TargetTimeline 7 -DataDirectory $directory -Confirm:$false -ErrorVariable timeline -ErrorAction SilentlyContinue
            $timeline | Should -HaveCount 1 -Because (Format-PgTestError $timeline)
            $timeline[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TimelineNotInArchive,*'
            $timeline[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ObjectNotFound)

            Test-Path -LiteralPath $directory | Should -BeFalse
        }

        It 'refuses a data directory that is not empty and leaves its files alone (DataDirectoryNotEmpty), and -Force replaces them' {
            $directory = New-TestDataDirectory
            $null = New-Item -ItemType Directory -Path $directory
            $keep = Join-Path $directory 'keep.txt'
            Set-Content -LiteralPath $keep -Value 'precious' -NoNewline
            $null = $backup | Restore-PgPointInTime -Latest -DataDirectory $directory -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeExactly 'PgBackup.DataDirectoryNotEmpty,PgBackup.Commands.RestorePgPointInTimeCommand'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ResourceExists)
            $err[0].ErrorDetails.RecommendedAction | Should -BeLikeExactly '*-Force*'
            Get-Content -LiteralPath $keep -Raw | Should -BeExactly 'precious'
            @(Get-ChildItem -LiteralPath $directory -Force) | Should -HaveCount 1

            $forced = $backup | Restore-PgPointInTime -TargetTime $committed[2] -DataDirectory $directory -Force -Confirm:$false -ErrorAction Stop
            Get-TestLedger -Server $forced.Server -Port $forced.Port | Should -BeExactly (Get-TestRange 2)
            Test-Path -LiteralPath $keep | Should -BeFalse
        }

        It 'refuses a port that is in use (PortInUse)' {
            $directory = New-TestDataDirectory
            $null = Restore-PgPointInTime -Server $server -Repository $repo -Latest -DataDirectory $directory -Port $cluster.Port -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PortInUse,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ResourceExists)
            $err[0].TargetObject | Should -BeOfType [int]
            $err[0].TargetObject | Should -Be $cluster.Port
            Test-Path -LiteralPath $directory | Should -BeFalse
        }

        It 'refuses no target (NoRecoveryTarget), two targets, -Exclusive with a restore point and -TargetAction with -Latest' {
            $directory = New-TestDataDirectory
            $null = Get-PgBackup -Repository $repo -Kind Base -Latest | Restore-PgPointInTime -DataDirectory $directory -Confirm:$false -ErrorVariable none -ErrorAction SilentlyContinue
            $none | Should -HaveCount 1 -Because (Format-PgTestError $none)
            $none[0].FullyQualifiedErrorId | Should -BeExactly 'PgBackup.NoRecoveryTarget,PgBackup.Commands.RestorePgPointInTimeCommand'
            $none[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
            $none[0].ErrorDetails.RecommendedAction | Should -BeLikeExactly '*-TargetTime*'

            $null = $backup | Restore-PgPointInTime -Latest -Immediate -DataDirectory $directory -Confirm:$false -ErrorVariable two -ErrorAction SilentlyContinue
            $two | Should -HaveCount 1 -Because (Format-PgTestError $two)
            $two[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TooManyRecoveryTargets,*'
            $two[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)

            $null = $backup | Restore-PgPointInTime -TargetName 'after-10' -Exclusive -DataDirectory $directory -Confirm:$false -ErrorVariable exclusive -ErrorAction SilentlyContinue
            $exclusive | Should -HaveCount 1 -Because (Format-PgTestError $exclusive)
            $exclusive[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.ExclusiveNotApplicable,*'

            $null = $backup | Restore-PgPointInTime -Latest -TargetAction Pause -DataDirectory $directory -Confirm:$false -ErrorVariable action -ErrorAction SilentlyContinue
            $action | Should -HaveCount 1 -Because (Format-PgTestError $action)
            $action[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetActionNotApplicable,*'

            Test-Path -LiteralPath $directory | Should -BeFalse
        }

        It 'restores nothing and starts no drill with -WhatIf' {
            $directory = New-TestDataDirectory
            $planned = @($backup | Restore-PgPointInTime -Latest -DataDirectory $directory -WhatIf -ErrorVariable err -ErrorAction SilentlyContinue)
            $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
            $planned | Should -HaveCount 0
            Test-Path -LiteralPath $directory | Should -BeFalse

            $latestDirectory = New-TestDataDirectory
            $null = Restore-PgPointInTime -Server $server -Repository $repo -Latest -DataDirectory $latestDirectory -WhatIf -ErrorVariable latestErr -ErrorAction SilentlyContinue
            $latestErr | Should -BeNullOrEmpty -Because (Format-PgTestError $latestErr)
            Test-Path -LiteralPath $latestDirectory | Should -BeFalse

            $drillDirectory = New-TestDataDirectory
            $drill = @(Invoke-PgRecoveryDrill -Server $server -Repository $repo -DataDirectory $drillDirectory -WhatIf -ErrorVariable drillErr -ErrorAction SilentlyContinue)
            $drillErr | Should -BeNullOrEmpty -Because (Format-PgTestError $drillErr)
            $drill | Should -HaveCount 0
            Test-Path -LiteralPath $drillDirectory | Should -BeFalse
        }
    }

    # These change the source (a DELETE without WHERE, then the rescue), so they run after the tests above.
    Context 'rescuing data and rehearsing the recovery' {
        It 'rescues rows deleted by mistake: recover to the last good commit, pipe it into Invoke-PgDump of the table, load its rows back into the source with -DataOnly' {
            $null = Invoke-PgTestSql -Cluster $cluster -Sql 'delete from ledger' # someone forgot the WHERE
            $null = Save-PgTestWalSegment -Cluster $cluster
            Get-TestLedger -Server $cluster.Host -Port $cluster.Port | Should -BeExactly ''

            $file = Join-Path (New-PgTestRepository) 'ledger.dump'
            $dump = Get-PgBackup -Repository $repo -Kind Base -Latest | Restore-PgPointInTime -TargetTime $committed[20] -DataDirectory (New-TestDataDirectory) -Confirm:$false -ErrorAction Stop |
                Tee-Object -Variable recovered |
                Invoke-PgDump -Database postgres -Table ledger -Format Custom -Path $file -ErrorAction Stop
            $recovered | Should -HaveCount 1
            $recovered = @($recovered)[0]
            $recovered.PSObject.TypeNames | Should -Contain 'PgBackup.RecoveryResult'
            $recovered.Promoted | Should -BeTrue
            $recovered.ReachedTime | Should -Be $committed[20]
            Get-TestLedger -Server $recovered.Server -Port $recovered.Port | Should -BeExactly (Get-TestRange 20)
            $dump | Should -HaveCount 1
            $dump.PSObject.TypeNames | Should -Contain 'PgBackup.DumpBackup'
            $dump.Port | Should -Be $recovered.Port
            Test-Path -LiteralPath $file -PathType Leaf | Should -BeTrue

            $restored = Restore-PgDump -Path $file -Server $server -TargetDatabase postgres -DataOnly -Confirm:$false -ErrorAction Stop
            $restored | Should -HaveCount 1
            $restored.Cleaned | Should -BeFalse
            $restored.Database | Should -BeExactly 'postgres'
            Get-TestLedger -Server $cluster.Host -Port $cluster.Port | Should -BeExactly (Get-TestRange 20)
        }

        It 'passes a drill that meets its RTO and RPO objectives and whose query matches the source, writes the report and removes its instance' {
            $null = Save-PgTestWalSegment -Cluster $cluster # everything committed on the source is archived, so the recovery point is the source's newest commit
            $reportPath = Join-Path (New-PgTestRepository) 'drill.md'
            $query = 'select count(*) from ledger where id <= 20'
            $drill = @(Invoke-PgRecoveryDrill -Server $server -Repository $repo -RtoObjective 00:15:00 -RpoObjective 00:05:00 -Query $query -ReportPath $reportPath -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
            $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
            $drill | Should -HaveCount 1
            $report = $drill[0]
            $report.PSObject.TypeNames | Should -Contain 'PgBackup.DrillReport'
            $report.Passed | Should -BeTrue -Because (@($report.Failures) -join '; ')
            @($report.Failures) | Should -HaveCount 0
            $report.BackupId | Should -BeExactly $second.Id -Because 'a drill recovers the newest base backup'
            $report.RtoMet | Should -BeTrue
            $report.RpoMet | Should -BeTrue
            $report.Rto | Should -BeGreaterThan ([timespan]::Zero)
            $report.Rpo | Should -Be ([timespan]::Zero) -Because 'everything committed on the source was archived'
            $report.RpoMethod | Should -BeLikeExactly 'exact*'
            $checked = @($report.Checks | Where-Object { $_.Name -eq "Query: $query" })
            $checked | Should -HaveCount 1
            $checked[0].Passed | Should -BeTrue
            $checked[0].RecoveredValue | Should -BeExactly (Invoke-PgTestSql -Cluster $cluster -Sql $query)

            # The throwaway instance is gone without -Keep.
            $report.Kept | Should -BeFalse
            Test-Path -LiteralPath $report.DataDirectory | Should -BeFalse

            $report.ReportPath | Should -BeExactly $reportPath
            $markdown = Get-Content -LiteralPath $reportPath -Raw
            $markdown.Contains('PASSED') | Should -BeTrue -Because $markdown
            $markdown.Contains('**Result: PASSED**') | Should -BeTrue -Because $markdown
            $markdown.Contains("| Query: $query | pass |") | Should -BeTrue -Because $markdown
        }

        It 'fails a drill that misses its RTO and RPO objectives, names the failures, and keeps its instance with -Keep' {
            $null = Save-PgTestWalSegment -Cluster $cluster
            $archived = Get-TestLedger -Server $cluster.Host -Port $cluster.Port
            # Work committed and not archived yet is what the drill measures as the recovery point: from the newest commit
            # recovered to the newest commit on the source, over a second later.
            Start-Sleep -Milliseconds 1100
            $null = Invoke-PgTestSql -Cluster $cluster -Sql 'insert into ledger values (501)'
            $drill = @(Invoke-PgRecoveryDrill -Server $server -Repository $repo -RtoObjective 00:00:00.001 -RpoObjective 00:00:01 -Keep -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
            $err | Should -BeNullOrEmpty -Because "a drill that misses its objectives returns a report, not an error: $(Format-PgTestError $err)"
            $drill | Should -HaveCount 1
            $report = $drill[0]
            if ($report.DataDirectory) { $dataDirectories.Add($report.DataDirectory) }
            $report.Passed | Should -BeFalse
            $report.RtoMet | Should -BeFalse
            @($report.Failures | Where-Object { $_.StartsWith('RTO objective', [System.StringComparison]::Ordinal) }) | Should -HaveCount 1 -Because (@($report.Failures) -join '; ')
            $report.RpoMet | Should -BeFalse -Because "RPO $($report.Rpo), source's newest commit $($report.SourceNewestCommit), recovered $($report.RecoveredTime), $($report.RpoMethod)"
            $report.Rpo | Should -BeOfType [timespan]
            $report.Rpo | Should -BeGreaterOrEqual ([timespan]::FromSeconds(1))
            @($report.Failures | Where-Object { $_.StartsWith('RPO objective', [System.StringComparison]::Ordinal) }) | Should -HaveCount 1 -Because (@($report.Failures) -join '; ')

            # -Keep: the recovered instance is still there and answers.
            $report.Kept | Should -BeTrue
            Test-Path -LiteralPath (Join-Path $report.DataDirectory 'PG_VERSION') | Should -BeTrue
            Get-TestLedger -Server 'localhost' -Port $report.RecoveredPort | Should -BeExactly $archived
        }
    }
}
