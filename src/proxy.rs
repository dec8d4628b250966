//! The proxy path: one client request in, one upstream call out, the answer streamed back
//! through the meter. Errors tokentap produces itself are answered in OpenAI's error shape and
//! still become a record.

mod attribution;
mod headers;
mod outbound;
pub mod request;
mod route;
mod upstream;

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, ready};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, header};
use http_body_util::{Either, Full, Limited};
use hyper::body::Body;

use crate::server::ClientBody;
use tokio::time::{Instant, Sleep};

use attribution::attribute;
pub use attribution::{KeyNames, fingerprint};
pub use headers::Peer;
use headers::{ClientHeaders, header_bytes};

use crate::app::App;
use crate::error::ProxyError;
use crate::metering::body::error_chain;
use crate::metering::{Dialect, MeteredBody};
use crate::record::{Endpoint, Outcome, RequestId};
use crate::tracker::{InFlight, RequestStart};
use crate::upstream::{ClientError, Upstream};
use crate::wire::lines::visible_text;

/// A metered body is boxed: an answer moves several times on its way to the connection's writer
/// (the handler's layers, the connection's state), and its metered body with the meter inside
/// is most of its size (504 bytes inline, each move a copy).
pub type ProxyBody = Either<Box<MeteredBody>, Full<Bytes>>;

impl crate::server::WriterHints for ProxyBody {
    fn idle_when_pending(&self) -> bool {
        match self {
            Either::Left(metered) => metered.idle_when_pending(),
            Either::Right(_) => false,
        }
    }

    fn head_lines(&mut self) -> Option<crate::wire::lines::HeadLines> {
        match self {
            Either::Left(metered) => metered.head_lines(),
            Either::Right(_) => None,
        }
    }

    /// An ended metered body is handed over whole as the work: boxed already, it spares the
    /// work a box of its own (488 bytes, one allocation a request). An empty body, ended,
    /// takes its place.
    fn after_write(&mut self) -> Option<crate::server::AfterWrite> {
        match self {
            Either::Left(metered) if metered.end_for_writer() => {
                match std::mem::replace(self, Either::Right(Full::new(Bytes::new()))) {
                    Either::Left(metered) => Some(metered),
                    Either::Right(_) => None,
                }
            }
            _ => None,
        }
    }
}

/// `handle`, with a panic turned into a 500 in the error shape (the request's record is still
/// written, by its `InFlight` unwinding) instead of a dropped connection.
///
/// The handlers are plain functions returning `async` blocks: an `async fn` keeps each of its
/// arguments twice in its future, as the argument and as the local it is moved into, and a
/// request is 272 bytes. This future is boxed per request and its state written as it runs:
/// 2,120 bytes as `async fn`s, callgrind's biggest copy of a short request; 1,208 now.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub fn handle_guarded(
    app: App,
    req: Request<ClientBody>,
    client: Peer,
) -> impl Future<Output = Response<ProxyBody>> + Send {
    async move {
        use futures_util::FutureExt;
        let endpoint = Endpoint::of_path(req.uri().path());
        let tracked = AtomicBool::new(false);
        match std::panic::AssertUnwindSafe(handle_tracked(app.clone(), req, client, &tracked))
            .catch_unwind()
            .await
        {
            Ok(response) => response,
            Err(_) => {
                tracing::error!("request handler panicked");
                let err = ProxyError::Internal("the request handler failed".into());
                if tracked.load(Ordering::Relaxed) {
                    error_response(err)
                } else {
                    // It failed before its record was started: start and end one now.
                    let none = ClientHeaders::Map(http::HeaderMap::new());
                    answer_early(&app, endpoint, None, &none, err, &tracked)
                }
            }
        }
    }
}

pub async fn handle(app: App, req: Request<ClientBody>, client: Peer) -> Response<ProxyBody> {
    handle_tracked(app, req, client, &AtomicBool::new(false)).await
}

/// `handle`, setting `tracked` once the request's record has been started.
fn handle_tracked(
    app: App,
    req: Request<ClientBody>,
    client: Peer,
    tracked: &AtomicBool,
) -> impl Future<Output = Response<ProxyBody>> + Send + '_ {
    // Split here, not in the future: there the request would be kept whole besides its parts.
    let (mut parts, mut body) = req.into_parts();
    // An HTTP/1.1 request's headers come as its lines (its map empty), an h2c request's in
    // its map.
    let headers = match body.take_head_lines() {
        Some(lines) => ClientHeaders::Lines(lines),
        None => ClientHeaders::Map(std::mem::take(&mut parts.headers)),
    };
    async move {
        let endpoint = Endpoint::of_path(parts.uri.path());
        let settings = app.settings();
        let header_provider = headers
            .get("x-tokentap-provider")
            .map(|v| String::from_utf8_lossy(v).into_owned());

        let reject = |headers: &ClientHeaders, err| {
            answer_early(
                &app,
                endpoint,
                header_provider.as_deref(),
                headers,
                err,
                tracked,
            )
        };
        let body_limit = usize::try_from(settings.max_body).unwrap_or(usize::MAX);

        // Checks that need no body.
        if header_bytes(&headers) > settings.max_header_bytes {
            return reject(
                &headers,
                ProxyError::HeadersTooLarge {
                    limit: settings.max_header_bytes,
                },
            );
        }
        // The length the client declared, as its body's framing read it.
        if body
            .size_hint()
            .exact()
            .is_some_and(|n| n > settings.max_body)
        {
            return reject(
                &headers,
                ProxyError::BodyTooLarge {
                    limit: settings.max_body,
                },
            );
        }
        if app.is_draining() {
            return reject(&headers, ProxyError::ShuttingDown);
        }
        let metered = endpoint != Endpoint::Other && parts.method == http::Method::POST;
        // One timer a request: the client's body is read by one deadline, the upstream's head
        // awaited by a later one. Moving a registered timer's deadline later only moves its expiry,
        // where a second timer is registered in the runtime's wheel and taken out again (about 450
        // instructions a request, callgrind). Unregistered until first polled.
        let mut timer = pin!(tokio::time::sleep_until(
            Instant::now() + settings.client_body_timeout
        ));

        // A metered request's JSON is read whole (bounded by --max-body): routing and usage
        // injection need it. Any other body streams straight through.
        let (body_bytes, streaming_body) = if metered {
            let read = read_whole(Limited::new(body, body_limit));
            let Some(read) = before(timer.as_mut(), read).await else {
                return reject(
                    &headers,
                    ProxyError::BodyTimeout {
                        after_ms: settings.client_body_timeout.as_millis(),
                    },
                );
            };
            match read {
                Ok(whole) => (Some(whole), None),
                Err(err) if err.is::<http_body_util::LengthLimitError>() => {
                    return reject(
                        &headers,
                        ProxyError::BodyTooLarge {
                            limit: settings.max_body,
                        },
                    );
                }
                Err(err) => {
                    return reject(&headers, ProxyError::BodyRead(error_chain(err.as_ref())));
                }
            }
        } else {
            (None, Some(body))
        };
        // Routed, attributed, started and built in a plain function: its locals (the request
        // facts, attribution, the outgoing request) then take no room in this future while it
        // waits for the upstream.
        let Prepared {
            upstream,
            in_flight,
            sending,
            dialect,
            add_usage,
        } = match prepare(
            &app,
            &parts,
            headers,
            header_provider.as_deref(),
            Received {
                endpoint,
                metered,
                body_bytes,
                streaming_body,
                body_limit,
            },
            &client,
            tracked,
        ) {
            Ok(prepared) => prepared,
            Err(response) => return response,
        };

        let sent = in_flight.sent_at();
        // The whole-request timeout also bounds the wait for the headers.
        let deadline = sent + settings.timeouts.request;
        let headers_by = deadline.min(sent + settings.timeouts.first_byte);
        timer.as_mut().reset(headers_by);
        let response = match before(timer, sending).await {
            Some(Ok(response)) => response,
            Some(Err(err)) => {
                return answer_upstream_failure(in_flight, upstream, &err, settings.max_body);
            }
            None => {
                let err = ProxyError::UpstreamTimeout {
                    provider: upstream.config.name.clone(),
                    after_ms: sent.elapsed().as_millis(),
                };
                in_flight.fail(Outcome::Timeout, err.status().as_u16(), err.to_string());
                return error_response(err);
            }
        };

        outbound::respond(&app, response, dialect, add_usage, in_flight, deadline)
    }
}

/// A request's body as read: whole when metered, else still streaming.
struct Received {
    endpoint: Endpoint,
    metered: bool,
    body_bytes: Option<WholeBody>,
    streaming_body: Option<ClientBody>,
    body_limit: usize,
}

/// A request ready to go upstream: its record started, its exchange made, not yet polled.
struct Prepared<'a> {
    upstream: &'a Upstream,
    in_flight: InFlight,
    sending: crate::upstream::ResponseFuture<'a>,
    dialect: Option<Dialect>,
    add_usage: bool,
}

/// Routes, attributes and starts the record of a request whose body is read, and makes its
/// upstream exchange; or answers it.
#[expect(
    clippy::result_large_err,
    reason = "the answer is what the handler returns anyway, and it is the rare path"
)]
fn prepare<'a>(
    app: &'a App,
    parts: &http::request::Parts,
    headers: ClientHeaders,
    header_provider: Option<&str>,
    received: Received,
    client: &Peer,
    tracked: &AtomicBool,
) -> Result<Prepared<'a>, Response<ProxyBody>> {
    let Received {
        endpoint,
        metered,
        body_bytes,
        streaming_body,
        body_limit,
    } = received;
    let (sent_body, body_bytes) = body_bytes.map(WholeBody::split).unzip();
    let mut facts = body_bytes.as_deref().and_then(request::inspect);
    let model = facts.as_ref().and_then(|f| f.model.as_deref());
    // Answered here and recorded, before anything goes upstream.
    let refuse = |err| answer_early(app, endpoint, header_provider, &headers, err, tracked);
    let route = match route::choose(app.provider_configs(), header_provider, model) {
        Ok(route) => route,
        Err(err) => return Err(refuse(err)),
    };
    let upstream = app.upstream(route.provider);
    let dialect = if metered { Dialect::of(endpoint) } else { None };
    let stream = facts.as_ref().is_some_and(|f| f.stream);
    let add_usage = stream
        && matches!(dialect, Some(Dialect::Chat | Dialect::Completions))
        && upstream.config.include_usage
        && facts
            .as_ref()
            .is_some_and(|f| !f.include_usage && f.can_add_include_usage());
    let rewritten = match (&facts, &body_bytes) {
        (Some(f), Some(bytes)) => f.rewrite(bytes, route.stripped_model, add_usage),
        _ => None,
    };
    let who = attribute(
        &headers,
        facts.as_ref().and_then(|f| f.user.as_deref()),
        app.key_names(),
    );
    if let Some(header) = who.repeated_credential {
        return Err(refuse(ProxyError::RepeatedCredential { header }));
    }
    let request_bytes = body_bytes
        .as_ref()
        .map_or_else(|| content_length(&headers).unwrap_or(0), |b| b.len() as u64);
    let (id, started_at) = new_request_id_and_start();
    let start = RequestStart {
        id,
        started_at,
        provider: upstream.name.clone(),
        // The facts are done with: the record takes the model itself.
        model: facts.as_mut().and_then(|f| f.model.take()),
        endpoint,
        stream,
        request_bytes,
        key_id: who.key_id,
        user: who.user,
        conversation_id: who.conversation_id,
        tags: who.tags,
    };
    let in_flight = InFlight::start(app.tracker(), start, body_bytes, dialect);
    tracked.store(true, Ordering::Relaxed);

    let body_rewritten = rewritten.is_some();
    let outgoing = rewritten.or(sent_body);
    let upstream_body = match (outgoing, streaming_body) {
        (Some(bytes), _) => Either::Left(Full::new(bytes)),
        (None, Some(body)) => Either::Right(Limited::new(body, body_limit)),
        (None, None) => Either::Left(Full::new(Bytes::new())),
    };
    let request = upstream::request(
        upstream,
        &parts.method,
        &parts.uri,
        headers,
        client,
        upstream_body,
        body_rewritten,
    );
    let (request, lines) = match request {
        Ok(outbound) => outbound,
        Err(err) => {
            // Unreachable in practice: the parts come from a parsed request and valid config.
            let err = ProxyError::Internal(format!("cannot build the upstream request: {err}"));
            in_flight.fail(Outcome::ProxyError, err.status().as_u16(), err.to_string());
            return Err(error_response(err));
        }
    };

    Ok(Prepared {
        sending: upstream.send(request, lines),
        upstream,
        in_flight,
        dialect,
        add_usage,
    })
}

/// `work`'s output, or `None` once `timer` has gone off first. The timer is polled outside the
/// runtime's cooperative budget, as `tokio::time::timeout` polls it once the work has spent the
/// budget: a deadline holds even while the work keeps running out of it.
async fn before<T>(timer: Pin<&mut Sleep>, work: impl Future<Output = T>) -> Option<T> {
    let mut work = pin!(work);
    let mut timer = tokio::task::coop::unconstrained(timer);
    poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        Pin::new(&mut timer).poll(cx).map(|()| None)
    })
    .await
}

fn answer_upstream_failure(
    in_flight: InFlight,
    upstream: &Upstream,
    err: &ClientError,
    max_body: u64,
) -> Response<ProxyBody> {
    let provider = upstream.config.name.clone();
    let detail = error_chain(err);
    let (err, outcome) = if chain_has::<http_body_util::LengthLimitError>(err) {
        (
            ProxyError::BodyTooLarge { limit: max_body },
            Outcome::ClientError,
        )
    } else if err.is_connect() {
        (
            ProxyError::UpstreamUnreachable { provider, detail },
            Outcome::UpstreamError,
        )
    } else {
        (
            ProxyError::UpstreamFailed { provider, detail },
            Outcome::UpstreamError,
        )
    };
    in_flight.fail(outcome, err.status().as_u16(), err.to_string());
    error_response(err)
}

fn error_response(err: ProxyError) -> Response<ProxyBody> {
    err.into_response::<Full<Bytes>>().map(Either::Right)
}

fn chain_has<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Answers an error found before any upstream call, and records it.
fn answer_early(
    app: &App,
    endpoint: Endpoint,
    header_provider: Option<&str>,
    headers: &ClientHeaders,
    err: ProxyError,
    tracked: &AtomicBool,
) -> Response<ProxyBody> {
    let provider = header_provider
        .and_then(|name| {
            app.provider_configs()
                .iter()
                .find(|p| p.name == name.trim())
        })
        .or_else(|| app.provider_configs().first())
        .map_or_else(|| Arc::from(""), |p| Arc::from(p.name.as_str()));
    let who = attribute(headers, None, app.key_names());
    let (id, started_at) = new_request_id_and_start();
    let start = RequestStart {
        id,
        started_at,
        provider,
        model: None,
        endpoint,
        stream: false,
        request_bytes: content_length(headers).unwrap_or(0),
        key_id: who.key_id,
        user: who.user,
        conversation_id: who.conversation_id,
        tags: who.tags,
    };
    let outcome = match &err {
        ProxyError::ShuttingDown | ProxyError::Internal(_) => Outcome::ProxyError,
        _ => Outcome::ClientError,
    };
    let in_flight = InFlight::start(app.tracker(), start, None, None);
    tracked.store(true, Ordering::Relaxed);
    in_flight.fail(outcome, err.status().as_u16(), err.to_string());
    let mut response: Response<Full<Bytes>> = err.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response.map(Either::Right)
}

/// A request body read whole.
#[derive(Debug)]
struct WholeBody {
    /// A copy in an allocation of its own: the record keeps it for the stream's life (its token
    /// estimate when a provider sends no usage), and a slice of the connection's read buffer
    /// would pin that whole buffer for as long.
    kept: Bytes,
    /// The body as it came, when it came in one piece: sent upstream as it is. A second handle
    /// on `kept` would cost an allocation (a `Bytes` made from a buffer counts its handles only
    /// once it has two).
    as_received: Option<Bytes>,
}

impl WholeBody {
    /// The bytes to send upstream, and the copy to keep.
    fn split(self) -> (Bytes, Bytes) {
        let sent = self.as_received.unwrap_or_else(|| self.kept.clone());
        (sent, self.kept)
    }
}

/// A body read whole into an allocation of its own, copied once. hyper hands a small body over
/// as a slice of the connection's read buffer; kept for the stream's life (for the record's
/// estimate), that slice would pin the whole buffer and make hyper allocate another: 3.9 KiB
/// more RSS per stream at 3,000 paced streams (37.8 vs 33.9 KiB).
///
/// The frames are copied as they come into one buffer, made once for a stated length:
/// http-body-util's `collect` keeps each frame in a list and copies them out after (about 400
/// instructions more a request, callgrind). Done once the body says it has ended, without
/// asking it for a last `None`. A body that came in one piece is also kept as it came, to be
/// sent upstream (`WholeBody::as_received`).
async fn read_whole<B>(body: B) -> Result<WholeBody, B::Error>
where
    B: Body<Data = Bytes>,
{
    let mut body = pin!(body);
    // A stated length (at most the limit: the body is `Limited`) is room made once.
    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(0);
    let mut whole = BytesMut::with_capacity(expected);
    let mut pieces = 0;
    let mut first = None;
    poll_fn(|cx| {
        loop {
            if body.is_end_stream() {
                return Poll::Ready(Ok(()));
            }
            match ready!(body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            whole.extend_from_slice(&data);
                            pieces += 1;
                            first.get_or_insert(data);
                        }
                    }
                }
                Some(Err(err)) => return Poll::Ready(Err(err)),
                None => return Poll::Ready(Ok(())),
            }
        }
    })
    .await?;
    // A body of unstated length grew its buffer by doubling: the record keeps it, so exactly.
    let kept = if whole.capacity() == whole.len() {
        whole.freeze()
    } else {
        Bytes::copy_from_slice(&whole)
    };
    Ok(WholeBody {
        kept,
        as_received: first.filter(|_| pieces == 1),
    })
}

fn content_length(headers: &ClientHeaders) -> Option<u64> {
    visible_text(headers.get("content-length")?)?
        .trim()
        .parse()
        .ok()
}

/// A new request's id and start time, from one wall-clock read.
fn new_request_id_and_start() -> (RequestId, time::OffsetDateTime) {
    let wall = SystemTime::now();
    (new_request_id(wall), wall.into())
}

/// A time-ordered unique id (UUID v7) of a request started at `wall`, so ids sort by start
/// time.
fn new_request_id(wall: SystemTime) -> RequestId {
    // `Uuid::now_v7` locks one process-wide context and reads the OS random source twice per
    // id (two getrandom syscalls per request). A context per thread keeps ids unique and
    // ordered within a thread, and `fast-rng` draws from a user-space generator.
    thread_local! {
        static CONTEXT: uuid::ContextV7 = const { uuid::ContextV7::new() };
    }
    // Before the epoch only on a clock set wrong: the id then counts from the epoch.
    let since = wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let id = CONTEXT.with(|context| {
        let at = uuid::Timestamp::from_unix(context, since.as_secs(), since.subsec_nanos());
        uuid::Uuid::new_v7(at)
    });
    // Encoded into a buffer: `format!` through `Display` took about 600 instructions.
    let mut text = *b"req_00000000000000000000000000000000";
    id.simple().encode_lower(&mut text[4..]);
    // ASCII throughout, so `from_utf8` cannot fail.
    RequestId::new(std::str::from_utf8(&text).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    fn streamed(chunks: &[Bytes]) -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        let frames = chunks
            .iter()
            .cloned()
            .map(|chunk| Ok(http_body::Frame::data(chunk)));
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_read_whole_shares_no_memory_with_the_buffer_it_came_from() {
        let buffer = Bytes::from_static(b"xx{\"model\":\"gpt-4o\"}yy");
        let body = buffer.slice(2..buffer.len() - 2);
        let Ok(whole) = read_whole(Full::new(body.clone())).await;
        let (sent, kept) = whole.split();
        assert_eq!(kept, body);
        let range = buffer.as_ptr_range();
        assert!(!range.contains(&kept.as_ptr()));
        // What goes upstream at once is the piece as it came, not another handle on the copy.
        assert_eq!(sent.as_ptr(), body.as_ptr());
    }

    #[tokio::test]
    async fn a_body_in_many_chunks_is_read_whole_and_in_order() {
        let chunks = [
            Bytes::from_static(b"{\"model\":"),
            Bytes::new(),
            Bytes::from_static(b"\"gpt-4o\""),
            Bytes::from_static(b"}"),
        ];
        let Ok(whole) = read_whole(streamed(&chunks)).await;
        let (sent, kept) = whole.split();
        assert_eq!(&kept[..], b"{\"model\":\"gpt-4o\"}");
        assert_eq!(sent, kept);
        let Ok(empty) = read_whole(streamed(&[])).await;
        assert_eq!(empty.split(), (Bytes::new(), Bytes::new()));
    }

    /// Like hyper's request body: ended with its last byte, its end given a turn later.
    struct EndsWithItsLastByte(Option<Bytes>);

    impl Body for EndsWithItsLastByte {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            match self.get_mut().0.take() {
                Some(data) => Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
                None => Poll::Pending,
            }
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }
    }

    #[test]
    fn a_body_is_whole_once_it_says_it_has_ended() {
        use futures_util::FutureExt;
        let body = EndsWithItsLastByte(Some(Bytes::from_static(b"{}")));
        let read = read_whole(body).now_or_never();
        let kept = read.and_then(Result::ok).map(|whole| whole.split().1);
        assert_eq!(kept, Some(Bytes::from_static(b"{}")));
    }

    #[tokio::test(start_paused = true)]
    async fn one_timer_bounds_the_body_and_then_the_upstream_head() {
        use std::time::Duration;
        let start = Instant::now();
        let mut timer = pin!(tokio::time::sleep_until(start + Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(61)).await;
        // Work that is done wins, also against a timer that has gone off.
        assert_eq!(before(timer.as_mut(), async { 7 }).await, Some(7));
        let waited = before(timer.as_mut(), std::future::pending::<()>()).await;
        assert_eq!((waited, start.elapsed().as_secs()), (None, 61));
        // Re-aimed later, as for a first-byte timeout longer than the body's.
        timer.as_mut().reset(start + Duration::from_secs(300));
        let waited = before(timer.as_mut(), std::future::pending::<()>()).await;
        assert_eq!((waited, start.elapsed().as_secs()), (None, 300));
        // And earlier: a registered timer moved to a sooner deadline still fires then.
        let now = Instant::now();
        timer.as_mut().reset(now + Duration::from_secs(3600));
        let _ = before(timer.as_mut(), tokio::task::yield_now()).await;
        timer.as_mut().reset(now + Duration::from_secs(2));
        let waited = before(timer, std::future::pending::<()>()).await;
        assert_eq!((waited, now.elapsed().as_secs()), (None, 2));
    }

    /// A provider on loopback that answers one request with `answer`, once it has read the
    /// request's head and body (the body is under 1 KiB, in one read with its head or after).
    async fn provider(answer: &'static str) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut piece = [0u8; 4096];
            while !request.ends_with(b"}") {
                let n = socket.read(&mut piece).await.expect("read");
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&piece[..n]);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                answer.len()
            );
            socket.write_all(head.as_bytes()).await.expect("write");
            socket.write_all(answer.as_bytes()).await.expect("write");
            let _ = socket.read(&mut piece).await;
        });
        addr
    }

    #[tokio::test]
    async fn an_ended_answer_is_handed_to_the_writer_whole_and_its_record_ends_when_run() {
        use crate::server::WriterHints;
        use clap::Parser;
        use http_body_util::BodyExt;
        let answer = r#"{"model":"gpt-4o-mini","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let upstream = format!("http://{}", provider(answer).await);
        let cli = crate::cli::Cli::try_parse_from(["tokentap", "--upstream", upstream.as_str()])
            .expect("flags");
        let settings = crate::config::Settings::load(&cli, &|_| None).expect("settings");
        let app = App::new(settings).expect("app");
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
        let request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(ClientBody::Http1(crate::server::http1::RequestBody::whole(
                Bytes::from_static(body.as_bytes()),
            )))
            .expect("request");
        let peer = Peer::new(([127, 0, 0, 1], 9).into());
        let mut answer_body = handle(app.clone(), request, peer).await.into_body();
        assert!(
            answer_body.after_write().is_none(),
            "nothing to hand over before the end"
        );
        let mut received = Vec::new();
        let work = loop {
            let frame = answer_body
                .frame()
                .await
                .expect("a frame")
                .expect("no error");
            received.extend_from_slice(&frame.into_data().expect("data"));
            if let Some(work) = answer_body.after_write() {
                break work;
            }
        };
        assert_eq!(received, answer.as_bytes());
        // What is left in the answer's place has ended.
        assert!(matches!(answer_body, Either::Right(_)) && answer_body.is_end_stream());
        assert!(answer_body.frame().await.is_none());
        // The record ends when the writer runs the work, not before.
        assert_eq!(app.tracker().counts().active, 1);
        work.run();
        let mut counts = app.tracker().counts();
        for _ in 0..1000 {
            if counts.recorded == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            counts = app.tracker().counts();
        }
        assert_eq!((counts.active, counts.recorded), (0, 1));
        let record = app.tracker().recent().pop().expect("a record");
        assert_eq!(
            (record.usage.prompt_tokens, record.usage.completion_tokens),
            (3, 1)
        );
    }

    #[test]
    fn request_ids_are_prefixed_uuids_that_sort_by_start() {
        let now = SystemTime::now();
        let first = new_request_id(now);
        // The same instant again still sorts after: the context counts within a millisecond.
        let second = new_request_id(now);
        let later = new_request_id(now + std::time::Duration::from_millis(2));
        for id in [&first, &second, &later] {
            let hex = id.strip_prefix("req_").expect("prefix");
            assert_eq!(hex.len(), 32, "{id}");
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert_eq!(
                uuid::Uuid::parse_str(hex).expect("uuid").get_version_num(),
                7
            );
        }
        assert!(first.as_str() < second.as_str() && second.as_str() < later.as_str());
        let uuid = |id: &RequestId| uuid::Uuid::parse_str(&id[4..]).expect("uuid");
        let (seconds, nanos) = uuid(&later).get_timestamp().expect("v7").to_unix();
        let named = SystemTime::UNIX_EPOCH + std::time::Duration::new(seconds, nanos);
        let wanted = now + std::time::Duration::from_millis(2);
        // v7 keeps milliseconds.
        assert!(named <= wanted && wanted.duration_since(named).expect("order").as_millis() < 1);
    }
}
