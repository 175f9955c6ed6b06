#!/usr/bin/env bash
# The standard benchmark suite of issue 7, on SQLite and on PostgreSQL.
#
# Usage: bench/run.sh [extra warden-loadgen suite options, e.g. --duration 20s]
#
# Builds the release `warden` and `warden-loadgen`, runs `warden-loadgen
# suite` once on SQLite and once on PostgreSQL (a fresh database per phase,
# created and dropped by the suite), and writes both markdown tables, with
# the date, machine and commit, to bench/results.md.
#
# Environment:
#   CARGO_TARGET_DIR   build directory (default: target/ of the checkout)
#   BENCH_PG_URL       PostgreSQL admin URL
#                      (default: postgres://postgres@127.0.0.1:5432/postgres)
#   BENCH_SKIP_PG=1    SQLite only
#   BENCH_SOAK=5m      also run the soak of issue 8 on PostgreSQL for that long
#                      and append its result
#   BENCH_OUT          where to write the results (default: bench/results.md)
#
# Run it on a quiet machine: the load generator and the server share the
# cores, and anything else running skews the numbers.
set -Eeuo pipefail

cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
OUT="${BENCH_OUT:-bench/results.md}"

cargo build --release --locked --workspace --bins
LOADGEN="$TARGET_DIR/release/warden-loadgen"
WARDEN="$TARGET_DIR/release/warden"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- . ":(exclude)$OUT" 2>/dev/null)" ]; then
  commit="$commit (with uncommitted changes)"
fi

"$LOADGEN" suite --warden-bin "$WARDEN" --markdown "$work/sqlite.md" "$@"

if [ "${BENCH_SKIP_PG:-0}" != 1 ]; then
  "$LOADGEN" suite --warden-bin "$WARDEN" --postgres-url "$PG_URL" --markdown "$work/postgres.md" "$@"
fi

if [ -n "${BENCH_SOAK:-}" ]; then
  # The soak's verdict is part of the results; a failed soak still writes them.
  "$LOADGEN" soak --warden-bin "$WARDEN" --postgres-url "$PG_URL" \
    --duration "$BENCH_SOAK" --markdown "$work/soak.md" || true
fi

{
  echo "# warden benchmark results"
  echo
  echo "Written by \`bench/run.sh\` at commit $commit. Targets and ceilings: issue 7;"
  echo "how they are measured: \`warden-loadgen suite --help\` and \`loadgen/src/suite.rs\`."
  echo
  cat "$work/sqlite.md"
  if [ -f "$work/postgres.md" ]; then
    echo
    cat "$work/postgres.md"
  fi
  if [ -f "$work/soak.md" ]; then
    echo
    cat "$work/soak.md"
  fi
} >"$OUT"
echo "results written to $OUT"
