use std::io;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

use super::*;

/// Everything written, kept.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Events with every kind of field tokentap's logs carry, and text that needs escaping.
fn events() {
    tracing::info!(
        id = %"req_01",
        provider = %"default",
        model = "gpt-4o",
        stream = false,
        status = 200u16,
        duration_ms = 12u64,
        usage_source = ?Some("Upstream"),
        "request"
    );
    tracing::warn!(error = %"boom \"quoted\" \\ /\n\t\r\u{8}\u{c}\u{1}\u{1f}\u{7f}", "upstream failed");
    tracing::error!(
        count = -3i64,
        half = 0.5f64,
        whole = 1.0f64,
        big = 1e300f64,
        nan = f64::NAN,
        "numbers"
    );
    tracing::debug!(text = "café ✓ 😀", "unicode");
    tracing::info!(providers = ?vec!["a", "b"], "lists");
    tracing::info!("a message alone with \"quotes\"");
}

/// The lines `events` writes through `format`, their timestamps checked and blanked.
fn lines(json_lines: bool) -> Vec<String> {
    let out = Captured::default();
    let builder = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false);
    if json_lines {
        tracing::subscriber::with_default(builder.event_format(JsonLines).finish(), events);
    } else {
        tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), events);
    }
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|line| {
            let (head, stamp) = line.split_at(14);
            assert_eq!(head, "{\"timestamp\":\"", "{line}");
            // 2026-11-26T10:39:53.431906Z
            let bytes = stamp.as_bytes();
            assert!(
                bytes[4] == b'-' && bytes[10] == b'T' && bytes[19] == b'.' && bytes[26] == b'Z',
                "{line}"
            );
            format!("{head}{}", &stamp[27..])
        })
        .collect()
}

#[test]
fn writes_the_lines_tracing_subscribers_json_format_writes() {
    let ours = lines(true);
    assert_eq!(ours.len(), 6, "{ours:#?}");
    assert_eq!(ours, lines(false));
    for line in &ours {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn escapes_as_serde_json_does() {
    for text in [
        "",
        "plain",
        "q\"b\\s/",
        "\u{0}\u{1f} \u{7f}\n\r\t\u{8}\u{c}",
        "é😀",
    ] {
        let mut line = String::new();
        push_string(&mut line, text);
        assert_eq!(line, serde_json::to_string(text).unwrap());
    }
}
