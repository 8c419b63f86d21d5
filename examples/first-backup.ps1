# An admin's first day with PgBackup: dump a database, prove the dump restores, see it in the catalog, test it.
param(
    [Parameter(Mandatory)][string] $Server,
    [Parameter(Mandatory)][string] $Repository
)

'1. Dump the database "shop" (Directory format, 2 parallel jobs) into the repository:'
$dump = Invoke-PgDump -Server $Server -Database shop -Repository $Repository -Format Directory -Jobs 2
$dump

'2. Prove that it restores: into a new database on the same server:'
$dump | Restore-PgDump -TargetDatabase shop_restored -Jobs 2

'3. A globals dump (roles, tablespaces) and what the catalog now holds:'
Invoke-PgDump -Server $Server -Globals -Repository $Repository | Out-Null
Get-PgBackup -Repository $Repository

'4. The "test your restores" habit: checksum, restore into a throwaway database, count tables, drop it:'
Get-PgBackup -Repository $Repository -Kind Dump | Test-PgBackup -Restore

'5. Retention: after a second dump of "shop", keep the newest dump of each database; these were removed:'
Invoke-PgDump -Server $Server -Database shop -Repository $Repository | Out-Null
Remove-PgBackup -Repository $Repository -KeepLast 1 -PassThru
