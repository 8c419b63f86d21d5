#Requires -Version 7.4
# New-PgStandby against the built module: a real PostgreSQL cluster, the real pg_* tools.

Describe 'New-PgStandby' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $cluster = Start-PgTestCluster -Name 'standby'
        $environment = Enter-PgTestEnvironment -Cluster $cluster
        $server = $cluster.Server
        $binDirectory = Find-PgServerBinDirectory

        function Stop-TestStandby {
            # Stops the standby New-PgStandby started (as the postgres user when this process is root, as the cmdlet
            # started it) and removes its data directory. Never throws.
            param([string] $DataDirectory)
            if (-not (Test-Path -LiteralPath $DataDirectory)) { return }
            $pgCtl = Join-Path $binDirectory ($(if ($IsWindows) { 'pg_ctl.exe' } else { 'pg_ctl' }))
            $arguments = @('stop', '-D', $DataDirectory, '-m', 'immediate', '-w')
            try {
                if (Test-Path -LiteralPath (Join-Path $DataDirectory 'postmaster.pid')) {
                    if (-not $IsWindows -and [System.Environment]::IsPrivilegedProcess) { $null = & runuser -u postgres -- $pgCtl @arguments 2>&1 }
                    else { $null = & $pgCtl @arguments 2>&1 }
                }
            }
            catch { Write-Warning "Stopping the standby in $DataDirectory failed: $_" }
            Remove-Item -LiteralPath $DataDirectory -Recurse -Force -ErrorAction SilentlyContinue
        }
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $cluster
        Remove-PgTestRepository
    }

    It 'creates a standby that streams with its slot and shows up on the primary' {
        $directory = Join-Path (New-PgTestRepository) 'standby data'
        $port = Get-PgTestFreePort
        try {
            $status = New-PgStandby -Server $server -DataDirectory $directory -Port $port -Slot pester_standby -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
            $status | Should -HaveCount 1
            $status.PSObject.TypeNames | Should -Contain 'PgBackup.StandbyStatus'
            $status.ReceiverStatus | Should -BeExactly 'streaming'
            $status.Port | Should -Be $port
            $status.SlotName | Should -BeExactly 'pester_standby'
            Test-Path -LiteralPath (Join-Path $directory 'standby.signal') -PathType Leaf | Should -BeTrue

            $null = Invoke-PgTestSql -Cluster $cluster -Sql 'create table if not exists after_standby(id int); insert into after_standby values (1);'
            $links = @(Get-PgReplicationStatus -Server $server -IncludeSlots -ErrorAction Stop |
                    Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.ReplicationLink' -and $_.SlotName -eq 'pester_standby' })
            $links | Should -HaveCount 1
            $null = Wait-PgReplication -Server $server -Timeout '00:00:30' -ErrorAction Stop
        }
        finally {
            Stop-TestStandby -DataDirectory $directory
            $null = Invoke-PgTestSql -Cluster $cluster -Sql "select pg_drop_replication_slot('pester_standby') from pg_replication_slots where slot_name = 'pester_standby'"
        }
    }

    It 'keeps the replication password out of the standby''s files and its base backups, in a pass file Remove-PgInstance removes' -Skip:$IsWindows {
        # As a new user would: -Credential on a cluster that takes passwords only.
        $directory = Join-Path (New-PgTestRepository) 'standby with a credential'
        $port = Get-PgTestFreePort
        $credential = [pscredential]::new('postgres', (ConvertTo-SecureString $cluster.Password -AsPlainText -Force))
        try {
            $status = New-PgStandby -Server $server -Credential $credential -DataDirectory $directory -Port $port -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
            $status.ReceiverStatus | Should -BeExactly 'streaming'

            $autoConf = Get-Content -Raw -LiteralPath (Join-Path $directory 'postgresql.auto.conf')
            $autoConf | Should -Not -Match 'password='
            $passFile = [regex]::Match($autoConf, "passfile=''(?<path>[^']+)''").Groups['path'].Value
            $passFile | Should -Not -BeNullOrEmpty -Because $autoConf
            $passFile.StartsWith($directory, [System.StringComparison]::Ordinal) | Should -BeFalse
            $expectedOwner = if ([System.Environment]::IsPrivilegedProcess) { 'postgres' } else { [System.Environment]::UserName }
            (& stat -c '%a %U' $passFile) | Should -BeExactly "600 $expectedOwner"
            Select-String -LiteralPath $passFile -SimpleMatch $cluster.Password -Quiet | Should -BeTrue

            # Base backups are offloaded to standbys: one taken from this standby holds no copy of the password.
            $backup = Start-PgBaseBackup -Server "127.0.0.1:$port" -Credential $credential -Path (Join-Path (New-PgTestRepository) 'from the standby') -ErrorAction Stop
            $backup.FromStandby | Should -BeTrue
            Test-Path -LiteralPath (Join-Path $backup.Path 'postgresql.auto.conf') | Should -BeTrue
            @(Get-ChildItem -LiteralPath $backup.Path -Recurse -File | Where-Object { Select-String -LiteralPath $_.FullName -SimpleMatch $cluster.Password -Quiet }) | Should -BeNullOrEmpty

            Remove-PgInstance -DataDirectory $directory -Confirm:$false -ErrorAction Stop
            Test-Path -LiteralPath $passFile | Should -BeFalse
        }
        finally {
            Stop-TestStandby -DataDirectory $directory
        }
    }

    It 'refuses a non-empty data directory and a busy port and leaves them alone' {
        $directory = New-PgTestRepository
        $precious = Join-Path $directory 'precious.txt'
        Set-Content -LiteralPath $precious -Value 'keep me' -NoNewline

        $null = New-PgStandby -Server $server -DataDirectory $directory -Port (Get-PgTestFreePort) -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetNotEmpty,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ResourceExists)
        Get-Content -LiteralPath $precious -Raw | Should -BeExactly 'keep me'

        $new = Join-Path $directory 'new'
        $null = New-PgStandby -Server $server -DataDirectory $new -Port $cluster.Port -ErrorVariable busy -ErrorAction SilentlyContinue
        $busy | Should -HaveCount 1 -Because (Format-PgTestError $busy)
        $busy[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.PortInUse,*'
        Test-Path -LiteralPath $new | Should -BeFalse
    }

    It 'creates nothing with -WhatIf' {
        $directory = Join-Path (New-PgTestRepository) 'never'
        New-PgStandby -Server $server -DataDirectory $directory -Port (Get-PgTestFreePort) -WhatIf -ErrorAction Stop
        Test-Path -LiteralPath $directory | Should -BeFalse
    }
}
