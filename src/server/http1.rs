//! tokentap's own server side of HTTP/1.1: a client connection read and written by one state
//! machine, polled as one future.
//!
//! hyper's server cost a short request about 6k instructions of its own and a paced stream's
//! chunk about a thousand (callgrind): a channel between the connection and every request
//! body, a queue of a slice for each size line, piece of data and line break, its chunk-size
//! lines formatted through `core::fmt`, and a poll of the body and of the socket more in every
//! turn than there was news for. Here a request body that came with its head is handed over
//! whole; an answer's head, its chunk framing and small data are copied into one buffer and
//! written together; the socket is read only while there is something to learn from it.
//!
//! What it serves: requests framed by `Content-Length` or chunked (a request framed both ways
//! is refused), `Expect: 100-continue`, keep-alive for HTTP/1.1 and for HTTP/1.0 clients that
//! ask for it, pipelined requests one after another. Answers are framed by their
//! `Content-Length`, by the body's exact size, chunked, or for HTTP/1.0 by the connection's
//! end; `HEAD`, `1xx`, `204` and `304` answers carry no body. A client that closes its side
//! while its request is served is taken as gone (no half-close), and its request is dropped.

mod body;
mod date;
mod head;
mod outbox;

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

pub use body::{BodyError, RequestBody};
use body::{Fed, Feed, Framing as BodyFraming};
use head::{BodyLength, Head, Rejected};
use outbox::Outbox;

use super::WriterHints;
use super::drain::Finish;
use crate::wire::lines::is_named;
use crate::wire::{Chunked, add_length, has_token, itoa};

/// Room made in the read buffer before a read; a connection's first read makes it this large.
const READ_SIZE: usize = 8 * 1024;
/// Unwritten answer bytes past which the body is not asked for more until the client takes
/// some: a client that reads slowly holds back its upstream, not tokentap's memory.
const WRITE_HIGH: usize = 64 * 1024;
/// Bytes of a next request read while the current one is served; past this the socket is left
/// unread until the answer is out.
const READ_AHEAD: usize = 64 * 1024;

/// Why a connection ended other than by the client's closing it between requests.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("cannot read from the client")]
    Read(#[source] io::Error),
    #[error("cannot write to the client")]
    Write(#[source] io::Error),
    #[error("the client closed the connection in the middle of a request head")]
    PartialHead,
    #[error("the client closed the connection while its request was served")]
    ClientGone,
    #[error("the answer's body failed, or did not match its length; the connection is cut")]
    Body,
}

/// One client connection, serving requests with `service` until either side closes it.
pub struct Connection<T, S, F, B> {
    io: T,
    service: S,
    buf: BytesMut,
    out: Outbox,
    state: State<F, B>,
    /// Longest request head taken.
    max_head: usize,
    /// Told to finish: no request after the one in flight.
    finishing: bool,
    /// Requests keep their header lines as they came (`with_head_lines`).
    keep_lines: bool,
}

enum State<F, B> {
    /// Waiting for a request head.
    Head,
    Handling {
        handler: F,
        /// The body's rest, while it is read off the socket.
        feed: Option<Feed>,
        request: RequestFacts,
        /// A `100 Continue` is owed before the body comes.
        owes_continue: bool,
    },
    Writing {
        /// `None` once it has ended (or for an answer that has none).
        body: Option<B>,
        framing: Framing,
        keep_alive: bool,
        /// The body failed or overran its length: what it gave is written, then the
        /// connection is cut, so the client sees the answer incomplete.
        failed: bool,
    },
    /// Writing what is left, then closing.
    Closing,
    Closed,
}

/// What the answer's writing needs to know of its request.
#[derive(Clone, Copy)]
struct RequestFacts {
    head: bool,
    version: Version,
    keep_alive: bool,
}

/// How the answer's body is framed, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
    /// No body goes out (`HEAD`, `204`, `304`), whatever the body gives.
    None,
}

impl<T, S, F, B> Connection<T, S, F, B>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<RequestBody>) -> F,
    F: Future<Output = Response<B>> + Unpin,
    B: Body<Data = bytes::Bytes> + WriterHints + Unpin,
{
    /// A connection over `io`; `buf` holds any bytes already read from it, and is the read buffer.
    pub fn new(io: T, buf: BytesMut, service: S, max_head: usize) -> Self {
        Connection {
            io,
            service,
            buf,
            out: Outbox::default(),
            state: State::Head,
            max_head,
            finishing: false,
            keep_lines: false,
        }
    }

    /// Each request's header lines kept as they came, its header map left empty: the body
    /// carries them (`RequestBody::take_head_lines`). For a service that reads them so.
    pub fn with_head_lines(mut self) -> Self {
        self.keep_lines = true;
        self
    }

    /// Reads until a whole request head is in; hands the request to the service.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        loop {
            if !self.buf.is_empty() {
                match head::parse(&mut self.buf, self.max_head, self.keep_lines) {
                    Ok(Some(head)) => {
                        self.begin(head);
                        return Poll::Ready(Ok(()));
                    }
                    Ok(None) => {}
                    Err(rejected) => {
                        self.reject(rejected);
                        return Poll::Ready(Ok(()));
                    }
                }
            } else if self.finishing {
                self.state = State::Closing;
                return Poll::Ready(Ok(()));
            }
            if self.buf.capacity() - self.buf.len() < READ_SIZE / 2 {
                self.buf.reserve(READ_SIZE);
            }
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.io),
                cx,
                &mut self.buf
            )) {
                Ok(0) if self.buf.is_empty() => {
                    self.state = State::Closed;
                    return Poll::Ready(Ok(()));
                }
                Ok(0) => return Poll::Ready(Err(ConnectionError::PartialHead)),
                Ok(_) => {}
                Err(err) => return Poll::Ready(Err(ConnectionError::Read(err))),
            }
        }
    }

    fn begin(&mut self, head: Head) {
        let Head {
            request,
            lines,
            body,
            keep_alive,
            expects_continue,
        } = head;
        let facts = RequestFacts {
            head: request.method() == Method::HEAD,
            version: request.version(),
            keep_alive,
        };
        let (body, feed) = match body {
            BodyLength::Known(0) => (RequestBody::empty(), None),
            BodyLength::Known(n) if self.buf.len() as u64 >= n => {
                let whole = self.buf.split_to(n as usize).freeze();
                (RequestBody::whole(whole), None)
            }
            BodyLength::Known(n) => {
                let (body, feed) = RequestBody::fed(Some(n), BodyFraming::Length(n));
                (body, Some(feed))
            }
            BodyLength::Chunked => {
                let (body, feed) = RequestBody::fed(None, BodyFraming::Chunked(Chunked::Size));
                (body, Some(feed))
            }
        };
        let owes_continue = expects_continue && feed.is_some();
        let body = body.with_head_lines(lines);
        let handler = (self.service)(request.map(|()| body));
        self.state = State::Handling {
            handler,
            feed,
            request: facts,
            owes_continue,
        };
    }

    /// Answers a request that cannot be served, in OpenAI's error shape with a code named like
    /// the proxy's own, and closes. No record is written: the request never reached the proxy.
    fn reject(&mut self, rejected: Rejected) {
        self.buf.clear();
        let code = match rejected.status {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request_headers_too_large",
            StatusCode::HTTP_VERSION_NOT_SUPPORTED => "http_version_not_supported",
            _ => "bad_request",
        };
        let body = format!(
            "{{\"error\":{{\"message\":\"{}\",\"type\":\"invalid_request_error\",\"code\":\"{code}\"}}}}",
            rejected.reason
        );
        put_status(&mut self.out, Version::HTTP_11, rejected.status);
        self.out
            .put(b"content-type: application/json\r\ncontent-length: ");
        self.out.put(itoa(body.len() as u64, &mut [0; 20]));
        self.out.put(b"\r\nconnection: close\r\ndate: ");
        self.out.put(&date::now());
        self.out.put(b"\r\n\r\n");
        self.out.put(body.as_bytes());
        self.state = State::Closing;
    }

    /// Polls the handler; meanwhile feeds it the body, or watches for the client's leaving.
    fn poll_handling(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        let State::Handling {
            handler,
            feed,
            request,
            owes_continue,
        } = &mut self.state
        else {
            return Poll::Ready(Ok(()));
        };
        loop {
            if let Poll::Ready(response) = Pin::new(&mut *handler).poll(cx) {
                let mut request = *request;
                // A body not read to its end leaves its rest on the socket, ahead of any next
                // request: the connection closes after this answer.
                request.keep_alive &= feed.is_none();
                self.respond(response, request);
                return Poll::Ready(Ok(()));
            }
            if *owes_continue {
                *owes_continue = false;
                self.out.put(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            if !self.out.is_empty() {
                // A `100 Continue`: the body follows only once it is out.
                match poll_write(&mut self.io, &mut self.out, cx) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            if let Some(reading) = feed {
                match ready!(reading.poll(cx, &mut self.io, &mut self.buf, READ_SIZE)) {
                    Fed::Whole => *feed = None,
                    // The handler answers (it got the error, or stopped reading); the
                    // connection closes after its answer.
                    Fed::Abandoned | Fed::Failed => {
                        *feed = None;
                        request.keep_alive = false;
                    }
                }
                continue;
            }
            return watch(&mut self.io, &mut self.buf, cx);
        }
    }

    /// Writes the answer's head, and sets its body to be written.
    fn respond(&mut self, response: Response<B>, request: RequestFacts) {
        let (parts, mut body) = response.into_parts();
        let lines = body.head_lines();
        let status = parts.status;
        let headers = &parts.headers;
        let no_body = request.head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let mut keep_alive = request.keep_alive && !self.finishing;
        // The framing lines among the answer's own, noted as they are written (looked up in the
        // map, they took four hashed lookups an answer). `declared`: what its `Content-Length`
        // lines say together, if it has any.
        let mut declared: Option<Result<Option<u64>, &str>> = None;
        let (mut says_connection, mut dated) = (false, false);
        put_status(&mut self.out, request.version, status);
        for (name, value) in headers {
            if name == TRANSFER_ENCODING {
                continue;
            } else if name == CONTENT_LENGTH {
                let known = declared.unwrap_or(Ok(None));
                declared = Some(known.and_then(|known| add_length(known, value.as_bytes())));
            } else if name == CONNECTION {
                says_connection = true;
                keep_alive &= !has_token(value.as_bytes(), b"close");
            } else if name == DATE {
                dated = true;
            }
            self.out.put(name.as_str().as_bytes());
            self.out.put(b": ");
            self.out.put(value.as_bytes());
            self.out.put(b"\r\n");
        }
        // The same for the lines the answer carries as they came: their names in any case.
        if let Some(lines) = &lines {
            let keep = |name: &[u8], value: &[u8]| {
                match name.len() {
                    17 if is_named(name, b"transfer-encoding") => return false,
                    14 if is_named(name, b"content-length") => {
                        let known = declared.unwrap_or(Ok(None));
                        declared = Some(known.and_then(|known| add_length(known, value)));
                    }
                    10 if is_named(name, b"connection") => {
                        says_connection = true;
                        keep_alive &= !has_token(value, b"close");
                    }
                    4 if is_named(name, b"date") => dated = true,
                    _ => {}
                }
                true
            };
            lines.write(keep, |piece| self.out.put(piece));
        }
        let framing = match declared {
            // A length the handler set itself frames the body, unless it is not a length.
            Some(Ok(Some(length))) => Framing::Length(length),
            Some(_) => {
                keep_alive = false;
                Framing::UntilClose
            }
            None => match body.size_hint().exact() {
                Some(length) => {
                    // A `HEAD` answer says the length a `GET` would have had, when it knows
                    // it; `1xx`, `204` and `304` answers say none.
                    if !no_body || (request.head && length > 0) {
                        self.out.put(b"content-length: ");
                        self.out.put(itoa(length, &mut [0; 20]));
                        self.out.put(b"\r\n");
                    }
                    Framing::Length(length)
                }
                None if no_body => Framing::None,
                None if request.version == Version::HTTP_11 => {
                    self.out.put(b"transfer-encoding: chunked\r\n");
                    Framing::Chunked
                }
                None => {
                    keep_alive = false;
                    Framing::UntilClose
                }
            },
        };
        let framing = if no_body { Framing::None } else { framing };
        if !says_connection {
            if !keep_alive {
                self.out.put(b"connection: close\r\n");
            } else if request.version == Version::HTTP_10 {
                self.out.put(b"connection: keep-alive\r\n");
            }
        }
        if !dated {
            self.out.put(b"date: ");
            self.out.put(&date::now());
            self.out.put(b"\r\n");
        }
        self.out.put(b"\r\n");
        let body = match framing {
            Framing::None | Framing::Length(0) => None,
            _ => Some(body),
        };
        self.state = State::Writing {
            body,
            framing,
            keep_alive,
            failed: false,
        };
    }

    /// Writes the answer's body as it comes, taking all the body has ready before each write.
    fn poll_writing(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        let State::Writing {
            body,
            framing,
            keep_alive,
            failed,
        } = &mut self.state
        else {
            return Poll::Ready(Ok(()));
        };
        loop {
            while let Some(source) = body.as_mut() {
                if self.out.len() >= WRITE_HIGH {
                    break;
                }
                match Pin::new(source).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers are not sent: no client of this proxy asks for them.
                        if let Ok(data) = frame.into_data() {
                            *failed |= !put_body(&mut self.out, framing, data);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => *failed = true,
                    Poll::Ready(None) => {
                        *failed |= !put_end(&mut self.out, framing);
                        *body = None;
                    }
                    Poll::Pending => break,
                }
                if *failed {
                    *body = None;
                    *keep_alive = false;
                } else if matches!(framing, Framing::Length(0)) {
                    // Its length reached, as hyper does: the body is done with.
                    *body = None;
                }
            }
            if !self.out.is_empty() {
                match poll_write(&mut self.io, &mut self.out, cx) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => break,
                }
                continue;
            }
            if body.is_some() {
                break;
            }
            if *failed {
                return Poll::Ready(Err(ConnectionError::Body));
            }
            self.state = if *keep_alive && !self.finishing {
                State::Head
            } else {
                State::Closing
            };
            return Poll::Ready(Ok(()));
        }
        watch(&mut self.io, &mut self.buf, cx)
    }
}

/// Reads what the client sends while its request is served: the next request's head, kept,
/// or its leaving, which ends the connection (and drops the request in flight). `Pending`
/// unless the client left.
fn watch<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Result<(), ConnectionError>> {
    loop {
        if buf.len() >= READ_AHEAD {
            return Poll::Pending;
        }
        if buf.capacity() == buf.len() {
            buf.reserve(READ_SIZE);
        }
        match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf)) {
            Ok(0) => return Poll::Ready(Err(ConnectionError::ClientGone)),
            Ok(_) => {}
            Err(err) => return Poll::Ready(Err(ConnectionError::Read(err))),
        }
    }
}

/// Writes what `out` holds, as much as the socket takes at once.
fn poll_write<T: AsyncWrite + Unpin>(
    io: &mut T,
    out: &mut Outbox,
    cx: &mut Context<'_>,
) -> Poll<Result<(), ConnectionError>> {
    let mut slices = [IoSlice::new(&[]); 32];
    let count = out.slices(&mut slices);
    let written = ready!(Pin::new(io).poll_write_vectored(cx, &slices[..count]));
    match written {
        Ok(0) => Poll::Ready(Err(ConnectionError::Write(io::ErrorKind::WriteZero.into()))),
        Ok(n) => {
            out.advance(n);
            Poll::Ready(Ok(()))
        }
        Err(err) => Poll::Ready(Err(ConnectionError::Write(err))),
    }
}

fn put_status(out: &mut Outbox, version: Version, status: StatusCode) {
    // An HTTP/1.0 client is answered in its own version, as hyper did.
    out.put(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.put(status.as_str().as_bytes());
    out.put(b" ");
    out.put(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.put(b"\r\n");
}

/// Queues a piece of the body in its framing; `false` when it overruns the declared length
/// (what fits is queued).
fn put_body(out: &mut Outbox, framing: &mut Framing, mut data: bytes::Bytes) -> bool {
    match framing {
        Framing::Chunked => out.put_chunk(data),
        Framing::Length(left) => {
            let fits = data.len() as u64 <= *left;
            if !fits {
                data.truncate(*left as usize);
            }
            *left -= data.len() as u64;
            out.put_data(data);
            return fits;
        }
        Framing::UntilClose => out.put_data(data),
        Framing::None => {}
    }
    true
}

/// Queues the body's end in its framing; `false` when the body ended short of its length.
fn put_end(out: &mut Outbox, framing: &mut Framing) -> bool {
    match framing {
        Framing::Chunked => {
            out.put(b"0\r\n\r\n");
            true
        }
        Framing::Length(left) => *left == 0,
        Framing::UntilClose | Framing::None => true,
    }
}

impl<T, S, F, B> Future for Connection<T, S, F, B>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<RequestBody>) -> F + Unpin,
    F: Future<Output = Response<B>> + Unpin,
    B: Body<Data = bytes::Bytes> + WriterHints + Unpin,
{
    type Output = Result<(), ConnectionError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Head => ready!(this.poll_head(cx))?,
                State::Handling { .. } => ready!(this.poll_handling(cx))?,
                State::Writing { .. } => ready!(this.poll_writing(cx))?,
                State::Closing => {
                    while !this.out.is_empty() {
                        ready!(poll_write(&mut this.io, &mut this.out, cx))?;
                    }
                    // The end of what was written, sent as such; a client gone already is no
                    // error at this point.
                    let _ = ready!(Pin::new(&mut this.io).poll_shutdown(cx));
                    this.state = State::Closed;
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<T, S, F, B> Finish for Connection<T, S, F, B>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<RequestBody>) -> F + Unpin,
    F: Future<Output = Response<B>> + Unpin,
    B: Body<Data = bytes::Bytes> + WriterHints + Unpin,
{
    type Error = ConnectionError;

    /// The request in flight is answered (with `Connection: close` if its head is not out
    /// yet); a connection waiting for a request closes now.
    fn finish(self: Pin<&mut Self>) {
        self.get_mut().finishing = true;
    }
}

#[cfg(test)]
mod tests;
