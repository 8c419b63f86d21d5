@{
    RootModule           = 'PgBackup.dll'
    ModuleVersion        = '0.1.0'
    GUID                 = '4f0c2f8e-7d4a-4b53-9a57-2c1d6b0e9f31'
    Author               = 'PgBackup contributors'
    CompanyName          = 'PgBackup'
    Copyright            = '(c) PgBackup contributors. MIT License.'
    Description          = 'PostgreSQL backup and recovery for PowerShell: pg_dump and pg_restore as objects that pipe into each other, with a catalog, checksums, test restores, -WhatIf, progress and actionable errors.'
    PowerShellVersion    = '7.4'
    CompatiblePSEditions = @('Core')
    RequiredAssemblies   = @('PgBackup.Model.dll')
    FormatsToProcess     = @('PgBackup.Format.ps1xml')
    CmdletsToExport      = @(
        'Complete-PgLogicalMigration'
        'Disable-PgWalArchiving'
        'Enable-PgWalArchiving'
        'Get-PgBackup'
        'Get-PgBackupConfig'
        'Get-PgReplicationStatus'
        'Get-PgRepository'
        'Get-PgWalArchive'
        'Invoke-PgDump'
        'Invoke-PgRecoveryDrill'
        'Join-PgStandby'
        'New-PgRepository'
        'New-PgStandby'
        'Remove-PgBackup'
        'Remove-PgInstance'
        'Restore-PgDump'
        'Restore-PgPointInTime'
        'Set-PgRepository'
        'Set-PgSynchronousStandby'
        'Start-PgBaseBackup'
        'Start-PgInstance'
        'Start-PgLogicalMigration'
        'Stop-PgInstance'
        'Stop-PgLogicalMigration'
        'Switch-PgPrimary'
        'Test-PgBackup'
        'Test-PgReplication'
        'Wait-PgReplication'
    )
    FunctionsToExport    = @()
    AliasesToExport      = @()
    VariablesToExport    = @()
    PrivateData          = @{
        PSData = @{
            Tags       = @('PostgreSQL', 'Postgres', 'Backup', 'Restore', 'pg_dump', 'pg_restore', 'DBA', 'Linux', 'Windows', 'MacOS')
            LicenseUri = 'https://opensource.org/licenses/MIT'
        }
    }
}
