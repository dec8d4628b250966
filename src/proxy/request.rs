//! Reads what a metered request's JSON body says (model, stream, usage options, user) and
//! makes the two edits tokentap may need: strip a `provider/` prefix from `model`, and ask for
//! usage on a stream. Edits splice bytes in place; the rest of the body stays as the client
//! wrote it.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

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
    pub model: Option<String>,
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
    let peek: Peek<'_> = serde_json::from_slice(body).ok()?;
    let span = |raw: &RawValue| {
        let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
        (start, start + raw.get().len())
    };
    let string =
        |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok());
    let stream_options = peek.stream_options.and_then(|r| {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(r.get()).ok()
    });
    Some(RequestFacts {
        model: string(peek.model),
        stream: peek.stream.is_some_and(|r| r.get() == "true"),
        include_usage: stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        user: string(peek.user),
        model_span: peek.model.map(span),
        stream_options_span: peek.stream_options.map(span),
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
    use super::*;

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
