#!/usr/bin/env bash
# Makes sure the .NET SDK and the PostgreSQL server binaries (initdb, pg_ctl, pg_dump...) are present.
# Installs PostgreSQL with apt-get when running as root on Debian/Ubuntu; otherwise says what to install.
set -euo pipefail

if ! command -v dotnet >/dev/null 2>&1; then
  echo "The .NET SDK (8.0 or later) is required: https://learn.microsoft.com/dotnet/core/install/linux" >&2
  exit 1
fi

have_postgres() {
  local bindir=""
  if command -v pg_config >/dev/null 2>&1; then bindir=$(pg_config --bindir 2>/dev/null || true); fi
  if [ -n "$bindir" ] && [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ]; then return 0; fi
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || compgen -G "/usr/pgsql-*/bin/pg_ctl" >/dev/null
}

if ! have_postgres; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "PostgreSQL server binaries not found: installing postgresql and postgresql-contrib with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql postgresql-contrib >/dev/null
  else
    echo "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them, for example:" >&2
    echo "  Debian/Ubuntu: sudo apt-get install -y postgresql postgresql-contrib" >&2
    echo "  RHEL/Fedora:   sudo dnf install -y postgresql-server postgresql-contrib" >&2
    echo "  macOS:         brew install postgresql@15" >&2
    exit 1
  fi
fi
