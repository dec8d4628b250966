//! The fast path for the events that make up almost every stream: content deltas. A few
//! SIMD substring searches decide whether the event could carry usage, an error or a tool call
//! (then it is left to the full JSON parse), and find the text values by their keys.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use tokio::time::Instant;

use super::measurement::{Dialect, Measurement};

static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
static TOOL_CALLS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"tool_calls\""));
static MODEL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"model\""));
/// The end of a key whose value is a string. Inside a JSON string every `"` is escaped, so this
/// only occurs between a key and its value.
static STRING_VALUE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\":\""));

const CHAT_TEXT: &[&[u8]] = &[b"content", b"reasoning_content", b"reasoning", b"refusal"];
/// Every key whose value the full parse of an OpenAI-style chunk would count as text, quoted.
static OPENAI_TEXT_KEYS: LazyLock<[Finder<'static>; 5]> = LazyLock::new(|| {
    [
        Finder::new(b"\"content\""),
        Finder::new(b"\"reasoning_content\""),
        Finder::new(b"\"reasoning\""),
        Finder::new(b"\"refusal\""),
        Finder::new(b"\"text\""),
    ]
});
const COMPLETION_TEXT: &[&[u8]] = &[b"text"];
const RESPONSES_TEXT: &[&[u8]] = &[b"delta"];
const MESSAGES_TEXT: &[&[u8]] = &[b"text", b"partial_json", b"thinking"];

/// What the fast path did with an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Fast {
    /// Left to the full parse; nothing recorded.
    Declined,
    Taken,
    /// Taken, and its only text was the string value whose body starts at `open` and whose
    /// closing quote is at `close`.
    OneText {
        open: usize,
        close: usize,
    },
}

/// A stream's content chunks differ from one another only in their text: the bytes before and
/// after the text value of a chunk the fast path took whole. A chunk made of exactly that prefix,
/// one JSON string and that suffix has the same keys in the same places, so its text is all
/// there is to record: two comparisons instead of the searches.
pub struct Template {
    event: Vec<u8>,
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

impl Template {
    pub fn learn(event: &[u8], data: &[u8], open: usize, close: usize) -> Template {
        Template {
            event: event.to_vec(),
            prefix: data[..open].to_vec(),
            suffix: data[close..].to_vec(),
        }
    }

    /// Whether `data` opens with this template's prefix, one JSON string and its suffix, with
    /// `then` true of what follows the suffix: then the string's text, and where its closing
    /// quote and the suffix's end are. Cheapest checks first: the string's end and what follows,
    /// then the prefix and the suffix themselves; the text is decoded last.
    fn fit<'d>(
        &self,
        data: &'d [u8],
        then: impl Fn(&[u8]) -> bool,
    ) -> Option<(std::borrow::Cow<'d, str>, usize, usize)> {
        let p = self.prefix.len();
        let (len, escaped) = string_end(data.get(p..)?)?;
        let close = p + len;
        let end = close + self.suffix.len();
        if !then(data.get(end..)?)
            || !same(&data[..p], &self.prefix)
            || data[close..end] != *self.suffix
        {
            return None;
        }
        Some((string_text(data, p, close, escaped)?, close, end))
    }

    /// Records the event's text when the event fits the template; `false` (nothing recorded)
    /// otherwise.
    pub fn try_observe(
        &self,
        m: &mut Measurement,
        event: &[u8],
        data: &[u8],
        now: Instant,
    ) -> bool {
        if !same(event, &self.event) {
            return false;
        }
        match self.fit(data, <[u8]>::is_empty) {
            Some((text, _, _)) => {
                m.push_text(&text, now);
                true
            }
            None => false,
        }
    }

    /// Takes the event block at the start of `rest` when it is one `data:` line this template
    /// fits followed by a blank line: records its text and returns the block's length. The
    /// parser then never scans the line for its end (`sse::EventSink::take_block`). `None`,
    /// with nothing recorded, for anything else.
    pub fn take_block(&self, m: &mut Measurement, rest: &[u8], now: Instant) -> Option<usize> {
        if !self.event.is_empty() {
            return None;
        }
        let after_field = rest.strip_prefix(b"data:")?;
        let data = after_field.strip_prefix(b" ").unwrap_or(after_field);
        // What follows the suffix first: a data line fed on its own, without it, stops there.
        let (text, close, end) = self.fit(data, |after| after.starts_with(b"\n\n"))?;
        // A raw line break (invalid inside a JSON string) would have ended the line there.
        if has_line_break(&data[self.prefix.len()..close]) {
            return None;
        }
        m.push_text(&text, now);
        Some(rest.len() - data.len() + end + 2)
    }
}

/// Slice equality that never calls libc's `memcmp` on empty slices. Rust compares two empty
/// slices by calling `memcmp` with length 0 on their dangling pointers, and glibc's AVX-512
/// variant then does a masked load from an unmapped address: an assist costing thousands of
/// cycles. Comparing the empty event names of chat chunks that way took 7% of the proxy's CPU
/// on streams (perf). Non-empty slices do go to `memcmp`: a byte loop comparing a chunk's
/// prefix or suffix took about 100 instructions where `memcmp` takes 30 (callgrind).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// Handles `data` without a full parse when it is a plain content delta. Declines when the
/// event needs the full parse instead (nothing has been recorded then).
pub fn try_observe(
    m: &mut Measurement,
    dialect: Dialect,
    event: &[u8],
    data: &[u8],
    now: Instant,
) -> Fast {
    let openai = matches!(dialect, Dialect::Chat | Dialect::Completions);
    if openai && m.response_model.is_none() {
        // The first event names the model, which the checks below need known. Take it when the
        // event names it plainly; keep it only if the rest of the event is taken too.
        let Some(model) = top_level_model(data) else {
            return Fast::Declined;
        };
        m.set_model_str(&model);
        let fast = observe_with_model(m, dialect, event, data, now);
        if fast == Fast::Declined {
            m.response_model = None;
        }
        return fast;
    }
    observe_with_model(m, dialect, event, data, now)
}

/// The model of an event whose only `"model"` key is a member of the top-level object, with a
/// string value: what the full parse would take. `None` for anything else.
fn top_level_model(data: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    // Depth 1 must mean the top-level object, not an array.
    if data.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let mut keys = MODEL
        .find_iter(data)
        .filter(|&at| trim_start(&data[at + 7..]).starts_with(b":"));
    let at = keys.next()?;
    if keys.next().is_some() || depth_at(data, at)? != 1 {
        return None;
    }
    let value = trim_start(trim_start(&data[at + 7..]).strip_prefix(b":")?);
    let body = value.strip_prefix(b"\"")?;
    json_string_at(data, data.len() - body.len()).map(|(model, _)| model)
}

/// How many objects and arrays are open at `end`, outside any string: 1 for a member of the
/// top-level object. `None` when `end` falls inside a string or the brackets do not balance.
fn depth_at(data: &[u8], end: usize) -> Option<usize> {
    let head = &data[..end];
    let mut depth = 0usize;
    let mut i = 0;
    while i < head.len() {
        match head[i] {
            b'"' => loop {
                let rest = head.get(i + 1..)?;
                let quote = i + 1 + memchr::memchr2(b'"', b'\\', rest)?;
                if head[quote] == b'"' {
                    i = quote;
                    break;
                }
                i = quote + 1;
            },
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            _ => {}
        }
        i += 1;
    }
    Some(depth)
}

fn observe_with_model(
    m: &mut Measurement,
    dialect: Dialect,
    event: &[u8],
    data: &[u8],
    now: Instant,
) -> Fast {
    let text_keys = match dialect {
        Dialect::Chat if m.response_model.is_some() => CHAT_TEXT,
        Dialect::Completions if m.response_model.is_some() => COMPLETION_TEXT,
        Dialect::Responses if event.ends_with(b".delta") => RESPONSES_TEXT,
        Dialect::Messages if event == b"ping" => return Fast::Taken,
        Dialect::Messages if event == b"content_block_delta" => MESSAGES_TEXT,
        _ => return Fast::Declined,
    };
    // Usage first: the one event of a stream declined here is most often its usage chunk.
    if USAGE
        .find_iter(data)
        .any(|at| !followed_by_null(&data[at + 7..]))
    {
        return Fast::Declined;
    }
    if ERROR.find(data).is_some() || TOOL_CALLS.find(data).is_some() {
        return Fast::Declined;
    }
    // The full parse would take a new model name: leave such an event to it.
    if MODEL.find_iter(data).any(|at| {
        let known = m.response_model.as_deref().unwrap_or_default();
        names_other_model(&data[at + 7..], known)
    }) {
        return Fast::Declined;
    }
    // Decide first, record second, so a declined event leaves no trace. Text values are kept
    // on the stack, so the usual event is scanned once.
    let mut hits = [0usize; 8];
    let mut count = 0usize;
    for at in STRING_VALUE.find_iter(data) {
        if text_keys.contains(&key_before(data, at)) {
            if let Some(slot) = hits.get_mut(count) {
                *slot = at + 3;
            }
            count += 1;
        }
    }
    if count == 0 {
        // A role-only or finish chunk carries nothing to record, but only if no text key is
        // there in a form the scan above skips (`"content": "x"` with a space).
        let textless = matches!(dialect, Dialect::Chat | Dialect::Completions)
            && OPENAI_TEXT_KEYS.iter().all(|key| {
                key.find_iter(data)
                    .all(|at| followed_by_null(&data[at + key.needle().len()..]))
            });
        return if textless {
            Fast::Taken
        } else {
            Fast::Declined
        };
    }
    if count == 1 {
        return match json_string_at(data, hits[0]) {
            Some((text, close)) => {
                m.push_text(&text, now);
                Fast::OneText {
                    open: hits[0],
                    close,
                }
            }
            None => {
                m.parse_errors += 1;
                Fast::Taken
            }
        };
    }
    if count <= hits.len() {
        for &start in &hits[..count] {
            record_text(m, data, start, now);
        }
    } else {
        for at in STRING_VALUE.find_iter(data) {
            if text_keys.contains(&key_before(data, at)) {
                record_text(m, data, at + 3, now);
            }
        }
    }
    Fast::Taken
}

/// The key that ends with the `"` at `quote`.
fn key_before(data: &[u8], quote: usize) -> &[u8] {
    let head = &data[..quote];
    match memchr::memrchr(b'"', head) {
        Some(open) => &head[open + 1..],
        None => b"",
    }
}

fn record_text(m: &mut Measurement, data: &[u8], start: usize, now: Instant) {
    match json_string_at(data, start) {
        Some((text, _)) => m.push_text(&text, now),
        None => m.parse_errors += 1,
    }
}

/// After a `"model"` string: is it a key whose value is anything but the string `known`? (A
/// `"model"` that is itself a value is followed by `,`, `}` or `]`, not `:`.)
fn names_other_model(rest: &[u8], known: &str) -> bool {
    let rest = trim_start(rest);
    let Some(rest) = rest.strip_prefix(b":") else {
        return false;
    };
    let rest = trim_start(rest);
    let Some(value) = rest.strip_prefix(b"\"") else {
        return true;
    };
    let start = rest.len() - value.len();
    json_string_at(rest, start).is_none_or(|(model, _)| model != known)
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

/// Strings up to this long are scanned a byte at a time: a content delta is a token or two, and
/// memchr's vector set-up cost about 70 instructions a call on them (callgrind).
const SHORT: usize = 16;

/// Index of the first `a` or `b` in `bytes`.
fn find2(a: u8, b: u8, bytes: &[u8]) -> Option<usize> {
    let head = &bytes[..bytes.len().min(SHORT)];
    if let Some(i) = head.iter().position(|&c| c == a || c == b) {
        return Some(i);
    }
    let tail = bytes.get(SHORT..)?;
    memchr::memchr2(a, b, tail).map(|i| SHORT + i)
}

fn has_line_break(text: &[u8]) -> bool {
    find2(b'\n', b'\r', text).is_some()
}

/// Reads the JSON string whose body starts at `start` (just past its opening quote), and the
/// index of its closing quote.
fn json_string_at(data: &[u8], start: usize) -> Option<(std::borrow::Cow<'_, str>, usize)> {
    let (len, escaped) = string_end(&data[start..])?;
    let close = start + len;
    string_text(data, start, close, escaped).map(|text| (text, close))
}

/// Where the JSON string whose body opens `body` closes: the index of its closing quote, and
/// whether escapes come before it.
fn string_end(body: &[u8]) -> Option<(usize, bool)> {
    let first = find2(b'"', b'\\', body)?;
    if body[first] == b'"' {
        return Some((first, false));
    }
    let mut i = first;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return Some((i, true)),
            _ => i += 1,
        }
    }
    None
}

/// The text of the JSON string whose quotes are at `start - 1` and `close`: borrowed when it
/// has no escapes, else decoded by serde_json (which also refuses what JSON does not allow).
fn string_text(
    data: &[u8],
    start: usize,
    close: usize,
    escaped: bool,
) -> Option<std::borrow::Cow<'_, str>> {
    if escaped {
        let quoted = data.get(start.checked_sub(1)?..=close)?;
        serde_json::from_slice::<String>(quoted)
            .ok()
            .map(std::borrow::Cow::Owned)
    } else {
        std::str::from_utf8(&data[start..close])
            .ok()
            .map(std::borrow::Cow::Borrowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dialect: Dialect, event: &[u8], data: &[u8]) -> (bool, String) {
        let mut m = Measurement {
            response_model: Some("m".into()),
            ..Measurement::default()
        };
        let handled = try_observe(&mut m, dialect, event, data, Instant::now()) != Fast::Declined;
        (handled, m.text)
    }

    #[test]
    fn the_model_is_read_only_from_the_top_level_object() {
        let model = |data: &str| top_level_model(data.as_bytes()).map(|m| m.into_owned());
        let first = r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[]}"#;
        assert_eq!(model(first).as_deref(), Some("gpt-4o"));
        assert_eq!(model(r#"{ "model" : "a\"b" }"#).as_deref(), Some("a\"b"));
        assert_eq!(model(r#"{"role":"model","model":""}"#).as_deref(), Some(""));
        for other in [
            r#"{"choices":[{"delta":{"model":"x"}}]}"#,
            r#"{"x":"\"}","choices":{"model":"x"}}"#,
            r#"{"model":"a","model":"b"}"#,
            r#"{"model":null}"#,
            r#"{"model":7}"#,
            r#"{"id":"\"model\":\"x\""}"#,
            r#"[{"model":"x"}]"#,
            r#"["model":"x"]"#,
            r#"{"a":"]}","x":{"model":"x"}}"#,
        ] {
            assert_eq!(model(other), None, "{other}");
        }
    }

    #[test]
    fn a_first_chunk_taken_fast_sets_the_model_and_one_declined_leaves_none() {
        let mut m = Measurement::default();
        let now = Instant::now();
        let first = br#"{"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}"#;
        assert!(matches!(
            try_observe(&mut m, Dialect::Chat, b"", first, now),
            Fast::OneText { .. }
        ));
        assert_eq!(
            (m.response_model.as_deref(), m.text.as_str()),
            (Some("gpt-4o"), "Hi")
        );
        let mut m = Measurement::default();
        let with_usage = br#"{"model":"gpt-4o","choices":[],"usage":{"total_tokens":3}}"#;
        assert_eq!(
            try_observe(&mut m, Dialect::Chat, b"", with_usage, now),
            Fast::Declined
        );
        assert_eq!(m.response_model, None);
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
    fn chunks_without_text_are_taken_with_nothing_recorded() {
        for data in [
            &br#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#[..],
            br#"{"choices":[{"delta":{"role":"assistant"}}]}"#,
            br#"{"choices":[{"delta":{"content":null, "refusal" : null},"finish_reason":"stop"}]}"#,
        ] {
            assert_eq!(
                run(Dialect::Chat, b"", data),
                (true, String::new()),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
        // Other dialects' events without text still go to the full parse.
        assert!(
            !run(
                Dialect::Messages,
                b"content_block_delta",
                br#"{"delta":{}}"#
            )
            .0
        );
    }

    #[test]
    fn anything_else_is_declined_untouched() {
        let declined = [
            &br#"{"choices":[],"usage":{"prompt_tokens":1}}"#[..],
            br#"{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":1}}"#,
            br#"{"choices":[{"delta":{"tool_calls":[{"id":"c"}]}}]}"#,
            br#"{"error":{"message":"boom"},"choices":[{"delta":{"content":"a"}}]}"#,
            br#"{"choices":[{"delta":{"content": "spaced"}}]}"#,
            br#"{"choices":[{"delta":{"refusal" :"no"},"finish_reason":null}]}"#,
            br#"{"choices":[{"text": "legacy"}]}"#,
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
        assert_eq!(
            try_observe(
                &mut fresh,
                Dialect::Chat,
                b"",
                br#"{"choices":[{"delta":{"content":"a"}}]}"#,
                Instant::now()
            ),
            Fast::Declined
        );
        assert!(
            !run(
                Dialect::Responses,
                b"response.completed",
                br#"{"delta":"x"}"#
            )
            .0
        );
    }

    #[test]
    fn a_template_takes_a_whole_block_only_when_the_parser_would_give_it_the_same_event() {
        let now = Instant::now();
        let first = br#"{"id":"c","choices":[{"delta":{"content":"Hel"}}],"usage":null}"#;
        let (open, close) = (first.len() - 21, first.len() - 18);
        assert_eq!(&first[open..close], b"Hel");
        let template = Template::learn(b"", first, open, close);
        let take = |rest: &[u8]| {
            let mut m = Measurement::default();
            let len = template.take_block(&mut m, rest, now);
            (len, m.text)
        };
        let fits = br#"data: {"id":"c","choices":[{"delta":{"content":"lo \"w\""}}],"usage":null}"#;
        let mut block = fits.to_vec();
        block.extend_from_slice(b"\n\n");
        let whole = block.len();
        block.extend_from_slice(b"data: [DONE]\n\n");
        assert_eq!(take(&block), (Some(whole), "lo \"w\"".to_owned()));
        // `data:` without its optional space is the same field.
        let mut no_space = block.clone();
        no_space.remove(5);
        assert_eq!(take(&no_space), (Some(whole - 1), "lo \"w\"".to_owned()));
        let declined: [&[u8]; 9] = [
            // The block has not ended yet, or a second `data:` line joins the first.
            br#"data: {"id":"c","choices":[{"delta":{"content":"x"}}],"usage":null}"#,
            b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\ndata: 1\n\n",
            // Trailing blanks, and CRLF line ends: the parser's own path handles them.
            b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null} \n\n",
            b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\r\n\r\n",
            // A raw line break in the string ends the SSE line there.
            b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"x\ny\"}}],\"usage\":null}\n\n",
            b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"x\ry\"}}],\"usage\":null}\n\n",
            // A suffix as long as the template's that differs: an error where usage was.
            b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"error\":\"x!\"}\n\n",
            // Another field, or another prefix.
            b"event: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\n\n",
            b"data: {\"id\":\"d\",\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\n\n",
        ];
        for rest in declined {
            assert_eq!(
                take(rest),
                (None, String::new()),
                "{}",
                String::from_utf8_lossy(rest)
            );
        }
        // A named event's template is never offered a bare block.
        let named = Template::learn(b"delta", first, open, close);
        let mut m = Measurement::default();
        assert_eq!(named.take_block(&mut m, &block, now), None);
    }

    #[test]
    fn a_template_takes_only_chunks_that_differ_in_their_text() {
        let mut m = Measurement {
            response_model: Some("m".into()),
            ..Measurement::default()
        };
        let now = Instant::now();
        let first = br#"{"id":"c","choices":[{"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}"#;
        let Fast::OneText { open, close } = try_observe(&mut m, Dialect::Chat, b"", first, now)
        else {
            panic!("a content chunk with one text");
        };
        let template = Template::learn(b"", first, open, close);
        let same_shape = [
            (&br#"{"id":"c","choices":[{"delta":{"content":"lo"},"finish_reason":null}],"usage":null}"#[..], "lo"),
            (br#"{"id":"c","choices":[{"delta":{"content":"\"q\" \u00e9"},"finish_reason":null}],"usage":null}"#, "\"q\" é"),
            (br#"{"id":"c","choices":[{"delta":{"content":""},"finish_reason":null}],"usage":null}"#, ""),
        ];
        for (data, text) in same_shape {
            let before = m.text.len();
            assert!(template.try_observe(&mut m, b"", data, now));
            assert_eq!(&m.text[before..], text);
        }
        let other_shape = [
            // The text closes early and the rest is structure: a usage member hides in it.
            &br#"{"id":"c","choices":[{"delta":{"content":"x"},"usage":{"prompt_tokens":1},"y":"z"},"finish_reason":null}],"usage":null}"#[..],
            br#"{"id":"c","choices":[{"delta":{"content":"x"},"finish_reason":"stop"}],"usage":null}"#,
            br#"{"id":"d","choices":[{"delta":{"content":"x"},"finish_reason":null}],"usage":null}"#,
            br#"{"id":"c","choices":[{"delta":{"content":"unterminated},"finish_reason":null}],"usage":null}"#,
            // The template's whole shape, then more: not one JSON object, and not this event.
            br#"{"id":"c","choices":[{"delta":{"content":"x"},"finish_reason":null}],"usage":null}{"usage":{"total_tokens":9}}"#,
        ];
        let text = m.text.clone();
        for data in other_shape {
            assert!(
                !template.try_observe(&mut m, b"", data, now),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
        assert!(!template.try_observe(&mut m, b"other", first, now));
        assert_eq!(m.text, text);
    }
}
