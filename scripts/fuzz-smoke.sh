#!/usr/bin/env bash
# A short run of every cargo-fuzz target from its seeds. Needs a nightly toolchain (libFuzzer
# instrumentation); where none is installed the smoke run is skipped with a message, never
# silently, except under CI (CI=true), where a missing nightly fails the run: CI must fuzz.
# Seconds per target: $FUZZ_SECONDS (default 20).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  if [ "${CI:-}" = "true" ]; then
    echo "fuzz-smoke: FAILED: no nightly toolchain, and CI must run the fuzz targets" >&2
    exit 1
  fi
  echo "fuzz-smoke: skipped: no nightly toolchain on this machine"
  exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked --quiet
fi

seconds="${FUZZ_SECONDS:-20}"
for target in $(cargo +nightly fuzz list); do
  corpus="target/smoke-corpus/$target"
  mkdir -p "$corpus"
  echo "fuzz-smoke: $target for ${seconds}s"
  cargo +nightly fuzz run "$target" "$corpus" "seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=0 2>&1 | tail -n 3
done
