//! The meter's shortcuts (the content-chunk template, the substring fast path, the typed
//! parse) must record exactly what the plain reading records: every event parsed into a
//! `serde_json::Value` and walked by `Measurement::observe`. Random chat streams, with text
//! that looks like JSON structure, go through both.

use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;

/// What both readings must agree on.
fn summary(m: &Measurement) -> (Option<String>, String, u64, u64, bool, u64, String) {
    let usage = serde_json::to_string(&m.usage_value()).unwrap_or_default();
    (
        m.response_model.as_deref().map(str::to_owned),
        m.text.clone(),
        m.tool_calls,
        m.chunks,
        m.terminal,
        m.parse_errors,
        usage,
    )
}

fn reference(events: &[String], now: Instant) -> Measurement {
    let mut m = Measurement::default();
    for data in events {
        if data == "[DONE]" {
            m.terminal = true;
            continue;
        }
        m.chunks += 1;
        match serde_json::from_str::<Value>(data) {
            Ok(value) => {
                m.observe(&value, Dialect::Chat, "", now);
            }
            Err(_) => m.parse_errors += 1,
        }
    }
    m
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,12}",
        Just(String::new()),
        Just("\"usage\":{\"prompt_tokens\":5}".to_owned()),
        Just("say \"hi\"\n\\ done".to_owned()),
        Just("\",\"usage\":{\"total_tokens\":9},\"x\":\"".to_owned()),
        Just("caf\u{e9} \u{1F600}".to_owned()),
    ]
}

/// One chunk of a chat stream, in one of the shapes providers send: compact, pretty-printed
/// (blanks after colons), or compact with non-ASCII text as `\u` escapes (Python's default).
fn chunk(shape: u8, text: &str, form: u8) -> String {
    let t = Value::String(text.to_owned());
    let quoted = t.to_string();
    // Shapes a first chunk may take that decide where the model comes from; written as text,
    // since a `Value` cannot repeat a key.
    match shape % 15 {
        9 => {
            return format!(
                r#"{{"id":"c","choices":[{{"index":0,"delta":{{"model":"nested","content":{quoted}}}}}]}}"#
            );
        }
        10 => {
            return format!(
                r#"{{"id":"c","model":null,"choices":[{{"index":0,"delta":{{"content":{quoted}}}}}]}}"#
            );
        }
        11 => {
            return format!(
                r#"{{"id":"c","model":"m","model":"m3","choices":[{{"index":0,"delta":{{"content":{quoted}}}}}]}}"#
            );
        }
        12 => {
            return format!(
                r#"{{"choices":[{{"index":0,"delta":{{"content":{quoted}}}}}],"model" : "m\"q\u00e9"}}"#
            );
        }
        13 => {
            return format!(
                r#"{{"id":"{{\"model\":[","choices":[{{"index":0,"delta":{{"x":"\"]}}}}\"","model":"nested","content":{quoted}}}}}]}}"#
            );
        }
        _ => {}
    }
    let value = match shape % 15 {
        0..=2 => {
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}], "usage": null})
        }
        3 => {
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"reasoning_content": t}}]})
        }
        4 => {
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": null}, "finish_reason": "stop"}]})
        }
        5 => {
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": t}}]}}]})
        }
        6 => {
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": t}}], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        }
        7 => {
            json!({"id": "c", "model": "m2", "choices": [{"index": 0, "delta": {"content": t, "refusal": t}}]})
        }
        _ => {
            json!({"id": "c", "model": "m", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        }
    };
    let compact = value.to_string();
    match form % 3 {
        0 => compact,
        1 => serde_json::to_string_pretty(&value).unwrap_or(compact),
        _ => compact
            .chars()
            .map(|c| match c {
                c if c.is_ascii() => c.to_string(),
                c => c
                    .encode_utf16(&mut [0; 2])
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect(),
            })
            .collect(),
    }
}

proptest! {
    #[test]
    fn shortcuts_record_what_the_plain_reading_records(
        chunks in proptest::collection::vec((any::<u8>(), text(), 0u8..3), 1..24),
        // Small pieces split every event; large ones leave most whole, for the parser to offer
        // to the template (`take_block`).
        split in prop_oneof![1usize..64, 64usize..4096],
    ) {
        let now = Instant::now();
        // The first chunk is as random as the rest: where the model comes from matters most there.
        let mut events: Vec<String> =
            chunks.iter().map(|(shape, text, form)| chunk(*shape, text, *form)).collect();
        events.push("[DONE]".to_owned());
        let body: String = events
            .iter()
            .map(|e| format!("data: {}\n\n", e.replace('\n', "\ndata: ")))
            .collect();
        let mut meter = Meter::new(Dialect::Chat, true, None, false);
        for piece in body.as_bytes().chunks(split) {
            meter.feed(piece, now);
        }
        let metered = meter.finish(now);
        prop_assert_eq!(summary(&metered), summary(&reference(&events, now)));
    }
}
