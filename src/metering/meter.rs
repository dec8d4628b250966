//! The meter of one response: it sees the bytes the client gets, decodes a compressed copy,
//! frames them as SSE events or one JSON body, and fills a `Measurement`. All work is
//! synchronous and proportional to the bytes: it never waits and never blocks the stream.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::decode::Decoder;
use super::fast::{self, Fast, Template};
use super::json_scan::TopLevelCapture;
use super::measurement::{Dialect, Measurement};
use super::openai_event;
use super::sse::{EventSink, SseEvent, SseParser};

/// Top-level members of a non-streamed body the meter reads.
const JSON_MEMBERS: &[&str] = &[
    "usage", "model", "error", "choices", "x_groq", "object", "type", "output", "content",
];

/// A non-streamed OpenAI-style body up to this size is kept whole and read in one typed parse
/// at its end; a bigger one (embeddings of many inputs) is scanned as it passes.
const SMALL_BODY: usize = 64 << 10;

enum Framing {
    Sse(SseParser),
    SmallJson(Vec<u8>),
    /// A small body's first piece, held as it came (`feed_bytes`): most come in one, and a
    /// copy is an allocation and a pass over the body. Copied once a second piece comes.
    FirstPiece(Bytes),
    /// Boxed: the capture is larger than the parser that streams use.
    Json(Box<TopLevelCapture>),
}

pub struct Meter {
    dialect: Dialect,
    framing: Framing,
    /// Boxed: a decoder's state is larger than the rest of the meter, and most answers are
    /// not compressed. The meter lives as long as its stream does.
    decoder: Option<Box<Decoder>>,
    measurement: Measurement,
    /// Cut usage-only chunks (tokentap asked for them, the client did not).
    strip_usage_chunks: bool,
    cuts: Vec<Range<u64>>,
    /// The shape of this stream's content chunks, once the fast path has seen one.
    template: Option<Template>,
}

impl Meter {
    /// `sse` when the response is `text/event-stream`; `encoding` is its `Content-Encoding`.
    pub fn new(
        dialect: Dialect,
        sse: bool,
        encoding: Option<&str>,
        strip_usage_chunks: bool,
    ) -> Meter {
        let decoder = encoding.and_then(Decoder::for_encoding).map(Box::new);
        Meter {
            dialect,
            framing: match dialect {
                _ if sse => Framing::Sse(SseParser::new()),
                Dialect::Chat | Dialect::Completions | Dialect::Embeddings => {
                    Framing::SmallJson(Vec::new())
                }
                Dialect::Responses | Dialect::Messages => {
                    Framing::Json(Box::new(TopLevelCapture::new(JSON_MEMBERS)))
                }
            },
            // Byte offsets of a compressed stream say nothing about events: never cut one.
            strip_usage_chunks: strip_usage_chunks && sse && decoder.is_none(),
            decoder,
            measurement: Measurement::default(),
            cuts: Vec::new(),
            template: None,
        }
    }

    /// The model the request named, shared by the record when the answer names the same one
    /// (an allocation a request fewer with providers that echo the model asked for).
    pub fn share_request_model(&mut self, model: Option<Arc<str>>) {
        self.measurement.request_model = model;
    }

    /// Whether this meter may cut usage-only chunks out of the client's stream.
    pub fn strips(&self) -> bool {
        self.strip_usage_chunks
    }

    pub fn measurement(&self) -> &Measurement {
        &self.measurement
    }

    /// `feed`, for bytes held as `Bytes`: a small non-streamed body's first piece is kept as
    /// it is, not copied.
    pub fn feed_bytes(&mut self, chunk: &Bytes, now: Instant) {
        if let (None, Framing::SmallJson(body)) = (&self.decoder, &self.framing) {
            if body.is_empty() && !chunk.is_empty() && chunk.len() <= SMALL_BODY {
                self.framing = Framing::FirstPiece(chunk.clone());
                return;
            }
        }
        self.feed(chunk, now);
    }

    /// Feeds bytes exactly as the upstream sent them.
    pub fn feed(&mut self, chunk: &[u8], now: Instant) {
        match &mut self.decoder {
            None => self.feed_plain(chunk, now),
            Some(decoder) => match decoder.decode(chunk) {
                Ok(plain) => {
                    let plain = std::mem::take(plain);
                    self.feed_plain(&plain, now);
                    if let Some(decoder) = &mut self.decoder {
                        decoder.recycle(plain);
                    }
                }
                Err(_) => {
                    // A corrupt or oversized body: stop metering it, keep streaming it.
                    self.measurement.parse_errors += 1;
                    self.decoder = None;
                    self.framing = Framing::Json(Box::new(TopLevelCapture::new(&[])));
                }
            },
        }
    }

    fn feed_plain(&mut self, chunk: &[u8], now: Instant) {
        let Meter {
            dialect,
            framing,
            measurement,
            strip_usage_chunks,
            cuts,
            template,
            ..
        } = self;
        match framing {
            Framing::Sse(parser) => parser.feed(
                chunk,
                &mut Events {
                    m: measurement,
                    dialect: *dialect,
                    now,
                    strip: *strip_usage_chunks,
                    cuts,
                    template,
                },
            ),
            Framing::FirstPiece(first) => {
                let mut body = Vec::with_capacity(first.len() + chunk.len());
                body.extend_from_slice(first);
                *framing = Framing::SmallJson(body);
                self.feed_plain(chunk, now);
            }
            Framing::SmallJson(body) if body.len() + chunk.len() <= SMALL_BODY => {
                if body.is_empty() {
                    body.reserve_exact(chunk.len());
                }
                body.extend_from_slice(chunk);
            }
            Framing::SmallJson(body) => {
                let mut capture = Box::new(TopLevelCapture::new(JSON_MEMBERS));
                capture.feed(body);
                capture.feed(chunk);
                *framing = Framing::Json(capture);
            }
            Framing::Json(capture) => capture.feed(chunk),
        }
    }

    /// Stream offset before which every byte belongs to a finished event.
    pub fn settled_offset(&self) -> u64 {
        match &self.framing {
            Framing::Sse(parser) => parser.settled_offset(),
            Framing::SmallJson(_) | Framing::FirstPiece(_) | Framing::Json(_) => u64::MAX,
        }
    }

    /// Byte ranges of the stream to leave out of the client's copy, in order; drained.
    pub fn take_cuts(&mut self) -> Vec<Range<u64>> {
        std::mem::take(&mut self.cuts)
    }

    pub fn has_cuts(&self) -> bool {
        !self.cuts.is_empty()
    }

    /// The body ended (or was abandoned): flush what is pending and hand over the result.
    pub fn finish(mut self, now: Instant) -> Measurement {
        if let Some(decoder) = &mut self.decoder {
            if let Ok(rest) = decoder.finish() {
                let rest = std::mem::take(rest);
                self.feed_plain(&rest, now);
            }
        }
        let Meter {
            dialect,
            framing,
            mut measurement,
            mut template,
            ..
        } = self;
        match framing {
            Framing::Sse(mut parser) => {
                parser.finish(&mut Events {
                    m: &mut measurement,
                    dialect,
                    now,
                    strip: false,
                    cuts: &mut Vec::new(),
                    template: &mut template,
                });
            }
            Framing::SmallJson(body) => observe_small(&mut measurement, dialect, &body, now),
            Framing::FirstPiece(body) => observe_small(&mut measurement, dialect, &body, now),
            Framing::Json(capture) => observe_members(&mut measurement, dialect, *capture, now),
        }
        measurement
    }
}

/// Reads a small non-streamed body whole: by the typed parse, or else member by member.
fn observe_small(measurement: &mut Measurement, dialect: Dialect, body: &[u8], now: Instant) {
    if openai_event::observe_body(measurement, body, now).is_some() {
        measurement.chunks = 1;
    } else {
        let mut capture = TopLevelCapture::new(JSON_MEMBERS);
        capture.feed(body);
        observe_members(measurement, dialect, capture, now);
    }
}

/// The generic reading of a non-streamed body: its top-level members as `Value`s.
fn observe_members(m: &mut Measurement, dialect: Dialect, capture: TopLevelCapture, now: Instant) {
    match capture.finish() {
        Some(members) if !members.is_empty() => {
            m.chunks = 1;
            m.observe(&serde_json::Value::Object(members), dialect, "", now);
        }
        Some(_) => {}
        None => m.parse_errors += 1,
    }
}

/// The meter's side of the SSE parser: one stream's events, read as they complete.
struct Events<'a> {
    m: &'a mut Measurement,
    dialect: Dialect,
    now: Instant,
    strip: bool,
    cuts: &'a mut Vec<Range<u64>>,
    template: &'a mut Option<Template>,
}

impl EventSink for Events<'_> {
    fn event(&mut self, event: SseEvent<'_>) {
        on_event(self, event);
    }

    fn take_block(&mut self, rest: &[u8]) -> Option<usize> {
        let len = self.template.as_ref()?.take_block(self.m, rest, self.now)?;
        self.m.chunks += 1;
        Some(len)
    }
}

fn on_event(sink: &mut Events<'_>, event: SseEvent<'_>) {
    let (dialect, now, strip) = (sink.dialect, sink.now, sink.strip);
    let (m, cuts, template) = (&mut *sink.m, &mut *sink.cuts, &mut *sink.template);
    let data = event.data.trim_ascii();
    if data == b"[DONE]" {
        m.terminal = true;
        return;
    }
    if data.is_empty() {
        return;
    }
    m.chunks += 1;
    if template
        .as_ref()
        .is_some_and(|t| t.try_observe(m, event.event, data, now))
    {
        return;
    }
    match fast::try_observe(m, dialect, event.event, data, now) {
        // The full parse may change what the template assumed (the model): learn it anew.
        Fast::Declined => *template = None,
        Fast::Taken => return,
        Fast::OneText { open, close } => {
            // This chunk did not fit the template (if any): its shape is the new one.
            *template = Some(Template::learn(event.event, data, open, close));
            return;
        }
    }
    let typed = match dialect {
        Dialect::Chat | Dialect::Completions | Dialect::Embeddings => {
            openai_event::observe(m, data, now)
        }
        Dialect::Responses | Dialect::Messages => None,
    };
    if let Some(usage_only) = typed {
        if usage_only && strip {
            cuts.push(event.start..event.end);
        }
        return;
    }
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(value) => {
            let name = std::str::from_utf8(event.event).unwrap_or("");
            let usage_only = m.observe(&value, dialect, name, now);
            if usage_only && strip {
                cuts.push(event.start..event.end);
            }
        }
        Err(_) => m.parse_errors += 1,
    }
}

#[cfg(test)]
mod equivalence;
#[cfg(test)]
mod tests;
