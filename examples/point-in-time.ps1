# Point-in-time recovery: someone runs DELETE without WHERE; get the table back as it was just before, in one
# pipeline, then prove with a drill that recovery works and how long it takes. (Only the PowerShell core cmdlets are
# used besides PgBackup's, so the hosted engine of ./scripts/demo.sh runs it as pwsh would.)
param(
    [Parameter(Mandatory)][string] $Server,
    [Parameter(Mandatory)][string] $Repository
)

$hostName, $port = $Server -split ':'
function Invoke-Sql([string] $Sql) { & psql -X -q -A -t -h $hostName -p $port -d shop -c $Sql }
function Wait-Archived {
    $segment = Invoke-Sql 'select pg_walfile_name(pg_switch_wal())'
    while ((Get-PgWalArchive -Server $Server -Repository $Repository).LastArchivedWal -lt $segment) { [System.Threading.Thread]::Sleep(200) }
}

'1. Archive the WAL and take a base backup:'
$null = Enable-PgWalArchiving -Server $Server -Repository $Repository -Restart -Confirm:$false
$base = Start-PgBaseBackup -Server $Server -Repository $Repository
$base

'2. Business as usual, then at 14:05 the mistake:'
Invoke-Sql "insert into sales.orders(item_id, qty, note) select id, 1, 'after the backup' from items where id <= 100"
"  orders before the mistake: $(Invoke-Sql 'select count(*) from sales.orders')"
$beforeTheMistake = [DateTimeOffset]::UtcNow
[System.Threading.Thread]::Sleep(100)
Invoke-Sql 'delete from sales.orders'
"  orders after the mistake:  $(Invoke-Sql 'select count(*) from sales.orders')"
Wait-Archived

'3. The rescue: recover to just before the mistake on a side port, dump the table there, restore it into production:'
$side = [System.IO.Path]::Combine($Repository, 'pitr-side')
$dump = [System.IO.Path]::Combine($Repository, 'orders-rescued.dump')
$recovered = $base | Restore-PgPointInTime -TargetTime $beforeTheMistake -DataDirectory $side -Confirm:$false
$recovered
$null = $recovered | Invoke-PgDump -Database shop -Table sales.orders -Format Custom -Path $dump
$null = Restore-PgDump -Path $dump -Server $Server -TargetDatabase shop -DataOnly -Confirm:$false
"  orders after the rescue:   $(Invoke-Sql 'select count(*) from sales.orders')"
$recovered | Remove-PgInstance -Confirm:$false

'4. The quarterly drill: recover the newest backup to the newest archived point, measure RTO and RPO, write evidence:'
Wait-Archived
$drill = Invoke-PgRecoveryDrill -Server $Server -Repository $Repository -RtoObjective 00:15:00 -RpoObjective 00:05:00 `
    -Database shop -Query 'select count(*) from items' -ReportPath ([System.IO.Path]::Combine($Repository, 'drill.md')) -Confirm:$false
$drill
$drill.Checks
