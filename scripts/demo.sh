#!/usr/bin/env bash
# The main job, end to end on a fresh machine: installs what is missing (scripts/prerequisites.sh), builds the module,
# starts a throwaway PostgreSQL with a sample database, and runs examples/first-backup.ps1 (dump, restore, catalog,
# test restore, retention) in pwsh, which shows what a user sees. Give another script to run that one instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prerequisites.sh
export PATH="${DOTNET_CLI_HOME:-$HOME}/.dotnet/tools:$PATH"
dotnet build PgBackup.sln -c Release -nologo -v q
exec pwsh -NoProfile -NonInteractive -File tools/demo.ps1 "$@"
