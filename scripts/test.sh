#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: unit, snapshot, property, CLI and
# integration tests against throwaway PostgreSQL clusters that the tests start themselves;
# then the publishing checks (`cargo doc` with warnings denied, `cargo package` with its
# verify build of the crates users install or depend on).
#
# It first makes sure the machine has what the tests need:
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH;
#   - sudo, when running as root: the server refuses to run as root, so the test harness
#     starts it as the `postgres` OS user;
#   - libfaketime, with which the chaos suite's clock-skew scenario shifts worker clocks;
#   - PgBouncer, which the connection tests start in transaction pooling mode in front of
#     a throwaway cluster.
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
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  need_apt+=(pgbouncer)
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
# The workspace build above has anchor-runtime's `sqlx` feature on (the sqlx example turns
# it on for everyone); a generated module must also compile without it, as in a service
# that does not use sqlx.
cargo check --locked -p quickstart
# A new crate outside the workspace: generate, enqueue, drain and assert with anchor-testing.
bash scripts/newcomer.sh

# Publishing checks: the API docs build without warnings (broken intra-doc links, missing
# docs), and the crates a user installs or depends on package and build from their .crate
# alone, each with only its own features (cargo package's verify build; path dependencies
# between them go through cargo's temporary local registry). `--allow-dirty` because this
# script also runs on uncommitted work: nothing is published. Offline, set
# CARGO_NET_OFFLINE=true (the registry cache must be warm).
for link in anchor-codegen/templates:../templates anchor-runtime/migrations:../migrations; do
  # One copy of each file: the crate-local folder is a symlink to the top-level one.
  if [ "$(readlink "${link%%:*}")" != "${link#*:}" ]; then
    echo "scripts/test.sh: ${link%%:*} must be a symlink to ${link#*:}" >&2
    exit 1
  fi
done
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --locked --no-deps

published=(anchor-core anchor-spec anchor-codegen anchor-runtime anchor-testing anchor-cli)
packages=()
for crate in "${published[@]}"; do packages+=(-p "$crate"); done
# cargo takes a registry crate of a given name and version to be immutable, the temporary
# registry's too: a dependency's sources unpacked and built by an earlier run would be
# reused, and a crate verified against its dependencies' old code. So drop both first: the
# unpacked copies (in cargo's home, under the path-named registries) and the builds, in a
# target dir of the check's own so the tests' builds stay (its other dependencies stay
# cached: 2 to 2¼ minutes cold on 2 cores, about 25 s warm).
package_target="${CARGO_TARGET_DIR:-target}/package-check"
for crate in "${published[@]}"; do
  rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/"$crate"-[0-9]*
done
cargo clean --quiet --target-dir "$package_target" "${packages[@]}"
cargo package --locked --allow-dirty --target-dir "$package_target" "${packages[@]}"
