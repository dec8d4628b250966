//! An incremental server-sent-events parser (WHATWG HTML §9.2.6) for the meter's copy of a
//! stream. It is fed chunks as they arrive, split anywhere (mid-line, mid-CRLF, mid-UTF-8), and
//! hands its sink each complete event as borrowed slices. The common event, one data line
//! whole in one chunk, is handed over in place; others are copied once into a reused buffer.
//! Nothing is allocated per event.
//!
//! It also tracks byte offsets in the stream, so the caller can tell which bytes belong to a
//! finished event (the usage-chunk stripper cuts on them).

use memchr::memchr2;

/// Where a parser's events go. A sink may also take whole event blocks itself: at each point
/// where a new block could begin with nothing pending, it is shown the rest of the chunk first,
/// and a block it recognises is never scanned line by line. The meter takes content chunks
/// that fit its template this way (`fast::Template::take_block`).
pub trait EventSink {
    fn event(&mut self, event: SseEvent<'_>);

    /// The length of the whole event block (blank line included) at the start of `rest`, when
    /// the sink has recorded it itself; `None` leaves it to the parser.
    fn take_block(&mut self, _rest: &[u8]) -> Option<usize> {
        None
    }
}

impl<F: FnMut(SseEvent<'_>)> EventSink for F {
    fn event(&mut self, event: SseEvent<'_>) {
        self(event)
    }
}

/// One dispatched event. `start..end` are stream offsets of its whole block, blank line included.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field, empty when absent (the spec's default type "message").
    pub event: &'a [u8],
    pub data: &'a [u8],
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// A line split across chunks, without its terminator.
    partial_line: Vec<u8>,
    data: Vec<u8>,
    event: Vec<u8>,
    has_data: bool,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    /// Stream offset of the first byte not yet fed.
    offset: u64,
    /// Stream offset where the current, unfinished event block began.
    block_start: u64,
    /// A UTF-8 byte order mark may open the first line only.
    past_first_line: bool,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Offset of the first byte that belongs to an event not yet dispatched: every byte before
    /// it is part of a finished event, a comment block or blank lines.
    pub fn settled_offset(&self) -> u64 {
        self.block_start
    }

    /// Feeds one chunk, handing `sink` every event it completes.
    pub fn feed(&mut self, mut chunk: &[u8], sink: &mut impl EventSink) {
        if chunk.is_empty() {
            return;
        }
        let chunk_start = self.offset;
        self.offset += chunk.len() as u64;
        let mut pos = chunk_start;
        if self.after_cr {
            // The previous chunk ended in `\r`; its line waits in `partial_line` until we know
            // whether this chunk's first byte completes a CRLF.
            self.after_cr = false;
            let mut line_end = pos;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
                pos += 1;
                line_end += 1;
            }
            let line = std::mem::take(&mut self.partial_line);
            self.line(&line, line_end, sink);
            self.partial_line = line;
            self.partial_line.clear();
        }
        loop {
            // Where a block may begin with nothing pending (never on the first line, which may
            // open with a byte order mark), the sink may take a whole block itself.
            if self.past_first_line && self.idle() {
                if let Some(len) = sink
                    .take_block(chunk)
                    .filter(|&len| len > 0 && len <= chunk.len())
                {
                    chunk = &chunk[len..];
                    pos += len as u64;
                    self.block_start = pos;
                    continue;
                }
            }
            let Some(i) = memchr2(b'\n', b'\r', chunk) else {
                break;
            };
            let terminator = chunk[i];
            // The usual event, `data: ...\n\n` whole in this chunk with nothing pending: its
            // payload is handed over in place, not copied into `data` first.
            if terminator == b'\n' && chunk.get(i + 1) == Some(&b'\n') && self.idle() {
                // A line opening with `data:` opens with no byte order mark either, so the
                // stream's first event takes this path too (it kept a copy buffer per stream).
                if let Some(value) = chunk[..i].strip_prefix(b"data:") {
                    self.past_first_line = true;
                    let end = pos + i as u64 + 2;
                    sink.event(SseEvent {
                        event: b"",
                        data: value.strip_prefix(b" ").unwrap_or(value),
                        start: self.block_start,
                        end,
                    });
                    self.block_start = end;
                    chunk = &chunk[i + 2..];
                    pos = end;
                    continue;
                }
            }
            let mut line_end = pos + i as u64 + 1;
            let mut next = i + 1;
            if terminator == b'\r' {
                match chunk.get(i + 1) {
                    Some(b'\n') => {
                        next += 1;
                        line_end += 1;
                    }
                    Some(_) => {}
                    None => {
                        self.partial_line.extend_from_slice(&chunk[..i]);
                        self.after_cr = true;
                        return;
                    }
                }
            }
            if self.partial_line.is_empty() {
                self.line(&chunk[..i], line_end, sink);
            } else {
                let mut line = std::mem::take(&mut self.partial_line);
                line.extend_from_slice(&chunk[..i]);
                self.line(&line, line_end, sink);
                line.clear();
                self.partial_line = line;
            }
            chunk = &chunk[next..];
            pos += next as u64;
        }
        self.partial_line.extend_from_slice(chunk);
    }

    /// Nothing of an event is pending: the next line begins a block of its own.
    fn idle(&self) -> bool {
        self.partial_line.is_empty() && !self.has_data && self.event.is_empty()
    }

    /// The stream ended. An event left without its closing blank line is still dispatched:
    /// browsers drop it, but a meter must not lose a final usage event to a missing newline.
    pub fn finish(&mut self, sink: &mut impl EventSink) {
        if !self.partial_line.is_empty() || self.after_cr {
            self.after_cr = false;
            let line = std::mem::take(&mut self.partial_line);
            self.line(&line, self.offset, sink);
        }
        self.dispatch(self.offset, sink);
    }

    fn line(&mut self, mut line: &[u8], line_end: u64, sink: &mut impl EventSink) {
        if !self.past_first_line {
            self.past_first_line = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(line_end, sink);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            _ => {} // id, retry and unknown fields do not matter to the meter.
        }
    }

    fn dispatch(&mut self, end: u64, sink: &mut impl EventSink) {
        if self.has_data {
            sink.event(SseEvent {
                event: &self.event,
                data: &self.data,
                start: self.block_start,
                end,
            });
        }
        self.data.clear();
        self.event.clear();
        self.has_data = false;
        self.block_start = end;
    }
}

#[cfg(test)]
mod tests;
