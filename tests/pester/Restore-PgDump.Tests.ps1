#Requires -Version 7.4
# Restore-PgDump against the built module: a real PostgreSQL cluster, the real pg_* tools.

Describe 'Restore-PgDump' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        $manifest = Get-PgBackupModuleManifest
        Import-Module $manifest -Force

        $cluster = Start-PgTestCluster -Name 'restore'
        $environment = Enter-PgTestEnvironment -Cluster $cluster
        $server = $cluster.Server
        New-PgTestSampleDatabase -Cluster $cluster -Database shop -ItemRows 20000
        New-PgTestSampleDatabase -Cluster $cluster -Database shop_eu -ItemRows 500
        # A runspace without a host, as a runbook has: nobody there can answer a confirmation prompt.
        $runspace = New-PgTestRunspace -ModulePath $manifest

        function Get-DatabaseName([string] $Name) {
            Invoke-PgTestSql -Cluster $cluster -Sql "select datname from pg_database where datname = '$Name'"
        }
    }

    AfterAll {
        if ($runspace) { $runspace.Dispose() }
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $cluster
        Remove-PgTestRepository
    }

    It 'restores a dump piped from Invoke-PgDump into a new database' {
        try {
            $result = Invoke-PgDump -Server $server -Database shop -Repository (New-PgTestRepository) -Format Directory -Jobs 2 -ErrorAction Stop |
                Restore-PgDump -TargetDatabase shop_check -Jobs 2 -ErrorAction Stop
            $result | Should -HaveCount 1
            $result.PSObject.TypeNames | Should -Contain 'PgBackup.RestoreResult'
            $result.Database | Should -BeExactly 'shop_check'
            $result.DatabaseCreated | Should -Be $true
            $result.ChecksumVerified | Should -Be $true
            Get-PgTestRowCount -Cluster $cluster -Database shop_check | Should -BeExactly (Get-PgTestRowCount -Cluster $cluster -Database shop)
        }
        finally { Remove-PgTestDatabase -Cluster $cluster -Database shop_check }
    }

    It 'pipes a restore result into a new dump' {
        $repo = New-PgTestRepository
        try {
            $dump = Invoke-PgDump -Server $server -Database shop_eu -Repository $repo -ErrorAction Stop |
                Restore-PgDump -TargetDatabase shop_eu_copy -ErrorAction Stop |
                Invoke-PgDump -Repository $repo -Format Plain -ErrorAction Stop
            $dump | Should -HaveCount 1
            $dump.Database | Should -BeExactly 'shop_eu_copy'
        }
        finally { Remove-PgTestDatabase -Cluster $cluster -Database shop_eu_copy }
    }

    It 'restores a plain dump from a path' {
        $file = Join-Path (New-PgTestRepository) 'eu.sql'
        try {
            $null = Invoke-PgDump -Server $server -Database shop_eu -Path $file -Format Plain -ErrorAction Stop
            $result = Restore-PgDump -Path $file -TargetDatabase eu_from_sql -ErrorAction Stop
            "$($result.Format)" | Should -BeExactly 'Plain'
            Invoke-PgTestSql -Cluster $cluster -Database eu_from_sql -Sql 'select count(*) from public.items' | Should -BeExactly '500'
        }
        finally { Remove-PgTestDatabase -Cluster $cluster -Database eu_from_sql }
    }

    It 'creates no database with -WhatIf' {
        $result = Invoke-PgDump -Server $server -Database shop_eu -Repository (New-PgTestRepository) -ErrorAction Stop |
            Restore-PgDump -TargetDatabase never_made -WhatIf -ErrorAction Stop
        $result | Should -BeNullOrEmpty
        Get-DatabaseName 'never_made' | Should -BeNullOrEmpty
    }

    It 'refuses to restore into a database that has objects' {
        $null = Invoke-PgDump -Server $server -Database shop_eu -Repository (New-PgTestRepository) -ErrorAction Stop |
            Restore-PgDump -ErrorVariable err -ErrorAction SilentlyContinue
        $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
        $e = $err[0]
        $e.FullyQualifiedErrorId | Should -BeExactly 'PgBackup.TargetNotEmpty,PgBackup.Commands.RestorePgDumpCommand'
        $e.CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::ResourceExists)
        $e.TargetObject | Should -BeExactly 'shop_eu'
        $e.ErrorDetails.RecommendedAction | Should -BeLikeExactly '*-Clean*'
    }

    It 'loads only the rows into existing tables with -DataOnly, and refuses a Plain dump for it' {
        $repo = New-PgTestRepository
        try {
            $null = Invoke-PgDump -Server $server -Database shop_eu -Repository $repo -ErrorAction Stop | Restore-PgDump -TargetDatabase eu_rows -Confirm:$false -ErrorAction Stop
            $null = Invoke-PgTestSql -Cluster $cluster -Database eu_rows -Sql 'delete from sales.orders; delete from public.items'
            $items = Join-Path $repo 'items.dump'
            $null = Invoke-PgDump -Server $server -Database shop_eu -Table public.items -Format Custom -Path $items -ErrorAction Stop
            $loaded = @(Restore-PgDump -Path $items -TargetDatabase eu_rows -DataOnly -Confirm:$false -ErrorAction Stop)
            $loaded | Should -HaveCount 1
            $loaded[0].Cleaned | Should -BeFalse
            Invoke-PgTestSql -Cluster $cluster -Database eu_rows -Sql 'select count(*) from public.items' | Should -BeExactly '500'

            # The same rows again collide with their keys: the load is one transaction, so nothing of it stays.
            $null = Restore-PgDump -Path $items -TargetDatabase eu_rows -DataOnly -Confirm:$false -ErrorVariable again -ErrorAction SilentlyContinue
            $again | Should -HaveCount 1 -Because (Format-PgTestError $again)
            $again[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.RestoreFailed,*'
            Invoke-PgTestSql -Cluster $cluster -Database eu_rows -Sql 'select count(*) from public.items' | Should -BeExactly '500'

            $plain = Join-Path $repo 'eu.sql'
            $null = Invoke-PgDump -Server $server -Database shop_eu -Format Plain -Path $plain -ErrorAction Stop
            $null = Restore-PgDump -Path $plain -TargetDatabase eu_rows -DataOnly -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeExactly 'PgBackup.DataOnlyNotApplicable,PgBackup.Commands.RestorePgDumpCommand'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidArgument)
        }
        finally { Remove-PgTestDatabase -Cluster $cluster -Database eu_rows }
    }

    It 'needs confirmation to drop or clean a database, and -WhatIf changes nothing' {
        $repo = New-PgTestRepository
        try {
            $null = Invoke-PgDump -Server $server -Database shop_eu -Repository $repo -ErrorAction Stop | Restore-PgDump -TargetDatabase eu_twin -ErrorAction Stop
            $null = Invoke-PgTestSql -Cluster $cluster -Database eu_twin -Sql "create table local_notes(id int); insert into public.items values (999999, 'local', 1, now());"

            $null = Get-PgBackup -Repository $repo -ErrorAction Stop | Restore-PgDump -TargetDatabase eu_twin -Create -Force -WhatIf -ErrorAction Stop
            Invoke-PgTestSql -Cluster $cluster -Database eu_twin -Sql "select count(*) from pg_class where relname = 'local_notes'" | Should -BeExactly '1'

            # No host to ask in that runspace, as in a runbook: a destructive restore without -Confirm:$false is refused.
            $refused = Invoke-PgTestRunspace -Runspace $runspace -Script 'Get-PgBackup -Repository $r | Restore-PgDump -TargetDatabase eu_twin -Clean' -Variables @{ r = $repo }
            $refused.AllErrors | Should -Not -BeNullOrEmpty
            Invoke-PgTestSql -Cluster $cluster -Database eu_twin -Sql 'select count(*) from public.items' | Should -BeExactly '501'

            $cleaned = Get-PgBackup -Repository $repo -ErrorAction Stop | Restore-PgDump -TargetDatabase eu_twin -Clean -Confirm:$false -ErrorAction Stop
            $cleaned | Should -HaveCount 1
            $cleaned.Cleaned | Should -Be $true
            Invoke-PgTestSql -Cluster $cluster -Database eu_twin -Sql 'select count(*) from public.items' | Should -BeExactly '500'
            Invoke-PgTestSql -Cluster $cluster -Database eu_twin -Sql "select count(*) from pg_class where relname = 'local_notes'" | Should -BeExactly '1'

            $null = Get-PgBackup -Repository $repo -ErrorAction Stop | Restore-PgDump -TargetDatabase eu_twin -Create -Force -Confirm:$false -ErrorAction Stop
            Invoke-PgTestSql -Cluster $cluster -Database eu_twin -Sql "select count(*) from pg_class where relname = 'local_notes'" | Should -BeExactly '0'
        }
        finally { Remove-PgTestDatabase -Cluster $cluster -Database eu_twin }
    }

    It 'refuses a corrupted dump with a checksum error' {
        $repo = New-PgTestRepository
        try {
            $dump = Invoke-PgDump -Server $server -Database shop_eu -Repository $repo -ErrorAction Stop
            $bytes = [System.IO.File]::ReadAllBytes($dump.Path)
            $bytes[$bytes.Length - 50] = $bytes[$bytes.Length - 50] -bxor 0xFF
            [System.IO.File]::WriteAllBytes($dump.Path, $bytes)

            $null = Get-PgBackup -Repository $repo -ErrorAction Stop | Restore-PgDump -TargetDatabase from_corrupt -ErrorVariable err -ErrorAction SilentlyContinue
            $err | Should -HaveCount 1 -Because (Format-PgTestError $err)
            $err[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.ChecksumMismatch,*'
            $err[0].CategoryInfo.Category | Should -Be ([System.Management.Automation.ErrorCategory]::InvalidData)
            $err[0].TargetObject | Should -BeExactly $dump.Path
            Get-DatabaseName 'from_corrupt' | Should -BeNullOrEmpty
        }
        finally { Remove-PgTestDatabase -Cluster $cluster -Database from_corrupt }
    }
}
