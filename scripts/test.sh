#!/usr/bin/env bash
# All tests: engine unit and integration tests against real PostgreSQL clusters, and the built module hosted in
# PowerShell 7 (pipelines, -WhatIf, errors, help and convention checks); then, where pwsh and Pester 5 exist,
# the Pester suites in tests/pester through build.ps1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prerequisites.sh
dotnet build PgBackup.sln -c Release -nologo -v q
dotnet test PgBackup.sln -c Release --no-build -nologo
if command -v pwsh >/dev/null 2>&1; then
  if pwsh -NoProfile -NonInteractive -Command 'if (Get-Module -ListAvailable Pester | Where-Object Version -ge 5.0) { exit 0 } else { exit 1 }'; then
    pwsh -NoProfile -NonInteractive -File ./build.ps1 -Task Test -Configuration Release -SkipDotnetTests
  else
    echo "pwsh is here but Pester 5 is not: the Pester suites did not run. Install-Module Pester -MinimumVersion 5.0 -Scope CurrentUser"
  fi
fi
