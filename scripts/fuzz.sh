#!/usr/bin/env bash
# Fuzzes tokentap with cargo-fuzz (libFuzzer): each target runs for a bounded time, one
# process at a time, starting from the committed seeds in fuzz/seeds/<target>/.
#
#   scripts/fuzz.sh                      # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh meter sse_parser
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 60)
#   FUZZ_SANITIZER  address (default) or none
#   FUZZ_TIMEOUT    seconds one input may take before libFuzzer calls it a hang (default 10)
#
# The summary gives, per target: executions, seconds spent fuzzing (libFuzzer's own count)
# and wall seconds (including a rebuild when src/ changed), coverage and corpus size.
#
# Works on the stable toolchain: cargo-fuzz's nightly-only rustc flags are unlocked with
# RUSTC_BOOTSTRAP=1. Exits non-zero if any target crashed (or hung, or ran out of memory), and
# prints where the input that did it was saved. Logs: fuzz/artifacts/<target>/run.log.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
SANITIZER=${FUZZ_SANITIZER:-address}
TIMEOUT=${FUZZ_TIMEOUT:-10}
ALL_TARGETS=(sse_parser meter usage_normalizer config_loader request_inspect)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# -a: debug assertions (integer overflow checks) in tokentap too.
FLAGS=(-s "$SANITIZER" -a)

echo "==> building fuzz targets (sanitizer: $SANITIZER)"
cargo fuzz build "${FLAGS[@]}"

failed=()
summary=()
for target in "${TARGETS[@]}"; do
    corpus="$ROOT/fuzz/corpus/$target"
    artifacts="$ROOT/fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "$ROOT/fuzz/seeds/$target" ]; then
        cp -n "$ROOT/fuzz/seeds/$target/"* "$corpus/" 2>/dev/null || true
    fi
    log="$artifacts/run.log"
    echo "==> fuzzing $target for ${SECONDS_PER_TARGET}s (log: ${log#"$ROOT"/})"
    start=$(date +%s)
    set +e
    # One process only (no -jobs/-workers fork mode): the machine has 2 cores.
    cargo fuzz run "${FLAGS[@]}" "$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" \
        -timeout="$TIMEOUT" \
        -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [ -n "$execs" ] || execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
    fuzz_secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    units=$(find "$corpus" -type f | wc -l)
    if [ $rc -eq 0 ]; then
        status=ok
    else
        status="FAILED (exit $rc)"
        failed+=("$target")
        echo "!!! $target failed; last lines of the log:"
        grep -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY' "$log" | head -5 || true
        tail -n 25 "$log"
        artifact=$(sed -n "s/.*Test unit written to \(.*\)$/\1/p" "$log" | tail -1)
        if [ -n "$artifact" ]; then
            echo "!!! input saved at: $artifact"
            echo "!!! reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${FLAGS[*]} $target $artifact"
            echo "!!! base64: $(base64 -w0 "$artifact")"
        fi
    fi
    summary+=("$(printf '%-18s %-10s execs=%-10s fuzz_s=%-5s wall_s=%-5s cov=%-6s corpus=%-6s' \
        "$target" "$status" "${execs:-?}" "${fuzz_secs:-?}" "$elapsed" "${cov:-?}" "$units")")
done

echo
echo "==> summary (${SECONDS_PER_TARGET}s per target, sanitizer $SANITIZER)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs under fuzz/artifacts/<target>/)"
    exit 1
fi
