#Requires -Version 7.4
# Mirrors the module test Synchronous_standbys_are_set_refused_when_absent_and_reset
# (tests/PgBackup.Module.Tests/ReplicationCmdletTests.cs) against the built module, with a real primary and a streaming
# standby made from it with pg_basebackup, built the way Replication.Tests.ps1 builds them.

Describe 'Set-PgSynchronousStandby' -Tag 'Integration' {
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

        $primary = Start-PgTestCluster -Name 'syncprimary'
        $null = Invoke-PgTestSql -Cluster $primary -Sql 'create table ticks(id serial primary key, at timestamptz default now())'

        # The standby: same password (pg_basebackup copies the roles), so the primary's .pgpass (127.0.0.1:*) serves both.
        # It has the shape of a Start-PgTestCluster result, so Invoke-PgTestSql and Stop-PgTestCluster work on it.
        $root = [System.IO.Directory]::CreateTempSubdirectory('pgbackup-pester-syncstandby-').FullName
        $socketRoot = $null
        $socketDirectory = Join-Path $root 'sock'
        if (-not $IsWindows -and ($socketDirectory.Length + '/.s.PGSQL.65535'.Length) -ge 100) {
            $socketDirectory = $socketRoot = Join-Path '/tmp' ('pgbt-' + [System.Convert]::ToHexString([System.Security.Cryptography.RandomNumberGenerator]::GetBytes(4)).ToLowerInvariant())
        }
        $null = New-Item -ItemType Directory -Path $socketDirectory -Force
        $standby = [pscustomobject]@{
            PSTypeName      = 'PgBackup.TestCluster'
            Name            = 'syncstandby'
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
        $standbyConf = "`n# added by Set-PgSynchronousStandby.Tests.ps1`nport = $($standby.Port)`nunix_socket_directories = $socketSetting`nhot_standby = on`ncluster_name = 'pester_sync_standby'`n"
        [System.IO.File]::AppendAllText((Join-Path $standby.DataDirectory 'postgresql.auto.conf'), $standbyConf)
        try { Invoke-TestServerTool -Root $root -Tool pg_ctl -ArgumentList @('-D', $standby.DataDirectory, '-l', $standby.LogFile, '-w', '-t', '60', 'start') }
        catch {
            $log = if (Test-Path -LiteralPath $standby.LogFile) { (Get-Content -LiteralPath $standby.LogFile -Tail 40) -join "`n" } else { '(no server log)' }
            throw "$_`n--- tail of $($standby.LogFile) ---`n$log"
        }

        # The standby's application name is its cluster_name.
        Wait-TestCondition -What 'The standby streaming from the primary' -Condition {
            (Invoke-PgTestSql -Cluster $primary -Sql "select count(*) from pg_stat_replication where application_name = 'pester_sync_standby' and state = 'streaming'") -eq '1'
        }
        Wait-TestCondition -What "The standby's WAL receiver streaming" -Condition {
            (Invoke-PgTestSql -Cluster $standby -Sql "select count(*) from pg_stat_wal_receiver where status = 'streaming'") -eq '1'
        }

        $environment = Enter-PgTestEnvironment -Cluster $primary
        $primaryServer = $primary.Server
        $standbyServer = $standby.Server
    }

    AfterAll {
        # A safety net: never leave the primary waiting for a standby that is about to stop.
        try { $null = Invoke-PgTestSql -Cluster $primary -Sql "alter system reset synchronous_standby_names;`nalter system reset synchronous_commit;`nselect pg_reload_conf();" }
        catch { Write-Warning "Resetting synchronous replication on the primary failed: $_" }
        Exit-PgTestEnvironment -State $environment
        # Stopping the standby first keeps the primary's fast shutdown from waiting for its WAL sender.
        Stop-PgTestCluster -Cluster $standby
        Stop-PgTestCluster -Cluster $primary
    }

    It 'sets a streaming standby synchronous, refuses one that is absent and resets' {
        $name = Invoke-PgTestSql -Cluster $primary -Sql 'select application_name from pg_stat_replication'
        $name | Should -BeExactly 'pester_sync_standby'
        try {
            $set = @(Set-PgSynchronousStandby -Server $primaryServer -Standby $name -SynchronousCommit remote_apply -ErrorVariable err -ErrorAction SilentlyContinue)
            $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
            $set | Should -HaveCount 1
            $result = $set[0]
            $result.PSObject.TypeNames | Should -Contain 'PgBackup.SynchronousReplicationResult'
            $result.SynchronousStandbyNames | Should -BeExactly "FIRST 1 (`"$name`")"
            $result.SynchronousCommit | Should -BeExactly 'remote_apply'
            $result.Forced | Should -BeFalse
            Invoke-PgTestSql -Cluster $primary -Sql 'select sync_state from pg_stat_replication' | Should -BeExactly 'sync'
            # Returns only because the standby confirms the commit.
            $null = Invoke-PgTestSql -Cluster $primary -Sql "insert into ticks default values"

            $before = Invoke-PgTestSql -Cluster $primary -Sql 'show synchronous_standby_names'
            $null = Set-PgSynchronousStandby -Server $primaryServer -Standby ghost -ErrorVariable refused -ErrorAction SilentlyContinue
            $refused | Should -HaveCount 1 -Because (Format-PgTestError $refused)
            $refused[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.SynchronousStandbyNotConnected,*'
            $refused[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidOperation)
            $refused[0].Exception.Message | Should -BeLikeExactly "*$name*"
            Invoke-PgTestSql -Cluster $primary -Sql 'show synchronous_standby_names' | Should -BeExactly $before
        }
        finally {
            $null = Set-PgSynchronousStandby -Server $primaryServer -Standby @() -SynchronousCommit on -ErrorVariable reset -ErrorAction SilentlyContinue
            $reset | Should -BeNullOrEmpty -Because (Format-PgTestError $reset)
        }
        Invoke-PgTestSql -Cluster $primary -Sql 'show synchronous_standby_names' | Should -BeNullOrEmpty
        Invoke-PgTestSql -Cluster $primary -Sql 'select sync_state from pg_stat_replication' | Should -BeExactly 'async'
    }

    It 'refuses a standby as the server with PgBackup.NotAPrimary' {
        $null = Set-PgSynchronousStandby -Server $standbyServer -Standby 'pester_sync_standby' -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.NotAPrimary,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidOperation)
    }

    It 'refuses a -Count above the number of standbys named and changes nothing' {
        $before = Invoke-PgTestSql -Cluster $primary -Sql 'show synchronous_standby_names'
        $null = Set-PgSynchronousStandby -Server $primaryServer -Standby 'pester_sync_standby' -Count 2 -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.InvalidSynchronousCount,*'
        $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
        Invoke-PgTestSql -Cluster $primary -Sql 'show synchronous_standby_names' | Should -BeExactly $before
    }
}
