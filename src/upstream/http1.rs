//! An HTTP/1.1 connection to a provider, written and read by the request that uses it.
//!
//! hyper's client runs each connection as a task of its own and hands the answer's body to the
//! request through a channel that holds one chunk at a time: every chunk of a stream crossed
//! from the connection's task to the request's and back (two task switches), and a request
//! took three task polls and two channels before its answer's head arrived. Here the request
//! writes its head and body itself and reads the answer off the socket: a chunk goes from the
//! provider's socket to the client's within one poll of the client connection's task, and the
//! data of all the chunks one read brought leaves as one frame.
//!
//! What it speaks: requests with a body of known length (`Content-Length`) or chunked;
//! answers framed by `Content-Length`, chunked transfer coding or the end of the connection;
//! interim `1xx` answers skipped; no body after `HEAD`, `204` or `304`. A connection goes back to
//! the pool only after an HTTP/1.1 answer whose body ended exactly where its framing said, with
//! no `Connection: close`.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::pool::{BoxError, IdleList};
use super::{OutboundBody, RequestLines};
use crate::tcp_send::poll_send;
use crate::wire::lines::{HeadLines, Spans, is_hop_by_hop, is_named};
use crate::wire::{
    BadChunk, Chunked, add_length, connection_only_this_hop, decode_chunked, has_token, itoa,
    last_coding_is_chunked,
};

/// Most header lines an answer's head may have (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Largest answer head read.
const MAX_HEAD: usize = 64 * 1024;
/// Room made in the read buffer before a read: an unpaced stream of a few dozen chunks
/// arrives in one read.
const READ_SIZE: usize = 8 * 1024;
/// A request body's first piece up to this size is copied in after the head: one slice is
/// written by a cheaper system call than two (src/tcp_send.rs).
const COPY_MAX: usize = 4 * 1024;

/// Why an exchange on an HTTP/1.1 connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    #[error("cannot write the request to the provider")]
    Write(#[source] io::Error),
    #[error("cannot read the provider's answer")]
    Read(#[source] io::Error),
    #[error("the request body failed")]
    RequestBody(#[source] BoxError),
    #[error("the provider closed the connection before it answered")]
    ClosedBeforeAnswer,
    #[error("the provider closed the connection before the answer's body ended")]
    ClosedInBody,
    #[error("the provider's answer is not HTTP/1.1: {0}")]
    Head(&'static str),
    #[error("the provider's answer head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the provider's answer has an invalid chunk")]
    Chunk,
}

impl From<BadChunk> for Http1Error {
    fn from(_: BadChunk) -> Http1Error {
        Http1Error::Chunk
    }
}

/// The socket of a connection: plain TCP, or TLS that negotiated HTTP/1.1.
pub enum Io {
    Plain(TcpStream),
    /// Boxed: the TLS state is about a kilobyte that plain connections need not carry.
    Tls(Box<TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => poll_send(io, cx, &[IoSlice::new(buf)]),
            Io::Tls(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => poll_send(io, cx, bufs),
            Io::Tls(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(_) => true,
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }
}

/// An HTTP/1.1 connection between exchanges.
pub struct Connection {
    io: Io,
    /// Bytes read and not yet taken.
    buf: BytesMut,
}

impl Connection {
    pub fn new(io: Io) -> Connection {
        Connection {
            io,
            buf: BytesMut::new(),
        }
    }

    /// A plain connection's own port, to tell connections apart.
    #[cfg(test)]
    pub fn local_port(&self) -> Option<u16> {
        match &self.io {
            Io::Plain(io) => Some(io.local_addr().unwrap().port()),
            Io::Tls(_) => None,
        }
    }

    /// Whether an idle connection can take a request: the provider has neither closed it nor
    /// sent anything on it. The socket is read only if it was reported readable since the last
    /// read, so a quiet connection costs no system call.
    pub fn is_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// Sends `request` (origin form), with `own` lines (the provider's, with `Host`) and
    /// `lines` (see `write_head`), and reads the answer's head. The answer's body gives the
    /// connection back to `home` when it ends and the connection may be reused.
    ///
    /// The head is encoded before the future is made, which then holds only what it still
    /// needs: as an `async fn` it kept the request, its parts and the connection twice over.
    pub fn send(
        self,
        request: Request<OutboundBody>,
        own: &[u8],
        lines: RequestLines,
        home: &Arc<IdleList>,
    ) -> impl Future<Output = Result<Response<Http1Body>, Http1Error>> + Send + 'static {
        let (parts, body) = request.into_parts();
        let length = body.size_hint().exact();
        let mut conn = self;
        let head = conn.encode_head(
            &parts.method,
            &parts.uri,
            own,
            &parts.headers,
            &lines,
            length,
        );
        drop(lines);
        let asked_head = parts.method == Method::HEAD;
        drop(parts);
        let home = Arc::clone(home);
        async move {
            let head = match conn.write_request(head, body, length.is_none()).await {
                Ok(Sent::Whole) => conn.read_head().await?,
                // The provider answered before it took all of the request (an early `413`,
                // say): that answer is the client's. The connection is not used again.
                Ok(Sent::Cut) => conn.read_head().await?.last(),
                // It may also have answered and closed: its answer, if it is there, says more
                // than the failed write.
                Err(Http1Error::Write(err)) => match conn.read_head().await {
                    Ok(head) => head.last(),
                    Err(_) => return Err(Http1Error::Write(err)),
                },
                Err(err) => return Err(err),
            };
            let mut body = Http1Body {
                conn: Some(conn),
                framing: if asked_head {
                    Framing::Ended
                } else {
                    head.framing
                },
                keep_alive: head.keep_alive,
                home,
                lines: Some(head.lines),
            };
            if body.is_end_stream() {
                body.release();
            }
            Ok(head.response.map(|()| body))
        }
    }

    /// Writes the head and the body; a body's first frame goes out with the head. Stops early
    /// when the provider starts answering meanwhile.
    async fn write_request<B>(
        &mut self,
        head: BytesMut,
        body: B,
        chunked: bool,
    ) -> Result<Sent, Http1Error>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let mut body = pin!(body);
        let mut head = Some(head);
        loop {
            let data = if body.is_end_stream() {
                None
            } else {
                match poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => Some(data),
                        // Empty data and trailers: nothing to send.
                        _ => continue,
                    },
                    Some(Err(err)) => return Err(Http1Error::RequestBody(err.into())),
                    None => None,
                }
            };
            let head = head.take().unwrap_or_default();
            let Some(data) = data else {
                let end: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
                if self
                    .write_all(&mut [IoSlice::new(&head), IoSlice::new(end)])
                    .await?
                    == Sent::Cut
                {
                    return Ok(Sent::Cut);
                }
                break;
            };
            let sent = if chunked {
                let size = format!("{:x}\r\n", data.len());
                self.write_all(&mut [
                    IoSlice::new(&head),
                    IoSlice::new(size.as_bytes()),
                    IoSlice::new(&data),
                    IoSlice::new(b"\r\n"),
                ])
                .await?
            } else if data.len() <= COPY_MAX && !head.is_empty() {
                // `encode_head` left room for it.
                let mut head = head;
                head.extend_from_slice(&data);
                self.write_all(&mut [IoSlice::new(&head)]).await?
            } else {
                self.write_all(&mut [IoSlice::new(&head), IoSlice::new(&data)])
                    .await?
            };
            if sent == Sent::Cut {
                return Ok(Sent::Cut);
            }
        }
        poll_fn(|cx| Pin::new(&mut self.io).poll_flush(cx))
            .await
            .map_err(Http1Error::Write)?;
        Ok(Sent::Whole)
    }

    /// Writes all of `slices`, unless the provider starts its final answer while the socket
    /// takes no more (it answers before reading the rest), or closes: `Sent::Cut` then. Interim
    /// answers meanwhile (a `100 Continue` to a forwarded `Expect`) are taken, and writing goes on.
    async fn write_all(&mut self, mut slices: &mut [IoSlice<'_>]) -> Result<Sent, Http1Error> {
        IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            let written = poll_fn(|cx| {
                if let Poll::Ready(written) = Pin::new(&mut self.io).poll_write_vectored(cx, slices)
                {
                    return Poll::Ready(written.map(Some));
                }
                loop {
                    match self.poll_fill(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(read)) if read > 0 && only_interim(&mut self.buf) => {}
                        // The answer, the end or the error is read with the answer.
                        Poll::Ready(_) => return Poll::Ready(Ok(None)),
                    }
                }
            })
            .await
            .map_err(Http1Error::Write)?;
            let Some(written) = written else {
                return Ok(Sent::Cut);
            };
            if written == 0 {
                return Err(Http1Error::Write(io::ErrorKind::WriteZero.into()));
            }
            IoSlice::advance_slices(&mut slices, written);
        }
        Ok(Sent::Whole)
    }

    /// Reads the answer's head, skipping interim (`1xx`) ones.
    async fn read_head(&mut self) -> Result<Head, Http1Error> {
        loop {
            // A request's answer finds the buffer empty: nothing to parse before a read.
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf)? {
                    Parsed::Final(head) => return Ok(head),
                    Parsed::Interim => continue,
                    Parsed::Partial => {}
                }
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Http1Error::HeadTooLarge);
            }
            let read = poll_fn(|cx| self.poll_fill(cx)).await?;
            if read == 0 {
                return Err(if self.buf.is_empty() {
                    Http1Error::ClosedBeforeAnswer
                } else {
                    Http1Error::Head("it ends before its head does")
                });
            }
        }
    }

    /// Reads what the socket has into the buffer: the number of bytes, 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Http1Error>> {
        let spare = self.buf.capacity() - self.buf.len();
        // Once the bytes read before are all taken and let go, read from the buffer's start
        // again: a paced stream then touches the buffer's first page only, not all of it.
        let reclaimed = self.buf.is_empty() && spare < READ_SIZE && self.buf.try_reclaim(READ_SIZE);
        if !reclaimed && spare < READ_SIZE / 2 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
            .map_err(Http1Error::Read)
    }

    /// The request line and headers, with the framing of a body of `length` (chunked when
    /// unknown) in place of any the headers had. Written in the room of the read buffer, which
    /// is empty between exchanges and not read into until the head is out: the head costs no
    /// allocation of its own, and once it is written and let go, the answer is read into the
    /// same memory again (`poll_fill` reclaims it).
    fn encode_head(
        &mut self,
        method: &Method,
        uri: &http::Uri,
        own: &[u8],
        headers: &HeaderMap,
        lines: &RequestLines,
        length: Option<u64>,
    ) -> BytesMut {
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        // Room for a short body too: `write_request` sends it in the head's write.
        let body = length.filter(|&n| n <= COPY_MAX as u64).unwrap_or(0) as usize;
        let lines_len = lines.client.as_ref().map_or(0, HeadLines::len);
        let room = 128 + target.len() + own.len() + 64 * (headers.len() + lines_len + 1) + body;
        let room = room.max(READ_SIZE);
        if !(self.buf.is_empty() && self.buf.try_reclaim(room)) {
            self.buf.reserve(room);
        }
        let mut head = self.buf.split_off(self.buf.len());
        write_head(&mut head, method, target, own, headers, lines, length);
        head
    }
}

/// Writes the head `Connection::encode_head` makes: the request line, the `own` lines, the
/// map's headers, the client's lines and `x-forwarded-for`, and the body's framing in place of
/// any framing they had.
fn write_head(
    head: &mut BytesMut,
    method: &Method,
    target: &str,
    own: &[u8],
    headers: &HeaderMap,
    lines: &RequestLines,
    length: Option<u64>,
) {
    head.extend_from_slice(method.as_str().as_bytes());
    head.extend_from_slice(b" ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    head.extend_from_slice(own);
    for (name, value) in headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(client) = &lines.client {
        let framing = |name: &[u8], _: &[u8]| {
            !(is_named(name, b"content-length") || is_named(name, b"transfer-encoding"))
        };
        client.write(framing, |piece| head.extend_from_slice(piece));
    }
    if let Some(forwarded_for) = &lines.forwarded_for {
        head.extend_from_slice(b"x-forwarded-for: ");
        head.extend_from_slice(forwarded_for.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match length {
        // A request without a body says so only where a body is expected.
        Some(0) if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) => {}
        Some(length) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(itoa(length, &mut [0; 20]));
            head.extend_from_slice(b"\r\n");
        }
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"\r\n");
}

/// Takes the whole interim answers at the start of `buf`; whether all there is, is interim or
/// may still prove to be (too little of a status line to tell).
fn only_interim(buf: &mut BytesMut) -> bool {
    loop {
        // "HTTP/1.x 1..": a status from 100 to 199.
        let interim = buf
            .iter()
            .zip(b"HTTP/1.x 1")
            .all(|(&byte, &expected)| byte == expected || expected == b'x');
        if !interim {
            return false;
        }
        if buf.len() < 10 {
            return true;
        }
        match parse_head(buf) {
            Ok(Parsed::Interim) => {}
            Ok(Parsed::Partial) => return true,
            // A `101` or a broken head (never a final answer's, taken here): left for the
            // answer's reading to report.
            Ok(Parsed::Final(_)) | Err(_) => return false,
        }
    }
}

/// How much of a request went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Whole,
    /// The provider answered, or closed, before it took all of it.
    Cut,
}

/// An answer's head, read.
struct Head {
    /// Status and version; its header map stays empty.
    response: Response<()>,
    lines: HeadLines,
    framing: Framing,
    /// The connection may take another request once the body has ended.
    keep_alive: bool,
}

impl Head {
    /// The head of the last answer on its connection.
    fn last(mut self) -> Head {
        self.keep_alive = false;
        self
    }
}

/// What the start of the read buffer holds.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim (`1xx`) answer, taken and skipped.
    Interim,
    Final(Head),
}

/// Parses the answer head at the start of `buf`, taking it from `buf` when whole. Its header
/// lines are kept as they came (`HeadLines`), less the lines that frame only this hop, which
/// are read here (see `wire::only_this_hop`).
fn parse_head(buf: &mut BytesMut) -> Result<Parsed, Http1Error> {
    // Uninitialised: zeroing room for a hundred lines cost more than parsing the usual ten.
    let mut lines = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut lines,
    ) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Http1Error::Head("it has too many headers"));
        }
        Err(_) => return Err(Http1Error::Head("its head does not parse")),
    };
    let code = parsed.code.unwrap_or_default();
    let status =
        StatusCode::from_u16(code).map_err(|_| Http1Error::Head("its status is out of range"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Http1Error::Head("it switches protocols"));
        }
        buf.advance(length);
        return Ok(Parsed::Interim);
    }
    let version = if parsed.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    // The lines' places are noted while the parser's slices borrow the buffer; the lines are
    // then made from the head once it is split off: values are slices of it, not copies.
    let spans = Spans::of(buf);
    let mut framing_lines = FramingLines::default();
    let mut kept = Vec::with_capacity(parsed.headers.len());
    let mut hop_by_hop = false;
    for line in parsed.headers.iter() {
        let (name, value) = (line.name.as_bytes(), line.value);
        if !framing_lines.note(name, value) {
            hop_by_hop |= is_hop_by_hop(name);
            kept.push(spans.line(name, value));
        }
    }
    let head = buf.split_to(length).freeze();
    let lines = HeadLines::new(head, kept, hop_by_hop);
    // An answer framed both ways may have been read wrongly by someone: the connection ends.
    let ambiguous = framing_lines.chunked.is_some() && framing_lines.has_length;
    let closes = framing_lines.closes;
    let framing = framing(status, framing_lines)?;
    let keep_alive = version == Version::HTTP_11
        && !closes
        && !ambiguous
        && !matches!(framing, Framing::UntilClose);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    Ok(Parsed::Final(Head {
        response,
        lines,
        framing,
        keep_alive,
    }))
}

/// What the head's framing lines say, noted line by line as the head is read.
struct FramingLines {
    /// Whether the last `Transfer-Encoding` line's last coding, the one that frames the body,
    /// is `chunked`; `None` without such a line.
    chunked: Option<bool>,
    /// Whether any `Content-Length` line came, and what they say together: one length, or
    /// the first fault found in them.
    has_length: bool,
    length: Result<Option<u64>, Http1Error>,
    /// A `Connection` line lists `close`.
    closes: bool,
}

impl Default for FramingLines {
    fn default() -> FramingLines {
        FramingLines {
            chunked: None,
            has_length: false,
            length: Ok(None),
            closes: false,
        }
    }
}

impl FramingLines {
    /// Notes a line; whether it frames only this hop (see `wire::only_this_hop`).
    fn note(&mut self, name: &[u8], value: &[u8]) -> bool {
        // Told apart by length first: most lines are none of these.
        match name.len() {
            17 if is_named(name, b"transfer-encoding") => {
                self.chunked = Some(last_coding_is_chunked(value));
                true
            }
            14 if is_named(name, b"content-length") => {
                self.has_length = true;
                if let Ok(known) = self.length {
                    self.length = add_length(known, value).map_err(Http1Error::Head);
                }
                false
            }
            10 if is_named(name, b"connection") => {
                self.closes |= has_token(value, b"close");
                connection_only_this_hop(value)
            }
            10 if is_named(name, b"keep-alive") => true,
            _ => false,
        }
    }
}

/// How an answer's body ends (RFC 9112, section 6.3).
fn framing(status: StatusCode, lines: FramingLines) -> Result<Framing, Http1Error> {
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Ended);
    }
    if let Some(chunked) = lines.chunked {
        return Ok(if chunked {
            Framing::Chunked(Chunked::Size)
        } else {
            Framing::UntilClose
        });
    }
    Ok(match lines.length? {
        Some(0) => Framing::Ended,
        Some(length) => Framing::Length(length),
        None => Framing::UntilClose,
    })
}

/// How much of an answer's body is left to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
    /// Until the provider closes the connection.
    UntilClose,
    Ended,
}

/// An answer's body on an HTTP/1.1 connection, read off the socket as it is polled. It gives the
/// connection back to the pool when it ends (if the connection may be reused); dropped before
/// its end, it closes the connection, as the rest of the answer would otherwise come first on
/// it.
pub struct Http1Body {
    /// The connection while the body is read.
    conn: Option<Connection>,
    framing: Framing,
    keep_alive: bool,
    home: Arc<IdleList>,
    /// The answer's header lines, until the proxy takes them (`take_head_lines`).
    lines: Option<HeadLines>,
}

impl Http1Body {
    /// The answer's header lines, as they came less those that framed it on this hop. Only
    /// the first call has them.
    pub fn take_head_lines(&mut self) -> Option<HeadLines> {
        self.lines.take()
    }

    pub fn head_lines_mut(&mut self) -> Option<&mut HeadLines> {
        self.lines.as_mut()
    }

    /// Lets go of the connection at the body's end: back to the pool, or closed.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.home.give_back(conn);
            }
        }
    }

    /// Ends the body with an error: the connection is closed.
    fn fail(&mut self, err: Http1Error) -> Poll<Option<Result<Frame<Bytes>, Http1Error>>> {
        self.conn = None;
        self.framing = Framing::Ended;
        Poll::Ready(Some(Err(err)))
    }

    fn end(&mut self) {
        self.framing = Framing::Ended;
        self.release();
    }
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = Http1Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Http1Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.framing {
                Framing::Ended => {
                    this.release();
                    return Poll::Ready(None);
                }
                Framing::Length(left) if !conn.buf.is_empty() => {
                    let n = (*left).min(conn.buf.len() as u64);
                    *left -= n;
                    let data = conn.buf.split_to(n as usize).freeze();
                    if *left == 0 {
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(state) => {
                    let (data, ended) = match decode_chunked(state, &mut conn.buf) {
                        Ok(decoded) => decoded,
                        Err(err) => return this.fail(err.into()),
                    };
                    if ended {
                        this.end();
                    }
                    if let Some(data) = data {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if ended {
                        return Poll::Ready(None);
                    }
                }
                Framing::UntilClose if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Length(_) | Framing::UntilClose => {}
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.framing == Framing::UntilClose => {
                    this.keep_alive = false;
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Http1Error::ClosedInBody),
                Ok(_) => {}
                Err(err) => return this.fail(err),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Ended
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Ended => SizeHint::with_exact(0),
            Framing::Chunked(_) | Framing::UntilClose => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
