//! `--log-format json`: one JSON object per line, the same objects tracing-subscriber's
//! `json().flatten_event(true)` writes (timestamp, level, the event's fields in order, target),
//! written straight into the line. tracing-subscriber serialises each field through serde into
//! an adaptor that checks every piece it writes as UTF-8 again: a request's log line cost 23k
//! instructions that way, on the recorder thread, more than the rest of its record.
//!
//! tokentap opens no spans, so none are written.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::with_capacity(384);
        line.push_str("{\"timestamp\":\"");
        super::timestamp::push(&mut line, std::time::SystemTime::now());
        let _ = write!(line, "\",\"level\":\"{}\"", event.metadata().level());
        event.record(&mut Members { line: &mut line });
        line.push_str(",\"target\":");
        push_string(&mut line, event.metadata().target());
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Writes each field as a member of the line's object: strings and anything formatted
/// (`%value`, `?value`, the message) as JSON strings, numbers and booleans as themselves.
struct Members<'a> {
    line: &'a mut String,
}

impl Members<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        push_string(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for Members<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_string(self.line, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.line.push('"');
        let _ = write!(Escaping(self.line), "{value:?}");
        self.line.push('"');
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // serde_json's own form: `1.0`, not `1`; `null` for NaN and the infinities.
        let number = serde_json::to_string(&value).unwrap_or_else(|_| "null".to_owned());
        self.line.push_str(&number);
    }
}

/// `text` as a JSON string, escaped as serde_json escapes it: `"`, `\` and the control
/// characters (the short forms where JSON has them); everything else as it is.
fn push_string(line: &mut String, text: &str) {
    line.push('"');
    push_escaped(line, text);
    line.push('"');
}

/// Writes what is formatted into it escaped for the inside of a JSON string.
struct Escaping<'a>(&'a mut String);

impl Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        push_escaped(self.0, text);
        Ok(())
    }
}

fn push_escaped(line: &mut String, text: &str) {
    // Most text needs no escape: one pass that the compiler vectorises, then one copy.
    let special = |byte: &u8| *byte < 0x20 || *byte == b'"' || *byte == b'\\';
    if !text.as_bytes().iter().any(special) {
        line.push_str(text);
        return;
    }
    let mut plain = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        line.push_str(&text[plain..at]);
        if escape.is_empty() {
            let _ = write!(line, "\\u{byte:04x}");
        } else {
            line.push_str(escape);
        }
        plain = at + 1;
    }
    line.push_str(&text[plain..]);
}

#[cfg(test)]
mod tests;
