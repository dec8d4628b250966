#!/usr/bin/env python3
"""Drives tokentap with the official Anthropic Python SDK and checks what the SDK sees.

Usage: python3 tests/python/anthropic_check.py BASE_URL   (e.g. http://127.0.0.1:8787)

Run by tests/sdk.rs against tokentap in front of the demo upstream. The SDK is pointed at the
proxy as a user would point it (`base_url`, nothing else changed) and calls `/v1/messages`.
Prints one JSON line on stdout and exits 0 when every check holds; prints the reason on stderr
and exits 1 otherwise.
"""

import sys

from check_runner import check, run

MAX_TOKENS = 5
MODEL = "claude-3-5-haiku-latest"
MESSAGES = [{"role": "user", "content": "say hello to the proxy"}]
# The demo upstream counts 3 + (4 + 5 words) for these messages, and the system prompt's words.
SYSTEM = "answer briefly"
INPUT_TOKENS = 3 + 4 + 5 + 2


def check_usage(label, usage):
    check(
        usage.input_tokens == INPUT_TOKENS,
        f"{label}: input_tokens {usage.input_tokens}, expected {INPUT_TOKENS}",
    )
    check(
        usage.output_tokens == MAX_TOKENS,
        f"{label}: output_tokens {usage.output_tokens}, expected {MAX_TOKENS}",
    )


def non_streamed(client):
    message = client.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, system=SYSTEM, messages=MESSAGES
    )
    check(message.type == "message", f"(a) non-streamed: type {message.type!r}")
    check_usage("(a) non-streamed", message.usage)
    text = "".join(block.text for block in message.content if block.type == "text")
    check(text.strip() != "", "(a) non-streamed: no text")
    return text


def streamed(client):
    """The SDK's streaming helper: it reads every event and builds the final message."""
    deltas = []
    with client.messages.stream(
        model=MODEL, max_tokens=MAX_TOKENS, system=SYSTEM, messages=MESSAGES
    ) as stream:
        for text in stream.text_stream:
            deltas.append(text)
        final = stream.get_final_message()
    check(len(deltas) == MAX_TOKENS, f"(b) stream: {len(deltas)} text deltas, expected {MAX_TOKENS}")
    check_usage("(b) stream", final.usage)
    check(final.stop_reason == "max_tokens", f"(b) stream: stop_reason {final.stop_reason!r}")
    return "".join(deltas)


def raw_events(client):
    """`stream=True` without the helper: the events as they arrive, in Anthropic's order."""
    kinds = [
        event.type
        for event in client.messages.create(
            model=MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES, stream=True
        )
    ]
    check(kinds[:1] == ["message_start"], f"(c) raw stream: starts with {kinds[:1]}")
    check(kinds[-1:] == ["message_stop"], f"(c) raw stream: ends with {kinds[-1:]}")
    check(
        kinds.count("content_block_delta") == MAX_TOKENS,
        f"(c) raw stream: {kinds.count('content_block_delta')} deltas, expected {MAX_TOKENS}",
    )
    check("message_delta" in kinds, "(c) raw stream: no message_delta (the output usage)")


def make_client(base_url):
    from anthropic import Anthropic

    return Anthropic(base_url=base_url, api_key="sk-ant-sdk-test", max_retries=0, timeout=30)


def count_tokens(client):
    """The SDK's token count: what the same message counts as its input."""
    counted = client.messages.count_tokens(model=MODEL, system=SYSTEM, messages=MESSAGES)
    check(
        counted.input_tokens == INPUT_TOKENS,
        f"(d) count_tokens: input_tokens {counted.input_tokens}, expected {INPUT_TOKENS}",
    )


def checks(client):
    whole = non_streamed(client)
    stream_text = streamed(client)
    raw_events(client)
    count_tokens(client)
    return {"text": whole, "stream_text": stream_text, "calls": 4}


if __name__ == "__main__":
    sys.exit(run("anthropic_check", sys.argv, make_client, checks))
