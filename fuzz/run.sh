#!/usr/bin/env bash
# Builds warden's fuzz targets and runs each for a bounded time.
#
# Usage: fuzz/run.sh [seconds-per-target] [target...]
#   seconds-per-target  how long each target runs (default 60)
#   target...           which targets (default: all of `cargo fuzz list`)
#
# Each target starts from a scratch copy of its seed corpus in
# fuzz/corpus/<target>/, so the committed seeds never change. The script
# exits non-zero if any target crashes (a panic, a failed property, a
# timeout or running out of memory), after printing the crashing input's
# path and its bytes in base64. To replay one with the same build, from fuzz/:
#   RUSTC_BOOTSTRAP=1 RUSTFLAGS=-Coverflow-checks=on cargo fuzz run -O -s none \
#     --target-dir "$WARDEN_FUZZ_TARGET_DIR" <target> <path>
# (`cargo fuzz fmt` with the same arguments prints the input as the target
# saw it).
#
# It needs only the stable toolchain. Without a sanitizer cargo-fuzz passes
# stable flags only; ASan needs `-Zsanitizer`, which RUSTC_BOOTSTRAP=1 lets
# through on stable.
#
# Environment:
#   WARDEN_FUZZ_TOOLS       where cargo-fuzz is installed, pinned
#                           (default /var/tmp/warden-ci/tools/cargo-fuzz)
#   WARDEN_FUZZ_TARGET_DIR  build directory of the fuzz targets
#                           (default /var/tmp/warden-ci/fuzz-target)
#   WARDEN_FUZZ_ARTIFACTS   where crashing inputs are kept
#                           (default fuzz/artifacts)
#   WARDEN_FUZZ_SANITIZER   none (default: the code under test is safe
#                           Rust, and ASan slows every execution) or address
set -Eeuo pipefail

CARGO_FUZZ_VERSION=0.13.2

cd "$(dirname "$0")"
FUZZ_DIR=$PWD
SECONDS_PER_TARGET=${1:-60}
shift || true
if ! [[ $SECONDS_PER_TARGET =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: fuzz/run.sh [seconds-per-target] [target...]" >&2
  exit 2
fi
TOOLS=${WARDEN_FUZZ_TOOLS:-/var/tmp/warden-ci/tools/cargo-fuzz}
TARGET_DIR=${WARDEN_FUZZ_TARGET_DIR:-/var/tmp/warden-ci/fuzz-target}
ARTIFACTS=${WARDEN_FUZZ_ARTIFACTS:-$FUZZ_DIR/artifacts}
SANITIZER=${WARDEN_FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1
export PATH="$TOOLS/bin:$PATH"

started=$SECONDS
say() { printf '=== fuzz: %s (%ds)\n' "$*" "$((SECONDS - started))"; }

if [ "$(cargo-fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
  # Its own temporary build directory, not the project's.
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --force \
    --root "$TOOLS" --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi

# Optimised like the release binary, without debug assertions (with them
# some dependencies switch to other code: the password block-list becomes
# a linear scan, 100 times slower, that production never runs), but with
# overflow checks, which are what catch arithmetic bugs.
export RUSTFLAGS="${RUSTFLAGS:-} -Coverflow-checks=on"
build=(--release --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR")

# The build: every target at once, so dependencies are built once.
say "building (sanitizer: $SANITIZER)"
cargo fuzz build "${build[@]}"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
crashes=()
for target in "${targets[@]}"; do
  corpus="$scratch/corpus/$target"
  mkdir -p "$corpus" "$ARTIFACTS/$target"
  if [ -d "corpus/$target" ]; then
    cp -R "corpus/$target/." "$corpus/"
  fi
  before=$(find "$ARTIFACTS/$target" -type f | sort)
  say "running $target for ${SECONDS_PER_TARGET}s"
  status=0
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: 2 GiB is a leak.
  cargo fuzz run "${build[@]}" "$target" "$corpus" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$ARTIFACTS/$target/" -print_final_stats=1 \
    >"$scratch/$target.log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)' \
    "$scratch/$target.log" || true
  new=$(comm -13 <(echo "$before") <(find "$ARTIFACTS/$target" -type f | sort) | sed '/^$/d')
  if [ "$status" -ne 0 ] || [ -n "$new" ]; then
    echo "FAIL: $target exited with status $status; the end of its log:" >&2
    tail -n 60 "$scratch/$target.log" >&2
    if [ -z "$new" ]; then
      crashes+=("$target: no input saved (see the log above)")
    fi
    while IFS= read -r input; do
      [ -n "$input" ] || continue
      echo "crashing input: $input" >&2
      echo "  base64: $(base64 -w0 "$input")" >&2
      crashes+=("$target: $input")
    done <<<"$new"
  fi
done

if [ ${#crashes[@]} -gt 0 ]; then
  say "FAILED"
  printf '  %s\n' "${crashes[@]}" >&2
  exit 1
fi
say "every target ran ${SECONDS_PER_TARGET}s without a crash"
