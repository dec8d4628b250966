//! The fast path for the events that make up almost every stream: content deltas. One
//! multi-pattern scan finds the text fields; anything that might carry usage, an error or a tool
//! call, or that the scan cannot fully account for, is left to the full JSON parse.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use tokio::time::Instant;

use super::measurement::{Dialect, Measurement};

const PATTERNS: &[&str] = &[
    "\"usage\"",
    "\"error\"",
    "\"tool_calls\"",
    "\"content\":\"",
    "\"reasoning_content\":\"",
    "\"reasoning\":\"",
    "\"refusal\":\"",
    "\"text\":\"",
    "\"delta\":\"",
    "\"partial_json\":\"",
    "\"thinking\":\"",
];
const USAGE: usize = 0;
const ERROR: usize = 1;
const TOOL_CALLS: usize = 2;
const CHAT_TEXT: &[usize] = &[3, 4, 5, 6];
const COMPLETION_TEXT: &[usize] = &[7];
const RESPONSES_TEXT: &[usize] = &[8];
const MESSAGES_TEXT: &[usize] = &[7, 9, 10];

static SCANNER: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| AhoCorasick::new(PATTERNS).ok());

/// Handles `data` without a full parse when it is a plain content delta. Returns `false` when
/// the event needs the full parse instead (nothing has been recorded then).
pub fn try_observe(
    m: &mut Measurement,
    dialect: Dialect,
    event: &[u8],
    data: &[u8],
    now: Instant,
) -> bool {
    let text_patterns = match dialect {
        // The first event names the model: parse it fully.
        Dialect::Chat if m.response_model.is_some() => CHAT_TEXT,
        Dialect::Completions if m.response_model.is_some() => COMPLETION_TEXT,
        Dialect::Responses if event.ends_with(b".delta") => RESPONSES_TEXT,
        Dialect::Messages if event == b"ping" => return true,
        Dialect::Messages if event == b"content_block_delta" => MESSAGES_TEXT,
        _ => return false,
    };
    let Some(scanner) = SCANNER.as_ref() else {
        return false;
    };
    // Decide first, record second, so a declined event leaves no trace. Text hits are kept on
    // the stack, so the usual event is scanned once.
    let mut hits = [0usize; 8];
    let mut count = 0usize;
    for hit in scanner.find_iter(data) {
        let pattern = hit.pattern().as_usize();
        match pattern {
            USAGE if !followed_by_null(&data[hit.end()..]) => return false,
            ERROR | TOOL_CALLS => return false,
            p if text_patterns.contains(&p) => {
                if let Some(slot) = hits.get_mut(count) {
                    *slot = hit.end();
                }
                count += 1;
            }
            _ => {}
        }
    }
    if count == 0 {
        return false;
    }
    if count <= hits.len() {
        for &end in &hits[..count] {
            record_text(m, data, end, now);
        }
    } else {
        for hit in scanner.find_iter(data) {
            if text_patterns.contains(&hit.pattern().as_usize()) {
                record_text(m, data, hit.end(), now);
            }
        }
    }
    true
}

fn record_text(m: &mut Measurement, data: &[u8], start: usize, now: Instant) {
    match json_string_at(data, start) {
        Some(text) => m.push_text(&text, now),
        None => m.parse_errors += 1,
    }
}

/// After a `"usage"` key: is its value `null`?
fn followed_by_null(rest: &[u8]) -> bool {
    let rest = trim_start(rest);
    let Some(rest) = rest.strip_prefix(b":") else {
        return false;
    };
    trim_start(rest).starts_with(b"null")
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[skip..]
}

/// Reads the JSON string whose body starts at `start` (just past its opening quote).
fn json_string_at(data: &[u8], start: usize) -> Option<std::borrow::Cow<'_, str>> {
    let body = &data[start..];
    let end = memchr::memchr2(b'"', b'\\', body)?;
    if body[end] == b'"' {
        return std::str::from_utf8(&body[..end])
            .ok()
            .map(std::borrow::Cow::Borrowed);
    }
    // Escapes present: find the real closing quote, then let serde_json decode.
    let mut i = end;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => {
                let quoted = data.get(start - 1..start + i + 1)?;
                return serde_json::from_slice::<String>(quoted)
                    .ok()
                    .map(std::borrow::Cow::Owned);
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dialect: Dialect, event: &[u8], data: &[u8]) -> (bool, String) {
        let mut m = Measurement {
            response_model: Some("m".into()),
            ..Measurement::default()
        };
        let handled = try_observe(&mut m, dialect, event, data, Instant::now());
        (handled, m.text)
    }

    #[test]
    fn content_deltas_take_the_fast_path() {
        let chunk = br#"{"id":"x","choices":[{"index":0,"delta":{"content":"Hi \"there\"\n"},"finish_reason":null}],"usage":null}"#;
        assert_eq!(
            run(Dialect::Chat, b"", chunk),
            (true, "Hi \"there\"\n".into())
        );
        let chunk = br#"{"type":"response.output_text.delta","delta":"caf\u00e9"}"#;
        assert_eq!(
            run(Dialect::Responses, b"response.output_text.delta", chunk),
            (true, "café".into())
        );
        let chunk = br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok"}}"#;
        assert_eq!(
            run(Dialect::Messages, b"content_block_delta", chunk),
            (true, "ok".into())
        );
    }

    #[test]
    fn anything_else_is_declined_untouched() {
        let declined = [
            &br#"{"choices":[],"usage":{"prompt_tokens":1}}"#[..],
            br#"{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":1}}"#,
            br#"{"choices":[{"delta":{"tool_calls":[{"id":"c"}]}}]}"#,
            br#"{"error":{"message":"boom"},"choices":[{"delta":{"content":"a"}}]}"#,
            br#"{"choices":[{"delta":{"role":"assistant"}}]}"#,
            br#"{"choices":[{"delta":{"content": "spaced"}}]}"#,
        ];
        for data in declined {
            assert_eq!(
                run(Dialect::Chat, b"", data),
                (false, String::new()),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
        let mut fresh = Measurement::default();
        assert!(!try_observe(
            &mut fresh,
            Dialect::Chat,
            b"",
            br#"{"choices":[{"delta":{"content":"a"}}]}"#,
            Instant::now()
        ));
        assert!(
            !run(
                Dialect::Responses,
                b"response.completed",
                br#"{"delta":"x"}"#
            )
            .0
        );
    }
}
