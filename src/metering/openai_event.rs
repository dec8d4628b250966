//! OpenAI-style events (chat, completions, embeddings) read into typed, borrowed structs: only
//! the members the meter uses, strings borrowed from the event where they have no escapes.
//! About a third of the cost of building a `serde_json::Value` tree and walking it.
//!
//! It reads exactly what `Measurement::observe` reads from a `Value`. Anything it does not
//! model (an `error`, Groq's `x_groq`, a non-string `content` such as an array of parts, a
//! repeated key) makes it decline, and the caller falls back to the `Value` path.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::measurement::Measurement;

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    #[serde(borrow)]
    choices: Option<Vec<Choice<'a>>>,
    /// Present and not `null`: decline.
    error: Option<IgnoredAny>,
    x_groq: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    delta: Option<Part<'a>>,
    #[serde(borrow)]
    message: Option<Part<'a>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    id: Option<IgnoredAny>,
    #[serde(borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// Observes one stream event. `None` when declined (nothing recorded then); otherwise whether
/// it is a usage-only chunk (`choices: []` plus usage).
pub fn observe(m: &mut Measurement, data: &[u8], now: Instant) -> Option<bool> {
    Some(apply(m, parse(data)?, now))
}

/// Observes a whole non-streamed body. Declined (`None`) also when it has none of `model`,
/// `usage` and `choices`: the caller's generic path decides what such a body is.
pub fn observe_body(m: &mut Measurement, data: &[u8], now: Instant) -> Option<()> {
    let event = parse(data)?;
    if event.model.is_none() && event.usage.is_none() && event.choices.is_none() {
        return None;
    }
    apply(m, event, now);
    Some(())
}

fn parse(data: &[u8]) -> Option<Event<'_>> {
    // A JSON array would deserialize into a struct too; only an object is an event.
    if data.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    // One UTF-8 check of the whole event (a fast pass over ASCII) instead of one per string
    // inside the parser: 14% of the parse's cost on chat chunks (callgrind). Invalid UTF-8
    // declines here as it failed the parse before; the Value path then reports it.
    let text = std::str::from_utf8(data).ok()?;
    let event: Event<'_> = serde_json::from_str(text).ok()?;
    if event.error.is_some() || event.x_groq.is_some() {
        return None;
    }
    Some(event)
}

fn apply(m: &mut Measurement, event: Event<'_>, now: Instant) -> bool {
    if let Some(model) = &event.model {
        m.set_model_str(model);
    }
    let usage_only_shape = event.choices.as_ref().is_some_and(Vec::is_empty);
    // The first usage that is an object wins: the top level's, else a choice's (as the Value
    // path reads; it skips any other value).
    let is_object = |u: &&RawValue| u.get().starts_with('{');
    let mut usage = event.usage.filter(is_object);
    for choice in event.choices.into_iter().flatten() {
        if usage.is_none() {
            usage = choice.usage.filter(is_object);
        }
        push(m, choice.text.as_deref(), now);
        let Some(part) = choice.delta.or(choice.message) else {
            continue;
        };
        for text in [
            &part.content,
            &part.reasoning_content,
            &part.reasoning,
            &part.refusal,
        ] {
            push(m, text.as_deref(), now);
        }
        for call in part.tool_calls.into_iter().flatten() {
            if call.id.is_some() {
                m.tool_calls += 1;
            }
            if let Some(function) = call.function {
                push(m, function.name.as_deref(), now);
                push(m, function.arguments.as_deref(), now);
            }
        }
    }
    let usage_only = usage_only_shape && usage.is_some();
    if let Some(usage) = usage {
        m.set_usage_text(usage);
    }
    usage_only
}

fn push(m: &mut Measurement, text: Option<&str>, now: Instant) {
    if let Some(text) = text {
        m.push_text(text, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::measurement::Dialect;
    use serde_json::Value;

    /// What the meter keeps of one event, through the typed path or the `Value` path.
    fn through(typed: bool, data: &str) -> Option<(bool, String, Option<String>, u64, String)> {
        let mut m = Measurement::default();
        let now = Instant::now();
        let usage_only = if typed {
            observe(&mut m, data.as_bytes(), now)?
        } else {
            let value: Value = serde_json::from_str(data).ok()?;
            m.observe(&value, Dialect::Chat, "", now)
        };
        let usage = serde_json::to_string(&m.usage_value()).unwrap_or_default();
        Some((usage_only, usage, m.response_model, m.tool_calls, m.text))
    }

    #[test]
    fn reads_what_the_value_path_reads() {
        let events = [
            r#"{"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"finish_reason":null}],"usage":null}"#,
            r#"{"model":"m","choices":[{"delta":{"content":"caf\u00e9 \"q\""}}]}"#,
            r#"{"choices":[],"model":"m","usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":0}}}"#,
            r#"{"choices":[{"delta":{"content":"a"},"usage":{"prompt_tokens":1}}],"usage":null}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}},{"index":0,"id":null,"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"message":{"role":"assistant","content":"hi","reasoning_content":"think"}},{"text":"two"}],"usage":{"total_tokens":5}}"#,
            r#"{"object":"list","data":[{"embedding":[0.1]}],"model":"e","usage":{"prompt_tokens":8,"total_tokens":8}}"#,
            r#"{"choices":[{"delta":{}}],"error":null,"x_groq":null}"#,
            // Usage that is no object is skipped, and a choice's is taken instead.
            r#"{"usage":5}"#,
            r#"{"usage":"n","choices":[{"delta":{"content":"a"},"usage":{"prompt_tokens":2}}]}"#,
            r#"{"usage":[],"choices":[],"model":"m"}"#,
            // Pretty-printed, as OpenAI's non-streamed bodies are.
            "{\n  \"model\": \"m\",\n  \"usage\": {\n    \"prompt_tokens\": 3\n  }\n}",
        ];
        for data in events {
            let typed = through(true, data);
            assert!(typed.is_some(), "declined: {data}");
            assert_eq!(typed, through(false, data), "{data}");
        }
    }

    #[test]
    fn declines_what_it_does_not_model() {
        for data in [
            r#"{"error":{"message":"boom"}}"#,
            r#"{"x_groq":{"usage":{"prompt_tokens":1}},"choices":[]}"#,
            r#"{"choices":[{"delta":{"content":[{"type":"text","text":"parts"}]}}]}"#,
            r#"{"usage":{"a":1},"usage":{"b":2}}"#,
            r#"[{"model":"m"}]"#,
            r#"{"model":"m""#,
        ] {
            let mut m = Measurement::default();
            assert_eq!(
                observe(&mut m, data.as_bytes(), Instant::now()),
                None,
                "{data}"
            );
            assert!(m.usage.is_none() && m.response_model.is_none() && m.text.is_empty());
        }
    }
}
