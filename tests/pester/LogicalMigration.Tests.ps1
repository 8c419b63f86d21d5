#Requires -Version 7.4
# Logical replication from one real cluster to another: Start-PgLogicalMigration sets it up after its pre-checks,
# Get-/Test-/Wait-PgReplication see it, Complete-PgLogicalMigration cuts over and proves nothing was left behind, and
# Stop-PgLogicalMigration leaves no slot, publication or subscription.

Describe 'Logical migrations' -Tag 'Integration' {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot 'PgBackup.TestCluster.psm1') -Force
        Import-Module (Get-PgBackupModuleManifest) -Force

        $source = Start-PgTestCluster -Name 'migsource' -Settings @{ wal_level = 'logical' }
        $target = Start-PgTestCluster -Name 'migtarget'
        $environment = Enter-PgTestEnvironment -Cluster $source
        # Each test cluster has its own password; the environment's password file holds the source's.
        $targetCredential = [pscredential]::new('postgres', (ConvertTo-SecureString $target.Password -AsPlainText -Force))
        $runspace = New-PgTestRunspace -ModulePath (Get-PgBackupModuleManifest)

        function Get-TestMigrationObject {
            # PgBackup's slots and publications on the source and subscriptions on the target, as 'kind name' lines.
            @(Invoke-PgTestSql -Cluster $source -Sql "select 'slot ' || slot_name from pg_replication_slots where slot_name like 'pgbackup_migration_%'") +
            @(Invoke-PgTestSql -Cluster $source -Database $args[0] -Sql "select 'publication ' || pubname from pg_publication where pubname like 'pgbackup_migration_%'") +
            @(Invoke-PgTestSql -Cluster $target -Sql "select 'subscription ' || subname from pg_subscription where subname like 'pgbackup_migration_%'") |
                Where-Object { $_ -and $_.Trim() }
        }
        function New-TestSourceDatabase([string] $Name, [string] $Sql) {
            $null = Invoke-PgTestSql -Cluster $source -Sql "create database $Name"
            $null = Invoke-PgTestSql -Cluster $source -Database $Name -Sql $Sql
        }
    }

    AfterAll {
        if ($runspace) { $runspace.Dispose() }
        Exit-PgTestEnvironment -State $environment
        Stop-PgTestCluster -Cluster $source
        Stop-PgTestCluster -Cluster $target
    }

    It 'refuses a table without a key, listing them all, and a target whose tables hold rows, before anything changes; -Force empties them' {
        New-TestSourceDatabase -Name shop -Sql 'create table items(id int primary key, name text); create table audit(at timestamptz, what text); create table notes(body text); insert into items values (1, ''one'')'
        $null = Start-PgLogicalMigration -Source $source.Server -Target $target.Server -Database shop -TargetCredential $targetCredential -Confirm:$false -ErrorVariable noKey -ErrorAction SilentlyContinue
        $noKey | Should -HaveCount 1 -Because (Format-PgTestError $noKey)
        $noKey[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.NoReplicaIdentity,*'
        $noKey[0].CategoryInfo.Category | Should -Be 'InvalidData'
        $noKey[0].Exception.Message | Should -Match 'public\.audit, public\.notes'
        @($noKey[0].TargetObject) | Should -Be @('public.audit', 'public.notes')
        Get-TestMigrationObject shop | Should -BeNullOrEmpty
        Invoke-PgTestSql -Cluster $target -Sql "select count(*) from pg_database where datname = 'shop'" | Should -BeExactly '0' -Because 'the target database is created only once every check passed'

        # The same table with a row on the target: the initial copy would add to it.
        $null = Invoke-PgTestSql -Cluster $target -Sql 'create database shop'
        $null = Invoke-PgTestSql -Cluster $target -Database shop -Sql 'create table items(id int primary key, name text); insert into items values (7, ''mine'')'
        $null = Start-PgLogicalMigration -Source $source.Server -Target $target.Server -Database shop -Table items -TargetCredential $targetCredential -Confirm:$false -ErrorVariable full -ErrorAction SilentlyContinue
        $full | Should -HaveCount 1 -Because (Format-PgTestError $full)
        $full[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.TargetNotEmpty,*'
        $full[0].TargetObject | Should -BeExactly 'public.items'
        Get-TestMigrationObject shop | Should -BeNullOrEmpty
        Invoke-PgTestSql -Cluster $target -Database shop -Sql 'select id from items' | Should -BeExactly '7'

        # -Force empties it first: the target then holds the source's rows only.
        $forced = Start-PgLogicalMigration -Source $source.Server -Target $target.Server -Database shop -Table items -TargetCredential $targetCredential -Force -Confirm:$false `
            -WarningAction SilentlyContinue -ErrorAction Stop
        $forced.Synchronized | Should -BeTrue
        Invoke-PgTestSql -Cluster $target -Database shop -Sql 'select string_agg(id::text, '','' order by id) from items' | Should -BeExactly '1'
        $forced | Stop-PgLogicalMigration -TargetCredential $targetCredential -Confirm:$false -ErrorAction Stop
        Get-TestMigrationObject shop | Should -BeNullOrEmpty
    }

    It 'prints the plan with -WhatIf and changes nothing; without wal_level = logical it asks for -Restart' {
        $plain = Start-PgTestCluster -Name 'migplain'
        try {
            $null = Invoke-PgTestSql -Cluster $plain -Sql 'create table t(id int primary key)'
            $plainCredential = [pscredential]::new('postgres', (ConvertTo-SecureString $plain.Password -AsPlainText -Force))
            $null = Start-PgLogicalMigration -Source $plain.Server -Target $target.Server -Database postgres -TargetDatabase fromplain -Credential $plainCredential -TargetCredential $targetCredential `
                -Confirm:$false -ErrorVariable walLevel -ErrorAction SilentlyContinue
            $walLevel | Should -HaveCount 1 -Because (Format-PgTestError $walLevel)
            $walLevel[0].FullyQualifiedErrorId | Should -BeLikeExactly 'PgBackup.WalLevelNotLogical,*'
            $walLevel[0].ErrorDetails.RecommendedAction | Should -Match '-Restart'
            Invoke-PgTestSql -Cluster $plain -Sql 'show wal_level' | Should -BeExactly 'replica'

            # What if: lines go to the host, which a transcript records.
            $transcript = Join-Path (New-PgTestRepository) 'whatif.txt'
            $null = Start-Transcript -LiteralPath $transcript
            try {
                $null = Start-PgLogicalMigration -Source $plain.Server -Target $target.Server -Database postgres -TargetDatabase fromplain -Credential $plainCredential -TargetCredential $targetCredential `
                    -Restart -WhatIf -WarningAction SilentlyContinue -ErrorAction Stop
            }
            finally { $null = Stop-Transcript }
            $plan = Get-Content -Raw -LiteralPath $transcript
            $plan | Should -Match 'Set wal_level = logical'
            $plan | Should -Match 'Create the database fromplain'
            $plan | Should -Match 'Create the subscription pgbackup_migration_'
            Invoke-PgTestSql -Cluster $plain -Sql 'show wal_level' | Should -BeExactly 'replica'
            Invoke-PgTestSql -Cluster $target -Sql "select count(*) from pg_database where datname = 'fromplain'" | Should -BeExactly '0'

            # With -Restart it is set and the source restarted, then the migration runs.
            $migration = Start-PgLogicalMigration -Source $plain.Server -Target $target.Server -Database postgres -TargetDatabase fromplain -Credential $plainCredential -TargetCredential $targetCredential `
                -Restart -Confirm:$false -WarningAction SilentlyContinue -ErrorAction Stop
            Invoke-PgTestSql -Cluster $plain -Sql 'show wal_level' | Should -BeExactly 'logical'
            $migration.Synchronized | Should -BeTrue
            $migration | Stop-PgLogicalMigration -Credential $plainCredential -TargetCredential $targetCredential -Confirm:$false -ErrorAction Stop
            Invoke-PgTestSql -Cluster $plain -Sql "select count(*) from pg_replication_slots" | Should -BeExactly '0'
        }
        finally { Stop-PgTestCluster -Cluster $plain }
    }

    It 'migrates two tables out of three, with each table''s copy as progress, and Stop-PgLogicalMigration removes it' {
        New-TestSourceDatabase -Name subset -Sql @'
create table orders(id serial primary key, total int);
create schema crm;
create table crm.customers(id int primary key, name text);
create table scratch(id int primary key);
insert into orders(total) select g from generate_series(1, 5000) g;
insert into crm.customers select g, 'c' || g from generate_series(1, 300) g;
insert into scratch select generate_series(1, 10);
'@
        $run = Invoke-PgTestRunspace -Runspace $runspace -Script 'Start-PgLogicalMigration -Source $s -Target $t -Database subset -Table orders, crm.customers -TargetCredential $tc -Confirm:$false' `
            -Variables @{ s = $source.Server; t = $target.Server; tc = $targetCredential }
        $run.AllErrors | Should -BeNullOrEmpty -Because (Format-PgTestError $run.AllErrors)
        $migration = $run.Output[0]
        $migration.PSObject.TypeNames | Should -Contain 'PgBackup.LogicalMigration'
        $migration.Tables | Should -Be @('crm.customers', 'public.orders')
        $migration.Synchronized | Should -BeTrue
        @($migration.TableStates.State | Select-Object -Unique) | Should -Be @('Ready')
        $run.Warnings -join "`n" | Should -Match '1 table\(s\) outside the chosen'
        @($run.Progress | Where-Object { $_.Activity -like 'Copying 2 table(s)*' }) | Should -Not -BeNullOrEmpty
        Invoke-PgTestSql -Cluster $target -Database subset -Sql 'select count(*) from orders' | Should -BeExactly '5000'
        Invoke-PgTestSql -Cluster $target -Database subset -Sql 'select count(*) from crm.customers' | Should -BeExactly '300'
        Invoke-PgTestSql -Cluster $target -Database subset -Sql "select to_regclass('public.scratch') is null" | Should -BeExactly 't'

        $links = @(Get-PgReplicationStatus -Server $target.Server -Credential $targetCredential -ErrorAction Stop | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.LogicalReplicationLink' })
        $links | Should -HaveCount 1
        $links[0].Side | Should -BeExactly 'Subscriber'
        $links[0].Name | Should -BeExactly $migration.Name
        @($links[0].Tables) | Should -HaveCount 2

        $removed = @($migration | Stop-PgLogicalMigration -TargetCredential $targetCredential -PassThru -Confirm:$false -ErrorAction Stop)
        $removed -join "`n" | Should -Match 'slot'
        $removed -join "`n" | Should -Match 'publication'
        $removed -join "`n" | Should -Match 'subscription'
        Get-TestMigrationObject subset | Should -BeNullOrEmpty
        Invoke-PgTestSql -Cluster $target -Database subset -Sql 'select count(*) from orders' | Should -BeExactly '5000' -Because 'the target keeps the data it received'
    }

    It 'cuts over under writes: every acknowledged commit is on the target, sequences are at or above the source''s, the source refuses writes, no slot is left' {
        New-TestSourceDatabase -Name ledger -Sql @'
create table entries(id bigserial primary key, client int, at timestamptz default now());
create table accounts(id int generated always as identity primary key, balance int);
insert into accounts(balance) select 100 from generate_series(1, 50);
'@
        $acknowledged = [System.Collections.Concurrent.ConcurrentBag[long]]::new()
        $stop = [System.Threading.CancellationTokenSource]::new()
        $psql = Join-Path $source.BinDirectory ($(if ($IsWindows) { 'psql.exe' } else { 'psql' }))
        $conninfo = "host=127.0.0.1 port=$($source.Port) user=postgres password=$($source.Password) dbname=ledger connect_timeout=10"
        $writer = Start-ThreadJob -ArgumentList $psql, $conninfo, $acknowledged, $stop.Token -ScriptBlock {
            param($Psql, $ConnInfo, $Bag, $Token)
            while (-not $Token.IsCancellationRequested) {
                # Only an id the server returned after its commit counts as acknowledged.
                $out = & $Psql -X -q -A -t -d $ConnInfo -c 'insert into entries(client) values (1) returning id' 2>$null
                if ($LASTEXITCODE -eq 0 -and "$out".Trim() -match '^\d+$') { $Bag.Add([long] "$out".Trim()) } else { Start-Sleep -Milliseconds 20 }
            }
        }
        try {
            Wait-PgTestCondition -What 'The writer committing on the source' -Condition { $acknowledged.Count -ge 20 }
            $migration = Start-PgLogicalMigration -Source $source.Server -Target $target.Server -Database ledger -TargetCredential $targetCredential -Confirm:$false -WarningAction SilentlyContinue -ErrorAction Stop
            $migration.Synchronized | Should -BeTrue

            # The logical link as the monitoring cmdlets see it on the source.
            $test = Test-PgReplication -Server $source.Server -MaxLagBytes 64MB -ErrorAction Stop
            $test.Success | Should -BeTrue -Because ($test.Failures -join '; ')
            $waited = @(Wait-PgReplication -Server $source.Server -Timeout 00:00:30 -ErrorAction Stop)
            @($waited | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.LogicalReplicationLink' }).Name | Should -Be @($migration.Name)

            # -WhatIf checks and changes nothing: the writer goes on and the slot stays.
            $null = $migration | Complete-PgLogicalMigration -TargetCredential $targetCredential -WhatIf -ErrorAction Stop
            Invoke-PgTestSql -Cluster $source -Sql "select count(*) from pg_replication_slots where slot_name = '$($migration.Name)'" | Should -BeExactly '1'
            $before = $acknowledged.Count
            Wait-PgTestCondition -What 'The writer committing during the replication' -Condition { $acknowledged.Count -ge $before + 20 }
            $cutover = $migration | Complete-PgLogicalMigration -TargetCredential $targetCredential -VerifyData -Confirm:$false -ErrorVariable err -ErrorAction SilentlyContinue
        }
        finally {
            $stop.Cancel()
            $null = $writer | Wait-Job -Timeout 60
            $writer | Remove-Job -Force
        }
        $err | Should -BeNullOrEmpty -Because (Format-PgTestError $err)
        $cutover.PSObject.TypeNames | Should -Contain 'PgBackup.LogicalCutover'
        $cutover.Verified | Should -BeTrue
        $cutover.DataCompared | Should -BeTrue
        $cutover.SourceReadOnly | Should -BeTrue
        @($cutover.Tables | Where-Object { -not $_.Match }) | Should -BeNullOrEmpty
        $cutover.WriteDowntime | Should -BeGreaterThan ([timespan]::Zero)

        $present = [System.Collections.Generic.HashSet[long]]::new()
        foreach ($id in (Invoke-PgTestSql -Cluster $target -Database ledger -Sql 'select id from entries') -split "`n") { if ($id.Trim()) { $null = $present.Add([long] $id.Trim()) } }
        @($acknowledged.ToArray() | Where-Object { -not $present.Contains($_) }) | Should -BeNullOrEmpty -Because 'every commit the source acknowledged must be on the target'

        foreach ($sequence in 'entries_id_seq', 'accounts_id_seq') {
            $onSource = [long] (Invoke-PgTestSql -Cluster $source -Database ledger -Sql "select coalesce(last_value, 0) from pg_sequences where sequencename = '$sequence'")
            $onTarget = [long] (Invoke-PgTestSql -Cluster $target -Database ledger -Sql "select coalesce(last_value, 0) from pg_sequences where sequencename = '$sequence'")
            $onTarget | Should -BeGreaterOrEqual $onSource -Because "$sequence must not hand out values the source already used"
        }
        # A new row on the target takes the next id, not one the source used.
        $next = [long] (Invoke-PgTestSql -Cluster $target -Database ledger -Sql 'insert into entries(client) values (2) returning id')
        $present.Contains($next) | Should -BeFalse

        { Invoke-PgTestSql -Cluster $source -Database ledger -Sql 'insert into entries(client) values (3)' } | Should -Throw -ExpectedMessage '*read-only*'
        Invoke-PgTestSql -Cluster $source -Sql "select count(*) from pg_replication_slots" | Should -BeExactly '0'
        Get-TestMigrationObject ledger | Should -BeNullOrEmpty
        @(Get-PgReplicationStatus -Server $source.Server -ErrorAction Stop | Where-Object { $_.PSObject.TypeNames -contains 'PgBackup.LogicalReplicationLink' }) | Should -BeNullOrEmpty

        # Stop-PgLogicalMigration undoes the read-only setting the cutover made.
        $migration | Stop-PgLogicalMigration -TargetCredential $targetCredential -Confirm:$false -WarningAction SilentlyContinue -ErrorAction Stop
        Invoke-PgTestSql -Cluster $source -Database ledger -Sql 'insert into entries(client) values (4) returning 1' | Should -BeExactly '1'
    }

    It 'leaves a set-up cancelled during the copy for Stop-PgLogicalMigration, which removes all of it; a slot without subscriber is warned about' {
        New-TestSourceDatabase -Name stalled -Sql 'create table big(id int primary key, payload text); insert into big select g, md5(g::text) from generate_series(1, 20000) g'
        # The target's table exists, empty and locked against writes: the copy into it waits until the lock goes.
        $null = Invoke-PgTestSql -Cluster $target -Sql 'create database stalled'
        $null = Invoke-PgTestSql -Cluster $target -Database stalled -Sql 'create table big(id int primary key, payload text)'
        $lock = Start-PgTestSession -Cluster $target -Database stalled -Sql 'begin; lock table big in exclusive mode;'
        try {
            $run = Invoke-PgTestRunspace -Runspace $runspace -Script 'Start-PgLogicalMigration -Source $s -Target $t -Database stalled -TargetCredential $tc -Confirm:$false' `
                -Variables @{ s = $source.Server; t = $target.Server; tc = $targetCredential } -StopWhen { param($p) $p.Activity -like 'Copying*' }
        }
        finally { Stop-PgTestSession -Session $lock }
        $run.Stopped | Should -BeTrue
        @(Get-TestMigrationObject stalled) | Should -HaveCount 3 -Because 'a cancelled wait leaves the running replication in place'

        # The subscriber goes away: the slot keeps WAL, and the status says so.
        $null = Invoke-PgTestSql -Cluster $target -Database stalled -Sql "alter subscription $((Get-TestMigrationObject stalled | Where-Object { $_ -like 'subscription *' }).Split(' ')[1]) disable"
        Wait-PgTestCondition -What 'The slot without its subscriber' -Condition { (Invoke-PgTestSql -Cluster $source -Sql "select count(*) from pg_replication_slots where slot_name like 'pgbackup_migration_%' and not active") -eq '1' }
        $null = Get-PgReplicationStatus -Server $source.Server -WarningVariable orphan -WarningAction SilentlyContinue -ErrorAction Stop
        $orphan -join "`n" | Should -Match 'subscriber is not connected; it holds \d+ bytes of WAL'
        (Test-PgReplication -Server $source.Server -ErrorAction Stop).Success | Should -BeFalse

        Stop-PgLogicalMigration -Source $source.Server -Target $target.Server -Database stalled -TargetCredential $targetCredential -Confirm:$false -ErrorAction Stop
        Get-TestMigrationObject stalled | Should -BeNullOrEmpty
        Invoke-PgTestSql -Cluster $source -Sql "select count(*) from pg_replication_slots" | Should -BeExactly '0'
    }
}
