#!/usr/bin/env bash
# The README's main-job command: installs what is missing, then places one real call end to end
# on this machine (daemon on embedded SQLite → SIP → SIPp as the callee → RTP both ways) and
# prints the final call record.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo run --release -q -p dialtone-daemon --bin dialtone -- demo
