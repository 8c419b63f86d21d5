#!/usr/bin/env bash
# All tests: installs what is missing (scripts/prerequisites.sh: PostgreSQL, pwsh, Pester, Azurite, PgBouncer, Patroni, etcd), builds the module, then runs
# the engine tests (xUnit, against real PostgreSQL clusters) and the Pester suites in real pwsh (every cmdlet as a user
# runs it, the module's conventions, and the fault matrix of docs/reliability.md). The output ends with both summaries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prerequisites.sh --tests
export PATH="${DOTNET_CLI_HOME:-$HOME}/.dotnet/tools:$PATH"
exec pwsh -NoProfile -NonInteractive -OutputFormat Text -File ./build.ps1 -Task Test -Configuration Release "$@"
