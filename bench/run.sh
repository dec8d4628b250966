#!/usr/bin/env bash
# Load comparison: the demo upstream called directly vs. the same calls through tokentap.
# Run by hand (never in CI). See bench/README.md. Results go to bench/out/ (gitignored).
#
# Environment knobs:
#   DURATION=10s          length of each measured run
#   CONCURRENCY="1 64"    connection counts to measure
#   TOOL=oha|wrk          force a load tool (default: oha, else wrk)
#   TOKENTAP_BIN=path     use this binary and skip `cargo build --release`
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-"1 64"}
PROXY_ADDR=127.0.0.1:18787
ADMIN_ADDR=127.0.0.1:18788
OUT=bench/out
BIN=${TOKENTAP_BIN:-target/release/tokentap}
export PATH="$HOME/.cargo/bin:$PATH"

die() { echo "bench: $*" >&2; exit 1; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

command -v python3 >/dev/null || die "python3 is needed to read the results"
command -v curl >/dev/null || die "curl is needed"
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || true

# --- build -------------------------------------------------------------------------------------
if [[ -z ${TOKENTAP_BIN:-} ]]; then
    cargo build --release
fi
[[ -x $BIN ]] || die "no tokentap binary at $BIN"

# --- load tool ---------------------------------------------------------------------------------
tool=${TOOL:-}
if [[ -z $tool || $tool == oha ]]; then
    if command -v oha >/dev/null || { echo "bench: installing oha (cargo install oha --locked)" >&2; cargo install oha --locked; }; then
        tool=oha
    elif [[ $tool == oha ]]; then
        die "oha is not available and could not be installed"
    fi
fi
if [[ -z $tool || $tool == wrk ]]; then
    if command -v wrk >/dev/null || { as_root apt-get update -qq && as_root apt-get install -y -qq wrk >/dev/null; }; then
        tool=wrk
    else
        die "neither oha nor wrk is available"
    fi
fi
case $tool in
    oha)
        # oha >= 1.9 spells JSON output `--output-format json`; older releases `-j`.
        if oha --help 2>&1 | grep -q -- '--output-format'; then oha_json=(--output-format json); else oha_json=(-j); fi
        tool_version=$(oha --version 2>&1 | head -n1)
        ;;
    wrk) tool_version=$(wrk -v 2>&1 | head -n1 || true) ;;
esac
echo "bench: load tool: $tool_version" >&2

# --- CPU pinning: load tool on CPU 0, tokentap (with its in-process demo upstream) on CPU 1 ----
load_pin=() tt_pin=()
if command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
    load_pin=(taskset -c 0) tt_pin=(taskset -c 1)
    pinning="load tool on CPU 0, tokentap + demo upstream on CPU 1"
else
    pinning="none (taskset missing or fewer than 2 CPUs)"
fi

# --- start tokentap ----------------------------------------------------------------------------
log=$OUT/tokentap.log
: >"$log"
NO_COLOR=1 "${tt_pin[@]}" "$BIN" --demo --demo-pacing off \
    --listen "$PROXY_ADDR" --admin-listen "$ADMIN_ADDR" --log-level info 2>"$log" &
tt_pid=$!
cleanup() {
    if kill -0 "$tt_pid" 2>/dev/null; then
        kill -TERM "$tt_pid" 2>/dev/null || true
        wait "$tt_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The demo upstream listens on a random port; tokentap logs it as
# `demo upstream started url=http://127.0.0.1:PORT` (text) or `"url":"http://…"` (json).
demo_url=
for _ in $(seq 1 300); do
    kill -0 "$tt_pid" 2>/dev/null || { cat "$log" >&2; die "tokentap exited during start-up"; }
    demo_url=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep 'demo upstream started' \
        | grep -oE 'http://[0-9.]+:[0-9]+' | head -n1 || true)
    if [[ -n $demo_url ]] && curl -fsS "http://$ADMIN_ADDR/healthz" >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done
[[ -n $demo_url ]] || { cat "$log" >&2; die "no 'demo upstream started url=…' line in $log"; }
echo "bench: demo upstream at $demo_url, tokentap at http://$PROXY_ADDR ($pinning)" >&2

# --- scenarios ---------------------------------------------------------------------------------
body_plain='{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"Say hello to the benchmark"}]}'
body_stream='{"model":"gpt-4o-mini","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"Say hello to the benchmark"}]}'
declare -A targets=([direct]="$demo_url/v1/chat/completions" [tokentap]="http://$PROXY_ADDR/v1/chat/completions")

# run_load OUTFILE URL BODY CONCURRENCY DURATION
run_load() {
    local out=$1 url=$2 body=$3 conc=$4 duration=$5
    case $tool in
        oha)
            "${load_pin[@]}" oha --no-tui "${oha_json[@]}" -z "$duration" -c "$conc" -m POST \
                -T application/json -H 'Authorization: Bearer sk-bench' -d "$body" "$url" >"$out"
            ;;
        wrk)
            local script=$OUT/wrk-post.lua
            cat >"$script" <<LUA
wrk.method = "POST"
wrk.body = [==[$body]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\n{"tool":"wrk","requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
LUA
            "${load_pin[@]}" wrk -t1 -c "$conc" -d "$duration" -s "$script" "$url" \
                | grep '^{"tool":"wrk"' >"$out"
            ;;
    esac
}

# Warm up both paths (connection pools, tokenizer tables), unrecorded.
for target in direct tokentap; do
    run_load "$OUT/warmup.json" "${targets[$target]}" "$body_plain" 16 2s
    run_load "$OUT/warmup.json" "${targets[$target]}" "$body_stream" 16 2s
done
rm -f "$OUT/warmup.json"

results=()
for scenario in non-stream stream; do
    if [[ $scenario == stream ]]; then body=$body_stream; else body=$body_plain; fi
    for conc in $CONCURRENCY; do
        for target in direct tokentap; do
            file=$OUT/$scenario-c$conc-$target.json
            echo "bench: $scenario c=$conc $target ($DURATION)" >&2
            run_load "$file" "${targets[$target]}" "$body" "$conc" "$DURATION"
            results+=("$scenario $conc $target $file")
        done
    done
done

counts=$(curl -fsS "http://$ADMIN_ADDR/api/counts" || echo '{}')

# --- report ------------------------------------------------------------------------------------
printf '%s\n' "${results[@]}" >"$OUT/runs.txt"
TOOL_VERSION="$tool_version" PINNING="$pinning" DURATION="$DURATION" \
    COUNTS="$counts" GIT_REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    python3 - "$OUT" <<'PY'
import json, os, sys, time

out_dir = sys.argv[1]
rows = []
with open(os.path.join(out_dir, "runs.txt")) as f:
    runs = f.read().splitlines()
for line in runs:
    scenario, conc, target, path = line.split(" ", 3)
    with open(path) as f:
        data = json.load(f)
    if data.get("tool") == "wrk":
        seconds = data["duration_us"] / 1e6
        rps = data["requests"] / seconds if seconds else 0.0
        p50, p99 = data["p50_us"] / 1000, data["p99_us"] / 1000
        bad = data["errors"] + data["non2xx"]
    else:
        # oha: summary.requestsPerSec; latencyPercentiles.p50/p99 in seconds (null if none).
        rps = data["summary"].get("requestsPerSec") or 0.0
        pct = data.get("latencyPercentiles") or {}
        p50 = (pct.get("p50") or 0.0) * 1000
        p99 = (pct.get("p99") or 0.0) * 1000
        codes = data.get("statusCodeDistribution") or {}
        errors = dict(data.get("errorDistribution") or {})
        # Requests cut by the end of the run are not failures.
        errors.pop("aborted due to deadline", None)
        bad = sum(n for code, n in codes.items() if not str(code).startswith("2")) + sum(errors.values())
    rows.append({"scenario": scenario, "concurrency": int(conc), "target": target,
                 "rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": bad})

def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"

header = f"{'scenario':<11} {'conc':>4}  {'target':<8} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}  tokentap/direct"
lines = [header, "-" * len(header)]
direct = {}
for r in rows:
    key = (r["scenario"], r["concurrency"])
    extra = ""
    if r["target"] == "direct":
        direct[key] = r
    elif key in direct:
        d = direct[key]
        r["ratio"] = {"rps": r["rps"] / d["rps"] if d["rps"] else None,
                      "p50": r["p50_ms"] / d["p50_ms"] if d["p50_ms"] else None,
                      "p99": r["p99_ms"] / d["p99_ms"] if d["p99_ms"] else None}
        extra = f"req/s x{ratio(r['rps'], d['rps'])}  p50 x{ratio(r['p50_ms'], d['p50_ms'])}  p99 x{ratio(r['p99_ms'], d['p99_ms'])}"
    lines.append(f"{r['scenario']:<11} {r['concurrency']:>4}  {r['target']:<8} {r['rps']:>10.1f} "
                 f"{r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} {r['errors']:>7}  {extra}")

meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git": os.environ["GIT_REV"],
        "tool": os.environ["TOOL_VERSION"], "duration": os.environ["DURATION"],
        "pinning": os.environ["PINNING"], "cpus": os.cpu_count()}
try:
    counts = json.loads(os.environ["COUNTS"])
except ValueError:
    counts = {}
footer = [f"{k}: {v}" for k, v in meta.items()]
footer.append(f"tokentap /api/counts after the runs: {json.dumps(counts)}")
text = "\n".join(lines + [""] + footer) + "\n"
print(text, end="")
with open(os.path.join(out_dir, "results.txt"), "w") as f:
    f.write(text)
with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump({"meta": meta, "tokentap_counts": counts, "rows": rows}, f, indent=2)
PY
echo "bench: results in $OUT/results.txt and $OUT/results.json" >&2
