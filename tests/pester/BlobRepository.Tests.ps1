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

    It 'says plainly that the WAL archive does not go to Blob Storage yet' {
        $null = Get-PgWalArchive -Server $server -Repository $azurite.NewContainerUrl() -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.BlobRepositoryNotSupported,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
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
}
