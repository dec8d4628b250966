//! The meter on its own: bytes of SSE per second and time per chunk, for content chunks that
//! carry no usage (the template), fed a line at a time or in one piece, and for chunks that do
//! (the full parse); and whole non-streamed answers: a chat completion, compact and
//! pretty-printed as OpenAI sends it, and an embedding of 1536 floats.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokentap::metering::{Dialect, Meter};

fn stream(chunks: usize, usage_on_every_chunk: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..chunks {
        let usage = if usage_on_every_chunk {
            format!(
                r#","usage":{{"prompt_tokens":12,"completion_tokens":{i},"total_tokens":{}}}"#,
                12 + i
            )
        } else {
            r#","usage":null"#.to_owned()
        };
        out.extend_from_slice(
            format!(
                "data: {{\"id\":\"chatcmpl-AbCdEf0123456789\",\"object\":\"chat.completion.chunk\",\"created\":1730000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0123456789\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]{usage}}}\n\n"
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn bench(c: &mut Criterion) {
    // A line at a time, as a paced stream arrives; or the whole stream in one piece, as an
    // unpaced one often does (the parser then offers each whole event to the template).
    for (name, every, whole) in [
        ("content_chunks_without_usage", false, false),
        ("content_chunks_without_usage_in_one_piece", false, true),
        ("chunks_with_usage", true, false),
    ] {
        let body = stream(1000, every);
        let pieces: Vec<&[u8]> = if whole {
            vec![&body[..]]
        } else {
            body.split_inclusive(|b| *b == b'\n').collect()
        };
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("1000 chunks", |b| {
            b.iter(|| {
                let mut meter = Meter::new(Dialect::Chat, true, None, false);
                let now = tokio::time::Instant::now();
                for piece in &pieces {
                    meter.feed(piece, now);
                }
                meter.finish(now)
            })
        });
        group.finish();
    }
}

const CHAT_ANSWER: &str = r#"{"id":"chatcmpl-AbCdEf0123456789","object":"chat.completion","created":1730000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you with the benchmark today? Let me know what you need.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":16,"total_tokens":28,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_0123456789"}"#;

fn embedding_answer() -> String {
    let floats: Vec<String> = (0..1536)
        .map(|i| format!("{:.9}", ((i * 7919) % 2000) as f64 / 50_000.0 - 0.02))
        .collect();
    format!(
        r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[{}]}}],"model":"text-embedding-3-small","usage":{{"prompt_tokens":10,"total_tokens":10}}}}"#,
        floats.join(",")
    )
}

fn answers(c: &mut Criterion) {
    let chat: serde_json::Value = serde_json::from_str(CHAT_ANSWER).unwrap();
    for (name, dialect, body) in [
        ("chat_answer", Dialect::Chat, CHAT_ANSWER.to_owned()),
        (
            "chat_answer_pretty",
            Dialect::Chat,
            serde_json::to_string_pretty(&chat).unwrap(),
        ),
        ("embedding_answer", Dialect::Embeddings, embedding_answer()),
    ] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("whole", |b| {
            b.iter(|| {
                let mut meter = Meter::new(dialect, false, None, false);
                let now = tokio::time::Instant::now();
                meter.feed(body.as_bytes(), now);
                let m = meter.finish(now);
                assert!(m.usage.is_some());
                m
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench, answers);
criterion_main!(benches);
