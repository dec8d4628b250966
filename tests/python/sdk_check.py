#!/usr/bin/env python3
"""Drives tokentap with the official OpenAI Python SDK and checks what the SDK sees.

Usage: python3 tests/python/sdk_check.py BASE_URL   (e.g. http://127.0.0.1:8787/v1)

Run by tests/sdk.rs against tokentap in front of the demo upstream. Prints one JSON line on
stdout and exits 0 when every check holds; prints the reason on stderr and exits 1 otherwise.
"""

import sys

from check_runner import check, run

MAX_TOKENS = 5
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "say hello to the proxy"}]


def non_streamed_chat(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS
    )
    check(completion.usage is not None, "(a) non-streamed chat: no usage")
    check(
        completion.usage.completion_tokens == MAX_TOKENS,
        f"(a) non-streamed chat: completion_tokens {completion.usage.completion_tokens}, "
        f"expected {MAX_TOKENS}",
    )
    check(len(completion.choices) >= 1, "(a) non-streamed chat: no choices")


def streamed_chat_without_usage(client):
    text = []
    count = 0
    for chunk in client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True
    ):
        count += 1
        check(
            chunk.usage is None,
            f"(b) stream without stream_options: chunk {count} carries usage {chunk.usage!r}",
        )
        check(
            len(chunk.choices) > 0,
            f"(b) stream without stream_options: chunk {count} has empty choices "
            "(a usage-only chunk the client did not ask for)",
        )
        for choice in chunk.choices:
            if choice.delta is not None and choice.delta.content:
                text.append(choice.delta.content)
    check(count > 0, "(b) stream without stream_options: no chunks")
    joined = "".join(text)
    check(joined.strip() != "", "(b) stream without stream_options: no text in the deltas")
    return joined


def streamed_chat_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    check(len(chunks) > 0, "(c) stream with include_usage: no chunks")
    usage_only = [i for i, c in enumerate(chunks) if len(c.choices) == 0]
    check(
        len(usage_only) == 1,
        f"(c) stream with include_usage: {len(usage_only)} chunks with empty choices, expected 1",
    )
    check(
        usage_only[0] == len(chunks) - 1,
        f"(c) stream with include_usage: the usage chunk is chunk {usage_only[0] + 1} "
        f"of {len(chunks)}, expected the last",
    )
    final = chunks[-1]
    check(final.usage is not None, "(c) stream with include_usage: final chunk has no usage")
    check(
        final.usage.completion_tokens == MAX_TOKENS,
        f"(c) stream with include_usage: completion_tokens {final.usage.completion_tokens}, "
        f"expected {MAX_TOKENS}",
    )


def embeddings(client):
    result = client.embeddings.create(model="text-embedding-3-small", input="hello world")
    check(len(result.data) == 1, f"(d) embeddings: {len(result.data)} vectors, expected 1")
    check(len(result.data[0].embedding) > 0, "(d) embeddings: empty vector")


def responses(client):
    response = client.responses.create(model=MODEL, input="hi", max_output_tokens=4)
    check(response.usage is not None, "(e) responses: no usage")
    check(
        response.usage.output_tokens == 4,
        f"(e) responses: output_tokens {response.usage.output_tokens}, expected 4",
    )


def n_choices(client):
    """n=2, whole and streamed without stream_options: every choice, and the usage of all."""
    completion = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, n=2
    )
    check(
        sorted(c.index for c in completion.choices) == [0, 1],
        f"(f) n=2: choices {[c.index for c in completion.choices]}",
    )
    check(
        completion.usage.completion_tokens == 2 * MAX_TOKENS,
        f"(f) n=2: completion_tokens {completion.usage.completion_tokens}, "
        f"expected {2 * MAX_TOKENS}",
    )
    texts = {}
    for chunk in client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, n=2, stream=True
    ):
        check(chunk.usage is None, f"(f) n=2 stream: a chunk carries usage {chunk.usage!r}")
        check(len(chunk.choices) > 0, "(f) n=2 stream: a usage-only chunk reached the client")
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    check(sorted(texts) == [0, 1], f"(f) n=2 stream: choices {sorted(texts)}")
    check(
        all(text.strip() for text in texts.values()) and texts[0] != texts[1],
        f"(f) n=2 stream: texts {texts!r}",
    )


def make_client(base_url):
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key="sk-sdk-test", max_retries=0, timeout=30)


def checks(client):
    non_streamed_chat(client)
    stream_text = streamed_chat_without_usage(client)
    streamed_chat_with_usage(client)
    embeddings(client)
    responses(client)
    n_choices(client)
    return {"stream_text": stream_text, "calls": 7}


if __name__ == "__main__":
    sys.exit(run("sdk_check", sys.argv, make_client, checks))
