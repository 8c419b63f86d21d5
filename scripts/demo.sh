#!/usr/bin/env bash
# The main job, end to end on a fresh machine: build the module, start a throwaway PostgreSQL with a sample database,
# and run examples/first-backup.ps1 (dump, restore, catalog, test restore, retention) in PowerShell 7 hosted by .NET.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prerequisites.sh
dotnet build PgBackup.sln -c Release -nologo -v q
dotnet run --project tools/PgBackup.Demo -c Release --no-build -- "$@"
