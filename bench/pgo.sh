#!/usr/bin/env bash
# Builds tokentap with profile-guided optimisation (PGO): an instrumented build serves a few
# seconds of every kind of traffic it meters (OpenAI chat, streamed and not, completions,
# embeddings, Anthropic messages, the Responses API) from bench_upstream, at the default log
# level, and the release build is then optimised with that profile (hot paths laid out and
# inlined as they run). Then BOLT, a post-link optimiser, lays the machine code out again from a
# second run of the same traffic: hot blocks of every function together, cold ones apart, the
# functions that call each other side by side. The proxy's path through hyper, tokio and the
# meter is larger than the instruction cache, and that is what it spares.
#
#   bench/pgo.sh                 -> target/pgo/tokentap (and target/pgo/BUILD, what was done)
#   BOLT=0 bench/pgo.sh          -> PGO only
#
# Needs llvm-profdata of the LLVM major version rustc uses (`rustc -vV`): rustup's
# llvm-tools component, or Debian's llvm-N package; and for BOLT llvm-bolt and merge-fdata of
# Debian's bolt-N. Both are installed here when run as root; without BOLT the PGO build is
# kept. Needs oha for the load (bench/run.sh installs it). Takes about 7 minutes on 2 cores.
# See README "Performance".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:$PATH"
log() { echo "pgo: $*" >&2; }
die() { log "$*"; exit 1; }

llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
find_profdata() {
    for candidate in \
        "$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata" \
        "/usr/lib/llvm-$llvm_major/bin/llvm-profdata"; do
        if [[ -x $candidate ]]; then echo "$candidate"; return; fi
    done
}
profdata=$(find_profdata)
if [[ -z $profdata && $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing llvm-$llvm_major for llvm-profdata (apt-get install -y llvm-$llvm_major)"
    { apt-get update -qq && apt-get install -y -qq "llvm-$llvm_major"; } >/dev/null 2>&1 || true
    profdata=$(find_profdata)
fi
[[ -n $profdata ]] || die "no llvm-profdata for LLVM $llvm_major: rustup component add llvm-tools, or apt-get install llvm-$llvm_major"
bolt_dir=/usr/lib/llvm-$llvm_major/bin
if [[ ${BOLT:-1} == 1 && ! -x $bolt_dir/llvm-bolt && $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing bolt-$llvm_major for llvm-bolt (apt-get install -y bolt-$llvm_major)"
    { apt-get update -qq && apt-get install -y -qq "bolt-$llvm_major"; } >/dev/null 2>&1 || true
fi
command -v oha >/dev/null || die "oha is needed for the load (cargo install oha --locked)"
command -v python3 >/dev/null || die "python3 is needed (to pick free ports)"

WORK=$ROOT/target/pgo-work
rm -rf "$WORK/profiles"
mkdir -p "$WORK/profiles"

log "instrumented build (target/pgo-work)"
# Build scripts are instrumented too and write their own profiles as they run: those go to
# build-profiles, not into tokentap's.
RUSTFLAGS="-Cprofile-generate=$WORK/build-profiles" \
    cargo build --release --bin tokentap --target-dir "$WORK/target"
cargo build --release --example bench_upstream

pids=()
stop_all() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; }
trap stop_all EXIT

target/release/examples/bench_upstream --listen 127.0.0.1:0 >"$WORK/upstream.out" &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$WORK/upstream.out" && break; sleep 0.1; done
upstream=$(sed -n 's/.*listening on //p' "$WORK/upstream.out")
[[ -n $upstream ]] || die "bench_upstream did not start"

chat='{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"Say hello"}]}'
stream20='{"model":"gpt-4o-mini","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"Say hello"}]}'
stream200='{"model":"gpt-4o-mini","max_tokens":200,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello"}]}'
completion='{"model":"gpt-3.5-turbo-instruct","max_tokens":20,"stream":true,"prompt":"Say hello"}'
embedding='{"model":"text-embedding-3-small","input":"The quick brown fox jumps over the lazy dog"}'
messages='{"model":"claude-sonnet-4-5","max_tokens":20,"messages":[{"role":"user","content":"Say hello"}]}'
messages_stream='{"model":"claude-sonnet-4-5","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"Say hello"}]}'
responses='{"model":"gpt-4o-mini","max_output_tokens":20,"stream":true,"input":"Say hello"}'

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Serves the training traffic through the tokentap binary $1 on both runtimes: one CPU (the
# single-threaded one, as the benchmark pins it) and all CPUs; at the default log level, which
# writes a line per request (text, then JSON): code a profile never ran is laid out as cold.
# The binary writes its profile as it exits. Returns non-zero, with the reason logged, if the
# binary does not start or an answer is not a 200.
train() {
    local binary=$1 run cpus log_format port admin tokentap load concurrency answered statuses
    for run in "0 text" "0-$(($(nproc) - 1)) json"; do
        read -r cpus log_format <<<"$run"
        port=$(free_port)
        admin=$(free_port)
        taskset -c "$cpus" "$binary" --upstream "$upstream" \
            --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
            --log-level info --log-format "$log_format" 2>/dev/null &
        tokentap=$!
        pids+=("$tokentap")
        for _ in $(seq 100); do curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
        if ! curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null; then
            log "the instrumented tokentap did not start"
            kill -TERM "$tokentap" 2>/dev/null || true
            return 1
        fi
        log "training on CPUs $cpus, $log_format logs"
        for load in "v1/chat/completions:$chat" "v1/chat/completions:$stream20" \
            "v1/chat/completions:$stream200" "v1/completions:$completion" \
            "v1/embeddings:$embedding" "v1/messages:$messages" "v1/messages:$messages_stream" \
            "v1/responses:$responses"; do
            for concurrency in 1 16 64; do
                answered=$(oha --no-tui -z 1s -c "$concurrency" -m POST -T application/json \
                    -d "${load#*:}" "http://127.0.0.1:$port/${load%%:*}")
                # Only 200s: a profile of error paths would lay out the wrong code.
                statuses=$(grep -E '^ *\[[0-9]{3}\] [0-9]+ responses' <<<"$answered" || true)
                if [[ -z $statuses ]] || grep -vq '\[200\]' <<<"$statuses"; then
                    log "not every answer to /${load%%:*} was a 200 during training"
                    kill -TERM "$tokentap" 2>/dev/null || true
                    return 1
                fi
            done
        done
        curl -fs "http://127.0.0.1:$admin/metrics" >/dev/null
        log "records: $(curl -fs "http://127.0.0.1:$admin/api/counts")"
        kill -TERM "$tokentap"
        wait "$tokentap" || true
    done
}

LLVM_PROFILE_FILE="$WORK/profiles/tokentap-%p.profraw" train "$WORK/target/release/tokentap" \
    || die "PGO training failed"

"$profdata" merge -o "$WORK/tokentap.profdata" "$WORK/profiles"
log "optimised build (target/pgo-work/target-use)"
# Relocations kept in the file (not loaded): BOLT needs them to move code.
RUSTFLAGS="-Cprofile-use=$WORK/tokentap.profdata -Clink-arg=-Wl,--emit-relocs" \
    cargo build --release --bin tokentap --target-dir "$WORK/target-use"
optimised=$WORK/target-use/release/tokentap
mkdir -p target/pgo

# BOLT's layout of the PGO build into target/pgo/tokentap; non-zero, with the reason logged, if
# any step fails (the PGO build is then kept: a failed layout loses nothing).
bolt_layout() {
    local dir=$WORK/bolt
    rm -rf "$dir"
    mkdir -p "$dir"
    log "BOLT: instrumented copy"
    "$bolt_dir/llvm-bolt" "$optimised" -o "$dir/instrumented" -instrument \
        -instrumentation-file="$dir/profile" -instrumentation-file-append-pid \
        >"$dir/instrument.log" 2>&1 || { log "llvm-bolt -instrument failed: $dir/instrument.log"; return 1; }
    train "$dir/instrumented" || return 1
    "$bolt_dir/merge-fdata" "$dir"/profile.*.fdata >"$dir/profile.fdata" 2>"$dir/merge.log" \
        || { log "merge-fdata failed: $dir/merge.log"; return 1; }
    log "BOLT: laying the code out (target/pgo/tokentap)"
    "$bolt_dir/llvm-bolt" "$optimised" -o "$dir/tokentap" -data="$dir/profile.fdata" \
        -reorder-blocks=ext-tsp -reorder-functions=cdsort -split-functions -split-all-cold \
        -split-eh -dyno-stats >"$dir/optimise.log" 2>&1 \
        || { log "llvm-bolt failed: $dir/optimise.log"; return 1; }
    cp "$dir/tokentap" target/pgo/tokentap
}

if [[ ${BOLT:-1} == 1 && -x $bolt_dir/llvm-bolt && -x $bolt_dir/merge-fdata ]]; then
    if bolt_layout; then
        echo "PGO and BOLT build, bench/pgo.sh" >target/pgo/BUILD
    else
        cp "$optimised" target/pgo/tokentap
        echo "PGO build, bench/pgo.sh (BOLT failed: target/pgo-work/bolt)" >target/pgo/BUILD
    fi
else
    [[ ${BOLT:-1} == 1 ]] && log "no llvm-bolt and merge-fdata in $bolt_dir (bolt-$llvm_major): PGO only"
    cp "$optimised" target/pgo/tokentap
    echo "PGO build, bench/pgo.sh" >target/pgo/BUILD
fi
log "done: target/pgo/tokentap ($(cat target/pgo/BUILD))"
