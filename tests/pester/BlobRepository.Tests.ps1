#Requires -Version 7.4
# Repositories in Azure Blob Storage, as a user drives them: Azurite on loopback, a real cluster, the real pg_* tools.

Describe 'Blob repositories (Azurite)' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $azurite = Start-PgTestAzurite
        $cluster = Start-PgTestCluster -Name 'blob'
        $environment = Enter-PgTestEnvironment -Cluster $cluster
        $server = $cluster.Server
        New-PgTestSampleDatabase -Cluster $cluster -Database shop -ItemRows 5000
        $env:AZURE_STORAGE_CONNECTION_STRING = $azurite.ConnectionString
    }

    AfterAll {
        $env:AZURE_STORAGE_CONNECTION_STRING = $null
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $cluster
        Stop-PgTestAzurite -Azurite $azurite
    }

    It 'dumps into a container, lists, tests, restores by pipeline and removes, every format' {
        $repo = $azurite.NewContainerUrl() + '/nightly'
        foreach ($format in 'Custom', 'Directory', 'Plain', 'Tar') {
            $jobs = if ($format -eq 'Directory') { 2 } else { 1 }
            $dump = Invoke-PgDump -Server $server -Database shop -Repository $repo -Format $format -Jobs $jobs -ErrorAction Stop
            $dump.PSObject.TypeNames | Should -Contain 'PgBackup.DumpBackup'
            $dump.Path | Should -BeLike "$repo/*"
            $dump.Repository | Should -Be $repo
        }
        $listed = Get-PgBackup -Repository $repo -ErrorAction Stop
        $listed | Should -HaveCount 4

        $tests = $listed | Test-PgBackup -ErrorAction Stop
        $tests.Success | Should -Not -Contain $false

        $custom = $listed | Where-Object Format -EQ 'Directory'
        $restored = $custom | Restore-PgDump -TargetDatabase shop_from_blob -Jobs 2 -ErrorAction Stop
        $restored.ChecksumVerified | Should -BeTrue
        $restored.SourcePath | Should -Be $custom.Path
        Get-PgTestRowCount -Cluster $cluster -Database shop_from_blob | Should -Be (Get-PgTestRowCount -Cluster $cluster -Database shop)
        Remove-PgTestDatabase -Cluster $cluster -Database shop_from_blob

        $plain = Get-PgBackup -Repository $repo | Where-Object Format -EQ 'Plain'
        $check = Test-PgBackup -InputObject $plain -Restore -ErrorAction Stop
        $check.Success | Should -BeTrue -Because ($check.Failures -join ' ')
        $check.RestoreTested | Should -BeTrue

        Remove-PgBackup -Repository $repo -KeepLast 1 -Confirm:$false -ErrorAction Stop
        Get-PgBackup -Repository $repo | Should -HaveCount 1
    }

    It 'never shows a SAS token of the URL in errors, objects or configuration' {
        $container = $azurite.NewContainerUrl()
        $url = "$($container)?sv=2025-01-05&sr=c&sp=racwdl&se=2030-01-01T00%3A00%3A00Z&sig=bm90LWEtcmVhbC1zaWduYXR1cmU%3D"
        # A SAS token comes before the connection string, so this one (not signed by the account) is what is tried.
        $null = Invoke-PgDump -Server $server -Database shop -Repository $url -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.StorageAccessDenied,*'
        $err[0].TargetObject | Should -Be $container
        ($err[0] | Out-String) + $err[0].Exception.ToString() | Should -Not -Match 'bm90LWEtcmVhbC1zaWduYXR1cmU'
        $err[0].Exception.Message | Should -Match 'SAS token'

        $env:PGBACKUP_REPOSITORY = $url
        try { $config = Get-PgBackupConfig | Where-Object Name -EQ 'Repository' }
        finally { $env:PGBACKUP_REPOSITORY = $null }
        $config.Value | Should -Be "$($container)?********"
    }

    It 'refuses a wrong key with PgBackup.StorageAccessDenied and writes nothing' {
        $container = $azurite.NewContainerUrl()
        $env:AZURE_STORAGE_CONNECTION_STRING = $null
        $env:AZURE_STORAGE_KEY = [Convert]::ToBase64String([byte[]]::new(64))
        try { $null = Invoke-PgDump -Server $server -Database shop -Repository $container -ErrorVariable err -ErrorAction SilentlyContinue }
        finally {
            $env:AZURE_STORAGE_KEY = $null
            $env:AZURE_STORAGE_CONNECTION_STRING = $azurite.ConnectionString
        }
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.StorageAccessDenied,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::PermissionDenied)
        $err[0].TargetObject | Should -Be $container
        $err[0].ErrorDetails.RecommendedAction | Should -Match 'AZURE_STORAGE_KEY'
        $null = Get-PgBackup -Repository $container -ErrorVariable listed -ErrorAction SilentlyContinue
        $listed[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.RepositoryNotFound,*'
    }

    It 'takes a Tar base backup into a container, tests it, and recovers it with -Immediate from a local copy' {
        $repo = $azurite.NewContainerUrl() + '/physical'
        $backup = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop
        $backup.PSObject.TypeNames | Should -Contain 'PgBackup.BaseBackup'
        "$($backup.Format)" | Should -BeExactly 'Tar' -Because 'Tar is the default for a blob repository'
        $backup.Path | Should -BeLike "$repo/*"
        "$($backup.VerificationState)" | Should -BeExactly 'Verified'

        $listed = Get-PgBackup -Repository $repo -Kind Base -ErrorAction Stop
        $listed | Should -HaveCount 1
        ($listed | Test-PgBackup -ErrorAction Stop).Success | Should -BeTrue

        $directory = Join-Path (New-PgTestRepository) 'data'
        $recovered = $listed | Restore-PgPointInTime -Immediate -DataDirectory $directory -Confirm:$false -ErrorAction Stop
        try {
            $recovered.BackupPath | Should -Be $backup.Path
            $recovered.Promoted | Should -BeTrue
            Get-PgTestRowCount -Cluster ([pscustomobject]@{ Host = $recovered.Server; Port = $recovered.Port; Password = $cluster.Password; BinDirectory = $cluster.BinDirectory }) -Database shop |
                Should -Be (Get-PgTestRowCount -Cluster $cluster -Database shop)
        }
        finally { Remove-PgInstance -DataDirectory $directory -Confirm:$false -ErrorAction SilentlyContinue }
        Get-ChildItem -LiteralPath ([System.IO.Path]::GetTempPath()) -Filter 'pgbackup-spool-*' -Directory | Should -BeNullOrEmpty

        $null = Start-PgBaseBackup -Server $server -Repository $repo -Format Plain -ErrorVariable plain -ErrorAction SilentlyContinue
        $plain[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PlainNeedsFolder,*'
    }

    It 'creates and describes repositories in a folder and in a container, and refuses what is not one' {
        $folder = Join-Path (New-PgTestRepository) 'new repo'
        $created = New-PgRepository -Repository $folder -ErrorAction Stop
        $created.PSObject.TypeNames | Should -Contain 'PgBackup.BackupRepository'
        "$($created.Kind)" | Should -BeExactly 'Folder'
        $created.MarkerWritten | Should -BeTrue
        $created.AccessVerified | Should -BeTrue
        $created.FormatVersion | Should -Be 1
        $created.DumpCount + $created.BaseBackupCount + $created.WalFileCount | Should -Be 0
        Join-Path $folder 'pgbackup-repository.json' | Should -Exist
        Get-ChildItem -LiteralPath $folder -Force -Filter '.pgbackup-access-test-*' | Should -BeNullOrEmpty
        (New-PgRepository -Repository $folder -ErrorAction Stop).MarkerWritten | Should -BeFalse

        $container = $azurite.NewContainerUrl() + '/team'
        $blob = New-PgRepository -Repository $container -ErrorAction Stop
        "$($blob.Kind)" | Should -BeExactly 'AzureBlob'
        $blob.Location | Should -Be $container
        $null = Invoke-PgDump -Server $server -Database shop -Repository $container -ErrorAction Stop
        $described = $blob | Get-PgRepository -ErrorAction Stop
        $described.DumpCount | Should -Be 1
        $described.SizeBytes | Should -BeGreaterThan 0
        $described.Created | Should -Be $blob.Created

        $null = Get-PgRepository -Repository (Join-Path $folder 'missing') -ErrorVariable missing -ErrorAction SilentlyContinue
        $missing[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.RepositoryNotFound,*'
        $foreign = New-PgTestRepository
        Set-Content -LiteralPath (Join-Path $foreign 'pgbackup-repository.json') -Value '{"format":"something-else"}'
        $null = Get-PgRepository -Repository $foreign -ErrorVariable invalid -ErrorAction SilentlyContinue
        $invalid[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.InvalidRepository,*'
        $invalid[0].TargetObject | Should -Be $foreign
        $null = New-PgRepository -Repository $azurite.NewContainerUrl() -WhatIf
    }

    It 'archives WAL into a container, recovers a point in time from it, drills it, and prunes WAL blobs with retention' {
        $repo = $azurite.NewContainerUrl() + '/dr'
        $enabled = Enable-PgWalArchiving -Server $server -Repository $repo -Restart -Confirm:$false -ErrorAction Stop
        try {
            $enabled.Verified | Should -BeTrue
            $enabled.Repository | Should -BeLike "$repo/wal/*"
            $enabled.ArchiveCommand | Should -Match '--credentials'
            $enabled.ArchiveCommand | Should -Not -Match 'AccountKey|sig='

            $null = Invoke-PgTestSql -Cluster $cluster -Database shop -Sql 'create table if not exists blob_ledger(id int primary key)'
            $older = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop
            foreach ($id in 1..5) { $null = Invoke-PgTestSql -Cluster $cluster -Database shop -Sql "insert into blob_ledger values ($id)" }
            $newer = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop
            foreach ($id in 6..7) { $null = Invoke-PgTestSql -Cluster $cluster -Database shop -Sql "insert into blob_ledger values ($id)" }
            $epoch = [double](Invoke-PgTestSql -Cluster $cluster -Sql 'select extract(epoch from clock_timestamp())')
            $target = [DateTimeOffset]::FromUnixTimeMilliseconds([long][math]::Floor($epoch * 1000))
            Start-Sleep -Milliseconds 50
            foreach ($id in 8..10) { $null = Invoke-PgTestSql -Cluster $cluster -Database shop -Sql "insert into blob_ledger values ($id)" }
            $null = Save-PgTestWalSegment -Cluster $cluster

            $archive = Get-PgWalArchive -Server $server -Repository $repo -Verify -ErrorAction Stop | Where-Object { $null -ne $_.InRecovery }
            $archive.ArchiveFolder | Should -Be $enabled.Repository
            $archive.Gaps | Should -BeNullOrEmpty
            $archive.ChecksumFailures | Should -BeNullOrEmpty
            $archive.FailedCount | Should -Be 0

            $directory = Join-Path (New-PgTestRepository) 'pitr'
            try {
                $recovered = Restore-PgPointInTime -Server $server -Repository $repo -TargetTime $target -DataDirectory $directory -Confirm:$false -ErrorAction Stop
                $recovered.BackupPath | Should -Be $newer.Path
                $instance = [pscustomobject]@{ Host = $recovered.Server; Port = $recovered.Port; Password = $cluster.Password; BinDirectory = $cluster.BinDirectory }
                Invoke-PgTestSql -Cluster $instance -Database shop -Sql 'select string_agg(id::text, $$,$$ order by id) from blob_ledger' | Should -Be '1,2,3,4,5,6,7'
            }
            finally { Remove-PgInstance -DataDirectory $directory -Confirm:$false -ErrorAction SilentlyContinue }
            Get-ChildItem -LiteralPath ([System.IO.Path]::GetTempPath()) -Filter 'pgbackup-spool-*' -Directory | Should -BeNullOrEmpty

            $drill = Invoke-PgRecoveryDrill -Server $server -Repository $repo -Query 'select count(*) from blob_ledger' -Database shop -Confirm:$false -ErrorAction Stop
            $drill.Passed | Should -BeTrue -Because (($drill.Checks | ForEach-Object { "$_" }) -join ' | ')
            $drill.BackupId | Should -Be $newer.Id

            Remove-PgBackup -Repository $repo -Server $server -KeepLast 1 -Confirm:$false -ErrorAction Stop
            Get-PgBackup -Repository $repo -Kind Base | Select-Object -ExpandProperty Id | Should -Be $newer.Id
            $pruned = Get-PgWalArchive -Server $server -Repository $repo -ErrorAction Stop | Where-Object { $null -ne $_.InRecovery }
            [string]::CompareOrdinal($pruned.FirstSegment, $newer.StartSegment) | Should -BeGreaterOrEqual 0
            [string]::CompareOrdinal($archive.FirstSegment, $newer.StartSegment) | Should -BeLessThan 0 -Because "the older backup $($older.Id) needed WAL before it"
            $pruned.Gaps | Should -BeNullOrEmpty
            (Get-PgRepository -Repository $repo).WalArchives | Should -Be @($enabled.SystemIdentifier)
        }
        finally {
            $credentials = [regex]::Match($enabled.ArchiveCommand, "--credentials '([^']+)'").Groups[1].Value
            $disabled = Disable-PgWalArchiving -Server $server -Restart -Confirm:$false -ErrorAction SilentlyContinue
        }
        $credentials | Should -BeLike "/var/lib/postgresql/.pgbackup/$($enabled.SystemIdentifier)-archive-*.json"
        $credentials | Should -Not -Exist
    }

    It 'asks for a credential when none is given for a plain-HTTP endpoint, where Entra ID sign-in cannot work' {
        $env:AZURE_STORAGE_CONNECTION_STRING = $null
        try { $null = Get-PgBackup -Repository $azurite.NewContainerUrl() -ErrorVariable err -ErrorAction SilentlyContinue }
        finally { $env:AZURE_STORAGE_CONNECTION_STRING = $azurite.ConnectionString }
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.CredentialRequired,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::AuthenticationError)
        $err[0].ErrorDetails.RecommendedAction | Should -Match 'AZURE_STORAGE_SAS_TOKEN'
    }

    It 'refuses an address that names no container' {
        $null = Get-PgBackup -Repository $azurite.ServiceUrl -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.InvalidRepository,*'
        $err[0].ErrorDetails.RecommendedAction | Should -Match 'blob.core.windows.net'
    }

    It 'recovers a base backup from a container to the latest point of a WAL archive kept in a folder' {
        $walRepo = New-PgTestRepository
        $null = Enable-PgWalArchiving -Server $server -Repository $walRepo -Restart -Confirm:$false -ErrorAction Stop
        $backup = Start-PgBaseBackup -Server $server -Repository ($azurite.NewContainerUrl()) -ErrorAction Stop
        $null = Invoke-PgTestSql -Cluster $cluster -Database shop -Sql 'create table after_blob_backup as select generate_series(1, 100) as id'
        $null = Save-PgTestWalSegment -Cluster $cluster

        $directory = Join-Path (New-PgTestRepository) 'data'
        try {
            $recovered = $backup | Restore-PgPointInTime -Latest -Repository $walRepo -DataDirectory $directory -Confirm:$false -ErrorAction Stop
            $recovered.BackupPath | Should -Be $backup.Path
            $instance = [pscustomobject]@{ Host = $recovered.Server; Port = $recovered.Port; Password = $cluster.Password; BinDirectory = $cluster.BinDirectory }
            Invoke-PgTestSql -Cluster $instance -Database shop -Sql 'select count(*) from after_blob_backup' | Should -Be '100'
        }
        finally {
            Remove-PgInstance -DataDirectory $directory -Confirm:$false -ErrorAction SilentlyContinue
            $null = Disable-PgWalArchiving -Server $server -Confirm:$false -ErrorAction SilentlyContinue
        }
    }

    It 'archives ahead into a container with -ArchiveParallel, and reports the backlog while the container is out of reach' {
        # An Azurite of its own, which goes away for good.
        $doomed = Start-PgTestAzurite
        try {
            $env:AZURE_STORAGE_CONNECTION_STRING = $doomed.ConnectionString
            $repo = $doomed.NewContainerUrl()
            $enabled = Enable-PgWalArchiving -Server $server -Repository $repo -ArchiveParallel 2 -Restart -Confirm:$false -ErrorAction Stop
            $enabled.ArchiveParallel | Should -Be 2
            $null = Save-PgTestWalSegment -Cluster $cluster
            (Get-PgWalArchive -Server $server -Repository $repo -ErrorAction Stop | Where-Object { $null -ne $_.InRecovery }).ArchiveError | Should -BeNullOrEmpty

            Stop-PgTestAzurite -Azurite $doomed
            $failedBefore = [long] (Invoke-PgTestSql -Cluster $cluster -Sql 'select failed_count from pg_stat_archiver')
            $null = Invoke-PgTestSql -Cluster $cluster -Database shop -Sql 'create table if not exists backlog_probe(id int); insert into backlog_probe values (1); select pg_switch_wal()'
            Wait-PgTestCondition -What 'the archiver failing' -Seconds 90 -Condition {
                [long] (Invoke-PgTestSql -Cluster $cluster -Sql 'select failed_count from pg_stat_archiver') -gt $failedBefore
            }
            $status = Get-PgWalArchive -Server $server -Repository $repo -MaxBacklog 0 -ErrorVariable limit -ErrorAction SilentlyContinue -WarningVariable warned -WarningAction SilentlyContinue
            $status | Should -HaveCount 1
            $status.ArchiveError | Should -Not -BeNullOrEmpty
            $status.ReadySegments | Should -BeGreaterOrEqual 1
            $status.SegmentCount | Should -Be 0 -Because 'what the archive holds is unknown while it cannot be read'
            ($warned -join "`n") | Should -BeLike '*cannot be read now*'
            $limit | Should -HaveCount 1 -Because (Format-PgTestError $limit)
            $limit[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.WalBacklogExceeded,*'
        }
        finally {
            $env:AZURE_STORAGE_CONNECTION_STRING = $azurite.ConnectionString
            # No restart: a server that shuts down retries the failing pushes first, which takes minutes here.
            $null = Disable-PgWalArchiving -Server $server -Confirm:$false -ErrorAction SilentlyContinue -WarningAction SilentlyContinue
            Stop-PgTestAzurite -Azurite $doomed
        }
    }
}
