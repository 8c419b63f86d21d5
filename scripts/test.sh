#!/usr/bin/env bash
# All tests: engine unit and integration tests against real PostgreSQL clusters, and the built module hosted in
# PowerShell 7 (pipelines, -WhatIf, errors, help and convention checks). Pester suites run from build.ps1 where pwsh exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prerequisites.sh
dotnet build PgBackup.sln -c Release -nologo -v q
dotnet test PgBackup.sln -c Release --no-build -nologo
if command -v pwsh >/dev/null 2>&1; then
  pwsh -NoProfile -NonInteractive -File ./build.ps1 -Task Test -Configuration Release -SkipDotnetTests
fi
