#Requires -Version 7.4
# WAL archiving against the built module: Enable-PgWalArchiving,
# Get-PgWalArchive and Disable-PgWalArchiving, with base backups and retention.

Describe 'WAL archiving' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        # A cluster of its own gets archiving and a restart; the other one is never changed and serves the error cases.
        $archiving = Start-PgTestCluster -Name 'archiving'
        $untouched = Start-PgTestCluster -Name 'walerrors'
        # PGPASSFILE holds the archiving cluster's password; the untouched cluster gets its own through -Credential.
        $environment = Enter-PgTestEnvironment -Cluster $archiving
        $server = $archiving.Server
        $otherServer = $untouched.Server
        $otherCredential = [pscredential]::new($untouched.User, (ConvertTo-SecureString -String $untouched.Password -AsPlainText -Force))
        $null = Invoke-PgTestSql -Cluster $archiving -Sql 'create table ticks(id serial primary key, at timestamptz default now())'

        # Only what this cluster has written in postgresql.auto.conf (ALTER SYSTEM), as "name,name"; empty when nothing.
        $autoConfSettings = @'
select coalesce(string_agg(name, ','), '') from pg_file_settings where sourcefile like '%postgresql.auto.conf'
'@

        function Switch-TestWal {
            param([int] $Times)
            for ($i = 0; $i -lt $Times; $i++) {
                $null = Invoke-PgTestSql -Cluster $archiving -Sql 'insert into ticks default values; select pg_switch_wal();'
            }
        }

        function Wait-TestArchiver {
            # Done when the segment before the one being written now has been archived.
            $previousSegment = "pg_walfile_name(pg_current_wal_lsn() - ((pg_current_wal_lsn() - '0/0') % 16777216) - 1)"
            $deadline = [datetime]::UtcNow.AddSeconds(20)
            while ((Invoke-PgTestSql -Cluster $archiving -Sql "select coalesce(last_archived_wal, '') >= $previousSegment from pg_stat_archiver") -ne 't') {
                if ([datetime]::UtcNow -ge $deadline) {
                    $state = Invoke-PgTestSql -Cluster $archiving -Sql "select coalesce(last_archived_wal, '-') || ' ' || coalesce(last_failed_wal, '-') || ' ' || pg_walfile_name(pg_current_wal_lsn() - 1) || ' ' || pg_current_wal_lsn() from pg_stat_archiver"
                    throw "the archiver did not catch up within 20 s: $state"
                }
                Start-Sleep -Milliseconds 100
            }
        }
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $archiving
        Stop-PgTestCluster -Cluster $untouched
        Remove-PgTestRepository
    }

    Context 'on a server that gets archiving and a restart' {
        It 'archives, and base backups, retention and the gap report work together' {
            $repo = New-PgTestRepository
            $enabled = @(Enable-PgWalArchiving -Server $server -Repository $repo -MaxRpo (New-TimeSpan -Minutes 5) -Restart -Confirm:$false -ErrorAction Stop)
            $enabled | Should -HaveCount 1
            $result = $enabled[0]
            $result.PSObject.TypeNames | Should -Contain 'PgBackup.WalArchivingResult'
            $result.Verified | Should -BeTrue
            $result.Restarted | Should -BeTrue
            $result.ArchiveMode | Should -BeExactly 'on'
            $result.ArchiveTimeout | Should -Be ([timespan]::FromMinutes(5))
            $result.PendingRestart | Should -BeNullOrEmpty
            $folder = $result.Repository
            $folder.StartsWith((Join-Path $repo 'wal'), [System.StringComparison]::Ordinal) | Should -BeTrue -Because "the archive folder $folder is under $repo"
            Split-Path -Leaf $folder | Should -BeExactly (Invoke-PgTestSql -Cluster $archiving -Sql 'select system_identifier from pg_control_system()')
            # The module ships a native build of the tool for this machine; Enable-PgWalArchiving installs it into a
            # versioned folder of the tool root (here this run's PGBACKUP_WAL_TOOL_ROOT), and the server runs that copy.
            if ($IsLinux -and [System.Runtime.InteropServices.RuntimeInformation]::OSArchitecture -eq 'X64') {
                Join-Path (Split-Path -Parent (Get-Module PgBackup).Path) 'WalArchive' 'linux-x64' 'pgbackup-wal' |
                    Should -Exist -Because 'the build makes the native tool (scripts/prerequisites.sh installs the toolchain it needs)'
                $result.ArchiveCommand | Should -BeLikeExactly "'$($env:PGBACKUP_WAL_TOOL_ROOT)/0.1.0-*/linux-x64/pgbackup-wal' push '%p' *"
            }

            # The segment switched for the check has its sidecar, in the format sha256sum writes.
            $verified = Join-Path $folder $result.VerifiedSegment
            $hash = (Get-FileHash -LiteralPath $verified -Algorithm SHA256).Hash.ToLowerInvariant()
            [System.IO.File]::ReadAllText("$verified.sha256") | Should -BeExactly "$hash  $($result.VerifiedSegment)`n"

            Switch-TestWal -Times 2
            $null = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop
            Switch-TestWal -Times 3
            $newest = Start-PgBaseBackup -Server $server -Repository $repo -WalMethod None -ErrorAction Stop
            Switch-TestWal -Times 2
            Wait-TestArchiver

            $status = @(Get-PgWalArchive -Server $server -Repository $repo -ErrorAction Stop)
            $status | Should -HaveCount 1
            $status[0].PSObject.TypeNames | Should -Contain 'PgBackup.WalArchiveStatus'
            $status[0].Gaps | Should -BeNullOrEmpty
            $status[0].SegmentCount | Should -BeGreaterOrEqual 8
            $status[0].RecoveryPointObjective | Should -BeOfType [timespan]
            $status[0].LastArchivedWal | Should -BeExactly (Invoke-PgTestSql -Cluster $archiving -Sql 'select last_archived_wal from pg_stat_archiver')

            # Retention keeps the newest base backup and the WAL from its start on; older WAL goes, with its sidecars.
            $keepFrom = $newest.StartSegment
            Remove-PgBackup -Repository $repo -KeepLast 1 -Confirm:$false -ErrorAction Stop
            $segments = [string[]] @(Get-ChildItem -LiteralPath $folder -File | Where-Object { $_.Name.Length -eq 24 } | ForEach-Object Name)
            [System.Array]::Sort($segments, [System.StringComparer]::Ordinal)
            $segments[0] | Should -BeExactly $keepFrom
            foreach ($sidecar in Get-ChildItem -LiteralPath $folder -File -Filter '*.sha256') {
                Test-Path -LiteralPath (Join-Path $folder $sidecar.BaseName) | Should -BeTrue -Because "$($sidecar.Name) vouches for a file that must still be there"
            }
            $after = @(Get-PgWalArchive -Server $server -Repository $repo -ErrorAction Stop)
            $after | Should -HaveCount 1
            $after[0].Gaps | Should -BeNullOrEmpty

            # A segment deleted by hand after the kept backup's start is a reported gap.
            Remove-Item -LiteralPath (Join-Path $folder $segments[1])
            $gap = @(Get-PgWalArchive -Server $server -Repository $repo -ErrorAction Stop)
            $gap | Should -HaveCount 1
            $gaps = @($gap[0].Gaps)
            $gaps | Should -HaveCount 1
            $gaps[0].From | Should -BeExactly $segments[1]
            $gaps[0].To | Should -BeExactly $segments[1]
            $gaps[0].MissingCount | Should -Be 1

            $disabled = @(Disable-PgWalArchiving -Server $server -Confirm:$false -ErrorAction Stop -WarningVariable warnings -WarningAction SilentlyContinue)
            $disabled | Should -HaveCount 1
            $disabled[0].PendingRestart | Should -Contain 'archive_mode'
            $disabled[0].Restarted | Should -BeFalse
            $warnings | Where-Object { $_.Message.Contains('archive_mode') } | Should -Not -BeNullOrEmpty -Because (@($warnings) -join "`n")
        }
        It 'reports the backlog when the repository refuses writes, fails a runbook at a limit, and drains once it is writable' -Skip:(-not $IsLinux) {
            $repo = New-PgTestRepository
            $enabled = Enable-PgWalArchiving -Server $server -Repository $repo -Restart -Confirm:$false -ErrorAction Stop
            $folder = $enabled.Repository
            try {
                $failedBefore = [long] (Invoke-PgTestSql -Cluster $archiving -Sql 'select failed_count from pg_stat_archiver')
                # The archive folder belongs to the server's OS user; without its write bit, every push fails.
                [System.IO.File]::SetUnixFileMode($folder, [System.IO.UnixFileMode] 'UserRead, UserExecute')
                Switch-TestWal -Times 3
                Wait-PgTestCondition -What 'the archiver failing' -Seconds 30 -Condition {
                    [long] (Invoke-PgTestSql -Cluster $archiving -Sql 'select failed_count from pg_stat_archiver') -gt $failedBefore
                }
                Start-Sleep -Seconds 1
                $status = Get-PgWalArchive -Server $server -Repository $repo -MaxBacklog 1 -ErrorVariable limit -ErrorAction SilentlyContinue -WarningAction SilentlyContinue
                $status.ReadySegments | Should -BeGreaterOrEqual 3
                $status.OldestReadySegment | Should -Match '^[0-9A-F]{24}$'
                $status.OldestReadyAge | Should -BeGreaterThan ([timespan]::Zero)
                $status.PgWalBytes | Should -BeGreaterOrEqual (3 * 16MB)
                $status.PgWalDiskFreeBytes | Should -BeGreaterThan 0
                $status.PgWalDiskFreeBytes | Should -BeLessOrEqual $status.PgWalDiskBytes
                $limit | Should -HaveCount 1 -Because (Format-PgTestError $limit)
                $limit[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.WalBacklogExceeded,*'
                $limit[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::LimitsExceeded)
                $limit[0].TargetObject.OldestReadySegment | Should -Be $status.OldestReadySegment
                $null = Get-PgWalArchive -Server $server -Repository $repo -MaxBacklogAge (New-TimeSpan -Hours 1) -MinFreeBytes 1 -ErrorVariable fine -ErrorAction SilentlyContinue -WarningAction SilentlyContinue
                $fine | Should -BeNullOrEmpty -Because (Format-PgTestError $fine)
            }
            finally { [System.IO.File]::SetUnixFileMode($folder, [System.IO.UnixFileMode] 'UserRead, UserWrite, UserExecute') }

            Wait-TestArchiver
            Wait-PgTestCondition -What 'the backlog draining' -Seconds 30 -Condition {
                (Get-PgWalArchive -Server $server -Repository $repo -WarningAction SilentlyContinue).ReadySegments -eq 0
            }
            $null = Get-PgWalArchive -Server $server -Repository $repo -MaxBacklog 0 -ErrorAction Stop -WarningAction SilentlyContinue
            $null = Disable-PgWalArchiving -Server $server -Restart -Confirm:$false -ErrorAction Stop
        }

        It 'archives ahead of the server with -ArchiveParallel, compressed with -CompressWal, and refuses a degree out of range' {
            $repo = New-PgTestRepository
            { Enable-PgWalArchiving -Server $server -Repository $repo -ArchiveParallel 0 -Confirm:$false } |
                Should -Throw -ErrorId 'ParameterArgumentValidationError,PgBackup.Commands.EnablePgWalArchivingCommand'
            $failedBefore = [long] (Invoke-PgTestSql -Cluster $archiving -Sql 'select failed_count from pg_stat_archiver')
            $result = Enable-PgWalArchiving -Server $server -Repository $repo -ArchiveParallel 3 -CompressWal -Restart -Confirm:$false -ErrorAction Stop
            $result.ArchiveParallel | Should -Be 3
            $result.CompressWal | Should -BeTrue
            $result.ArchiveCommand | Should -BeLikeExactly '* --compress --parallel 3'
            Switch-TestWal -Times 8
            Wait-TestArchiver
            Test-Path -LiteralPath (Join-Path $archiving.DataDirectory 'pg_wal' 'pgbackup_archive_spool') | Should -BeTrue -Because 'the background pusher ran'
            $status = Get-PgWalArchive -Server $server -Repository $repo -Verify -ErrorAction Stop -WarningAction SilentlyContinue
            $status.Gaps | Should -BeNullOrEmpty
            $status.ChecksumFailures | Should -BeNullOrEmpty
            $status.FailedCount | Should -Be $failedBefore -Because 'no push failed'
            $status.ArchiveError | Should -BeNullOrEmpty
            $segment = Get-ChildItem -LiteralPath $result.Repository -File | Where-Object Name -Match '^[0-9A-F]{24}$' | Select-Object -Last 1
            [System.Text.Encoding]::ASCII.GetString([System.IO.File]::ReadAllBytes($segment.FullName), 0, 7) | Should -BeExactly 'PGBKWZ2'
            $null = Disable-PgWalArchiving -Server $server -Restart -Confirm:$false -ErrorAction Stop
        }
    }

    Context 'on a server that does not archive' {
        It 'refuses a base backup without WAL' {
            $null = Start-PgBaseBackup -Server $otherServer -Credential $otherCredential -Repository (New-PgTestRepository) -WalMethod None -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.ArchivingNotEnabled,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidOperation)
            $err[0].ErrorDetails.RecommendedAction | Should -BeLikeExactly '*Enable-PgWalArchiving*'
        }

        It 'reports an archive that does not exist' {
            $null = Get-PgWalArchive -Server $otherServer -Credential $otherCredential -Repository (New-PgTestRepository) -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.WalArchiveNotFound,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ObjectNotFound)
        }

        # tmpfs exists on Linux only; there this test needs root (or CAP_SYS_ADMIN) and fails, not skips, without it.
        It 'refuses an unwritable repository before the server is changed' -Skip:(-not $IsLinux) {
            $mount = New-PgTestTmpfs -Options 'ro,size=1m'
            try {
                $before = Invoke-PgTestSql -Cluster $untouched -Sql 'show archive_mode'
                $null = Enable-PgWalArchiving -Server $otherServer -Credential $otherCredential -Repository $mount -ErrorVariable err -ErrorAction SilentlyContinue
                $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
                $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.RepositoryNotWritable,*'
                $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::PermissionDenied)
                Invoke-PgTestSql -Cluster $untouched -Sql 'show archive_mode' | Should -BeExactly $before
                Invoke-PgTestSql -Cluster $untouched -Sql $autoConfSettings | Should -BeNullOrEmpty
            }
            finally { Remove-PgTestTmpfs -Path $mount }
        }

        It 'changes no setting with -WhatIf' {
            $repo = New-PgTestRepository
            Enable-PgWalArchiving -Server $otherServer -Credential $otherCredential -Repository $repo -Restart -WhatIf -ErrorAction Stop
            Disable-PgWalArchiving -Server $otherServer -Credential $otherCredential -Restart -Force -WhatIf -ErrorAction Stop
            Invoke-PgTestSql -Cluster $untouched -Sql $autoConfSettings | Should -BeNullOrEmpty
            Get-ChildItem -LiteralPath $repo -Force | Should -BeNullOrEmpty
        }
    }
}
