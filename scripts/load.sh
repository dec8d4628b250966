#!/usr/bin/env bash
# The heavy load tier: 2,000 concurrent paced streams, 1,000,000 short requests and a 10-minute
# soak with mixed endings, all on loopback, in release mode, with every invariant checked after
# each phase (tests/load.rs). CI runs the light tier as part of `cargo test --all-targets`.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
TOKENTAP_LOAD=heavy cargo test --release --test load -- --nocapture
