#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: unit, snapshot, property, CLI and
# integration tests against throwaway PostgreSQL clusters that the tests start themselves.
#
# It first makes sure the machine has what the tests need:
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH;
#   - sudo, when running as root: the server refuses to run as root, so the test harness
#     starts it as the `postgres` OS user;
#   - libfaketime, with which the chaos suite's clock-skew scenario shifts worker clocks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
if ! command -v initdb >/dev/null 2>&1; then
  # Debian installs the server binaries outside PATH; link them in when present.
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ]; then
    export PATH="$pgbin:$PATH"
  else
    need_apt+=(postgresql)
  fi
fi
if [ "$(id -u)" = 0 ] && ! command -v sudo >/dev/null 2>&1; then
  need_apt+=(sudo)
fi
faketime=${FAKETIME_LIB:-}
for lib in /usr/lib/faketime/libfaketime.so.1 /usr/local/lib/faketime/libfaketime.so.1 \
           /usr/lib/*/faketime/libfaketime.so.1; do
  if [ -f "$lib" ]; then faketime=$lib; fi
done
if [ -z "$faketime" ]; then
  need_apt+=(libfaketime)
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1 && [[ ! " ${need_apt[*]} " =~ " postgresql " ]]; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: missing ${need_apt[*]}; install them (e.g. apt-get install ${need_apt[*]}) and rerun" >&2
    exit 2
  fi
  echo "scripts/test.sh: installing ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  if ! command -v initdb >/dev/null 2>&1; then
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    export PATH="$pgbin:$PATH"
  fi
fi

cargo test --workspace --locked --all-targets
cargo test --workspace --locked --doc
