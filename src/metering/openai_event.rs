//! OpenAI-style events (chat, completions, embeddings) read into typed, borrowed structs by the
//! strict `json_reader`: only the members the meter uses, strings borrowed from the event where
//! they have no escapes, the rest checked and skipped.
//!
//! It reads exactly what `Measurement::observe` reads from a `Value`. Anything it does not
//! model (an `error`, Groq's `x_groq`, a non-string `content` such as an array of parts, a
//! repeated key) makes it decline, and the caller falls back to the `Value` path.

use std::borrow::Cow;

use tokio::time::Instant;

use super::json_reader::Reader;
use super::measurement::Measurement;
use super::usage::Members;

#[derive(Default)]
struct Event<'a> {
    model: Option<Cow<'a, str>>,
    /// The value's JSON text.
    usage: Option<&'a str>,
    /// Its counts, read as it passed, when `usage_counted`. A choice's usage (rare) is kept as
    /// text alone.
    usage_counts: Members,
    usage_counted: bool,
    choices: Option<Items<Choice<'a>>>,
}

#[derive(Default)]
struct Choice<'a> {
    text: Option<Cow<'a, str>>,
    delta: Option<Part<'a>>,
    message: Option<Part<'a>>,
    usage: Option<&'a str>,
}

#[derive(Default)]
struct Part<'a> {
    content: Option<Cow<'a, str>>,
    reasoning_content: Option<Cow<'a, str>>,
    reasoning: Option<Cow<'a, str>>,
    refusal: Option<Cow<'a, str>>,
    tool_calls: Option<Items<ToolCall<'a>>>,
}

#[derive(Default)]
struct ToolCall<'a> {
    /// Present and not `null`.
    has_id: bool,
    function: Option<Function<'a>>,
}

#[derive(Default)]
struct Function<'a> {
    name: Option<Cow<'a, str>>,
    arguments: Option<Cow<'a, str>>,
}

/// Observes one stream event. `None` when declined (nothing recorded then); otherwise whether
/// it is a usage-only chunk (`choices: []` plus usage).
pub fn observe(m: &mut Measurement, data: &[u8], now: Instant) -> Option<bool> {
    let mut event = Event::default();
    parse(data, &mut event)?;
    Some(apply(m, &event, now))
}

/// Observes a whole non-streamed body. Declined (`None`) also when it has none of `model`,
/// `usage` and `choices`: the caller's generic path decides what such a body is.
pub fn observe_body(m: &mut Measurement, data: &[u8], now: Instant) -> Option<()> {
    let mut event = Event::default();
    parse(data, &mut event)?;
    if event.model.is_none() && event.usage.is_none() && event.choices.is_none() {
        return None;
    }
    apply(m, &event, now);
    Some(())
}

/// Reads `data` into `event`, in place: a choice is a few hundred bytes, and moving the event
/// and its choices from reader to reader cost more than reading them (callgrind).
fn parse<'a>(data: &'a [u8], event: &mut Event<'a>) -> Option<()> {
    // One UTF-8 check of the whole event (a fast pass over ASCII); the reader then slices
    // strings out of it unchecked. Invalid UTF-8 declines, and the `Value` path reports it.
    let text = std::str::from_utf8(data).ok()?;
    let mut reader = Reader::new(text);
    // Only an object is an event.
    if reader.peek()? != b'{' {
        return None;
    }
    read_event(&mut reader, event)?;
    reader.end()
}

/// Which of a struct's keys were read. A repeated key declines: the `Value` path keeps the
/// last one, which this reading does not model.
#[derive(Default)]
struct Seen(u8);

impl Seen {
    /// Notes key number `key` read: `None` when it was read before.
    fn first(&mut self, key: u8) -> Option<()> {
        let bit = 1 << key;
        if self.0 & bit != 0 {
            return None;
        }
        self.0 |= bit;
        Some(())
    }

    /// The value of the struct's key number `key`, `null` read as absent.
    fn read<'a, T>(
        &mut self,
        key: u8,
        r: &mut Reader<'a>,
        read: impl FnOnce(&mut Reader<'a>) -> Option<T>,
    ) -> Option<Option<T>> {
        self.first(key)?;
        if r.null() {
            Some(None)
        } else {
            read(r).map(Some)
        }
    }

    /// The array at key number `key` read into `items` (`null` leaves it absent).
    fn read_list<'a, T: Default>(
        &mut self,
        key: u8,
        r: &mut Reader<'a>,
        items: &mut Option<Items<T>>,
        read: impl FnMut(&mut Reader<'a>, &mut T) -> Option<()>,
    ) -> Option<()> {
        self.first(key)?;
        if r.null() {
            return Some(());
        }
        list(r, items.insert(Items::default()), read)
    }
}

/// An array's items, the first held inline: nearly every event has one choice, and a `Vec`
/// of choices was an allocation of 1,120 bytes for each event read (dhat).
struct Items<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Default for Items<T> {
    fn default() -> Self {
        Items {
            first: None,
            rest: Vec::new(),
        }
    }
}

impl<T> Items<T> {
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(&self.rest)
    }
}

/// Reads an array's items into `items`, each in its place.
fn list<'a, T: Default>(
    r: &mut Reader<'a>,
    items: &mut Items<T>,
    mut read: impl FnMut(&mut Reader<'a>, &mut T) -> Option<()>,
) -> Option<()> {
    r.array(|r| {
        let item = if items.first.is_none() {
            items.first.insert(T::default())
        } else {
            items.rest.push(T::default());
            items.rest.last_mut()?
        };
        read(r, item)
    })
}

/// Reads an object into `out`, handing each key to `member` with the keys seen so far.
fn read_object<'a, T>(
    r: &mut Reader<'a>,
    out: &mut T,
    mut member: impl FnMut(&mut T, &mut Seen, &mut Reader<'a>, &'a [u8]) -> Option<()>,
) -> Option<()> {
    let mut seen = Seen::default();
    r.object(|r, key| member(out, &mut seen, r, key))
}

/// `read_object` into a new `T`, for the small structs.
fn read_new<'a, T: Default>(
    r: &mut Reader<'a>,
    member: impl FnMut(&mut T, &mut Seen, &mut Reader<'a>, &'a [u8]) -> Option<()>,
) -> Option<T> {
    let mut out = T::default();
    read_object(r, &mut out, member)?;
    Some(out)
}

fn read_event<'a>(r: &mut Reader<'a>, event: &mut Event<'a>) -> Option<()> {
    read_object(r, event, |e, seen, r, key| {
        match key {
            b"model" => e.model = seen.read(0, r, Reader::string)?,
            b"usage" => {
                let read = seen.read(1, r, |r| e.usage_counts.read(r))?;
                e.usage = read.map(|(text, _)| text);
                e.usage_counted = read.is_some_and(|(_, counted)| counted);
            }
            b"choices" => seen.read_list(2, r, &mut e.choices, read_choice)?,
            // An error, or Groq's usage under `x_groq`: left to the `Value` path unless null.
            b"error" | b"x_groq" => {
                let bit = if key == b"error" { 3 } else { 4 };
                if seen.read(bit, r, Reader::skip_value)?.is_some() {
                    return None;
                }
            }
            _ => r.skip_value()?,
        }
        Some(())
    })
}

fn read_choice<'a>(r: &mut Reader<'a>, choice: &mut Choice<'a>) -> Option<()> {
    read_object(r, choice, |c, seen, r, key| {
        match key {
            b"text" => c.text = seen.read(0, r, Reader::string)?,
            b"delta" => c.delta = seen.read(1, r, read_part)?,
            b"message" => c.message = seen.read(2, r, read_part)?,
            b"usage" => c.usage = seen.read(3, r, Reader::raw_value)?,
            _ => r.skip_value()?,
        }
        Some(())
    })
}

fn read_part<'a>(r: &mut Reader<'a>) -> Option<Part<'a>> {
    read_new(r, |p: &mut Part<'a>, seen, r, key| {
        // Text that is no string (an array of content parts) is left to the `Value` path.
        match key {
            b"content" => p.content = seen.read(0, r, Reader::string)?,
            b"reasoning_content" => p.reasoning_content = seen.read(1, r, Reader::string)?,
            b"reasoning" => p.reasoning = seen.read(2, r, Reader::string)?,
            b"refusal" => p.refusal = seen.read(3, r, Reader::string)?,
            b"tool_calls" => seen.read_list(4, r, &mut p.tool_calls, read_tool_call)?,
            _ => r.skip_value()?,
        }
        Some(())
    })
}

fn read_tool_call<'a>(r: &mut Reader<'a>, call: &mut ToolCall<'a>) -> Option<()> {
    read_object(r, call, |t, seen, r, key| {
        match key {
            b"id" => t.has_id = seen.read(0, r, Reader::skip_value)?.is_some(),
            b"function" => t.function = seen.read(1, r, read_function)?,
            _ => r.skip_value()?,
        }
        Some(())
    })
}

fn read_function<'a>(r: &mut Reader<'a>) -> Option<Function<'a>> {
    read_new(r, |f: &mut Function<'a>, seen, r, key| {
        match key {
            b"name" => f.name = seen.read(0, r, Reader::string)?,
            b"arguments" => f.arguments = seen.read(1, r, Reader::string)?,
            _ => r.skip_value()?,
        }
        Some(())
    })
}

fn apply(m: &mut Measurement, event: &Event<'_>, now: Instant) -> bool {
    if let Some(model) = &event.model {
        m.set_model_str(model);
    }
    let usage_only_shape = event.choices.as_ref().is_some_and(Items::is_empty);
    // The first usage that is an object wins: the top level's, else a choice's (as the Value
    // path reads; it skips any other value).
    let is_object = |u: &&str| u.starts_with('{');
    let mut usage = event.usage.filter(is_object).map(|text| {
        let counts = event
            .usage_counted
            .then(|| Box::new(event.usage_counts.clone()));
        (text, counts)
    });
    for choice in event.choices.iter().flat_map(Items::iter) {
        if usage.is_none() {
            usage = choice.usage.filter(is_object).map(|text| (text, None));
        }
        push(m, choice.text.as_deref(), now);
        let Some(part) = choice.delta.as_ref().or(choice.message.as_ref()) else {
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
        for call in part.tool_calls.iter().flat_map(Items::iter) {
            if call.has_id {
                m.tool_calls += 1;
            }
            if let Some(function) = &call.function {
                push(m, function.name.as_deref(), now);
                push(m, function.arguments.as_deref(), now);
            }
        }
    }
    let usage_only = usage_only_shape && usage.is_some();
    if let Some((text, counts)) = usage {
        m.set_usage_text(text, counts);
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
    use proptest::prelude::*;

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
        Some((
            usage_only,
            usage,
            m.response_model.as_deref().map(str::to_owned),
            m.tool_calls,
            m.text,
        ))
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
            r#"{"choices":[{"delta":{"reasoning":"r","refusal":"no"}}],"error":null,"x_groq":null}"#,
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

    /// A value of any kind, as a key of an event may hold one where the reader expects another.
    fn any_value() -> BoxedStrategy<String> {
        prop_oneof![
            Just("null".to_owned()),
            Just("7".to_owned()),
            Just("-1.5e3".to_owned()),
            Just("true".to_owned()),
            Just("[]".to_owned()),
            Just(r#"{"prompt_tokens":3,"total_tokens":5}"#.to_owned()),
            Just(r#"[{"x":1}]"#.to_owned()),
            "\\PC{0,5}".prop_map(|s| Value::String(s).to_string()),
            Just(r#""caf\u00e9 \"q\" \ud83d\ude00""#.to_owned()),
        ]
        .boxed()
    }

    /// An object of members drawn from `members` (a key may repeat), each value mostly of the
    /// kind given for its key, sometimes of any kind; spaced out or not.
    fn object_of(members: Vec<(&'static str, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
        let member = proptest::strategy::Union::new(members.into_iter().map(|(key, value)| {
            prop_oneof![8 => value, 1 => any_value()]
                .prop_map(move |v| (key, v))
                .boxed()
        }));
        (prop::collection::vec(member, 0..5), any::<bool>())
            .prop_map(|(members, spaced)| {
                let (sep, colon) = if spaced { (",\n  ", ": ") } else { (",", ":") };
                let members: Vec<String> = members
                    .iter()
                    .map(|(k, v)| format!("\"{k}\"{colon}{v}"))
                    .collect();
                format!("{{{}}}", members.join(sep))
            })
            .boxed()
    }

    fn array_of(item: BoxedStrategy<String>) -> BoxedStrategy<String> {
        prop::collection::vec(item, 0..3)
            .prop_map(|items| format!("[{}]", items.join(",")))
            .boxed()
    }

    fn event() -> BoxedStrategy<String> {
        let text = prop_oneof![
            3 => "[a-z ]{0,6}".prop_map(|s| Value::String(s).to_string()),
            1 => Just(r#""\"usage\":{\"a\":1} \u00e9""#.to_owned()),
            1 => Just("null".to_owned()),
        ]
        .boxed();
        let usage = Just(r#"{"prompt_tokens":3,"completion_tokens":2}"#.to_owned()).boxed();
        let function = object_of(vec![
            ("name", text.clone()),
            ("arguments", text.clone()),
            ("x", any_value()),
        ]);
        let call = object_of(vec![
            ("id", text.clone()),
            ("function", function),
            ("type", any_value()),
        ]);
        let part = object_of(vec![
            ("content", text.clone()),
            ("reasoning_content", text.clone()),
            ("reasoning", text.clone()),
            ("refusal", text.clone()),
            ("role", any_value()),
            ("tool_calls", array_of(call)),
        ]);
        let choice = object_of(vec![
            ("text", text.clone()),
            ("delta", part.clone()),
            ("message", part),
            ("usage", usage.clone()),
            ("index", any_value()),
        ]);
        object_of(vec![
            ("model", text),
            ("usage", usage),
            ("choices", array_of(choice)),
            ("id", any_value()),
            ("error", any_value()),
            ("x_groq", any_value()),
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Whatever the reader takes, it reads as the `Value` path does.
        #[test]
        fn random_events_read_as_the_value_path_reads(data in event()) {
            if let Some(typed) = through(true, &data) {
                prop_assert_eq!(Some(typed), through(false, &data), "{}", data);
            }
        }
    }

    #[test]
    fn a_null_delta_leaves_the_message_to_count_on_both_paths() {
        // Found by the property above: the `Value` path took the `null` as the delta.
        let data = r#"{"choices":[{"message":{"reasoning_content":" "},"delta":null}]}"#;
        let typed = through(true, data);
        assert_eq!(typed.as_ref().map(|t| t.4.as_str()), Some(" "));
        assert_eq!(typed, through(false, data));
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
