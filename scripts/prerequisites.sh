#!/usr/bin/env bash
# Makes sure this machine has what building, demonstrating and testing PgBackup needs, and installs what is missing:
#   - the .NET SDK (8.0 or later): only checked, never installed;
#   - the PostgreSQL server binaries (initdb, pg_ctl, pg_dump...): apt-get install postgresql postgresql-contrib, as
#     root on Debian/Ubuntu;
#   - a C toolchain for the native build of pgbackup-wal (NativeAOT: gcc or clang, libc6-dev, zlib1g-dev): apt-get as
#     root on Debian/Ubuntu; elsewhere, without one, the build warns and the module uses the portable tool;
#   - PowerShell 7.4 or later (pwsh): the PowerShell .NET tool, version 7.6.10, into ~/.dotnet/tools;
#   - with --tests, Azurite (for the blob repository tests): the npm package azurite 3.37.0 into
#     ~/.local/share/pgbackup-test/azurite;
#   - with --tests, PgBouncer, Patroni and etcd (for the tests of switchovers through a pooler and of Patroni clusters):
#     apt-get install pgbouncer patroni etcd-server as root on Debian/Ubuntu;
#   - Pester 5 (for the tests): the Pester NuGet package, version 5.9.1, into the user's PowerShell module folder, as
#     Install-Module -Scope CurrentUser would put it (no PowerShell Gallery is needed; where one is reachable,
#     Install-Module Pester -MaximumVersion 5.99 -Scope CurrentUser does the same).
# Anything that cannot be installed stops the run with a message that says what to install.
# Callers put ~/.dotnet/tools on PATH themselves (scripts/test.sh and scripts/demo.sh do).
set -euo pipefail

PWSH_VERSION=7.6.10
PESTER_VERSION=5.9.1
DOTNET_TOOLS="${DOTNET_CLI_HOME:-$HOME}/.dotnet/tools"
export PATH="$DOTNET_TOOLS:$PATH"

fail() {
  echo "prerequisites: $*" >&2
  exit 1
}

# Installs Debian/Ubuntu packages when this runs as root with apt-get; returns 1 otherwise, for the caller to say what
# to install. The first argument says why, for the log.
apt_install() {
  local why="$1"
  shift
  { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; } || return 1
  echo "$why: installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

if ! command -v dotnet >/dev/null 2>&1; then
  fail "the .NET SDK (8.0 or later) is required: https://learn.microsoft.com/dotnet/core/install/linux"
fi

have_postgres() {
  local bindir=""
  if command -v pg_config >/dev/null 2>&1; then bindir=$(pg_config --bindir 2>/dev/null || true); fi
  if [ -n "$bindir" ] && [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ]; then return 0; fi
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || compgen -G "/usr/pgsql-*/bin/pg_ctl" >/dev/null
}

if ! have_postgres; then
  if ! apt_install "PostgreSQL server binaries not found" postgresql postgresql-contrib; then
    echo "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them, for example:" >&2
    echo "  Debian/Ubuntu: sudo apt-get install -y postgresql postgresql-contrib" >&2
    echo "  RHEL/Fedora:   sudo dnf install -y postgresql-server postgresql-contrib" >&2
    echo "  macOS:         brew install postgresql@15" >&2
    exit 1
  fi
fi

# NativeAOT links with the system's C toolchain; the tests check the native tool, so on Debian/Ubuntu it is installed.
native_toolchain_ok() {
  { command -v clang >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1; } &&
    { [ -e /usr/lib/x86_64-linux-gnu/crt1.o ] || [ -e /usr/lib/aarch64-linux-gnu/crt1.o ] || [ -e /usr/lib/crt1.o ] || [ -e /usr/lib64/crt1.o ]; } &&
    { [ -e /usr/include/zlib.h ]; }
}

if [ "$(uname -s)" = Linux ] && ! native_toolchain_ok; then
  if ! apt_install "No C toolchain for the native build of pgbackup-wal" gcc libc6-dev zlib1g-dev; then
    echo "prerequisites: warning: no C toolchain, so the build makes only the portable pgbackup-wal (the tests of the native one will fail); install one: Debian/Ubuntu: sudo apt-get install -y gcc libc6-dev zlib1g-dev; RHEL/Fedora: sudo dnf install -y gcc glibc-devel zlib-devel" >&2
  fi
fi

# pwsh 7.4 or later; PowerShell's own version check, so a preview or a distribution build counts as well.
pwsh_ok() {
  command -v pwsh >/dev/null 2>&1 &&
    pwsh -NoProfile -NonInteractive -Command 'exit [int]($PSVersionTable.PSVersion -lt [version]"7.4")' >/dev/null 2>&1
}

if ! pwsh_ok; then
  echo "PowerShell 7.4 or later (pwsh) not found: installing the PowerShell .NET tool $PWSH_VERSION into $DOTNET_TOOLS"
  if dotnet tool list --global 2>/dev/null | grep -qi '^powershell '; then
    dotnet tool update --global PowerShell --version "$PWSH_VERSION" >/dev/null ||
      fail "'dotnet tool update --global PowerShell --version $PWSH_VERSION' failed. Install PowerShell 7.4 or later yourself: https://learn.microsoft.com/powershell/scripting/install/installing-powershell-on-linux"
  else
    dotnet tool install --global PowerShell --version "$PWSH_VERSION" >/dev/null ||
      fail "'dotnet tool install --global PowerShell --version $PWSH_VERSION' failed. Install PowerShell 7.4 or later yourself: https://learn.microsoft.com/powershell/scripting/install/installing-powershell-on-linux"
  fi
  pwsh_ok || fail "pwsh $PWSH_VERSION was installed into $DOTNET_TOOLS but does not run; install PowerShell 7.4 or later yourself."
fi

# Pester 5 (the suites are written for Pester 5's syntax; Pester 6 is not assumed).
pester_ok() {
  pwsh -NoProfile -NonInteractive -Command \
    'exit [int](-not (Get-Module -ListAvailable -Name Pester | Where-Object { $_.Version -ge [version]"5.0" -and $_.Version -lt [version]"6.0" }))' >/dev/null 2>&1
}

if ! pester_ok; then
  modules=$(pwsh -NoProfile -NonInteractive -Command '($env:PSModulePath -split [IO.Path]::PathSeparator)[0]')
  echo "Pester 5 not found: installing the Pester $PESTER_VERSION NuGet package into $modules/Pester/$PESTER_VERSION"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # A project that only downloads the package: the NuGet feeds this machine is configured with serve it, no Gallery needed.
  cat >"$work/download.csproj" <<EOF
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup><TargetFramework>net8.0</TargetFramework></PropertyGroup>
  <ItemGroup><PackageDownload Include="Pester" Version="[$PESTER_VERSION]" /></ItemGroup>
</Project>
EOF
  dotnet restore "$work/download.csproj" --packages "$work/packages" >"$work/restore.log" 2>&1 || {
    cat "$work/restore.log" >&2
    fail "downloading the Pester $PESTER_VERSION NuGet package failed (above). Install Pester 5 yourself: Install-Module Pester -MaximumVersion 5.99 -Scope CurrentUser"
  }
  [ -f "$work/packages/pester/$PESTER_VERSION/tools/Pester.psd1" ] ||
    fail "the Pester $PESTER_VERSION package has no tools/Pester.psd1; install Pester 5 yourself: Install-Module Pester -MaximumVersion 5.99 -Scope CurrentUser"
  mkdir -p "$modules/Pester"
  rm -rf "$modules/Pester/$PESTER_VERSION"
  cp -r "$work/packages/pester/$PESTER_VERSION/tools" "$modules/Pester/$PESTER_VERSION"
  pester_ok || fail "Pester $PESTER_VERSION was copied into $modules/Pester but pwsh does not find it; install Pester 5 yourself."
fi

# Azurite, the Azure Storage emulator, for the tests of blob repositories: the npm package, into a folder of this user's
# (no global install, no root needed). Node.js comes from the distribution when it is missing. Azurite 3.37 asks for
# Node 22 but runs on Node 20; its engine warning is expected.
AZURITE_VERSION=3.37.0
AZURITE_HOME="${XDG_DATA_HOME:-$HOME/.local/share}/pgbackup-test/azurite"
if [ "${1:-}" = "--tests" ] && [ -z "${PGBACKUP_AZURITE:-}" ] && [ ! -x "$AZURITE_HOME/node_modules/.bin/azurite-blob" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "npm not found: installing nodejs and npm with apt-get"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq nodejs npm >/dev/null
    else
      fail "Node.js and npm are needed to install Azurite for the blob repository tests: install them (for example 'sudo apt-get install -y nodejs npm'), or set PGBACKUP_AZURITE to an azurite-blob program."
    fi
  fi
  echo "Azurite not found: installing the npm package azurite@$AZURITE_VERSION into $AZURITE_HOME"
  mkdir -p "$AZURITE_HOME"
  npm install --prefix "$AZURITE_HOME" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null 2>"$AZURITE_HOME/npm-install.log" || {
    cat "$AZURITE_HOME/npm-install.log" >&2
    fail "'npm install azurite@$AZURITE_VERSION' failed (above). Install Azurite yourself and set PGBACKUP_AZURITE to its azurite-blob program."
  }
  [ -x "$AZURITE_HOME/node_modules/.bin/azurite-blob" ] || fail "azurite@$AZURITE_VERSION was installed into $AZURITE_HOME but has no azurite-blob program."
fi

# PgBouncer, for the tests of switchovers that move a pooler's clients (Switch-PgPrimary -PgBouncer): the distribution's
# package. The tests start their own on a loopback port; the package's service is not used.
pgbouncer_ok() { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; }
if [ "${1:-}" = "--tests" ] && ! pgbouncer_ok; then
  apt_install "PgBouncer not found" pgbouncer ||
    fail "PgBouncer is needed for the Switch-PgPrimary -PgBouncer tests: install it (Debian/Ubuntu: sudo apt-get install -y pgbouncer; RHEL/Fedora: sudo dnf install -y pgbouncer)."
fi

# Patroni and etcd, for the tests of clusters that Patroni runs: the distribution's packages (Patroni 3.0 talks to etcd's
# v2 API, which the tests switch on). The tests start their own on loopback ports; the packages' services are not used.
patroni_ok() { command -v patroni >/dev/null 2>&1 && command -v etcd >/dev/null 2>&1; }
if [ "${1:-}" = "--tests" ] && ! patroni_ok; then
  apt_install "Patroni or etcd not found" patroni etcd-server ||
    fail "Patroni and etcd are needed for the Patroni tests: install them (Debian/Ubuntu: sudo apt-get install -y patroni etcd-server)."
fi
