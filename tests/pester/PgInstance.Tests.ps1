#Requires -Version 7.4
# Stop-PgInstance, Start-PgInstance and Remove-PgInstance on a local data directory. The
# instance is a plain test cluster (Start-PgTestCluster), so these tests need no archive and no base backup; that a
# recovered instance (a RecoveryResult) pipes into Stop-PgInstance is tested in Restore-PgPointInTime.Tests.ps1.
# Every test but the last leaves the instance running on its configured port, as Start-PgTestCluster left it; the last
# one removes it.

Describe 'Start-PgInstance, Stop-PgInstance and Remove-PgInstance' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $cluster = Start-PgTestCluster -Name 'instance'
        $environment = Enter-PgTestEnvironment -Cluster $cluster
        $directory = $cluster.DataDirectory
        $null = Invoke-PgTestSql -Cluster $cluster -Sql 'create table ledger(id int primary key); insert into ledger select generate_series(1, 20);'
        $version = (Get-Content -LiteralPath (Join-Path $directory 'PG_VERSION') -Raw).Trim()

        function Get-TestPostmasterId {
            # The process id in postmaster.pid when that process runs, else $null.
            Get-PgTestPostmasterId -DataDirectory $directory
        }

        function Get-TestRowCount {
            # The ledger's row count, read from the instance on the given port.
            param([int] $Port = $cluster.Port)
            $instance = [pscustomobject]@{ Host = $cluster.Host; Port = $Port; Password = $cluster.Password; BinDirectory = $cluster.BinDirectory }
            Invoke-PgTestSql -Cluster $instance -Sql 'select count(*) from ledger'
        }
    }

    AfterAll {
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $cluster
        Remove-PgTestRepository
    }

    It 'stops a running instance; with -PassThru it returns it as Stopped, and that pipes into Start-PgInstance' {
        $stopped = @(Stop-PgInstance -DataDirectory $directory -PassThru -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $stopped | Should -HaveCount 1
        $instance = $stopped[0]
        $instance.PSObject.TypeNames | Should -Contain 'PgBackup.PgInstance'
        "$($instance.State)" | Should -BeExactly 'Stopped'
        $instance.DataDirectory | Should -BeExactly $directory
        $instance.Port | Should -Be $cluster.Port -Because 'a stopped instance shows the port its configuration sets'
        $instance.ProcessId | Should -BeNullOrEmpty
        $instance.Version | Should -BeExactly $version
        Get-TestPostmasterId | Should -BeNullOrEmpty
        { Get-TestRowCount } | Should -Throw

        # DataDirectory binds by property name from a PgInstance; without -Port it listens on its configured port.
        $started = @($instance | Start-PgInstance -Confirm:$false -ErrorAction Stop)
        $started | Should -HaveCount 1
        "$($started[0].State)" | Should -BeExactly 'Running'
        $started[0].Port | Should -Be $cluster.Port
        Get-TestRowCount | Should -BeExactly '20'
    }

    It 'starts a stopped instance on the port given with -Port and returns it as Running on that port' {
        $quiet = @(Stop-PgInstance $directory -Confirm:$false -ErrorAction Stop)
        $quiet | Should -HaveCount 0 -Because 'Stop-PgInstance writes nothing without -PassThru'
        $port = Get-PgTestFreePort
        try {
            $started = @(Start-PgInstance -DataDirectory $directory -Port $port -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
            $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
            $started | Should -HaveCount 1
            $instance = $started[0]
            $instance.PSObject.TypeNames | Should -Contain 'PgBackup.PgInstance'
            "$($instance.State)" | Should -BeExactly 'Running'
            $instance.Port | Should -Be $port
            $instance.ProcessId | Should -Be (Get-TestPostmasterId)
            $instance.Server | Should -BeExactly $cluster.Host
            $instance.StartTime | Should -Not -BeNullOrEmpty
            $instance.LogFile | Should -BeExactly (Join-Path $directory 'pgbackup-server.log')
            Test-Path -LiteralPath $instance.LogFile -PathType Leaf | Should -BeTrue
            Get-TestRowCount -Port $port | Should -BeExactly '20'
        }
        finally {
            # Back on its configured port for the next tests.
            $null = Stop-PgInstance $directory -Confirm:$false -ErrorAction Stop
            $null = Start-PgInstance $directory -Confirm:$false -ErrorAction Stop
        }
        Get-TestRowCount | Should -BeExactly '20'
    }

    It 'refuses to start on a port that is in use (PortInUse) and leaves the instance stopped' {
        $null = Stop-PgInstance $directory -Confirm:$false -ErrorAction Stop
        $listener = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0)
        $listener.Start()
        try {
            $busy = ([System.Net.IPEndPoint] $listener.LocalEndpoint).Port
            $null = Start-PgInstance -DataDirectory $directory -Port $busy -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeExactly 'PgBackup.PortInUse,PgBackup.Commands.StartPgInstanceCommand'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ResourceExists)
            $err[0].TargetObject | Should -Be $busy
            Get-TestPostmasterId | Should -BeNullOrEmpty
        }
        finally {
            $listener.Stop()
            $null = Start-PgInstance $directory -Confirm:$false -ErrorAction Stop
        }
    }

    It 'warns and changes nothing when Start-PgInstance is given an instance that runs already' {
        $before = Get-TestPostmasterId
        $before | Should -Not -BeNullOrEmpty
        $again = @(Start-PgInstance -DataDirectory $directory -Confirm:$false -WarningVariable warnings -WarningAction SilentlyContinue -ErrorAction Stop)
        $again | Should -HaveCount 1
        "$($again[0].State)" | Should -BeExactly 'Running'
        $again[0].ProcessId | Should -Be $before
        @($warnings | Where-Object { $_.Message -like '*already running*' }) | Should -Not -BeNullOrEmpty -Because (@($warnings) -join "`n")
        Get-TestPostmasterId | Should -Be $before
    }

    It 'stops at once with Stop-PgInstance -Mode Immediate, and the next start recovers the data' {
        $stopped = @(Stop-PgInstance -DataDirectory $directory -Mode Immediate -PassThru -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $stopped | Should -HaveCount 1
        "$($stopped[0].State)" | Should -BeExactly 'Stopped'
        Get-TestPostmasterId | Should -BeNullOrEmpty

        $started = @(Start-PgInstance -DataDirectory $directory -Confirm:$false -ErrorAction Stop)
        "$($started[0].State)" | Should -BeExactly 'Running'
        Get-TestRowCount | Should -BeExactly '20'
        # An immediate shutdown is a crash to PostgreSQL: the next start runs crash recovery.
        Get-Content -LiteralPath $started[0].LogFile -Raw | Should -BeLikeExactly '*not properly shut down*'
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-TestPostmasterId
        $before | Should -Not -BeNullOrEmpty

        $null = Stop-PgInstance -DataDirectory $directory -PassThru -WhatIf -ErrorAction Stop
        Get-TestPostmasterId | Should -Be $before
        $null = Remove-PgInstance -DataDirectory $directory -WhatIf -ErrorAction Stop
        Test-Path -LiteralPath (Join-Path $directory 'PG_VERSION') -PathType Leaf | Should -BeTrue
        Get-TestPostmasterId | Should -Be $before
        Get-TestRowCount | Should -BeExactly '20'

        $null = Stop-PgInstance $directory -Confirm:$false -ErrorAction Stop
        try {
            $planned = @(Start-PgInstance -DataDirectory $directory -WhatIf -ErrorAction Stop)
            $planned | Should -HaveCount 0
            Get-TestPostmasterId | Should -BeNullOrEmpty
        }
        finally { $null = Start-PgInstance $directory -Confirm:$false -ErrorAction Stop }
    }

    It 'refuses a folder without PG_VERSION (NotADataDirectory) and leaves it alone' {
        $folder = New-PgTestRepository
        $null = Start-PgInstance -DataDirectory $folder -Confirm:$false -ErrorVariable startErr -ErrorAction SilentlyContinue
        $startErr | Should -HaveCount 1 -Because (Format-PgTestError $startErr)
        $startErr[0].FullyQualifiedErrorId | Should -BeExactly 'PgBackup.NotADataDirectory,PgBackup.Commands.StartPgInstanceCommand'
        $startErr[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
        $startErr[0].TargetObject | Should -BeExactly $folder
        $startErr[0].ErrorDetails.RecommendedAction | Should -BeLikeExactly '*PG_VERSION*'

        $null = Stop-PgInstance -DataDirectory $folder -Confirm:$false -ErrorVariable stopErr -ErrorAction SilentlyContinue
        $stopErr | Should -HaveCount 1 -Because (Format-PgTestError $stopErr)
        $stopErr[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.NotADataDirectory,*'

        $null = Remove-PgInstance -DataDirectory $folder -Confirm:$false -ErrorVariable removeErr -ErrorAction SilentlyContinue
        $removeErr | Should -HaveCount 1 -Because (Format-PgTestError $removeErr)
        $removeErr[0].FullyQualifiedErrorId | Should -BeExactly 'PgBackup.NotADataDirectory,PgBackup.Commands.RemovePgInstanceCommand'
        Test-Path -LiteralPath $folder -PathType Container | Should -BeTrue -Because 'Remove-PgInstance deletes data directories only'
    }

    It 'leaves a cluster the operating system manages (registered under /etc/postgresql) to it (InstanceManagedByOs)' -Skip:(-not $IsLinux) {
        $folder = New-PgTestRepository
        [System.IO.File]::WriteAllText((Join-Path $folder 'PG_VERSION'), "15`n")
        $registration = Join-Path '/etc/postgresql/99' ('pgbackup' + [guid]::NewGuid().ToString('N').Substring(0, 6))
        $null = New-Item -ItemType Directory -Path $registration -Force
        try {
            [System.IO.File]::WriteAllText((Join-Path $registration 'postgresql.conf'), "data_directory = '$folder'`n")
            $null = Start-PgInstance -DataDirectory $folder -Confirm:$false -ErrorVariable startErr -ErrorAction SilentlyContinue
            $startErr | Should -HaveCount 1 -Because (Format-PgTestError $startErr)
            $startErr[0].FullyQualifiedErrorId | Should -BeExactly 'PgBackup.InstanceManagedByOs,PgBackup.Commands.StartPgInstanceCommand'
            $startErr[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidOperation)
            $startErr[0].ErrorDetails.RecommendedAction | Should -BeLikeExactly '*pg_ctlcluster*'
            $null = Remove-PgInstance -DataDirectory $folder -Confirm:$false -ErrorVariable removeErr -ErrorAction SilentlyContinue
            $removeErr[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.InstanceManagedByOs,*'
            Test-Path -LiteralPath (Join-Path $folder 'PG_VERSION') | Should -BeTrue
        }
        finally {
            Remove-Item -LiteralPath $registration -Recurse -Force
            if (-not (Get-ChildItem -LiteralPath '/etc/postgresql/99')) { Remove-Item -LiteralPath '/etc/postgresql/99' }
        }
    }

    It 'refuses a folder that does not exist (DataDirectoryNotFound)' {
        $missing = Join-Path (New-PgTestRepository) 'missing'
        $null = Stop-PgInstance -DataDirectory $missing -Confirm:$false -ErrorVariable stopErr -ErrorAction SilentlyContinue
        $stopErr | Should -HaveCount 1 -Because (Format-PgTestError $stopErr)
        $stopErr[0].FullyQualifiedErrorId | Should -BeExactly 'PgBackup.DataDirectoryNotFound,PgBackup.Commands.StopPgInstanceCommand'
        $stopErr[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ObjectNotFound)
        $stopErr[0].TargetObject | Should -BeExactly $missing

        $null = Start-PgInstance -DataDirectory $missing -Confirm:$false -ErrorVariable startErr -ErrorAction SilentlyContinue
        $startErr | Should -HaveCount 1 -Because (Format-PgTestError $startErr)
        $startErr[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.DataDirectoryNotFound,*'

        $null = Remove-PgInstance -DataDirectory $missing -Confirm:$false -ErrorVariable removeErr -ErrorAction SilentlyContinue
        $removeErr | Should -HaveCount 1 -Because (Format-PgTestError $removeErr)
        $removeErr[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.DataDirectoryNotFound,*'
        $removeErr[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ObjectNotFound)
        Test-Path -LiteralPath $missing | Should -BeFalse
    }

    It 'refuses a -Timeout that is not positive (InvalidTimeout) before it looks at the data directory' {
        $missing = Join-Path (New-PgTestRepository) 'missing'
        foreach ($command in 'Start-PgInstance', 'Stop-PgInstance') {
            $null = & $command -DataDirectory $missing -Timeout 0 -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.InvalidTimeout,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
            $err[0].ErrorDetails.RecommendedAction | Should -Not -BeNullOrEmpty
        }
        Get-TestPostmasterId | Should -Not -BeNullOrEmpty
    }

    It 'removes a stopped instance given by position, and -WhatIf leaves it' {
        $other = Start-PgTestCluster -Name 'instance-stopped'
        try {
            $null = Stop-PgInstance $other.DataDirectory -Mode Immediate -Confirm:$false -ErrorAction Stop
            $null = Remove-PgInstance $other.DataDirectory -WhatIf -ErrorAction Stop
            Test-Path -LiteralPath (Join-Path $other.DataDirectory 'PG_VERSION') -PathType Leaf | Should -BeTrue
            $removed = @(Remove-PgInstance $other.DataDirectory -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
            $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
            $removed | Should -HaveCount 0
            Test-Path -LiteralPath $other.DataDirectory | Should -BeFalse
        }
        finally { Stop-PgTestCluster -Cluster $other }
    }

    # Last: it removes the instance the tests above use.
    It 'removes a running instance with Remove-PgInstance: stops it and deletes its data directory' {
        Get-TestPostmasterId | Should -Not -BeNullOrEmpty
        $removed = @(Remove-PgInstance -DataDirectory $directory -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue)
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $removed | Should -HaveCount 0
        Test-Path -LiteralPath $directory | Should -BeFalse
        { Get-TestRowCount } | Should -Throw -Because 'nothing listens on its port any more'
    }
}
