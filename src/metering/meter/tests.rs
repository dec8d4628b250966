//! The recorded provider responses in tests/corpus, replayed through the meter under many
//! chunkings: each must yield the usage its `.expect.json` names.

use std::path::PathBuf;

use serde_json::Value;
use tokio::time::Instant;

use super::*;
use crate::metering::usage::{UsageFamily, normalize_text};

fn corpus() -> Vec<(String, Vec<u8>, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/corpus") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !(name.ends_with(".sse") || name.ends_with(".json")) || name.ends_with(".expect.json") {
            continue;
        }
        let body = std::fs::read(&path).expect("body");
        let expect: Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{name}.expect.json"))).expect("expect"),
        )
        .expect("json");
        cases.push((name, body, expect));
    }
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(cases.len() >= 21, "corpus incomplete: {}", cases.len());
    cases
}

fn dialect_of(expect: &Value) -> Dialect {
    match expect["api"].as_str() {
        Some("chat.completions") => Dialect::Chat,
        Some("completions") => Dialect::Completions,
        Some("embeddings") => Dialect::Embeddings,
        Some("responses") => Dialect::Responses,
        Some("messages") => Dialect::Messages,
        other => panic!("unknown api {other:?}"),
    }
}

/// The pieces fed as the proxy feeds them (`feed_bytes`: a small body's first piece is held,
/// then copied once a second one comes).
fn run(dialect: Dialect, sse: bool, pieces: &[&[u8]]) -> Measurement {
    let mut meter = Meter::new(dialect, sse, None, false);
    let now = Instant::now();
    for piece in pieces {
        meter.feed_bytes(&bytes::Bytes::copy_from_slice(piece), now);
    }
    meter.finish(now)
}

/// The usage the expect file names, `null` read as 0; `None` when it names none at all.
fn expected_usage(expect: &Value) -> Option<[u64; 6]> {
    let u = &expect["usage"];
    let keys = [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "cache_creation_tokens",
    ];
    if keys.iter().all(|k| u[k].is_null()) {
        return None;
    }
    Some(keys.map(|k| u[k].as_u64().unwrap_or(0)))
}

fn measured_usage(m: &Measurement, dialect: Dialect) -> Option<[u64; 6]> {
    let family = if dialect == Dialect::Messages {
        UsageFamily::Anthropic
    } else {
        UsageFamily::OpenAi
    };
    let u = normalize_text(m.usage.as_ref()?, family)
        .expect("valid usage")
        .usage;
    Some([
        u.prompt_tokens,
        u.completion_tokens,
        u.total_tokens,
        u.cached_tokens,
        u.reasoning_tokens,
        u.cache_creation_tokens,
    ])
}

#[test]
fn every_corpus_case_yields_its_usage_at_every_split() {
    for (name, body, expect) in corpus() {
        let dialect = dialect_of(&expect);
        let sse = name.ends_with(".sse");
        let want = expected_usage(&expect);
        let whole = run(dialect, sse, &[&body]);
        assert_eq!(measured_usage(&whole, dialect), want, "{name}");
        if let Some(model) = expect["model"].as_str() {
            assert_eq!(
                whole.response_model.as_deref(),
                Some(model),
                "{name}: response model"
            );
        }
        if sse {
            let events = expect["usage_selection"]["data_events"]
                .as_u64()
                .expect("data_events");
            assert_eq!(whole.chunks, events, "{name}: data events");
        }
        for split in 0..=body.len() {
            let m = run(dialect, sse, &[&body[..split], &body[split..]]);
            assert_eq!(measured_usage(&m, dialect), want, "{name} split at {split}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        let m = run(dialect, sse, &bytes);
        assert_eq!(
            measured_usage(&m, dialect),
            want,
            "{name} one byte per chunk"
        );
        assert_eq!(
            m.text, whole.text,
            "{name}: streamed text independent of chunking"
        );
    }
}

#[test]
fn errors_inside_answers_are_seen() {
    for (name, body, expect) in corpus() {
        let m = run(dialect_of(&expect), name.ends_with(".sse"), &[&body]);
        let is_error_case = name.contains("error");
        assert_eq!(m.error.is_some(), is_error_case, "{name}: {:?}", m.error);
    }
}

#[test]
fn streams_are_complete_and_text_is_collected() {
    for (name, body, expect) in corpus() {
        let m = run(dialect_of(&expect), name.ends_with(".sse"), &[&body]);
        if name.ends_with(".sse") {
            assert!(m.terminal, "{name}: terminal event");
        }
        if expect["api"] != "embeddings" && !name.contains("error") {
            assert!(!m.text.is_empty() || m.tool_calls > 0, "{name}: no text");
            assert!(m.first_content_at.is_some(), "{name}: ttft");
        }
    }
}

#[test]
fn tool_calls_are_counted() {
    for (name, body, expect) in corpus() {
        if name.contains("tool-call") {
            let m = run(dialect_of(&expect), true, &[&body]);
            assert_eq!(m.tool_calls, 1, "{name}");
        }
    }
}

const ANTHROPIC_STREAM: &[u8] = b"event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\":\"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"search\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\": 1}\"}}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

#[test]
fn anthropic_start_and_delta_usage_merge() {
    for split in 0..=ANTHROPIC_STREAM.len() {
        let m = run(
            Dialect::Messages,
            true,
            &[&ANTHROPIC_STREAM[..split], &ANTHROPIC_STREAM[split..]],
        );
        assert_eq!(
            measured_usage(&m, Dialect::Messages),
            Some([135, 15, 150, 100, 0, 10]),
            "split {split}"
        );
        assert!(m.terminal);
        assert_eq!(m.tool_calls, 1);
        assert_eq!(m.text, "Hello{\"q\": 1}");
        assert_eq!(m.response_model.as_deref(), Some("claude-sonnet-4-5"));
    }
}

#[test]
fn nested_look_alikes_are_not_usage() {
    let body = br#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},"usage":null}],"tool_results":[{"usage":{"input_tokens":999,"output_tokens":999}}]}"#;
    let m = run(Dialect::Chat, false, &[body]);
    assert!(m.usage.is_none());
    assert_eq!(m.tool_calls, 1);
}

#[test]
fn cumulative_usage_takes_the_last_value_not_the_sum() {
    let stream = b"data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n\
data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n\
data: {\"model\":\"m\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}]}\n\n\
data: [DONE]\n\n";
    let m = run(Dialect::Chat, true, &[stream]);
    assert_eq!(measured_usage(&m, Dialect::Chat), Some([5, 3, 8, 0, 0, 0]));
    assert_eq!(m.text, "ab");
}

#[test]
fn usage_only_chunks_are_cut_when_stripping() {
    let body = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/openai__chat__stream__include-usage.sse"),
    )
    .expect("corpus");
    let mut meter = Meter::new(Dialect::Chat, true, None, true);
    meter.feed(&body, Instant::now());
    let cuts = meter.take_cuts();
    assert_eq!(cuts.len(), 1);
    let cut = &body[usize::try_from(cuts[0].start).expect("usize")
        ..usize::try_from(cuts[0].end).expect("usize")];
    let cut = std::str::from_utf8(cut).expect("utf8");
    assert!(
        cut.starts_with("data: {")
            && cut.contains("\"choices\":[]")
            && cut.contains("\"usage\":{")
            && cut.ends_with("\n\n"),
        "{cut}"
    );
    // A usage that rides on a chunk with choices is never cut.
    let deepseek = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/deepseek__chat__stream__usage-on-finish-chunk-reasoning.sse"),
    )
    .expect("corpus");
    let mut meter = Meter::new(Dialect::Chat, true, None, true);
    meter.feed(&deepseek, Instant::now());
    assert!(meter.take_cuts().is_empty());
    // Compressed streams are never cut: their offsets are not event offsets.
    assert!(!Meter::new(Dialect::Chat, true, Some("gzip"), true).strips());
}

#[test]
fn gzip_bodies_are_metered_from_a_decoded_copy() {
    use std::io::Write;
    let body = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/openai__chat__json__cached-tokens.json"),
    )
    .expect("corpus");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let mut meter = Meter::new(Dialect::Chat, false, Some("gzip"), false);
    for piece in gz.chunks(100) {
        meter.feed(piece, Instant::now());
    }
    let m = meter.finish(Instant::now());
    assert_eq!(
        measured_usage(&m, Dialect::Chat),
        Some([1149, 353, 1502, 1024, 0, 0])
    );
}

#[test]
fn malformed_events_count_as_parse_errors_and_never_panic() {
    let stream = b"data: not json\n\ndata: [1,2]\n\ndata: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n";
    let m = run(Dialect::Chat, true, &[stream]);
    assert_eq!(m.parse_errors, 2);
    assert_eq!(measured_usage(&m, Dialect::Chat), Some([1, 1, 2, 0, 0, 0]));
}
