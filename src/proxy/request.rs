//! Reads what a metered request's JSON body says (model, stream, usage options, user) and
//! makes the two edits tokentap may need: strip a `provider/` prefix from `model`, and ask for
//! usage on a stream. Edits splice bytes in place; the rest of the body stays as the client
//! wrote it.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::metering::json_reader::Reader;

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default, deserialize_with = "raw")]
    model: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    user: Option<&'a RawValue>,
}

/// Keeps a present `null` as `Some("null")`: `stream_options: null` must be told from absent.
fn raw<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(de).map(Some)
}

/// What a request body says, as far as tokentap cares.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    /// Shared with the request's record and its copies, not copied.
    pub model: Option<Arc<str>>,
    pub stream: bool,
    /// The client itself asked for `stream_options.include_usage: true`.
    pub include_usage: bool,
    pub user: Option<String>,
    /// Byte ranges of the `model` and `stream_options` values, for splicing.
    model_span: Option<(usize, usize)>,
    stream_options_span: Option<(usize, usize)>,
    stream_options: Option<serde_json::Map<String, serde_json::Value>>,
    object_start: usize,
}

/// Reads `body`; `None` when it is not a JSON object (it is then forwarded as sent).
pub fn inspect(body: &[u8]) -> Option<RequestFacts> {
    let raw = match std::str::from_utf8(body).ok().and_then(read_members) {
        Some(members) => members,
        None => serde_members(body)?,
    };
    facts(body, raw)
}

/// [`inspect`] by serde_json's derive alone: what the strict reader's pass must agree with
/// wherever it takes a body (the fuzz target `request_inspect` compares the two).
#[doc(hidden)]
pub fn inspect_with_serde(body: &[u8]) -> Option<RequestFacts> {
    facts(body, serde_members(body)?)
}

/// The raw text of the members tokentap reads, as slices of the body. A present `null` is
/// `Some("null")`: `stream_options: null` must be told from absent.
#[derive(Default)]
struct Members<'a> {
    model: Option<&'a str>,
    stream: Option<&'a str>,
    stream_options: Option<&'a str>,
    user: Option<&'a str>,
}

/// The strict reader's pass: it declines (`None`) a body it does not read exactly as serde_json
/// does (a repeated member, an escaped key, text that is not a JSON object), which then goes
/// through [`serde_members`]. serde_json's derive spent about 2k instructions on the members of
/// a short chat request, reading every key as a string and skipping `messages` a byte at a time.
fn read_members(text: &str) -> Option<Members<'_>> {
    let mut r = Reader::new(text);
    let mut members = Members::default();
    r.object(|r, key| {
        let slot = match key {
            b"model" => &mut members.model,
            b"stream" => &mut members.stream,
            b"stream_options" => &mut members.stream_options,
            b"user" => &mut members.user,
            _ => return r.skip_value(),
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(r.raw_value()?);
        Some(())
    })?;
    r.end()?;
    Some(members)
}

fn serde_members(body: &[u8]) -> Option<Members<'_>> {
    let peek: Peek<'_> = serde_json::from_slice(body).ok()?;
    Some(Members {
        model: peek.model.map(RawValue::get),
        stream: peek.stream.map(RawValue::get),
        stream_options: peek.stream_options.map(RawValue::get),
        user: peek.user.map(RawValue::get),
    })
}

fn facts(body: &[u8], raw: Members<'_>) -> Option<RequestFacts> {
    let span = |raw: &str| {
        let start = raw.as_ptr() as usize - body.as_ptr() as usize;
        (start, start + raw.len())
    };
    // A member's string, borrowed unless it has escapes.
    fn string(raw: Option<&str>) -> Option<Cow<'_, str>> {
        let mut r = Reader::new(raw?);
        let text = r.string()?;
        r.end()?;
        Some(text)
    }
    let stream_options = raw
        .stream_options
        .and_then(|r| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(r).ok());
    Some(RequestFacts {
        model: string(raw.model).map(|text| crate::repeated::model(&text)),
        stream: raw.stream == Some("true"),
        include_usage: stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        user: string(raw.user).map(Cow::into_owned),
        model_span: raw.model.map(span),
        stream_options_span: raw.stream_options.map(span),
        stream_options,
        object_start: body.iter().position(|b| *b == b'{')?,
    })
}

impl RequestFacts {
    /// The body with `model` replaced by `new_model` and/or `include_usage` turned on.
    /// Returns `None` when nothing needs to change.
    pub fn rewrite(
        &self,
        body: &Bytes,
        new_model: Option<&str>,
        add_include_usage: bool,
    ) -> Option<Bytes> {
        let mut edits: Vec<(usize, usize, String)> = Vec::new();
        if let (Some(model), Some((start, end))) = (new_model, self.model_span) {
            edits.push((start, end, serde_json::Value::from(model).to_string()));
        }
        if add_include_usage {
            match (self.stream_options_span, &self.stream_options) {
                (Some((start, end)), Some(options)) => {
                    let mut options = options.clone();
                    options.insert("include_usage".into(), serde_json::Value::Bool(true));
                    edits.push((start, end, serde_json::Value::Object(options).to_string()));
                }
                (Some((start, end)), None) => {
                    // `null` (anything else that is not an object is left to the provider).
                    if body.get(start..end) == Some(b"null") {
                        edits.push((start, end, r#"{"include_usage":true}"#.into()));
                    }
                }
                (None, _) => {
                    let at = self.object_start + 1;
                    edits.push((at, at, r#""stream_options":{"include_usage":true},"#.into()));
                }
            }
        }
        if edits.is_empty() {
            return None;
        }
        edits.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut out = body.to_vec();
        for (start, end, text) in edits {
            out.splice(start..end, text.into_bytes());
        }
        Some(Bytes::from(out))
    }

    /// Whether the rewrite will really ask for usage (it cannot when `stream_options` is odd).
    pub fn can_add_include_usage(&self) -> bool {
        self.stream_options.is_some() || self.stream_options_span.is_none()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The members as spans of the body, so that two readings compare by where they point.
    fn spans(body: &[u8], m: &Members<'_>) -> [Option<(usize, usize)>; 4] {
        let span = |raw: Option<&str>| {
            raw.map(|r| {
                let start = r.as_ptr() as usize - body.as_ptr() as usize;
                (start, start + r.len())
            })
        };
        [
            span(m.model),
            span(m.stream),
            span(m.stream_options),
            span(m.user),
        ]
    }

    /// A request-like JSON object, sometimes spoiled: members tokentap reads and others, values
    /// of every kind (escapes, nesting, `null`), repeated and escaped keys, blanks, and a cut.
    fn request_like() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "model",
            "stream",
            "stream_options",
            "user",
            "messages",
            "max_tokens",
            r"mod\u0065l",
            r"us\u0065r",
            "",
        ]);
        let value = prop::sample::select(vec![
            r#""gpt-4o""#,
            r#""openai/gpt-4o""#,
            r#""caf\u00e9 \"q\" \ud83d\ude00""#,
            r#""\ud800""#,
            "true",
            "false",
            "null",
            "-1.5e3",
            "01",
            r#"{"include_usage":true}"#,
            r#"{"include_usage":false,"x":[1,{"y":null}]}"#,
            r#"[{"role":"user","content":"Say \"hi\" {not: json}"}]"#,
            "[1,2,]",
            r#"{"a":1,}"#,
        ]);
        let blank = prop::sample::select(vec!["", " ", "\n  ", "\t"]);
        (
            prop::collection::vec((key, value, blank.clone()), 0..6),
            blank,
            any::<u8>(),
            0usize..200,
        )
            .prop_map(|(members, blank, spoil, at)| {
                let body = members
                    .iter()
                    .map(|(k, v, b)| format!("{b}\"{k}\"{b}:{b}{v}{b}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let text = format!("{blank}{{{body}}}{blank}");
                let at = at.min(text.len());
                match spoil % 8 {
                    0 => text[..at].to_owned(),
                    1 => format!("[{text}]"),
                    2 => format!("{text} x"),
                    _ => text,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Whatever the strict reader takes, serde_json's derive reads the same members at the
        /// same places; a plain object with no repeated member it always takes.
        #[test]
        fn the_reader_agrees_with_serde(text in request_like()) {
            let body = text.as_bytes();
            let serde = serde_members(body).map(|m| spans(body, &m));
            match read_members(&text) {
                Some(m) => prop_assert_eq!(Some(spans(body, &m)), serde, "{}", text),
                None => {
                    let plain = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .filter(serde_json::Value::is_object)
                        .is_some_and(|_| !text.contains('\\'));
                    let keys: Vec<&str> = text.split('"').skip(1).step_by(2).collect();
                    let repeated = ["model", "stream", "stream_options", "user"]
                        .iter()
                        .any(|k| keys.iter().filter(|key| *key == k).count() > 1);
                    prop_assert!(!plain || repeated, "declined {}", text);
                }
            }
        }
    }

    #[test]
    fn falls_back_to_serde_where_the_reader_declines() {
        // An escaped key is still the member it names.
        let f = inspect(br#"{"mod\u0065l":"gpt-4o","stream":true}"#).expect("object");
        assert_eq!(f.model.as_deref(), Some("gpt-4o"));
        assert!(read_members(r#"{"mod\u0065l":"gpt-4o"}"#).is_none());
        // Invalid UTF-8 in a string tokentap does not read: serde_json skips it unchecked.
        let mut body = br#"{"model":"m","messages":[{"content":"x"}]}"#.to_vec();
        body[37] = 0xff;
        assert_eq!(inspect(&body).expect("object").model.as_deref(), Some("m"));
        // A repeated member is refused by both.
        assert!(inspect(br#"{"model":"a","model":"b"}"#).is_none());
    }

    fn rewrite(body: &str, model: Option<&str>, usage: bool) -> String {
        let bytes = Bytes::copy_from_slice(body.as_bytes());
        let facts = inspect(&bytes).expect("object");
        let out = facts.rewrite(&bytes, model, usage).unwrap_or(bytes);
        String::from_utf8(out.to_vec()).expect("utf8")
    }

    #[test]
    fn reads_the_facts() {
        let f = inspect(br#"{"model":"openai/gpt-4o","stream":true,"stream_options":{"include_usage":true},"user":"u1"}"#).expect("object");
        assert_eq!(f.model.as_deref(), Some("openai/gpt-4o"));
        assert!(f.stream && f.include_usage);
        assert_eq!(f.user.as_deref(), Some("u1"));
        assert!(inspect(b"[1]").is_none());
        assert!(inspect(b"{\"model\":").is_none());
        assert!(!inspect(br#"{"stream":"yes"}"#).expect("object").stream);
    }

    #[test]
    fn splices_only_what_changes() {
        assert_eq!(
            rewrite(
                r#"{ "model" : "openai/gpt-4o", "stream": true }"#,
                Some("gpt-4o"),
                true
            ),
            r#"{"stream_options":{"include_usage":true}, "model" : "gpt-4o", "stream": true }"#
        );
        assert_eq!(
            rewrite(
                r#"{"stream":true,"stream_options":{"include_usage":false,"x":1}}"#,
                None,
                true
            ),
            r#"{"stream":true,"stream_options":{"include_usage":true,"x":1}}"#
        );
        assert_eq!(
            rewrite(r#"{"stream":true,"stream_options":null}"#, None, true),
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#
        );
        assert_eq!(rewrite(r#"{"model":"m"}"#, None, false), r#"{"model":"m"}"#);
    }
}
