#!/usr/bin/env bash
# Side-by-side benchmark: the upstream called directly (the limit), tokentap, nginx as a plain
# reverse proxy, and the LiteLLM proxy, all in front of the same fast upstream, in one run.
# Run by hand on a quiet machine (never in CI). See bench/README.md.
#
#   bench/run.sh            full mode: 3 rounds of 4 s per cell, concurrency 1 16 64 256, 10,000
#                           streams, the meter alone (~26 min with the PGO and BOLT build)
#   QUICK=1 bench/run.sh    quick check: 1 round of 2 s, concurrency 1 16, fewer scenarios, 500 streams
#
# Environment knobs (defaults in parentheses, full / QUICK):
#   DURATION=4            seconds per measured run (4 / 2)
#   ROUNDS=3              runs per cell, the targets in turn (3 / 1)
#   CONCURRENCY="1 16"    connection counts ("1 16 64 256" / "1 16")
#   SCENARIOS="..."       subset of: chat stream-20 stream-200 paced-10ms embeddings memory
#   TARGETS="..."         subset of: direct tokentap nginx litellm (all)
#   MEM_STREAMS=N         concurrent streams of the memory test (10000 / 500)
#   TOOL=oha|wrk          force a load tool (oha, installed with cargo if missing; else wrk)
#   NGINX=0, LITELLM=0    leave nginx or LiteLLM out (no install either)
#   METER=0               leave out the meter alone (cargo bench --bench meter, pinned)
#   SKIP_BUILD=1          use the binaries already in target/release (and target/pgo)
#   PGO=0                 measure the plain release build, not the PGO one (bench/pgo.sh)
#   BASE_PORT=18900       loopback ports BASE_PORT+1 .. BASE_PORT+31 are used
# Results: bench/RESULTS.md, plus raw data in bench/out/ (gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
export PATH="$HOME/.cargo/bin:$PATH"
export QUICK=${QUICK:-0}
[[ $QUICK == 1 ]] || QUICK=0

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

command -v python3 >/dev/null || die "python3 is needed"
mkdir -p "$OUT"

# Every process of this run is started by bench/harness.py, which stops them all on exit. This
# trap only covers a harness that is itself killed: it stops its process group.
harness_pid=
cleanup() {
    if [[ -n $harness_pid ]] && kill -0 "$harness_pid" 2>/dev/null; then
        kill -TERM "$harness_pid" 2>/dev/null || true
        wait "$harness_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Many concurrent streams need many file descriptors: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- build -------------------------------------------------------------------------------------
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building (cargo build --release --examples --bins)"
    cargo build --release --examples --bins
fi
for bin in target/release/tokentap target/release/examples/bench_upstream target/release/examples/bench_client; do
    [[ -x $bin ]] || die "missing $bin (run without SKIP_BUILD=1)"
done

# --- load tool: oha, else wrk --------------------------------------------------------------------
TOOL=${TOOL:-}
TOOL_STATUS=
if [[ -z $TOOL || $TOOL == oha ]]; then
    if command -v oha >/dev/null; then
        TOOL=oha
    else
        log "installing oha (cargo install oha --locked; this takes a few minutes)"
        if cargo install oha --locked >"$OUT/oha-install.log" 2>&1; then
            TOOL=oha
        elif [[ $TOOL == oha ]]; then
            die "oha is not available and could not be installed (see $OUT/oha-install.log)"
        else
            TOOL_STATUS="oha could not be installed (see bench/out/oha-install.log); wrk was used instead"
            log "$TOOL_STATUS"
        fi
    fi
fi
if [[ $TOOL != oha ]]; then
    if ! command -v wrk >/dev/null; then
        as_root apt-get update -qq && as_root apt-get install -y -qq wrk >/dev/null \
            || die "neither oha nor wrk is available"
    fi
    TOOL=wrk
fi
export TOOL TOOL_STATUS

# --- tokentap's build: profile-guided (bench/pgo.sh), as a release should be built ---------------
# PGO=0, a load tool other than oha, or no llvm-profdata for rustc's LLVM: the plain build.
# bench/pgo.sh adds BOLT's layout when it can (BOLT=0: not); target/pgo/BUILD says which.
TOKENTAP_BIN=$ROOT/target/release/tokentap
TOKENTAP_BUILD="cargo build --release"
if [[ ${PGO:-1} == 1 && $TOOL == oha ]]; then
    if [[ ${SKIP_BUILD:-0} == 1 ]]; then
        if [[ -x target/pgo/tokentap ]]; then
            TOKENTAP_BIN=$ROOT/target/pgo/tokentap
            TOKENTAP_BUILD=$(cat target/pgo/BUILD 2>/dev/null || echo "PGO build, bench/pgo.sh")
        else
            TOKENTAP_BUILD="cargo build --release; SKIP_BUILD=1 and no target/pgo/tokentap"
        fi
    elif log "building with PGO and BOLT (bench/pgo.sh, about 7 minutes)" && bench/pgo.sh >"$OUT/pgo.log" 2>&1; then
        TOKENTAP_BIN=$ROOT/target/pgo/tokentap
        TOKENTAP_BUILD=$(cat target/pgo/BUILD)
    else
        TOKENTAP_BUILD="cargo build --release; the PGO build failed (see bench/out/pgo.log)"
        log "$TOKENTAP_BUILD"
    fi
elif [[ ${PGO:-1} == 1 ]]; then
    TOKENTAP_BUILD="cargo build --release; no PGO build without oha"
fi
export TOKENTAP_BIN TOKENTAP_BUILD

# --- nginx (Debian) ------------------------------------------------------------------------------
NGINX_STATUS=
if [[ ${NGINX:-1} == 0 ]]; then
    NGINX_STATUS="nginx left out (NGINX=0)"
elif ! command -v nginx >/dev/null && ! [[ -x /usr/sbin/nginx ]]; then
    log "installing nginx (apt-get install -y nginx)"
    if ! { as_root apt-get update -qq && as_root apt-get install -y -qq nginx >"$OUT/nginx-install.log" 2>&1; }; then
        NGINX_STATUS="nginx left out: apt-get install nginx failed (see bench/out/nginx-install.log)"
        log "$NGINX_STATUS"
    fi
fi
export PATH="$PATH:/usr/sbin"
export NGINX_STATUS

# --- LiteLLM proxy (PyPI, in a venv under bench/out) -------------------------------------------
LITELLM_STATUS=
VENV=$OUT/venv
if [[ ${LITELLM:-1} == 0 ]]; then
    LITELLM_STATUS="LiteLLM left out (LITELLM=0)"
elif ! [[ -x $VENV/bin/litellm ]] || ! "$VENV/bin/python" -c 'import litellm.proxy.proxy_server' >/dev/null 2>&1; then
    log "installing LiteLLM (pip install 'litellm[proxy]' into bench/out/venv; this takes a few minutes)"
    if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'litellm[proxy]'; } >"$OUT/litellm-install.log" 2>&1; then
        LITELLM_STATUS="LiteLLM left out: pip install 'litellm[proxy]' failed (see bench/out/litellm-install.log)"
        log "$LITELLM_STATUS"
    fi
fi
export LITELLM_STATUS LITELLM_BIN=$VENV/bin/litellm

# --- measure and report --------------------------------------------------------------------------
python3 bench/harness.py &
harness_pid=$!
status=0
wait "$harness_pid" || status=$?
harness_pid=
exit "$status"
