#!/usr/bin/env python3
"""Regenerates fuzz/seeds/<target>/ from tests/corpus/ and config/tokentap.toml.

Run from anywhere: python3 fuzz/seeds/make_seeds.py. The seeds are committed (fuzz/corpus/
is git-ignored); scripts/fuzz.sh copies them into fuzz/corpus/<target>/ before each run.
"""
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus"
SEEDS = ROOT / "fuzz" / "seeds"
DIALECTS = {"chat": 0, "completions": 1, "embeddings": 2, "responses": 3, "messages": 4}
SSE_BIT, STRIP_BIT = 0x08, 0x10

# A small Anthropic Messages stream (no recording of one is in tests/corpus).
MESSAGES_SSE = (
    b'event: message_start\n'
    b'data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
    b'"model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":25,'
    b'"cache_creation_input_tokens":0,"cache_read_input_tokens":10,"output_tokens":1}}}\n\n'
    b'event: content_block_start\n'
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b'event: ping\ndata: {"type": "ping"}\n\n'
    b'event: content_block_delta\n'
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\n'
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def usages(value, out):
    """Collects every object under a `usage` key, anywhere in `value`."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "usage" and isinstance(v, dict):
                out.append(v)
            usages(v, out)
    elif isinstance(value, list):
        for v in value:
            usages(v, out)


def sse_payloads(body):
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [l[5:].lstrip(b" ") for l in block.split(b"\n") if l.startswith(b"data:")]
        if data:
            yield b"\n".join(data)


def main():
    found = []
    for path in sorted(CORPUS.iterdir()):
        if path.name.endswith(".expect.json") or path.suffix not in (".sse", ".json"):
            continue
        body = path.read_bytes()
        api = path.name.split("__")[1]
        dialect = DIALECTS.get(api, 0)
        split = struct.pack("<H", len(body) // 2)
        if path.suffix == ".sse":
            write("sse_parser", path.stem, split + body)
            write("meter", path.stem, bytes([dialect | SSE_BIT | STRIP_BIT]) + split + body)
            for payload in sse_payloads(body):
                try:
                    usages(json.loads(payload), found)
                except ValueError:
                    pass
        else:
            write("meter", path.stem, bytes([dialect]) + split + body)
            usages(json.loads(body), found)
    write("sse_parser", "messages-stream", struct.pack("<H", 300) + MESSAGES_SSE)
    write("sse_parser", "crlf-bom-comments",
          b"\x07\x00\xef\xbb\xbf: hi\r\nevent: x\r\ndata: a\r\ndata:b\r\r\ndata\n\n")
    write("meter", "messages-stream",
          bytes([DIALECTS["messages"] | SSE_BIT]) + struct.pack("<H", 300) + MESSAGES_SSE)
    for payload in sse_payloads(MESSAGES_SSE):
        usages(json.loads(payload), found)
    found.append({"input_tokens": 3, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 7})
    found.append({"prompt_tokens": "12", "completion_tokens": 3.0, "total_tokens": 20})
    seen = set()
    for u in found:
        text = json.dumps(u, sort_keys=True).encode()
        if text not in seen:
            seen.add(text)
            write("usage_normalizer", f"usage-{len(seen):02}.json", text)
    write("config_loader", "tokentap.toml", (ROOT / "config" / "tokentap.toml").read_bytes())
    write("config_loader", "minimal.toml",
          b'upstream = "http://127.0.0.1:9000"\nmax_body = "1KiB"\n[metrics]\nttft_buckets = [0.1, 1.0]\n'
          b'[[keys]]\nname = "ci"\nenv = "CI_KEY"\n')


main()
