#!/usr/bin/env bash
# anchor's row in the peers' benchmark (bench-peers/run-peers.sh): follows
# extra.d/template.sh.example. Run it there with EXTRA_DIR pointing at this folder:
#   EXTRA_DIR=/path/to/anchor/bench N=50000 ./run-peers.sh
# Env it gets: DATABASE_URL N C LAT_N MODE TIMEOUT_S (MODE=throughput|latency|mixed).
# ANCHOR_BENCH_ARGS adds flags, e.g. "--completed-rows 1000000" or "--workers 2".
# It prints exactly one PEER=anchor line on stdout (build output goes to stderr).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${ANCHOR_BENCH_BIN:-$ROOT/target/release/anchor-bench}
if [ ! -x "$BIN" ]; then
  # The first build takes minutes on a small machine: build before run-peers.sh, whose
  # per-driver timeout would otherwise cut it short.
  (cd "$ROOT" && cargo build --release -q -p anchor-bench) >&2
fi
: "${DATABASE_URL:?DATABASE_URL is not set}"
# shellcheck disable=SC2086 # ANCHOR_BENCH_ARGS is a list of flags
exec "$BIN" --url "$DATABASE_URL" --mode "${MODE:-throughput}" --jobs "${N:-20000}" \
  --concurrency "${C:-10}" --lat-n "${LAT_N:-200}" --timeout-s "${TIMEOUT_S:-170}" \
  ${ANCHOR_BENCH_ARGS:-}
