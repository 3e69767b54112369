#!/usr/bin/env bash
# A new crate outside this workspace (testdata/newcomer): depends on anchor-runtime and
# anchor-testing by path, generates its module from its tasks.yaml with this checkout's
# `anchor`, and runs a test that enqueues, drains and asserts with `cargo test`, on the
# PostgreSQL server binaries of the machine only. Run by scripts/test.sh.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d "${TMPDIR:-/tmp}/anchor-newcomer.XXXXXX")"
trap 'rm -rf "$dir"' EXIT
cp -r "$repo/testdata/newcomer/." "$dir/"
sed "s|@REPO@|$repo|g" "$dir/Cargo.toml.in" > "$dir/Cargo.toml"
rm "$dir/Cargo.toml.in"
# The workspace's lockfile pins the same versions (cargo drops what this crate does not
# use), so the build needs nothing the workspace build did not fetch.
cp "$repo/Cargo.lock" "$dir/Cargo.lock"
target="${CARGO_TARGET_DIR:-$repo/target}"
cargo run --quiet --locked --manifest-path "$repo/Cargo.toml" -p anchor-cli -- \
  generate --spec "$dir/api/tasks.yaml" --out "$dir/src/taskgen"
CARGO_TARGET_DIR="$target/newcomer" cargo test --offline --manifest-path "$dir/Cargo.toml"
