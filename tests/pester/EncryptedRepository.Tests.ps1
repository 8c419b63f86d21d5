#Requires -Version 7.4
# Encrypted repositories as a user drives them: New-PgRepository -Encrypt and Set-PgRepository, every backup kind into
# an encrypted folder and container, restores, recovery and a drill with -Passphrase, -Certificate and PGBACKUP_PASSPHRASE,
# and the errors for no key, a wrong key, a public certificate only and a changed file. The oracle is on the bytes at rest:
# a marker string in the data must not appear in any file of the repository.

Describe 'Encrypted repositories' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $azurite = Start-PgTestAzurite
        $cluster = Start-PgTestCluster -Name 'encrypted' -Settings @{ track_commit_timestamp = 'on' }
        $environment = Enter-PgTestEnvironment -Cluster $cluster
        $server = $cluster.Server
        $env:AZURE_STORAGE_CONNECTION_STRING = $azurite.ConnectionString
        $marker = 'PGBACKUP-PESTER-CANARY-' + [guid]::NewGuid().ToString('N')
        $null = Invoke-PgTestSql -Cluster $cluster -Sql 'create database vault'
        $null = Invoke-PgTestSql -Cluster $cluster -Database vault -Sql "create table secrets(id int primary key, note text not null); insert into secrets select g, '$marker ' || g from generate_series(1, 5000) g"
        $passphrase = ConvertTo-SecureString 'pester passphrase for the vault' -AsPlainText -Force

        function Find-Marker([string] $Folder) {
            # Files under the folder whose bytes contain the marker.
            # Latin-1 maps every byte to one character, so an ordinal search of the text is a search of the bytes.
            @(Get-ChildItem -LiteralPath $Folder -Recurse -File | Where-Object {
                    [System.Text.Encoding]::Latin1.GetString([System.IO.File]::ReadAllBytes($_.FullName)).Contains($marker, [System.StringComparison]::Ordinal)
                } | ForEach-Object FullName)
        }

        function New-TestCertificate([string] $Name) {
            # A self-signed RSA certificate, saved as <name>.cer (public part) and <name>.pfx (with its key, no password).
            $rsa = [System.Security.Cryptography.RSA]::Create(2048)
            $request = [System.Security.Cryptography.X509Certificates.CertificateRequest]::new("CN=$Name", $rsa, 'SHA256', [System.Security.Cryptography.RSASignaturePadding]::Pkcs1)
            $certificate = $request.CreateSelfSigned([DateTimeOffset]::UtcNow.AddDays(-1), [DateTimeOffset]::UtcNow.AddYears(1))
            $folder = New-PgTestRepository
            $cer = Join-Path $folder "$Name.cer"
            $pfx = Join-Path $folder "$Name.pfx"
            [System.IO.File]::WriteAllBytes($cer, $certificate.Export('Cert'))
            [System.IO.File]::WriteAllBytes($pfx, $certificate.Export('Pfx'))
            [pscustomobject]@{ Cer = $cer; Pfx = $pfx; Thumbprint = $certificate.Thumbprint }
        }
    }

    AfterAll {
        $env:AZURE_STORAGE_CONNECTION_STRING = $null
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $cluster
        Stop-PgTestAzurite -Azurite $azurite
        Remove-PgTestRepository
    }

    It 'creates an encrypted repository and refuses -Encrypt without a key, with a short passphrase, or on a repository with backups' {
        $repo = Join-Path (New-PgTestRepository) 'vault'
        $created = New-PgRepository -Repository $repo -Encrypt -Passphrase $passphrase -ErrorAction Stop
        $created.Encrypted | Should -BeTrue
        $created.Recipients | Should -Be @('Passphrase')
        $created.FormatVersion | Should -Be 2
        $created.EncryptionKeyId | Should -Match '^[0-9a-f]{32}$'
        (Get-PgRepository -Repository $repo).Encrypted | Should -BeTrue
        (Get-Content -Raw (Join-Path $repo 'pgbackup-repository.json')) | Should -Not -Match 'pester passphrase'

        $null = New-PgRepository -Repository (New-PgTestRepository) -Encrypt -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.EncryptionKeyRequired,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)

        $null = New-PgRepository -Repository (New-PgTestRepository) -Encrypt -Passphrase (ConvertTo-SecureString 'short' -AsPlainText -Force) -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PassphraseTooShort,*'

        $used = New-PgTestRepository
        $null = Invoke-PgDump -Server $server -Database vault -Repository $used -ErrorAction Stop
        $null = New-PgRepository -Repository $used -Encrypt -Passphrase $passphrase -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.RepositoryNotEmpty,*'
        $err[0].TargetObject | Should -Be $used

        $null = New-PgRepository -Repository (Join-Path (New-PgTestRepository) 'whatif') -Encrypt -Passphrase $passphrase -WhatIf
    }

    It 'keeps the marker out of every file of dumps, globals, a base backup and archived WAL, which a plain repository shows' {
        $repo = Join-Path (New-PgTestRepository) 'vault'
        $null = New-PgRepository -Repository $repo -Encrypt -Passphrase $passphrase -ErrorAction Stop
        $enabled = Enable-PgWalArchiving -Server $server -Repository $repo -Restart -Confirm:$false -ErrorAction Stop
        try {
            $enabled.ArchiveCommand | Should -Match '--encrypt'
            foreach ($format in 'Custom', 'Directory', 'Plain', 'Tar') {
                $dump = Invoke-PgDump -Server $server -Database vault -Repository $repo -Format $format -ErrorAction Stop
                $dump.Encrypted | Should -BeTrue
            }
            $null = Invoke-PgDump -Server $server -Globals -Repository $repo -ErrorAction Stop
            $base = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop
            $base.Encrypted | Should -BeTrue
            $base.Format | Should -Be 'Tar' -Because 'an encrypted folder takes Tar base backups unless asked otherwise'
            $plainBase = Start-PgBaseBackup -Server $server -Repository $repo -Format Plain -ErrorAction Stop
            $plainBase.Encrypted | Should -BeTrue
            $null = Invoke-PgTestSql -Cluster $cluster -Database vault -Sql "insert into secrets values (100001, '$marker after the backup')"
            $null = Save-PgTestWalSegment -Cluster $cluster
            (Get-ChildItem -LiteralPath (Join-Path $repo 'wal') -Recurse -File).Count | Should -BeGreaterThan 2
            Find-Marker $repo | Should -BeNullOrEmpty

            # Listing, the archive's checks and a backup's checksums work without the key.
            (Get-PgBackup -Repository $repo).Count | Should -Be 7
            $archive = Get-PgWalArchive -Server $server -Repository $repo -Verify -ErrorAction Stop | Where-Object { $null -ne $_.InRecovery }
            $archive.ChecksumFailures | Should -BeNullOrEmpty
            $check = $base | Test-PgBackup -WarningVariable warned -WarningAction SilentlyContinue -ErrorAction Stop
            $check.Success | Should -BeTrue -Because ($check.Failures -join ' ')
            "$warned" | Should -Match 'encrypted'
            ($plainBase | Test-PgBackup -WarningAction SilentlyContinue -ErrorAction Stop).Success | Should -BeTrue
        }
        finally {
            $keyFile = [regex]::Match($enabled.ArchiveCommand, "--encrypt '([^']+)'").Groups[1].Value
            $null = Disable-PgWalArchiving -Server $server -Restart -Confirm:$false -ErrorAction SilentlyContinue
        }
        $keyFile | Should -BeLike '/var/lib/postgresql/.pgbackup/*-archive-key-*.json'
        $keyFile | Should -Not -Exist

        $plain = New-PgTestRepository
        $null = Invoke-PgDump -Server $server -Database vault -Repository $plain -Format Plain -ErrorAction Stop
        Find-Marker $plain | Should -Not -BeNullOrEmpty -Because 'the same dump in clear shows the marker, so the oracle can fail'
    }

    It 'restores with -Passphrase or PGBACKUP_PASSPHRASE, and refuses no key and a wrong key before creating the database' {
        $repo = Join-Path (New-PgTestRepository) 'vault'
        $null = New-PgRepository -Repository $repo -Encrypt -Passphrase $passphrase -ErrorAction Stop
        $dump = Invoke-PgDump -Server $server -Database vault -Repository $repo -ErrorAction Stop

        $null = $dump | Restore-PgDump -TargetDatabase vault_nokey -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.EncryptionKeyRequired,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::PermissionDenied)
        $err[0].ErrorDetails.RecommendedAction | Should -Match 'Passphrase'

        $null = $dump | Restore-PgDump -TargetDatabase vault_wrong -Passphrase (ConvertTo-SecureString 'not the vault passphrase' -AsPlainText -Force) -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.DecryptionFailed,*'
        Invoke-PgTestSql -Cluster $cluster -Sql "select count(*) from pg_database where datname in ('vault_nokey', 'vault_wrong')" | Should -Be '0'

        $restored = $dump | Restore-PgDump -TargetDatabase vault_copy -Passphrase $passphrase -ErrorAction Stop
        $restored.ChecksumVerified | Should -BeTrue
        Invoke-PgTestSql -Cluster $cluster -Database vault_copy -Sql "select count(*) from secrets where note like '$marker%'" | Should -BeGreaterOrEqual 5000
        Remove-PgTestDatabase -Cluster $cluster -Database vault_copy

        $env:PGBACKUP_PASSPHRASE = 'pester passphrase for the vault'
        try { $null = Restore-PgDump -Path $dump.Path -TargetDatabase vault_env -ErrorAction Stop }
        finally { $env:PGBACKUP_PASSPHRASE = $null }
        Invoke-PgTestSql -Cluster $cluster -Database vault_env -Sql 'select count(*) from secrets' | Should -BeGreaterOrEqual 5000
        Remove-PgTestDatabase -Cluster $cluster -Database vault_env
        (Get-PgBackupConfig -Name Passphrase).Value | Should -Not -Match 'pester'
    }

    It 'names a changed dump as PgBackup.BackupTampered and restores nothing' {
        $repo = Join-Path (New-PgTestRepository) 'vault'
        $null = New-PgRepository -Repository $repo -Encrypt -Passphrase $passphrase -ErrorAction Stop
        $dump = Invoke-PgDump -Server $server -Database vault -Repository $repo -ErrorAction Stop
        $bytes = [System.IO.File]::ReadAllBytes($dump.Path)
        $bytes[[int]($bytes.Length / 2)] = $bytes[[int]($bytes.Length / 2)] -bxor 1
        [System.IO.File]::WriteAllBytes($dump.Path, $bytes)
        $null = $dump | Restore-PgDump -TargetDatabase vault_tampered -Passphrase $passphrase -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.BackupTampered,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidData)
        $err[0].TargetObject | Should -Be $dump.Path
        Invoke-PgTestSql -Cluster $cluster -Sql "select count(*) from pg_database where datname = 'vault_tampered'" | Should -Be '0'
    }

    It 'writes with a public certificate only, reads with its private key, and rotates recipients with Set-PgRepository' {
        $production = New-TestCertificate 'pgbackup-production'
        $dr = New-TestCertificate 'pgbackup-dr'
        $repo = $azurite.NewContainerUrl() + '/vault'
        $created = New-PgRepository -Repository $repo -Encrypt -Certificate $production.Cer -ErrorAction Stop
        $created.Recipients | Should -HaveCount 1
        $created.Recipients[0] | Should -Match $production.Thumbprint
        $dump = Invoke-PgDump -Server $server -Database vault -Repository $repo -ErrorAction Stop

        $null = $dump | Restore-PgDump -TargetDatabase vault_public -Certificate $production.Cer -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.DecryptionFailed,*'
        $err[0].Exception.Message | Should -Match 'public part'

        $null = $dump | Restore-PgDump -TargetDatabase vault_private -Certificate $production.Pfx -ErrorAction Stop
        Remove-PgTestDatabase -Cluster $cluster -Database vault_private

        $null = Set-PgRepository -Repository $repo -Certificate $production.Pfx -AddCertificate $dr.Cer -WhatIf
        (Get-PgRepository -Repository $repo).Recipients | Should -HaveCount 1
        $rotated = Set-PgRepository -Repository $repo -Certificate $production.Pfx -AddCertificate $dr.Cer -RemoveCertificate $production.Thumbprint -NewPassphrase $passphrase -Confirm:$false -ErrorAction Stop
        $rotated.Recipients | Should -HaveCount 2
        ($rotated.Recipients -join ' ') | Should -Match $dr.Thumbprint
        ($rotated.Recipients -join ' ') | Should -Not -Match $production.Thumbprint

        $null = $dump | Restore-PgDump -TargetDatabase vault_dr -Certificate $dr.Pfx -ErrorAction Stop
        Remove-PgTestDatabase -Cluster $cluster -Database vault_dr
        $null = $dump | Restore-PgDump -TargetDatabase vault_old -Certificate $production.Pfx -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.DecryptionFailed,*'

        # The certificate from the store by its thumbprint, as a runbook's configuration names it (EncryptionCertificate).
        $store = [System.Security.Cryptography.X509Certificates.X509Store]::new('My', 'CurrentUser')
        $store.Open('ReadWrite')
        $stored = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($dr.Pfx, [string]$null, 'PersistKeySet')
        $store.Add($stored)
        try {
            $env:PGBACKUP_ENCRYPTIONCERTIFICATE = $dr.Thumbprint
            (Get-PgBackupConfig -Name EncryptionCertificate).Value | Should -Be $dr.Thumbprint
            $null = $dump | Restore-PgDump -TargetDatabase vault_store -ErrorAction Stop
            Remove-PgTestDatabase -Cluster $cluster -Database vault_store
        }
        finally {
            $env:PGBACKUP_ENCRYPTIONCERTIFICATE = $null
            $store.Remove($stored)
            $store.Dispose()
        }

        $null = Set-PgRepository -Repository $repo -Passphrase $passphrase -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.NothingToChange,*'
        $null = Set-PgRepository -Repository (New-PgTestRepository) -Passphrase $passphrase -RemovePassphrase -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.RepositoryNotEncrypted,*'
    }

    It 'recovers a point in time and drills from an encrypted repository with -Passphrase, and retention keeps what it needs' {
        $repo = Join-Path (New-PgTestRepository) 'vault'
        $null = New-PgRepository -Repository $repo -Encrypt -Passphrase $passphrase -ErrorAction Stop
        $null = Enable-PgWalArchiving -Server $server -Repository $repo -Restart -Confirm:$false -ErrorAction Stop
        try {
            $null = Invoke-PgTestSql -Cluster $cluster -Database vault -Sql 'create table ledger(id int primary key)'
            $older = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop
            foreach ($id in 1..4) { $null = Invoke-PgTestSql -Cluster $cluster -Database vault -Sql "insert into ledger values ($id)" }
            $newer = Start-PgBaseBackup -Server $server -Repository $repo -ErrorAction Stop
            foreach ($id in 5..6) { $null = Invoke-PgTestSql -Cluster $cluster -Database vault -Sql "insert into ledger values ($id)" }
            $epoch = [double](Invoke-PgTestSql -Cluster $cluster -Sql 'select extract(epoch from clock_timestamp())')
            $target = [DateTimeOffset]::FromUnixTimeMilliseconds([long][math]::Floor($epoch * 1000))
            Start-Sleep -Milliseconds 50
            foreach ($id in 7..8) { $null = Invoke-PgTestSql -Cluster $cluster -Database vault -Sql "insert into ledger values ($id)" }
            $null = Save-PgTestWalSegment -Cluster $cluster

            $directory = Join-Path (New-PgTestRepository) 'pitr'
            $null = Restore-PgPointInTime -Server $server -Repository $repo -TargetTime $target -DataDirectory $directory -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.EncryptionKeyRequired,*'
            Test-Path -LiteralPath $directory | Should -BeFalse -Because 'a missing key is an error before anything is written'
            try {
                $recovered = Restore-PgPointInTime -Server $server -Repository $repo -TargetTime $target -DataDirectory $directory -Passphrase $passphrase -Confirm:$false -ErrorAction Stop
                $recovered.BackupPath | Should -Be $newer.Path
                $instance = [pscustomobject]@{ Host = $recovered.Server; Port = $recovered.Port; Password = $cluster.Password; BinDirectory = $cluster.BinDirectory }
                Invoke-PgTestSql -Cluster $instance -Database vault -Sql 'select string_agg(id::text, $$,$$ order by id) from ledger' | Should -Be '1,2,3,4,5,6'
            }
            finally { Remove-PgInstance -DataDirectory $directory -Confirm:$false -ErrorAction SilentlyContinue }

            $drill = Invoke-PgRecoveryDrill -Server $server -Repository $repo -Passphrase $passphrase -Query 'select count(*) from ledger' -Database vault -Confirm:$false -ErrorAction Stop
            $drill.Passed | Should -BeTrue -Because (($drill.Checks | ForEach-Object { "$_" }) -join ' | ')

            $full = $newer | Test-PgBackup -Restore -Passphrase $passphrase -Confirm:$false -ErrorAction Stop
            $full.Success | Should -BeTrue -Because ($full.Failures -join ' ')

            Remove-PgBackup -Repository $repo -Server $server -KeepLast 1 -Confirm:$false -ErrorAction Stop
            Get-PgBackup -Repository $repo -Kind Base | Select-Object -ExpandProperty Id | Should -Be $newer.Id
            $pruned = Get-PgWalArchive -Server $server -Repository $repo -ErrorAction Stop | Where-Object { $null -ne $_.InRecovery }
            [string]::CompareOrdinal($pruned.FirstSegment, $newer.StartSegment) | Should -BeGreaterOrEqual 0
            $pruned.Gaps | Should -BeNullOrEmpty
        }
        finally { $null = Disable-PgWalArchiving -Server $server -Restart -Confirm:$false -ErrorAction SilentlyContinue }
    }
}
