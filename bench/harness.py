#!/usr/bin/env python3
"""The measuring half of bench/run.sh: starts the upstream and the proxies, runs every scenario
against every target, samples the proxies' CPU time and memory from /proc, and writes
bench/out/results.json and bench/RESULTS.md. Standard library only. run.sh installs the tools and
builds the binaries, then runs this with the settings in environment variables (see run.sh).

Every process it starts runs in its own process group and is stopped (SIGTERM, then SIGKILL) on
exit, on an error and on SIGINT/SIGTERM.
"""

import atexit
import datetime
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")
RESULTS_MD = os.path.abspath(os.environ.get("RESULTS_MD", os.path.join(ROOT, "bench", "RESULTS.md")))
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# --- settings (environment, set by run.sh) ------------------------------------------------------


def env_bool(name, default):
    value = os.environ.get(name)
    return default if value in (None, "") else value not in ("0", "false", "no", "off")


QUICK = env_bool("QUICK", False)
DURATION = float(os.environ.get("DURATION", "2" if QUICK else "4").rstrip("s"))
# Each load-tool cell (scenario, concurrency, target) is measured ROUNDS times, the targets in
# turn within a round, and reported by its median round: one run on a busy or throttled machine
# can be off by a fifth, and the targets' runs lie close together in time.
ROUNDS = max(1, int(os.environ.get("ROUNDS", "1" if QUICK else "3")))
WARMUP = float(os.environ.get("WARMUP", "0.5" if QUICK else "1").rstrip("s"))
CONCURRENCY = [int(c) for c in os.environ.get("CONCURRENCY", "1 16" if QUICK else "1 16 64 256").split()]
ALL_SCENARIOS = ["chat", "stream-20", "stream-200", "paced-10ms", "embeddings", "memory"]
SCENARIOS = os.environ.get(
    "SCENARIOS", "chat stream-20 paced-10ms embeddings memory" if QUICK else " ".join(ALL_SCENARIOS)
).split()
TARGETS_WANTED = os.environ.get("TARGETS", "direct tokentap nginx litellm").split()
PACED_CHUNKS = int(os.environ.get("PACED_CHUNKS", "20"))
PACED_MS = int(os.environ.get("PACED_MS", "10"))
MEM_STREAMS = int(os.environ.get("MEM_STREAMS", "500" if QUICK else "10000"))
MEM_CHUNKS = int(os.environ.get("MEM_CHUNKS", "12" if QUICK else "40"))
MEM_PACE_MS = int(os.environ.get("MEM_PACE_MS", "250" if QUICK else "500"))
MEM_RAMP_MS = int(os.environ.get("MEM_RAMP_MS", "500" if QUICK else "5000"))
MEM_TARGETS = os.environ.get("MEM_TARGETS", "tokentap nginx").split()
# The meter alone (criterion's `benches/meter.rs`), for the 1 GB/s per core target.
METER = env_bool("METER", True)
METER_BENCHES = ["content_chunks_without_usage", "content_chunks_without_usage_in_one_piece"]
METER_TARGET_GB_S = 1.0
TOOL = os.environ.get("TOOL", "oha")
TOKENTAP_BIN = os.path.abspath(os.environ.get("TOKENTAP_BIN", os.path.join(ROOT, "target/release/tokentap")))
EXAMPLES = os.path.abspath(os.environ.get("EXAMPLES_DIR", os.path.join(ROOT, "target/release/examples")))
LITELLM_BIN = os.environ.get("LITELLM_BIN", os.path.join(OUT, "venv/bin/litellm"))
LITELLM_STATUS = os.environ.get("LITELLM_STATUS", "")  # why LiteLLM is missing, from run.sh
NGINX_STATUS = os.environ.get("NGINX_STATUS", "")
TOOL_STATUS = os.environ.get("TOOL_STATUS", "")
# How the tokentap binary was built: bench/run.sh says (a PGO build, or a plain release build).
TOKENTAP_BUILD = os.environ.get("TOKENTAP_BUILD", "cargo build --release")

# Loopback ports. Change BASE_PORT if they clash with something.
BASE = int(os.environ.get("BASE_PORT", "18900"))
P_UPSTREAM = BASE + 1  # bench_upstream (tokentap's demo upstream, unpaced)
P_PACED_UP = BASE + 2  # bench_client's own in-process paced upstream (only while it runs)
P_TT, P_TT_ADMIN = BASE + 11, BASE + 12  # tokentap -> bench_upstream
P_TT2, P_TT2_ADMIN = BASE + 13, BASE + 14  # tokentap -> bench_client's upstream
P_TT3, P_TT3_ADMIN = BASE + 15, BASE + 16  # fresh tokentap for the memory test
P_NGINX, P_NGINX2 = BASE + 21, BASE + 22  # nginx -> bench_upstream / -> bench_client's upstream
P_LITELLM = BASE + 31

PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2 and env_bool("PIN", True)
LOAD_CPU, PROXY_CPU = "0", "1"


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------------------


class Procs:
    """Processes this harness started, each in its own process group."""

    def __init__(self):
        self.procs = {}

    def start(self, name, argv, cpu=None, env=None, stdout_path=None):
        if cpu is not None and PIN:
            argv = ["taskset", "-c", cpu] + argv
        path = stdout_path or os.path.join(OUT, f"{name}.log")
        handle = open(path, "w")
        proc = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})}, cwd=ROOT,
        )
        handle.close()
        self.procs[name] = proc
        log(f"started {name} (pid {proc.pid}): {shlex.join(argv)}")
        return proc

    def stop(self, name, timeout=10):
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        else:
            # The leader exited; children of its group may remain.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop_all(self):
        for name in list(self.procs)[::-1]:
            try:
                self.stop(name)
            except Exception as error:  # noqa: BLE001 - clean up as much as possible
                log(f"stopping {name}: {error}")


PROCS = Procs()
atexit.register(PROCS.stop_all)


def on_signal(signum, _frame):
    log(f"signal {signum}: stopping")
    sys.exit(130)


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)


def port_open(port):
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port, proc, name, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} during start-up (see bench/out/{name}.log)")
        if port_open(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on {port} within {timeout:.0f} s")


def http(method, url, body=None, headers=None, timeout=30.0):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", "Bearer sk-bench")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


def wait_http(url, proc, name, timeout=30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} during start-up (see bench/out/{name}.log)")
        try:
            status, _ = http("GET", url, timeout=2)
            if status == 200:
                return
        except Exception as error:  # noqa: BLE001
            last = error
        time.sleep(0.25)
    raise RuntimeError(f"{name}: {url} not ready within {timeout:.0f} s ({last})")


# --- /proc sampling -------------------------------------------------------------------------------


def tree(pid):
    """pid and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def cpu_seconds(pids):
    """CPU time (user and system, of every thread, ended ones included) the processes have used,
    in seconds. Read from each process's CPU-time clock (`clock_getcpuclockid(3)`, its clock id
    made by hand as Python has no binding) in nanoseconds: `/proc/PID/stat` counts it in ticks
    of 10 ms, and a round of paced streams at concurrency 1 was four or five of them."""
    total = 0
    for pid in pids:
        try:
            # A process's CPU clock: the pid inverted, shifted past the 3 clock bits, with
            # CPUCLOCK_SCHED (2) and the per-thread bit (4) clear (linux/posix-timers.h).
            total += time.clock_gettime_ns(((~pid) << 3) | 2)
        except OSError:
            pass
    return total / 1e9


def core_ticks(cpu):
    """(busy, total) jiffies of one CPU from /proc/stat; busy leaves out idle and iowait."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{cpu} "):
                    values = [int(v) for v in line.split()[1:]]
                    return sum(values) - values[3] - values[4], sum(values)
    except (OSError, ValueError, IndexError):
        pass
    return None


def status_kib(pids, key):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


class Monitor:
    """CPU time and RSS of a process tree over one run: its CPU clocks' delta, RSS sampled every
    50 ms (sum over the tree), VmHWM at the end."""

    def __init__(self, pid):
        self.pids = tree(pid) if pid else []
        self.peak_rss = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self):
        while not self.stop_event.is_set():
            self.peak_rss = max(self.peak_rss, status_kib(self.pids, "VmRSS"))
            self.stop_event.wait(0.05)

    def __enter__(self):
        self.rss_before = status_kib(self.pids, "VmRSS")
        # How busy the load core is: at 100% the load side, not the proxy, sets the pace.
        self.load0 = core_ticks(LOAD_CPU) if PIN else None
        self.cpu0, self.t0 = cpu_seconds(self.pids), time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop_event.set()
        self.thread.join()
        self.wall = time.monotonic() - self.t0
        cpu = cpu_seconds(self.pids) - self.cpu0
        self.peak_rss = max(self.peak_rss, status_kib(self.pids, "VmRSS"))
        load1 = core_ticks(LOAD_CPU) if self.load0 else None
        load_pct = None
        if self.load0 and load1 and load1[1] > self.load0[1]:
            load_pct = (load1[0] - self.load0[0]) / (load1[1] - self.load0[1]) * 100
        self.result = {
            "load_cpu_pct": load_pct,
            "cpu_pct": cpu / self.wall * 100 if self.pids and self.wall > 0 else None,
            "cpu_s": cpu if self.pids else None,
            "rss_before_kib": self.rss_before if self.pids else None,
            "peak_rss_kib": self.peak_rss if self.pids else None,
            "hwm_kib": status_kib(self.pids, "VmHWM") if self.pids else None,
            "wall_s": self.wall,
        }


def machine_busy(seconds=1.0):
    """Fraction of all CPU time not idle over `seconds` (from /proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total
    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 1 - (idle1 - idle0) / (total1 - total0) if total1 > total0 else 0.0


def settle(pid, limit=15.0):
    """Waits until the proxy is idle (< 2 % CPU over 200 ms): work left over from the previous
    run (e.g. streams a slow proxy still drains) must not be billed to the next one."""
    if not pid:
        return
    pids = tree(pid)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(pids)
        time.sleep(0.2)
        if (cpu_seconds(pids) - before) / 0.2 < 0.02:
            return


# --- load generators ------------------------------------------------------------------------------


def pinned(argv):
    return (["taskset", "-c", LOAD_CPU] + argv) if PIN else argv


OHA_JSON = None


def oha_json_flag():
    global OHA_JSON
    if OHA_JSON is None:
        help_text = subprocess.run(["oha", "--help"], capture_output=True, text=True).stdout
        OHA_JSON = ["--output-format", "json"] if "--output-format" in help_text else ["-j"]
    return OHA_JSON


def run_load(url, body, concurrency, duration, out_path):
    """One timed run of the load tool. Returns {rps, p50_ms, p99_ms, ok, errors, error_kinds}."""
    body_text = json.dumps(body, separators=(",", ":"))
    if TOOL == "oha":
        argv = pinned(["oha", "--no-tui", *oha_json_flag(), "-z", f"{round(duration * 1000)}ms", "-c", str(concurrency),
                       "-m", "POST", "-T", "application/json", "-H", "Authorization: Bearer sk-bench",
                       "-d", body_text, url])
        proc = subprocess.run(argv, capture_output=True, text=True)
        with open(out_path, "w") as f:
            f.write(proc.stdout)
        if proc.returncode != 0:
            raise RuntimeError(f"oha failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
        data = json.loads(proc.stdout)
        summary = data.get("summary") or {}
        seconds = summary.get("total") or duration
        codes = {str(k): v for k, v in (data.get("statusCodeDistribution") or {}).items()}
        ok = sum(n for code, n in codes.items() if code.startswith("2"))
        errors = dict(data.get("errorDistribution") or {})
        cut = errors.pop("aborted due to deadline", 0)  # requests cut by the end of the run
        bad_status = {code: n for code, n in codes.items() if not code.startswith("2")}
        pct = data.get("latencyPercentiles") or {}
        first = data.get("firstBytePercentiles") or {}  # oha >= 1.14
        return {
            "ttfb_p50_ms": first["p50"] * 1000 if ok and first.get("p50") is not None else None,
            "ttfb_p99_ms": first["p99"] * 1000 if ok and first.get("p99") is not None else None,
            "rps": ok / seconds if seconds else 0.0,
            "p50_ms": (pct.get("p50") or 0.0) * 1000 if ok else None,
            "p99_ms": (pct.get("p99") or 0.0) * 1000 if ok else None,
            "ok": ok,
            "cut_by_deadline": cut,
            "errors": sum(bad_status.values()) + sum(errors.values()),
            "error_kinds": {**{f"HTTP {c}": n for c, n in bad_status.items()}, **errors},
        }
    # wrk, with a Lua script that prints one JSON line.
    script = os.path.join(OUT, "wrk-post.lua")
    with open(script, "w") as f:
        f.write(f"""wrk.method = "POST"
wrk.body = [==[{body_text}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\n{{"tool":"wrk","requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
""")
    argv = pinned(["wrk", "-t1", "-c", str(concurrency), "-d", f"{max(1, round(duration))}s", "--timeout", "60s", "-s", script, url])
    proc = subprocess.run(argv, capture_output=True, text=True)
    with open(out_path, "w") as f:
        f.write(proc.stdout)
    line = next((l for l in proc.stdout.splitlines() if l.startswith('{"tool":"wrk"')), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
    data = json.loads(line)
    seconds = data["duration_us"] / 1e6
    ok = data["requests"] - data["non2xx"]
    return {
        "rps": ok / seconds if seconds else 0.0,
        "p50_ms": data["p50_us"] / 1000, "p99_ms": data["p99_us"] / 1000,
        "ok": ok, "errors": data["errors"] + data["non2xx"],
        "error_kinds": {"transport": data["errors"], "non-2xx": data["non2xx"]},
    }


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def combine_rounds(runs):
    """One cell's rounds as one row: the median of each rate, latency and CPU share, counts
    summed, the highest RSS. CPU per request is pooled: all the rounds' CPU time over all
    their requests. Each round's own figures stay under `rounds`."""
    done = [r for r in runs if "failed" not in r]
    if not done:
        return {"failed": runs[0]["failed"] if runs else "not run", "rounds": runs}
    row = {key: median(r.get(key) for r in done)
           for key in ("rps", "p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms", "cpu_pct", "load_cpu_pct")}
    row["events_per_request"] = median(r.get("events_per_request") for r in done)
    # A paced run's distributions: each percentile the median of the rounds' own.
    for key in ("ttfb_ms", "ttft_ms", "transit_us"):
        stats = [r[key] for r in done if r.get(key)]
        if stats:
            row[key] = {p: median(float(s[p]) for s in stats if s.get(p) is not None) for p in stats[0]}
    for key in ("ok", "errors", "cut_by_deadline"):
        row[key] = sum(r.get(key) or 0 for r in done)
    kinds = {}
    samples = []
    for r in done:
        found = r.get("error_kinds") or {}
        if isinstance(found, list):  # bench_client's samples of error messages
            samples += found
            continue
        for kind, n in found.items():
            kinds[kind] = kinds.get(kind, 0) + n
    row["error_kinds"] = samples[:5] if samples else kinds
    for key in ("peak_rss_kib", "hwm_kib"):
        row[key] = max((r[key] for r in done if r.get(key) is not None), default=None)
    row["rss_before_kib"] = done[0].get("rss_before_kib")
    cpu = [r.get("cpu_s") for r in done]
    row["cpu_s"] = sum(cpu) if None not in cpu else None
    row["cpu_us_per_req"] = row["cpu_s"] * 1e6 / row["ok"] if row["cpu_s"] is not None and row["ok"] else None
    row["failed_rounds"] = len(runs) - len(done)
    row["rounds"] = runs
    return row


def run_client(args, out_path, timeout):
    """One bench_client run; returns its JSON report."""
    argv = pinned([os.path.join(EXAMPLES, "bench_client"), *args])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=ROOT)
    PROCS.procs["bench_client"] = proc
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        PROCS.stop("bench_client")
        raise RuntimeError(f"bench_client did not finish within {timeout:.0f} s")
    PROCS.procs.pop("bench_client", None)
    with open(out_path, "w") as f:
        f.write(stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_client failed ({proc.returncode}): {stderr.strip()[-300:]}")
    return json.loads(stdout)


# --- targets --------------------------------------------------------------------------------------

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"


def start_upstream():
    proc = PROCS.start("bench_upstream", [os.path.join(EXAMPLES, "bench_upstream"),
                                          "--listen", f"127.0.0.1:{P_UPSTREAM}"], cpu=LOAD_CPU)
    wait_port(P_UPSTREAM, proc, "bench_upstream")
    return proc


def start_tokentap(name, port, admin, upstream_port):
    proc = PROCS.start(name, [TOKENTAP_BIN, "--upstream", f"http://127.0.0.1:{upstream_port}",
                              "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                              "--log-level", "warn"], cpu=PROXY_CPU, env={"NO_COLOR": "1"})
    wait_http(f"http://127.0.0.1:{admin}/healthz", proc, name)
    return proc


def nofile_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def mem_streams():
    """Streams of the memory test: a proxied HTTP/1.1 stream holds two sockets in the proxy (client
    side and upstream side), so the open-files hard limit caps them."""
    return min(MEM_STREAMS, (nofile_limit() - 200) // 2)


def start_nginx():
    conf_dir = os.path.join(OUT, "nginx")
    os.makedirs(conf_dir, exist_ok=True)
    limit = nofile_limit()
    # Enough connections for the memory test (client + upstream side per stream), no more: nginx
    # allocates its connection table up front, and it counts in its RSS. nginx starts closing
    # idle and fresh client connections once fewer than 1/16 of worker_connections are free, so
    # leave that much on top (it may exceed the open-files limit: nginx only warns).
    needed = 2 * mem_streams() + 256 if "memory" in SCENARIOS else 0
    connections = max(4096, needed * 17 // 16 + 64)
    conf = os.path.join(conf_dir, "nginx.conf")
    upstream_block = """
    upstream {name} {{
        server 127.0.0.1:{port};
        keepalive 64;
        keepalive_requests 1000000;
    }}"""
    server_block = """
    server {{
        listen 127.0.0.1:{listen} backlog=4096;
        location / {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}"""
    with open(conf, "w") as f:
        f.write(f"""# Written by bench/harness.py. nginx as a plain streaming reverse proxy.
worker_processes 1;
worker_rlimit_nofile {limit};
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log warn;
events {{
    worker_connections {connections};
}}
http {{
    access_log off;
    client_body_temp_path {conf_dir}/client_body;
    proxy_temp_path {conf_dir}/proxy;
    fastcgi_temp_path {conf_dir}/fastcgi;
    uwsgi_temp_path {conf_dir}/uwsgi;
    scgi_temp_path {conf_dir}/scgi;
    client_max_body_size 32m;
    client_body_buffer_size 1m;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
""" + upstream_block.format(name="demo", port=P_UPSTREAM) + upstream_block.format(name="paced", port=P_PACED_UP)
                + server_block.format(listen=P_NGINX, name="demo") + server_block.format(listen=P_NGINX2, name="paced")
                + "\n}\n")
    for stale in ("error.log", "nginx.pid"):
        if os.path.exists(os.path.join(conf_dir, stale)):
            os.remove(os.path.join(conf_dir, stale))
    proc = PROCS.start("nginx", ["nginx", "-c", conf, "-p", conf_dir, "-g", "daemon off;"], cpu=PROXY_CPU)
    wait_port(P_NGINX, proc, "nginx")
    wait_port(P_NGINX2, proc, "nginx")
    return proc


def start_litellm():
    conf_dir = os.path.join(OUT, "litellm")
    os.makedirs(conf_dir, exist_ok=True)
    conf = os.path.join(conf_dir, "config.yaml")
    with open(conf, "w") as f:
        f.write(f"""# Written by bench/harness.py.
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:{P_UPSTREAM}/v1
      api_key: sk-bench
  - model_name: gpt-4o-mini-paced
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:{P_PACED_UP}/v1
      api_key: sk-bench
  - model_name: text-embedding-3-small
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: http://127.0.0.1:{P_UPSTREAM}/v1
      api_key: sk-bench
litellm_settings:
  telemetry: false
  set_verbose: false
  turn_off_message_logging: true
  drop_params: true
  request_timeout: 600
general_settings:
  # No master key: like tokentap and nginx here, LiteLLM authenticates nobody (the client's key
  # is not checked). LiteLLM refuses to start so unless told this is deliberate.
  dangerously_permit_weak_or_unset_master_key: true
  disable_spend_logs: true
  disable_error_logs: true
""")
    env = {
        "LITELLM_LOG": "ERROR", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
        "DISABLE_ADMIN_UI": "True", "NO_DOCS": "True", "OPENAI_API_KEY": "sk-bench",
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    proc = PROCS.start("litellm", [LITELLM_BIN, "--config", conf, "--host", "127.0.0.1",
                                   "--port", str(P_LITELLM), "--num_workers", "1"], cpu=PROXY_CPU, env=env)
    wait_http(f"http://127.0.0.1:{P_LITELLM}/health/liveliness", proc, "litellm", timeout=180)
    # One real request through, so a broken set-up is found now and not mid-run.
    status, _ = http("POST", f"http://127.0.0.1:{P_LITELLM}{CHAT}",
                     {"model": "gpt-4o-mini", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
                     timeout=60)
    if status != 200:
        raise RuntimeError(f"litellm answered {status} to a test request")
    return proc


# --- scenarios ------------------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "Say hello to the benchmark"}]
LOAD_SCENARIOS = {
    "chat": (CHAT, {"model": "gpt-4o-mini", "max_tokens": 16, "messages": MESSAGES}),
    "stream-20": (CHAT, {"model": "gpt-4o-mini", "max_tokens": 20, "stream": True, "messages": MESSAGES}),
    "stream-200": (CHAT, {"model": "gpt-4o-mini", "max_tokens": 200, "stream": True, "messages": MESSAGES}),
    "embeddings": (EMBEDDINGS, {"model": "text-embedding-3-small",
                                "input": "The quick brown fox jumps over the lazy dog"}),
}
SCENARIO_TEXT = {
    "chat": "`POST /v1/chat/completions`, not streamed, `max_tokens: 16` (one JSON answer, 16 completion tokens)",
    "stream-20": "the same streamed (`stream: true`), `max_tokens: 20`: 20 content chunks, unpaced, then `[DONE]`",
    "stream-200": "streamed, `max_tokens: 200`: 200 content chunks, unpaced",
    "paced-10ms": f"streamed, {PACED_CHUNKS} chunks sent every {PACED_MS} ms by bench_client's own upstream; "
                  "bench_client measures time to first byte/token and per-chunk transit",
    "embeddings": "`POST /v1/embeddings`, one input, answer: one 1536-float vector as JSON numbers (~20 KB)",
    "memory": "many concurrent long-lived paced streams; peak RSS per active stream",
}


def main():
    os.makedirs(OUT, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if PIN:
        os.sched_setaffinity(0, {int(LOAD_CPU)})

    started_at = datetime.datetime.now(datetime.timezone.utc)
    notes = []
    busy = machine_busy()
    if busy > 0.10:
        notes.append(f"the machine was not idle when the measurements started ({busy:.0%} of all CPU time "
                     "busy over 1 s before anything of the benchmark ran): other processes competed for "
                     "the CPUs, so the numbers are lower and noisier than on a quiet machine")
    for status in (TOOL_STATUS, NGINX_STATUS, LITELLM_STATUS):
        if status:
            notes.append(status)

    # Start everything. A target that fails to start is left out, with a note.
    upstream = start_upstream()
    pids = {"direct": None}
    urls = {"direct": f"http://127.0.0.1:{P_UPSTREAM}"}
    paced_urls = {"direct": f"http://127.0.0.1:{P_PACED_UP}"}
    paced_pids = {"direct": None}
    paced_model = {}
    if "tokentap" in TARGETS_WANTED:
        pids["tokentap"] = start_tokentap("tokentap", P_TT, P_TT_ADMIN, P_UPSTREAM).pid
        urls["tokentap"] = f"http://127.0.0.1:{P_TT}"
        if "paced-10ms" in SCENARIOS:
            paced_pids["tokentap"] = start_tokentap("tokentap-paced", P_TT2, P_TT2_ADMIN, P_PACED_UP).pid
            paced_urls["tokentap"] = f"http://127.0.0.1:{P_TT2}"
    if "nginx" in TARGETS_WANTED and not NGINX_STATUS:
        try:
            pids["nginx"] = paced_pids["nginx"] = start_nginx().pid
            urls["nginx"] = f"http://127.0.0.1:{P_NGINX}"
            paced_urls["nginx"] = f"http://127.0.0.1:{P_NGINX2}"
        except Exception as error:  # noqa: BLE001
            notes.append(f"nginx left out: {error}")
            PROCS.stop("nginx")
    if "litellm" in TARGETS_WANTED and not LITELLM_STATUS:
        try:
            pids["litellm"] = paced_pids["litellm"] = start_litellm().pid
            urls["litellm"] = f"http://127.0.0.1:{P_LITELLM}"
            paced_urls["litellm"] = f"http://127.0.0.1:{P_LITELLM}"
            paced_model["litellm"] = "gpt-4o-mini-paced"
        except Exception as error:  # noqa: BLE001
            notes.append(f"LiteLLM left out: it did not start ({error}); see bench/out/litellm.log")
            log(notes[-1])
            PROCS.stop("litellm")
    targets = [t for t in ["direct", "tokentap", "nginx", "litellm"] if t in urls and t in TARGETS_WANTED]
    log(f"targets: {', '.join(targets)}; scenarios: {' '.join(SCENARIOS)}; concurrency {CONCURRENCY}; "
        f"{ROUNDS} round(s) of {DURATION:g} s per cell")

    n_load = len([s for s in SCENARIOS if s in LOAD_SCENARIOS])
    estimate = (n_load * len(targets) * (len(CONCURRENCY) * ROUNDS * (DURATION + 0.5) + WARMUP + 0.5)
                + ("paced-10ms" in SCENARIOS) * len(targets) * len(CONCURRENCY) * ROUNDS * (DURATION + 1.5)
                + ("memory" in SCENARIOS) * len([t for t in MEM_TARGETS if t in targets])
                * (MEM_RAMP_MS / 1000 + MEM_CHUNKS * MEM_PACE_MS / 1000 + 3))
    log(f"about {estimate / 60:.0f} min of measurements ahead" if estimate >= 120
        else f"about {estimate:.0f} s of measurements ahead")

    rows = []
    # Throughput and latency with the load tool.
    for scenario in [s for s in SCENARIOS if s in LOAD_SCENARIOS]:
        path, body = LOAD_SCENARIOS[scenario]
        for target in targets:
            settle(pids.get(target))
            try:  # warm-up: connection pools, lazy initialisation; unrecorded
                run_load(urls[target] + path, body, 16, WARMUP, os.path.join(OUT, "warmup.json"))
            except Exception as error:  # noqa: BLE001
                log(f"warm-up {scenario} {target}: {error}")
        for conc in CONCURRENCY:
            runs = {target: [] for target in targets}
            for turn in range(ROUNDS):
                # Each round starts with the next target, so none is always first after a pause.
                shift = turn % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    settle(pids.get(target))
                    name = f"{scenario}-c{conc}-{target}" + (f"-r{turn + 1}" if ROUNDS > 1 else "")
                    log(f"{scenario} c={conc} {target} round {turn + 1}/{ROUNDS} ({DURATION:g} s)")
                    run = {}
                    try:
                        with Monitor(pids.get(target)) as monitor:
                            run.update(run_load(urls[target] + path, body, conc, DURATION,
                                                os.path.join(OUT, name + ".json")))
                        run.update(monitor.result)
                    except Exception as error:  # noqa: BLE001
                        run["failed"] = str(error)
                        log(f"  failed: {error}")
                    runs[target].append(run)
            for target in targets:
                rows.append({"scenario": scenario, "concurrency": conc, "target": target,
                             **combine_rounds(runs[target])})

    # Paced streams: bench_client with its own upstream, TTFB/TTFT and per-chunk transit. In
    # rounds like the load-tool cells: a paced run's tail moves by a factor of two between runs.
    if "paced-10ms" in SCENARIOS:
        for conc in CONCURRENCY:
            runs = {target: [] for target in targets}
            for turn in range(ROUNDS):
                shift = turn % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    settle(paced_pids.get(target))
                    log(f"paced-10ms c={conc} {target} round {turn + 1}/{ROUNDS} ({DURATION:g} s)")
                    name = f"paced-10ms-c{conc}-{target}" + (f"-r{turn + 1}" if ROUNDS > 1 else "")
                    args = ["--serve-upstream", f"127.0.0.1:{P_PACED_UP}", "--target", paced_urls[target] + CHAT,
                            "--chunks", str(PACED_CHUNKS), "--pace-ms", str(PACED_MS),
                            "--requests", "100000000", "--duration-s", str(DURATION),
                            "--concurrency", str(conc), "--warmup", "5",
                            "--model", paced_model.get(target, "gpt-4o-mini")]
                    run = {}
                    try:
                        with Monitor(paced_pids.get(target)) as monitor:
                            report = run_client(args, os.path.join(OUT, name + ".json"), timeout=DURATION + 300)
                        run.update(monitor.result)
                        run.update({
                            "rps": report["rps"], "ok": report["ok"], "errors": report["errors"],
                            "error_kinds": report["error_samples"],
                            "p50_ms": (report["latency_ms"] or {}).get("p50"),
                            "p99_ms": (report["latency_ms"] or {}).get("p99"),
                            "ttfb_ms": report["ttfb_ms"], "ttft_ms": report["ttft_ms"],
                            "transit_us": report["transit_us"],
                            "events_per_request": report["events_received"] / report["ok"] if report["ok"] else None,
                        })
                    except Exception as error:  # noqa: BLE001
                        run["failed"] = str(error)
                        log(f"  failed: {error}")
                    runs[target].append(run)
            for target in targets:
                rows.append({"scenario": "paced-10ms", "concurrency": conc, "target": target,
                             **combine_rounds(runs[target])})

    # Memory: many concurrent paced streams from the demo upstream, peak RSS per active stream.
    memory = []
    if "memory" in SCENARIOS:
        # A proxied HTTP/1.1 stream holds two sockets in the proxy (client side and upstream side).
        limit = nofile_limit()
        streams = mem_streams()
        if streams < MEM_STREAMS:
            notes.append(f"memory test: {streams} streams instead of {MEM_STREAMS}: the open-files hard limit "
                         f"here is {limit} (`ulimit -Hn`) and each proxied stream holds 2 sockets in the proxy")
        body = {"model": "gpt-4o-mini", "max_tokens": MEM_CHUNKS, "stream": True, "messages": MESSAGES}
        for target in [t for t in MEM_TARGETS if t in targets]:
            if target == "tokentap":
                # A fresh process, so VmHWM is this test's peak and not an earlier run's.
                proc = start_tokentap("tokentap-mem", P_TT3, P_TT3_ADMIN, P_UPSTREAM)
                pid, url = proc.pid, f"http://127.0.0.1:{P_TT3}"
            else:
                pid, url = pids[target], urls[target]
            settle(pid)
            log(f"memory {target}: {streams} streams of {MEM_CHUNKS} chunks every {MEM_PACE_MS} ms")
            row = {"target": target, "streams": streams, "chunks": MEM_CHUNKS, "pace_ms": MEM_PACE_MS,
                   "ramp_ms": MEM_RAMP_MS}
            args = ["--target", url + CHAT, "--body", json.dumps(body), "-H", f"x-demo-chunk-delay-ms: {MEM_PACE_MS}",
                    "--requests", str(streams), "--concurrency", str(streams), "--warmup", "0",
                    "--ramp-ms", str(MEM_RAMP_MS)]
            stream_s = MEM_CHUNKS * MEM_PACE_MS / 1000
            try:
                with Monitor(pid) as monitor:
                    report = run_client(args, os.path.join(OUT, f"memory-{target}.json"),
                                        timeout=stream_s * 4 + MEM_RAMP_MS / 1000 + 120)
                row.update(monitor.result)
                row.update({"ok": report["ok"], "errors": report["errors"], "error_kinds": report["error_samples"],
                            "peak_active": report["peak_active"], "ttfb_ms": report["ttfb_ms"],
                            "latency_ms": report["latency_ms"]})
                active = report["peak_active"] or 0
                grown = (row["peak_rss_kib"] or 0) - (row["rss_before_kib"] or 0)
                row["kib_per_stream"] = grown / active if active else None
            except Exception as error:  # noqa: BLE001
                row["failed"] = str(error)
                log(f"  failed: {error}")
            memory.append(row)
            if target == "tokentap":
                PROCS.stop("tokentap-mem")

    meter = run_meter_bench() if METER else []

    counts = {}
    for name, admin in [("tokentap", P_TT_ADMIN), ("tokentap-paced", P_TT2_ADMIN)]:
        if name in PROCS.procs:
            try:
                counts[name] = json.loads(http("GET", f"http://127.0.0.1:{admin}/api/counts")[1])
            except Exception as error:  # noqa: BLE001
                counts[name] = {"error": str(error)}

    finished_at = datetime.datetime.now(datetime.timezone.utc)
    meta = machine_meta(started_at, finished_at, targets)
    meta["notes"] = notes
    meta["busy_at_start"] = round(busy, 3)
    meta["tokentap_counts"] = counts
    if "litellm" in TARGETS_WANTED and "litellm" in targets and "memory" in SCENARIOS:
        meta["notes"].append("LiteLLM is not in the memory test (MEM_TARGETS): a single Python worker "
                             f"cannot hold {streams} streams in a useful time")
    results = {"meta": meta, "rows": rows, "memory": memory, "meter": meter}
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    text = render(results)
    with open(RESULTS_MD, "w") as f:
        f.write(text)
    print(text)
    log(f"wrote {os.path.relpath(RESULTS_MD, ROOT)} and bench/out/results.json "
        f"in {(finished_at - started_at).total_seconds():.0f} s")


# --- report ---------------------------------------------------------------------------------------


def command_line(argv):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return (proc.stdout + proc.stderr).strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return "n/a"


def machine_meta(started_at, finished_at, targets):
    model = "n/a"
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem_total = "n/a"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_total = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    versions = {
        "tokentap": command_line([TOKENTAP_BIN, "--version"]) + f" ({TOKENTAP_BUILD})",
        "rustc": command_line(["rustc", "--version"]),
        "load tool": command_line(["oha", "--version"]) if TOOL == "oha" else command_line(["wrk", "-v"]),
        "nginx": command_line(["nginx", "-v"]) if "nginx" in targets else "not run",
        "litellm": (command_line([os.path.join(os.path.dirname(LITELLM_BIN), "python"), "-c",
                                  "import importlib.metadata as m; print('litellm', m.version('litellm'))"])
                    if "litellm" in targets else "not run"),
        "python (litellm)": (command_line([os.path.join(os.path.dirname(LITELLM_BIN), "python"), "--version"])
                             if "litellm" in targets else "not run"),
    }
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "mode": "QUICK" if QUICK else "full",
        "date": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": round((finished_at - started_at).total_seconds()),
        "git": (git.stdout.strip() or "unknown") + (" (with uncommitted changes in src/)" if dirty else ""),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory": mem_total,
        "kernel": platform.release(),
        "nofile_hard": nofile_limit(),
        "versions": versions,
        "pinning": (f"load tool, bench_client and bench_upstream on CPU {LOAD_CPU}; the proxy under test on "
                    f"CPU {PROXY_CPU}") if PIN else "none (taskset missing, fewer than 2 CPUs, or PIN=0)",
        "duration_s": DURATION,
        "rounds": ROUNDS,
        "paced_rounds": True,
        "concurrency": CONCURRENCY,
        "scenarios": SCENARIOS,
        "targets": targets,
    }


def fmt(value, digits=2, suffix=""):
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}{suffix}"
        if abs(value) >= 100:
            return f"{value:.0f}{suffix}"
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def signed(value, digits=3):
    if value is None:
        return "—"
    return f"{value:+.{digits}f}"


def ratio(a, b):
    if a is None or not b:
        return "—"
    return f"{a / b:.2f}"


def mib(kib):
    return None if kib is None else kib / 1024


def table(header, rows, text_columns=(0,)):
    """A markdown table, its columns right-aligned but for `text_columns`."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i in text_columns else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(results):
    meta, rows, memory = results["meta"], results["rows"], results["memory"]
    index = {(r["scenario"], r["concurrency"], r["target"]): r for r in rows}
    out = []
    if meta["mode"] == "QUICK":
        out.append("# Benchmark results — QUICK RUN\n")
        out.append("> **This is a QUICK run (`QUICK=1 bench/run.sh`)**: "
                   f"{meta['duration_s']:g} s per measurement, concurrency {', '.join(map(str, meta['concurrency']))}, "
                   "fewer scenarios and a small memory test. It checks that the harness works end to end; "
                   "its numbers are noisy. Run `bench/run.sh` (full mode) for numbers to quote.\n")
    else:
        out.append("# Benchmark results\n")
    out.append("Written by `bench/run.sh` (see [bench/README.md](README.md) for the method and what each "
               "number means). Raw data: `bench/out/results.json` and `bench/out/*.json`.\n")
    versions = meta["versions"]
    out.append("| | |\n|---|---|")
    for key, value in [
        ("date", meta["date"]), ("mode", mode_text(meta)),
        ("git", meta["git"]),
        ("machine", f"{meta['nproc']} CPUs ({meta['cpu_model']}), {meta['memory']}, kernel {meta['kernel']}"),
        ("pinning", meta["pinning"]), ("open files (hard limit)", meta["nofile_hard"]),
        ("CPU busy before the run (other processes)", f"{meta['busy_at_start']:.0%}"),
        *[(k, v) for k, v in versions.items()],
    ]:
        out.append(f"| {key} | {value} |")
    out.append("")
    if meta["notes"]:
        out.append("**Notes**\n")
        out += [f"- {note}" for note in meta["notes"]]
        out.append("")

    targets = meta["targets"]
    proxies = [t for t in targets if t != "direct"]
    load_scenarios = [s for s in meta["scenarios"] if s in LOAD_SCENARIOS or s == "paced-10ms"]

    # Summary: highest concurrency of each scenario, targets side by side.
    top = max(meta["concurrency"])
    out.append(f"## Summary (concurrency {top})\n")
    header = ["scenario"] + [f"{t} req/s" for t in targets] + [f"{p} +p50 / +p99 ms" for p in proxies]
    if "tokentap" in targets and "nginx" in targets:
        header.append("tokentap ÷ nginx req/s")
    body = []
    for scenario in load_scenarios:
        direct = index.get((scenario, top, "direct"), {})
        line = [scenario]
        line += [fmt(index.get((scenario, top, t), {}).get("rps"), 1) for t in targets]
        for p in proxies:
            r = index.get((scenario, top, p), {})
            line.append(added(r, direct))
        if "tokentap" in targets and "nginx" in targets:
            line.append(paired_ratio(index.get((scenario, top, "tokentap"), {}),
                                     index.get((scenario, top, "nginx"), {})))
        body.append(line)
    out.append(table(header, body))
    out.append("")

    out += targets_section(results)

    for scenario in load_scenarios:
        out.append(f"## {scenario}\n")
        out.append(SCENARIO_TEXT[scenario] + ".\n")
        if scenario == "paced-10ms":
            header = ["conc", "target", "req/s", "TTFB p50 / p99 ms", "TTFT p50 / p99 ms", "transit p50 / p99 µs",
                      "+transit p50 / p99 µs", "proxy CPU %", "peak RSS MiB", "errors"]
            body = []
            for conc in meta["concurrency"]:
                direct = index.get((scenario, conc, "direct"), {})
                for target in targets:
                    r = index.get((scenario, conc, target))
                    if r is None:
                        continue
                    if "failed" in r:
                        body.append([conc, target, "failed"] + ["—"] * 6 + [r["failed"][:80]])
                        continue
                    body.append([
                        conc, target, fmt(r.get("rps"), 1), pair(r.get("ttfb_ms"), 3), pair(r.get("ttft_ms"), 3),
                        pair(r.get("transit_us"), 0), transit_added(r, direct, target),
                        fmt(r.get("cpu_pct"), 1), fmt(mib(r.get("peak_rss_kib")), 1), errors(r),
                    ])
            out.append(table(header, body))
            out.append("")
            continue
        header = ["conc", "target", "req/s", "p50 ms", "p99 ms", "+p50 / +p99 ms", "proxy CPU %",
                  "proxy CPU µs/req", "load CPU %", "peak RSS MiB", "req/s ÷ direct", "req/s ÷ nginx",
                  "CPU/req ÷ nginx", "p99 ÷ nginx", "errors"]
        body = []
        for conc in meta["concurrency"]:
            direct = index.get((scenario, conc, "direct"), {})
            nginx = index.get((scenario, conc, "nginx"), {})
            for target in targets:
                r = index.get((scenario, conc, target))
                if r is None:
                    continue
                if "failed" in r:
                    body.append([conc, target, "failed"] + ["—"] * 11 + [r["failed"][:80]])
                    continue
                body.append([
                    conc, target, fmt(r.get("rps"), 1), fmt(r.get("p50_ms"), 3), fmt(r.get("p99_ms"), 3),
                    added(r, direct) if target != "direct" else "—",
                    fmt(r.get("cpu_pct"), 1), fmt(cpu_per_request(r), 1), fmt(r.get("load_cpu_pct"), 0),
                    fmt(mib(r.get("peak_rss_kib")), 1),
                    paired_ratio(r, direct) if target != "direct" else "—",
                    paired_ratio(r, nginx) if target not in ("direct", "nginx") else "—",
                    ratio(cpu_per_request(r), cpu_per_request(nginx)) if target not in ("direct", "nginx") else "—",
                    ratio(r.get("p99_ms"), nginx.get("p99_ms")) if target not in ("direct", "nginx") else "—",
                    errors(r),
                ])
        out.append(table(header, body))
        out.append("")

    if memory:
        m0 = memory[0]
        out.append("## memory\n")
        out.append(f"{m0['streams']} concurrent streams, each {m0['chunks']} chunks sent every {m0['pace_ms']} ms by "
                   f"bench_upstream (`x-demo-chunk-delay-ms: {m0['pace_ms']}`), opened over {m0['ramp_ms']} ms by "
                   "bench_client (HTTP/1.1, one connection per stream). tokentap is a fresh process for this test. "
                   "Per stream = (peak RSS − RSS before the test) ÷ peak active streams.\n")
        header = ["target", "streams", "peak active", "RSS before MiB", "peak RSS MiB", "VmHWM MiB", "KiB per stream",
                  "proxy CPU %", "TTFB p99 ms", "errors"]
        body = []
        for r in memory:
            if "failed" in r:
                body.append([r["target"], r["streams"], "failed"] + ["—"] * 6 + [r["failed"][:80]])
                continue
            body.append([r["target"], r["streams"], r.get("peak_active"), fmt(mib(r.get("rss_before_kib")), 1),
                         fmt(mib(r.get("peak_rss_kib")), 1), fmt(mib(r.get("hwm_kib")), 1),
                         fmt(r.get("kib_per_stream"), 1), fmt(r.get("cpu_pct"), 1),
                         fmt((r.get("ttfb_ms") or {}).get("p99"), 1), errors(r)])
        out.append(table(header, body))
        out.append("")

    meter = results.get("meter") or []
    if meter:
        out.append("## meter alone\n")
        out.append("`cargo bench --bench meter` (criterion, `benches/meter.rs`) pinned to the proxy's core: 1,000 "
                   "content chunks without usage through a fresh meter, fed a line at a time (as a paced stream "
                   "arrives) and in one piece (as an unpaced one often does). GB are 10⁹ bytes.\n")
        body = []
        for m in meter:
            if "failed" in m:
                body.append([m.get("bench", "—"), "failed", "—", m["failed"][:100]])
                continue
            body.append([m["bench"], f"{m['bytes']:,}", fmt(m["ns"] / 1000, 1), f"{m['gb_per_s']:.2f}"])
        out.append(table(["bench", "bytes", "µs per run", "GB/s"], body))
        out.append("")

    counts = meta.get("tokentap_counts") or {}
    if counts:
        out.append("## tokentap records\n")
        out.append("`/api/counts` of the tokentap instances after the runs (`dropped` should be 0):\n")
        for name, value in counts.items():
            out.append(f"- {name}: `{json.dumps(value)}`")
        out.append("")
    return "\n".join(out)


def run_meter_bench():
    """The meter alone on content chunks without usage (criterion, `benches/meter.rs`), built
    on all cores and then run pinned to the proxy's core: bytes of SSE per second per core.
    Rows of `{bench, bytes, ns, gb_per_s}`, or one row with `failed`."""
    log_path = os.path.join(OUT, "meter-bench.log")
    build = ["cargo", "bench", "--bench", "meter", "--no-run"]
    run = ["cargo", "bench", "--bench", "meter", "--", "content_chunks_without_usage", "--noplot"]
    if QUICK:
        run += ["--warm-up-time", "1", "--measurement-time", "2"]
    if PIN:
        run = ["taskset", "-c", PROXY_CPU] + run
    with open(log_path, "w") as log_file:
        for argv in (build, run):
            log(f"meter alone: {shlex.join(argv)}")
            proc = subprocess.run(argv, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, timeout=1800)
            if proc.returncode != 0:
                return [{"failed": f"{shlex.join(argv)} exited with {proc.returncode} (see bench/out/meter-bench.log)"}]
    rows = []
    for bench in METER_BENCHES:
        where = os.path.join(ROOT, "target", "criterion", bench, "1000 chunks")
        try:
            with open(os.path.join(where, "new", "estimates.json")) as f:
                ns = json.load(f)["mean"]["point_estimate"]
            with open(os.path.join(where, "new", "benchmark.json")) as f:
                size = json.load(f)["throughput"]["Bytes"]
        except (OSError, KeyError, ValueError) as error:
            rows.append({"bench": bench, "failed": f"no criterion estimate: {error}"})
            continue
        rows.append({"bench": bench, "bytes": size, "ns": ns, "gb_per_s": size / ns})
    return rows


# The memory target: RSS per active paced stream at 10,000 concurrent streams.
MEMORY_TARGET_KIB = 32


def round_ratios(a, b, value):
    """`value` of `a` over `value` of `b`, round by round (the two runs of a round lie close
    together in time)."""
    out = []
    for x, y in zip(a.get("rounds") or [], b.get("rounds") or []):
        if "failed" in x or "failed" in y:
            continue
        vx, vy = value(x), value(y)
        if vx is not None and vy:
            out.append(vx / vy)
    return out


def targets_section(results):
    """The issue's targets, each checked in this run: tokentap against nginx. A ratio counts as
    the tables report it, to two decimals."""
    meta, rows, memory = results["meta"], results["rows"], results["memory"]
    if not {"tokentap", "nginx"} <= set(meta["targets"]):
        return []
    index = {(r["scenario"], r["concurrency"], r["target"]): r for r in rows}
    checks = []  # (target, [(row name, met, shown)])

    def spread(values):
        return f" (rounds {min(values):.2f}–{max(values):.2f})" if len(values) >= 2 else ""

    def ok(*rs):
        return all(r and "failed" not in r for r in rs)

    throughput, cpu, latency, transit = [], [], [], []
    for scenario in [s for s in meta["scenarios"] if s in LOAD_SCENARIOS or s == "paced-10ms"]:
        for conc in meta["concurrency"]:
            t, n = index.get((scenario, conc, "tokentap")), index.get((scenario, conc, "nginx"))
            if not ok(t, n):
                continue
            name = f"{scenario} c{conc}"
            rps = round_ratios(t, n, lambda r: r.get("rps"))
            value = median(rps) if len(rps) >= 2 else (t["rps"] / n["rps"] if t.get("rps") and n.get("rps") else None)
            if value is not None:
                throughput.append((name, round(value, 2) >= 1.0, f"{value:.2f}{spread(rps)}"))
            per_request = lambda r: r["cpu_s"] / r["ok"] if r.get("cpu_s") is not None and r.get("ok") else None
            ct, cn = cpu_per_request(t), cpu_per_request(n)
            if ct is not None and cn:
                value = ct / cn
                cpu.append((name, round(value, 2) <= 1.0, f"{value:.2f}{spread(round_ratios(t, n, per_request))}"))
            direct = index.get((scenario, conc, "direct"), {})
            if scenario == "chat" and conc in (1, 64) and ok(direct) and direct.get("p50_ms") is not None:
                for q in ("p50", "p99"):
                    at, an = t[f"{q}_ms"] - direct[f"{q}_ms"], n[f"{q}_ms"] - direct[f"{q}_ms"]
                    latency.append((f"{name} {q}", round(at, 3) <= round(an, 3), f"{at:+.3f} ms (nginx {an:+.3f})"))
            if scenario == "paced-10ms" and ok(direct) and direct.get("transit_us"):
                for q in ("p50", "p99"):
                    d = float(direct["transit_us"][q])
                    at, an = float(t["transit_us"][q]) - d, float(n["transit_us"][q]) - d
                    transit.append((f"{name} {q}", round(at) <= round(an), f"{at:+.0f} µs (nginx {an:+.0f})"))
    checks += [("req/s at least nginx's (tokentap ÷ nginx)", throughput),
               ("CPU per request at most nginx's (tokentap ÷ nginx)", cpu),
               ("latency added over direct at most nginx's (chat, concurrency 1 and 64)", latency),
               ("per-chunk transit added over direct at most nginx's (paced streams)", transit)]
    mem = [m for m in memory if m.get("target") == "tokentap" and "failed" not in m and m.get("kib_per_stream")]
    if mem:
        kib = mem[0]["kib_per_stream"]
        checks.append((f"RSS per paced stream at most {MEMORY_TARGET_KIB} KiB",
                       [(f"{mem[0]['streams']} streams", kib <= MEMORY_TARGET_KIB, f"{kib:.1f} KiB")]))

    meter = [m for m in results.get("meter") or [] if "failed" not in m]
    if meter:
        checks.append((f"the meter alone at least {METER_TARGET_GB_S:g} GB/s per core on chunks without usage",
                       [(m["bench"], m["gb_per_s"] >= METER_TARGET_GB_S, f"{m['gb_per_s']:.2f} GB/s")
                        for m in meter]))

    out = ["## Targets\n",
           "The targets of the performance issue, each checked in this run (tokentap against nginx, both in "
           "front of the same upstream; the meter alone on the proxy's core). A ratio counts as the tables "
           "show it, to two decimals; the rounds' range is each round's own ratio.\n"]
    body, all_met = [], True
    for target, results_ in checks:
        if not results_:
            continue
        missed = [(n, shown) for n, met, shown in results_ if not met]
        all_met &= not missed
        body.append([target, f"{len(results_) - len(missed)} of {len(results_)}",
                     "; ".join(f"{n}: {shown}" for n, shown in missed) or "—"])
    out.append(table(["target", "rows met", "rows not met"], body, text_columns=(0, 2)))
    out.append("")
    out.append("Every target met in this run.\n" if all_met else
               "Not every target met in this run: see the rows not met.\n")
    return out


def mode_text(meta):
    rounds = meta.get("rounds", 1)
    if rounds == 1:
        runs = f"{meta['duration_s']:g} s per run"
    elif meta.get("paced_rounds"):
        runs = f"{rounds} rounds of {meta['duration_s']:g} s per cell (targets in turn, median round reported)"
    else:
        runs = (f"{rounds} rounds of {meta['duration_s']:g} s per load-tool cell (targets in turn, median round "
                f"reported), {meta.get('paced_duration_s', meta['duration_s']):g} s per paced run")
    return f"{meta['mode']}, {runs}, took {meta['elapsed_s']} s"


def cpu_per_request(r):
    """The proxy's CPU time per request served, in µs."""
    if not r or r.get("cpu_s") is None or not r.get("ok"):
        return None
    return r["cpu_s"] * 1e6 / r["ok"]


def paired_ratio(a, b):
    """`a`'s req/s over `b`'s. With rounds, the median of the rounds' own ratios (the two runs
    of a round lie close together in time), and their range."""
    if not a or not b or a.get("rps") is None or not b.get("rps"):
        return "—"
    pairs = [x["rps"] / y["rps"] for x, y in zip(a.get("rounds") or [], b.get("rounds") or [])
             if "failed" not in x and "failed" not in y and x.get("rps") is not None and y.get("rps")]
    if len(pairs) < 2:
        return ratio(a["rps"], b["rps"])
    return f"{median(pairs):.2f} ({min(pairs):.2f}–{max(pairs):.2f})"


def added(r, direct):
    if not r or "failed" in r or r.get("p50_ms") is None or direct.get("p50_ms") is None:
        return "—"
    return f"{signed(r['p50_ms'] - direct['p50_ms'])} / {signed(r['p99_ms'] - direct['p99_ms'])}"


def pair(stats, digits):
    if not stats:
        return "—"
    return f"{fmt(float(stats['p50']), digits)} / {fmt(float(stats['p99']), digits)}"


def transit_added(r, direct, target):
    if target == "direct" or not r.get("transit_us") or not direct.get("transit_us"):
        return "—"
    a, d = r["transit_us"], direct["transit_us"]
    return f"{a['p50'] - d['p50']:+.0f} / {a['p99'] - d['p99']:+.0f}"


def errors(r):
    n = r.get("errors") or 0
    if not n and r.get("ok") == 0:
        return f"0 (no request finished within the run; {r.get('cut_by_deadline') or 0} cut off at its end)"
    if not n:
        return "0"
    kinds = r.get("error_kinds")
    detail = ""
    if isinstance(kinds, dict) and kinds:
        detail = "; ".join(f"{k}: {v}" for k, v in list(kinds.items())[:2])
    elif isinstance(kinds, list) and kinds:
        detail = str(kinds[0])
    detail = re.sub(r"\s+", " ", detail.replace("|", "/"))[:80]
    return f"{n} ({detail})" if detail else str(n)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as error:  # noqa: BLE001
        log(f"error: {error}")
        sys.exit(1)
