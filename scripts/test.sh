#!/usr/bin/env bash
# The test command (README): installs what the tests need, then formatting, lints and the whole
# test suite. Works from a fresh clone on a fresh Debian machine, as root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/postgres.sh
DIALTONE_PYTHON="$(scripts/python-env.sh)"
export DIALTONE_PYTHON
DIALTONE_PIPECAT_PYTHON="$(scripts/pipecat-env.sh)"
export DIALTONE_PIPECAT_PYTHON

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# Tests needing what a machine may lack are #[ignore]d; they run here where the machine has it.
netns_probe="dialtone-probe-$$"
if why=$(ip netns add "$netns_probe" 2>&1 && ip netns del "$netns_probe" 2>&1); then
  cargo test --locked -p dialtone-media --test netns -- --ignored
else
  echo "test: NOT RUN: the network-namespace tests (crates/media/tests/netns.rs): this machine cannot create a network namespace: $why"
fi
# The main job, asserted: the demo exits non-zero unless its record is a healthy call's.
timeout 300 cargo run --locked -q -p dialtone-daemon --bin dialtone -- demo > /dev/null
scripts/fuzz-smoke.sh
