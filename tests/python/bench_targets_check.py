"""Checks the Targets section of bench/RESULTS.md (bench/harness.py's targets_section) on
results made up here: which rows meet each target, which do not, and with what figures."""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("harness", os.path.join(ROOT, "bench", "harness.py"))
harness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(harness)


def cell(scenario, conc, target, rps, cpu_s, p50=1.0, p99=2.0, transit=None, rounds=()):
    row = {"scenario": scenario, "concurrency": conc, "target": target, "rps": rps, "ok": 1000,
           "cpu_s": cpu_s, "p50_ms": p50, "p99_ms": p99,
           "rounds": [{"rps": r, "ok": 1000, "cpu_s": c} for r, c in rounds]}
    if transit is not None:
        row["transit_us"] = {"p50": str(transit[0]), "p99": str(transit[1])}
    return row


def results(rows, kib_per_stream=14.2, meter_ns=78_000):
    meta = {"targets": ["direct", "tokentap", "nginx"], "scenarios": ["chat", "paced-10ms", "memory"],
            "concurrency": [1, 64]}
    memory = [{"target": "tokentap", "streams": 9900, "kib_per_stream": kib_per_stream}]
    # 271,904 bytes: the bench's 1,000 chunks; in 78 µs that is 3.49 GB/s.
    meter = [{"bench": "content_chunks_without_usage", "bytes": 271_904, "ns": meter_ns,
              "gb_per_s": 271_904 / meter_ns},
             {"bench": "content_chunks_without_usage_in_one_piece", "failed": "no criterion estimate"}]
    return {"meta": meta, "rows": rows, "memory": memory, "meter": meter}


def section(res):
    return "\n".join(harness.targets_section(res))


def row_of(text, target):
    lines = [line for line in text.splitlines() if line.startswith(f"| {target}")]
    assert len(lines) == 1, (target, text)
    return lines[0]


# chat: at 1 tokentap is ahead; at 64 it is behind on req/s in every round, level on CPU to
# two decimals (0.996), and its added latency is the higher at p99.
rows = [
    cell("chat", 1, "direct", 40000, None, p50=0.02, p99=0.03),
    cell("chat", 1, "tokentap", 8600, 0.040, p50=0.11, p99=0.16, rounds=[(8600, 0.040), (8500, 0.041)]),
    cell("chat", 1, "nginx", 8200, 0.049, p50=0.12, p99=0.17, rounds=[(8200, 0.049), (8300, 0.048)]),
    cell("chat", 64, "direct", 49000, None, p50=1.25, p99=2.35),
    cell("chat", 64, "tokentap", 46000, 0.01594, p50=1.27, p99=2.75,
         rounds=[(46000, 0.0159), (45000, 0.0160), (47000, 0.0159)]),
    cell("chat", 64, "nginx", 48000, 0.0160, p50=1.23, p99=2.70,
         rounds=[(48000, 0.0160), (47000, 0.0160), (47500, 0.0160)]),
    # Paced: the pacing sets req/s (83.4 against 83.5 is 1.00); transit behind at p99 only.
    cell("paced-10ms", 1, "direct", 83.5, None, transit=(100, 150)),
    cell("paced-10ms", 1, "tokentap", 83.4, 0.30, transit=(190, 300)),
    cell("paced-10ms", 1, "nginx", 83.5, 0.35, transit=(200, 290)),
    cell("paced-10ms", 64, "direct", 333, None, transit=(100, 150)),
    cell("paced-10ms", 64, "tokentap", 333, 0.19, transit=(90, 240)),
    cell("paced-10ms", 64, "nginx", 333, 0.19, transit=(97, 260)),
]
text = section(results(rows))
throughput = row_of(text, "req/s at least")
assert "| 3 of 4 |" in throughput, throughput
assert "chat c64: 0.96 (rounds 0.96–0.99)" in throughput, throughput
cpu = row_of(text, "CPU per request")
assert "| 4 of 4 | — |" in cpu, cpu
latency = row_of(text, "latency added")
assert "| 2 of 4 |" in latency, latency
assert "chat c64 p50: +0.020 ms (nginx -0.020)" in latency, latency
assert "chat c64 p99: +0.400 ms (nginx +0.350)" in latency, latency
transit = row_of(text, "per-chunk transit")
assert "| 3 of 4 |" in transit and "paced-10ms c1 p99: +150 µs (nginx +140)" in transit, transit
assert "| 1 of 1 | — |" in row_of(text, "RSS per paced stream")
# The meter's run that failed is no row: only the measured one counts.
assert "| 1 of 1 | — |" in row_of(text, "the meter alone"), text
assert "Not every target met in this run" in text
slow = section(results(rows, meter_ns=300_000))
assert "| 0 of 1 | content_chunks_without_usage: 0.91 GB/s |" in row_of(slow, "the meter alone"), slow

# The same with tokentap level or ahead everywhere, and a memory target missed.
ahead = [dict(r) for r in rows]
for r in ahead:
    if r["target"] == "tokentap" and r["scenario"] == "chat" and r["concurrency"] == 64:
        r.update(rps=48000, p50_ms=1.20, p99_ms=2.70,
                 rounds=[{"rps": 48000, "ok": 1000, "cpu_s": 0.0159}])
    if r["target"] == "tokentap" and r["scenario"] == "paced-10ms" and r["concurrency"] == 1:
        r["transit_us"] = {"p50": "190", "p99": "280"}
text = section(results(ahead, kib_per_stream=40.0))
assert "| 4 of 4 | — |" in row_of(text, "req/s at least"), text
assert "| 4 of 4 | — |" in row_of(text, "per-chunk transit"), text
assert "| 0 of 1 | 9900 streams: 40.0 KiB |" in row_of(text, "RSS per paced stream"), text
met = section(results(ahead))
assert "Every target met in this run." in met, met

# Without nginx in the run there is nothing to check against.
no_nginx = results(rows)
no_nginx["meta"]["targets"] = ["direct", "tokentap"]
assert harness.targets_section(no_nginx) == []
print("bench targets: ok")
