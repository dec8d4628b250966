//! Response bodies of the demo upstream: whole JSON answers, and lazily generated, paced
//! server-sent-event streams.
//!
//! A stream is a [`Script`] (the API-specific event text) driven by [`SseStream`], which writes
//! events straight into a reused buffer only when hyper polls for more, so nothing is produced once
//! the client is gone (hyper drops the body). Unpaced streams batch many events per frame; paced
//! streams flush before every wait. An `x-demo-abort-after` stream ends with a body error, which
//! makes hyper drop the connection (HTTP/1.1) or reset the stream (HTTP/2).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use serde_json::{Value, json};
use tokio::time::{Instant, Sleep};

/// Buffered bytes that trigger a frame when events are produced back to back.
const FLUSH_AT: usize = 16 * 1024;
/// Pause between the last frame of an aborted stream and the body error.
const ABORT_GRACE: Duration = Duration::from_millis(2);

/// The body error that aborts a stream (`x-demo-abort-after`).
#[derive(Debug)]
pub struct DemoBodyError;

impl fmt::Display for DemoBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("demo stream aborted (x-demo-abort-after)")
    }
}

impl std::error::Error for DemoBodyError {}

/// The body of every demo response.
pub enum DemoBody {
    /// A complete body, sent as one frame (with a content length).
    Full(Option<Bytes>),
    /// A generated event stream.
    Stream(Box<SseStream>),
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = DemoBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DemoBodyError>>> {
        match self.get_mut() {
            DemoBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            DemoBody::Stream(stream) => stream.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, DemoBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DemoBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            DemoBody::Full(None) => SizeHint::with_exact(0),
            DemoBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// Pacing and abort controls of one streamed answer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pacing {
    /// Wait before the first event.
    pub first: Duration,
    /// Wait before each content chunk after the first.
    pub chunk: Duration,
    /// Abort after this many content chunks (`x-demo-abort-after`).
    pub abort_after: Option<u64>,
}

/// The API-specific text of a stream. Content chunk `i` carries completion token `i`.
pub(super) trait Script: Send + 'static {
    /// Events before the first content chunk (sent together with it).
    fn preamble(&mut self, out: &mut BytesMut);
    /// The event of content chunk `index`.
    fn chunk(&mut self, index: u64, out: &mut BytesMut);
    /// Events after the last content chunk (finish reason, usage, terminator).
    fn finish(&mut self, out: &mut BytesMut);
}

enum State {
    Start,
    Chunk(u64),
    Abort,
    Done,
}

enum Step {
    Wrote,
    Wait(Duration),
    End,
    Abort,
}

/// Drives a [`Script`] through `total` content chunks, with pacing.
pub struct SseStream {
    script: Box<dyn Script>,
    total: u64,
    pacing: Pacing,
    state: State,
    /// The wait in front of the next event has elapsed.
    delay_served: bool,
    sleeping: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    buf: BytesMut,
}

impl SseStream {
    pub(super) fn new(script: Box<dyn Script>, total: u64, pacing: Pacing) -> Self {
        Self {
            script,
            total,
            pacing,
            state: State::Start,
            delay_served: false,
            sleeping: false,
            sleep: None,
            buf: BytesMut::with_capacity(FLUSH_AT + 2048),
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DemoBodyError>>> {
        loop {
            if self.sleeping {
                if let Some(sleep) = self.sleep.as_mut() {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                self.sleeping = false;
                self.delay_served = true;
            }
            match self.step() {
                Step::Wrote => {
                    if self.buf.len() >= FLUSH_AT {
                        return self.flush();
                    }
                }
                Step::Wait(delay) => {
                    self.start_sleep(delay);
                    if !self.buf.is_empty() {
                        return self.flush();
                    }
                }
                Step::End => {
                    if self.buf.is_empty() {
                        return Poll::Ready(None);
                    }
                    return self.flush();
                }
                Step::Abort => {
                    if !self.buf.is_empty() {
                        return self.flush();
                    }
                    if !std::mem::take(&mut self.delay_served) {
                        // Let hyper flush what was sent before failing the body: an error drops
                        // the connection together with its unwritten buffer.
                        self.start_sleep(ABORT_GRACE);
                        continue;
                    }
                    self.state = State::Done;
                    return Poll::Ready(Some(Err(DemoBodyError)));
                }
            }
        }
    }

    fn flush(&mut self) -> Poll<Option<Result<Frame<Bytes>, DemoBodyError>>> {
        Poll::Ready(Some(Ok(Frame::data(self.buf.split().freeze()))))
    }

    fn start_sleep(&mut self, delay: Duration) {
        let deadline = deadline_after(delay);
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.sleeping = true;
    }

    /// Writes the next event into the buffer, or says what to do instead.
    fn step(&mut self) -> Step {
        match self.state {
            State::Start => {
                if !self.pacing.first.is_zero() && !std::mem::take(&mut self.delay_served) {
                    return Step::Wait(self.pacing.first);
                }
                self.script.preamble(&mut self.buf);
                self.state = State::Chunk(0);
                Step::Wrote
            }
            State::Chunk(index) => {
                if let Some(after) = self.pacing.abort_after {
                    if index >= after.min(self.total) {
                        self.state = State::Abort;
                        return Step::Abort;
                    }
                }
                if index >= self.total {
                    self.script.finish(&mut self.buf);
                    self.state = State::Done;
                    return Step::End;
                }
                if index > 0
                    && !self.pacing.chunk.is_zero()
                    && !std::mem::take(&mut self.delay_served)
                {
                    return Step::Wait(self.pacing.chunk);
                }
                self.script.chunk(index, &mut self.buf);
                self.state = State::Chunk(index + 1);
                Step::Wrote
            }
            State::Abort => Step::Abort,
            State::Done => Step::End,
        }
    }
}

/// `now + delay`, saturating far in the future instead of overflowing.
pub(super) fn deadline_after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// A streamed `text/event-stream` answer.
pub(super) fn sse_response(
    script: Box<dyn Script>,
    total: u64,
    pacing: Pacing,
) -> Response<DemoBody> {
    let mut response = Response::new(DemoBody::Stream(Box::new(SseStream::new(
        script, total, pacing,
    ))));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A whole answer with the given content type.
pub(super) fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    bytes: Vec<u8>,
) -> Response<DemoBody> {
    let length = HeaderValue::from(bytes.len());
    let mut response = Response::new(DemoBody::Full(Some(Bytes::from(bytes))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, length);
    response
}

/// A JSON answer.
pub(super) fn json_response(status: StatusCode, value: &Value) -> Response<DemoBody> {
    match serde_json::to_vec(value) {
        Ok(bytes) => bytes_response(status, "application/json", bytes),
        Err(_) => bytes_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            br#"{"error":{"message":"serialization failed","type":"server_error","code":null}}"#
                .to_vec(),
        ),
    }
}

/// An OpenAI-shaped error: `{"error":{"message","type","code":null}}`.
pub(super) fn error_response(status: StatusCode, message: &str) -> Response<DemoBody> {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    json_response(status, &body)
}

/// `s` as a JSON string literal (quoted and escaped).
pub(super) fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// Appends the decimal digits of `n`.
pub(super) fn push_u64(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Appends `value` as compact JSON.
pub(super) fn push_json(out: &mut BytesMut, value: &Value) {
    // Writing a `Value` into memory cannot fail.
    let _ = serde_json::to_writer(out.writer(), value);
}

/// Appends `data: {json}\n\n` (OpenAI framing).
pub(super) fn push_data(out: &mut BytesMut, value: &Value) {
    out.extend_from_slice(b"data: ");
    push_json(out, value);
    out.extend_from_slice(b"\n\n");
}

/// Appends `event: {name}\ndata: {json}\n\n` (Responses and Anthropic framing).
pub(super) fn push_event(out: &mut BytesMut, name: &str, value: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    push_json(out, value);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_u64_digits() {
        for n in [0u64, 7, 10, 12_345, u64::MAX] {
            let mut out = BytesMut::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn json_str_escapes() {
        assert_eq!(json_str("a\"b\\c\n"), r#""a\"b\\c\n""#);
    }
}
