# Physical backups: archive the WAL, take a verified base backup, prove it starts, and watch the archive.
param(
    [Parameter(Mandatory)][string] $Server,
    [Parameter(Mandatory)][string] $Repository
)

'1. Archive the WAL into the repository (restarting the server for archive_mode), and prove a segment arrives:'
Enable-PgWalArchiving -Server $Server -Repository $Repository -MaxRpo 00:05:00 -Restart -Confirm:$false

'2. A base backup, verified against its SHA-256 manifest, then started as a throwaway instance:'
$base = Start-PgBaseBackup -Server $Server -Repository $Repository -Format Tar -Compress client-gzip:1
$base
$base | Test-PgBackup -Restore

'3. The WAL archive: archived range, gaps since the oldest kept base backup, and the recovery point objective:'
Get-PgWalArchive -Server $Server -Repository $Repository
