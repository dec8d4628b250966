//! The meter on its own: bytes of SSE per second and time per chunk, for content chunks that
//! carry no usage (the template), fed a line at a time or in one piece, and for chunks that do
//! (the full parse).

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

criterion_group!(benches, bench);
criterion_main!(benches);
