//! One provider's connections: HTTP/1.1 connections kept between requests (`http1`), or, when
//! TLS negotiates HTTP/2, connections whose streams all requests share.
//!
//! tokentap's own, not hyper-util's legacy client: that client hashes its pool key (SipHash,
//! byte by byte) twice per request, takes the pool's lock twice, races every checkout against
//! a connect, and spawns a task per HTTP/1.1 response only to put the connection back when the
//! body ends. Here the response body itself gives its connection back when the upstream has
//! sent all of it (`ResponseBody`), and a provider has exactly one pool, so there is no key.
//! Its idle connections are kept in a list per worker thread (`IdleList`): the workers share no
//! lock on a request's way.
//!
//! An idle connection is closed once it has been idle for longer than the idle timeout, or
//! once the provider has closed it: by the request that finds it so, or by a sweep every half
//! timeout.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Request, Response, Uri, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_rustls::builderstates::WantsSchemes;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::connect::{Connected, Connector};
use super::http1::{self, Http1Body, Http1Error};
use super::{OutboundBody, RequestLines, ResponseFuture, X_FORWARDED_FOR};
use crate::wire::lines::HeadLines;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no response from the provider.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made: TCP, TLS or the HTTP/2 preface failed.
    #[error("cannot connect")]
    Connect(#[source] BoxError),
    /// The exchange on an open HTTP/2 connection failed, or the request body did.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The exchange on an HTTP/1.1 connection failed, or the request body did.
    #[error(transparent)]
    Http1(#[from] Http1Error),
    /// The request's path cannot be put on the provider's base URL.
    #[error("cannot address the request")]
    Address(#[from] http::uri::InvalidUriParts),
}

impl ClientError {
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect(_))
    }

    /// A timer of hyper's HTTP/2 connection ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Http(err) if err.is_timeout())
    }
}

/// An HTTP/1.1 connection between two requests.
struct Idle {
    conn: http1::Connection,
    since: Instant,
}

/// HTTP/1.1 connections not in use, in a list per thread that serves requests: a connection
/// goes back to the list of the thread its answer ended on, and a request takes one from its
/// own thread's list first, so the runtime's workers do not all take one lock twice a request
/// (with two workers, checkout and give-back were 0.44% of the proxy's samples with one shared
/// list, its cache line moving between the cores, and 0.24% with a list each). In each list the
/// most recently used is last: a request takes the warmest.
pub struct IdleList {
    lists: Box<[ThreadList]>,
}

/// One thread's idle connections, on cache lines of their own.
#[derive(Default)]
#[repr(align(128))]
struct ThreadList(Mutex<VecDeque<Idle>>);

impl Default for IdleList {
    /// A list for each CPU the process may run on, as the runtime has a worker for each.
    fn default() -> IdleList {
        IdleList::new(std::thread::available_parallelism().map_or(1, usize::from))
    }
}

impl IdleList {
    pub fn new(threads: usize) -> IdleList {
        IdleList {
            lists: (0..threads.max(1)).map(|_| ThreadList::default()).collect(),
        }
    }

    /// Where this thread's list is.
    fn home(&self) -> usize {
        match self.lists.len() {
            // One CPU: the thread need not be told apart.
            1 => 0,
            lists => thread_number() % lists,
        }
    }

    /// Puts a connection whose last answer has ended back among the idle ones.
    pub fn give_back(&self, conn: http1::Connection) {
        self.lists[self.home()].0.lock().push_back(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// The warmest connection that can take a request now: from this thread's list, else from
    /// another thread's whose lock is free (never waiting on another thread). Connections idle
    /// past the timeout, or closed by the provider meanwhile, are dropped on the way.
    pub(super) fn checkout(&self, timeout: Duration) -> Option<http1::Connection> {
        let home = self.home();
        {
            let mut own = self.lists[home].0.lock();
            close_expired(&mut own, timeout);
            if let Some(conn) = take_open(&mut own) {
                return Some(conn);
            }
        }
        let (before, after) = self.lists.split_at(home);
        after[1..]
            .iter()
            .chain(before)
            .find_map(|other| take_open(&mut *other.0.try_lock()?))
    }

    /// Closes the connections that have expired or that the provider has closed.
    fn sweep(&self, timeout: Duration) {
        for list in &self.lists {
            let mut idle = list.0.lock();
            close_expired(&mut idle, timeout);
            idle.retain_mut(|idle| idle.conn.is_open());
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lists.iter().map(|list| list.0.lock().len()).sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A number for the calling thread, the same for its life: threads count from 0 in the order
/// they first ask.
fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    // A thread in its last destructors has lost its number: any list will do.
    NUMBER.try_with(|number| *number).unwrap_or(0)
}

/// Takes the warmest connection the provider has not closed; the closed ones it meets are
/// dropped.
fn take_open(idle: &mut VecDeque<Idle>) -> Option<http1::Connection> {
    while let Some(mut newest) = idle.pop_back() {
        if newest.conn.is_open() {
            return Some(newest.conn);
        }
    }
    None
}

/// Drops the connections idle for longer than `timeout` (the oldest are first), which closes
/// them.
fn close_expired(idle: &mut VecDeque<Idle>, timeout: Duration) {
    let now = Instant::now();
    while idle
        .front()
        .is_some_and(|oldest| now.duration_since(oldest.since) > timeout)
    {
        idle.pop_front();
    }
}

/// Closes expired idle connections, and those the provider closed, while no request comes to
/// find them: after a burst, the thousands of connections it opened (each with its read buffer)
/// are let go within a timeout and a half. Ends with the pool.
async fn sweep(idle: Weak<IdleList>, timeout: Duration) {
    let mut ticks = tokio::time::interval(timeout / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(idle) = idle.upgrade() else {
            return;
        };
        idle.sweep(timeout);
    }
}

pub struct Pool {
    connector: Connector,
    scheme: Scheme,
    authority: Authority,
    /// The base URL as the connector takes it: only its scheme and authority count.
    connect_to: Uri,
    /// The headers every request to the provider carries.
    own: OwnHeaders,
    idle: Arc<IdleList>,
    idle_timeout: Duration,
    /// The idle list's sweeper is running (started with the first HTTP/1.1 connection).
    sweeping: AtomicBool,
    /// The HTTP/2 connections, once TLS has negotiated them.
    shared: Mutex<Shared>,
    /// No request needs to look at `shared`: the provider is plain HTTP, or its TLS
    /// negotiated HTTP/1.1.
    http1_only: AtomicBool,
}

/// A TLS provider's HTTP/2 connections. A request takes a stream on the first one with a
/// stream free (the provider's `SETTINGS_MAX_CONCURRENT_STREAMS`); when none has, it opens
/// another, so requests beyond one connection's limit do not wait for a stream to end.
#[derive(Default)]
struct Shared {
    open: Vec<Http2Connection>,
    /// A request is making a connection that may be HTTP/2; its sender is dropped when done.
    connecting: Option<watch::Receiver<()>>,
}

struct Http2Connection {
    sender: http2::SendRequest<OutboundBody>,
    /// Streams the provider allows open at once, as the connection last heard.
    limit: Arc<AtomicUsize>,
    /// Streams open on it: taken when a request goes on it, given back when its answer's body
    /// is dropped (or the request fails).
    streams: Arc<AtomicUsize>,
}

/// One stream taken on an HTTP/2 connection, given back when dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// A stream on the first open connection that has one free. Closed connections are
    /// dropped on the way.
    fn take_stream(&mut self) -> Option<(http2::SendRequest<OutboundBody>, StreamSlot)> {
        self.open.retain(|conn| !conn.sender.is_closed());
        let conn = self.open.iter().find(|conn| {
            conn.streams.load(Ordering::Relaxed) < conn.limit.load(Ordering::Relaxed)
        })?;
        conn.streams.fetch_add(1, Ordering::Relaxed);
        Some((conn.sender.clone(), StreamSlot(conn.streams.clone())))
    }
}

/// The headers every request to a provider carries: its key and configured headers, which the
/// request's own headers of those names have made way for (`Upstream::send`), and on HTTP/1.1
/// `Host`, unless one is configured. No `Debug`: they hold the key.
struct OwnHeaders {
    /// As an HTTP/2 request's map takes them.
    map: HeaderMap,
    /// As HTTP/1.1 lines, written once here and copied into each request's head.
    http1: Bytes,
}

impl OwnHeaders {
    fn new(map: HeaderMap, authority: &Authority, scheme: &Scheme) -> OwnHeaders {
        let mut http1 = BytesMut::new();
        for (name, value) in &map {
            http1.put_slice(name.as_str().as_bytes());
            http1.put_slice(b": ");
            http1.put_slice(value.as_bytes());
            http1.put_slice(b"\r\n");
        }
        if !map.contains_key(header::HOST) {
            let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
            http1.put_slice(b"host: ");
            http1.put_slice(authority.host().as_bytes());
            match authority.port_u16() {
                Some(port) if port != default_port => {
                    http1.put_slice(format!(":{port}").as_bytes());
                }
                _ => {}
            }
            http1.put_slice(b"\r\n");
        }
        OwnHeaders {
            map,
            http1: http1.freeze(),
        }
    }
}

/// What became of a request offered to an HTTP/2 connection.
enum Offered {
    Answered(Response<ResponseBody>),
    /// The connection closed before it took the request, which can go on another.
    Unsent(Request<OutboundBody>, hyper::Error),
}

/// What a request that found no idle connection does (see `Pool::http2_turn`).
enum Turn {
    Open(http2::SendRequest<OutboundBody>, StreamSlot),
    Wait(watch::Receiver<()>),
    Lead(watch::Sender<()>),
    Alone,
}

impl Pool {
    /// A pool for the provider at `scheme` and `authority`, whose requests all carry `own`
    /// (see `OwnHeaders`).
    pub fn new(
        scheme: Scheme,
        authority: Authority,
        own: HeaderMap,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Pool, String> {
        let tls = HttpsConnectorBuilder::new().with_webpki_roots();
        Pool::with_tls(scheme, authority, own, connect_timeout, idle_timeout, tls)
    }

    /// A pool whose TLS connections trust what `tls` trusts (tests trust their own CA).
    fn with_tls(
        scheme: Scheme,
        authority: Authority,
        own: HeaderMap,
        connect_timeout: Duration,
        idle_timeout: Duration,
        tls: HttpsConnectorBuilder<WantsSchemes>,
    ) -> Result<Pool, String> {
        let connector = Connector::new(&scheme, connect_timeout, tls)?;
        let connect_to = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|err| err.to_string())?;
        let http1_only = AtomicBool::new(!connector.is_tls());
        let own = OwnHeaders::new(own, &authority, &scheme);
        Ok(Pool {
            connector,
            scheme,
            authority,
            connect_to,
            own,
            idle: Arc::default(),
            idle_timeout,
            sweeping: AtomicBool::new(false),
            shared: Mutex::default(),
            http1_only,
        })
    }

    /// Whether connections are made over TLS.
    #[cfg(test)]
    pub fn is_tls(&self) -> bool {
        self.connector.is_tls()
    }

    /// Sends `request` (origin-form URI: path and query only) and waits for the response head.
    /// A request offered to an HTTP/2 connection that closed before taking it is sent again on
    /// another one; a request that was sent is never sent twice.
    ///
    /// Boxed here: a request that finds an idle HTTP/1.1 connection of a provider that has no
    /// HTTP/2 (nearly every request to a plain-HTTP provider) gets the exchange's own future,
    /// not one awaited inside `exchange`'s, which moved it twice more and was itself moved into
    /// its box whole (about 400 instructions a request, callgrind).
    pub fn send(&self, request: Request<OutboundBody>, lines: RequestLines) -> ResponseFuture<'_> {
        if self.http1_only.load(Ordering::Relaxed) {
            if let Some(conn) = self.idle.checkout(self.idle_timeout) {
                return Box::pin(self.send_http1(conn, request, lines));
            }
        }
        Box::pin(self.exchange(request, lines))
    }

    /// `send`'s way for the rest: an HTTP/2 stream, an idle HTTP/1.1 connection, or a new
    /// connection of either.
    ///
    /// A plain function returning an `async` block, which keeps the request once: an `async fn`
    /// keeps its arguments twice, as arguments and as the locals they are moved into.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn exchange(
        &self,
        mut request: Request<OutboundBody>,
        mut lines: RequestLines,
    ) -> impl Future<Output = Result<Response<ResponseBody>, ClientError>> + Send + '_ {
        async move {
            let http1_only = self.http1_only.load(Ordering::Relaxed);
            // Offered once to an HTTP/2 connection that closed before taking it.
            let mut offered = false;
            if !http1_only {
                let stream = self.shared.lock().take_stream();
                if let Some((sender, slot)) = stream {
                    match self.send_http2(sender, slot, request, &mut lines).await? {
                        Offered::Answered(response) => return Ok(response),
                        // It closed (a GOAWAY) before taking the request: the request goes on a
                        // new connection below.
                        Offered::Unsent(unsent, _) => {
                            request = unsent;
                            offered = true;
                        }
                    }
                }
            }
            if let Some(conn) = self.idle.checkout(self.idle_timeout) {
                self.prepare_http1(&mut request);
                return self.send_http1(conn, request, lines).await;
            }
            let mut may_lead = !http1_only;
            let lead = loop {
                match self.http2_turn(may_lead) {
                    Turn::Open(sender, slot) => {
                        match self.send_http2(sender, slot, request, &mut lines).await? {
                            Offered::Answered(response) => return Ok(response),
                            // Once more, on what the next turn finds: it sees this one closed.
                            Offered::Unsent(unsent, _) if !offered => {
                                request = unsent;
                                offered = true;
                            }
                            Offered::Unsent(_, err) => return Err(err.into()),
                        }
                    }
                    Turn::Wait(mut connecting) => {
                        // Ends when that connection is made, or failed, or its request gave up.
                        let _ = connecting.changed().await;
                        may_lead = false;
                    }
                    Turn::Lead(lead) => break Some(lead),
                    Turn::Alone => break None,
                }
            };
            // Boxed: the TLS and HTTP/2 handshakes make this future 6.7 KiB, which every request
            // would otherwise carry (and copy) while it waits for its answer; few requests connect.
            // On an error `lead` is dropped here, and the requests waiting for it connect alone.
            match Box::pin(self.connector.connect(self.connect_to.clone())).await? {
                Connected::Http1(conn) => {
                    self.http1_only.store(true, Ordering::Relaxed);
                    if !self.sweeping.swap(true, Ordering::Relaxed) {
                        tokio::spawn(sweep(Arc::downgrade(&self.idle), self.idle_timeout));
                    }
                    drop(lead);
                    self.prepare_http1(&mut request);
                    self.send_http1(conn, request, lines).await
                }
                Connected::Http2(sender, limit) => {
                    let slot = self.share(&sender, limit);
                    drop(lead);
                    match self.send_http2(sender, slot, request, &mut lines).await? {
                        Offered::Answered(response) => Ok(response),
                        Offered::Unsent(_, err) => Err(err.into()),
                    }
                }
            }
        }
    }

    /// What a request that found no idle connection does. The first to find no HTTP/2
    /// stream free makes a connection and the others wait for it, as TLS may negotiate an
    /// HTTP/2 connection they can all share: a burst of requests at start, after the provider
    /// closed its connection, or past a connection's stream limit, opens one connection, not
    /// one each. A request that waited once never leads (`may_lead`): if that connection
    /// failed, is HTTP/1.1 or is full already, it connects alone, so a provider that cannot be
    /// reached fails every waiting request at once, not in turn.
    fn http2_turn(&self, may_lead: bool) -> Turn {
        let mut shared = self.shared.lock();
        if let Some((sender, slot)) = shared.take_stream() {
            return Turn::Open(sender, slot);
        }
        if !may_lead {
            return Turn::Alone;
        }
        // `has_changed` fails once the connecting request is done or gone.
        if let Some(connecting) = &shared.connecting {
            if connecting.has_changed().is_ok() {
                return Turn::Wait(connecting.clone());
            }
        }
        let (lead, connecting) = watch::channel(());
        shared.connecting = Some(connecting);
        Turn::Lead(lead)
    }

    /// Adds a new HTTP/2 connection to those requests share, with one stream taken on it.
    fn share(
        &self,
        sender: &http2::SendRequest<OutboundBody>,
        limit: Arc<AtomicUsize>,
    ) -> StreamSlot {
        let streams = Arc::new(AtomicUsize::new(1));
        self.shared.lock().open.push(Http2Connection {
            sender: sender.clone(),
            limit,
            streams: streams.clone(),
        });
        StreamSlot(streams)
    }

    async fn send_http2(
        &self,
        mut sender: http2::SendRequest<OutboundBody>,
        slot: StreamSlot,
        mut request: Request<OutboundBody>,
        lines: &mut RequestLines,
    ) -> Result<Offered, ClientError> {
        // HTTP/2 has no lines to pass on as they came: they go in the map, once (a request
        // offered again has them there already).
        let headers = request.headers_mut();
        if let Some(client) = lines.client.take() {
            client.append_to(headers);
        }
        if let Some(forwarded_for) = lines.forwarded_for.take() {
            headers.insert(&X_FORWARDED_FOR, forwarded_for);
        }
        for (name, value) in &self.own.map {
            headers.insert(name, value.clone());
        }
        // HTTP/2 names the authority in the request itself (`:authority`), not in `Host`.
        if request.uri().scheme().is_none() {
            let mut uri = std::mem::take(request.uri_mut()).into_parts();
            uri.scheme = Some(self.scheme.clone());
            uri.authority = Some(self.authority.clone());
            *request.uri_mut() = Uri::from_parts(uri)?;
        }
        match sender.try_send_request(request).await {
            Ok(response) => Ok(Offered::Answered(response.map(|body| ResponseBody {
                inner: Inner::Http2 {
                    body,
                    _slot: slot,
                    ended: false,
                },
            }))),
            Err(mut err) => match err.take_message() {
                Some(unsent) => Ok(Offered::Unsent(unsent, err.into_error())),
                None => Err(err.into_error().into()),
            },
        }
    }

    /// Undoes what `send_http2` did to a request it offered to an HTTP/2 connection that
    /// closed before taking it (its URI has a scheme then): the URI back in origin form, and
    /// the provider's own headers out of its map, as the HTTP/1.1 head writes them.
    fn prepare_http1(&self, request: &mut Request<OutboundBody>) {
        if request.uri().scheme().is_some() {
            if let Some(path) = request.uri().path_and_query().cloned() {
                *request.uri_mut() = Uri::from(path);
            }
            for name in self.own.map.keys() {
                request.headers_mut().remove(name);
            }
        }
    }

    /// A combinator, not an `async` block: awaiting the exchange there kept it twice, as the
    /// block's capture and as what it awaits.
    fn send_http1(
        &self,
        conn: http1::Connection,
        request: Request<OutboundBody>,
        lines: RequestLines,
    ) -> impl Future<Output = Result<Response<ResponseBody>, ClientError>> + Send + 'static {
        conn.send(request, &self.own.http1, lines, &self.idle)
            .map(|answer| {
                Ok(answer?.map(|body| ResponseBody {
                    inner: Inner::Http1(body),
                }))
            })
    }
}

/// An upstream response body. Over HTTP/1.1 it reads its connection and gives it back to the
/// pool at its end (see `Http1Body`); over HTTP/2 it holds its stream's place in the
/// connection's count until dropped.
pub struct ResponseBody {
    inner: Inner,
}

enum Inner {
    Http1(Http1Body),
    Http2 {
        body: Incoming,
        /// Held for its drop, which frees the stream.
        _slot: StreamSlot,
        /// The provider said the body is over (a body ends only on the next poll).
        ended: bool,
    },
}

impl ResponseBody {
    /// Read off its connection's socket as it is polled (HTTP/1.1), not handed over by a
    /// connection's task (hyper's HTTP/2).
    pub fn reads_own_socket(&self) -> bool {
        matches!(self.inner, Inner::Http1(_))
    }

    /// An HTTP/1.1 answer's header lines, as they came: its header map is empty. An HTTP/2
    /// answer has its headers in its map, and none here.
    pub fn head_lines_mut(&mut self) -> Option<&mut HeadLines> {
        match &mut self.inner {
            Inner::Http1(body) => body.head_lines_mut(),
            Inner::Http2 { .. } => None,
        }
    }

    /// The header lines taken (see `head_lines_mut`): only the first call has them.
    pub fn take_head_lines(&mut self) -> Option<HeadLines> {
        match &mut self.inner {
            Inner::Http1(body) => body.take_head_lines(),
            Inner::Http2 { .. } => None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ClientError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientError>>> {
        match &mut self.inner {
            Inner::Http1(body) => Pin::new(body).poll_frame(cx).map_err(ClientError::from),
            Inner::Http2 { body, ended, .. } => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                if frame.is_none() {
                    *ended = true;
                }
                Poll::Ready(frame.map(|frame| frame.map_err(ClientError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Http1(body) => body.is_end_stream(),
            Inner::Http2 { body, ended, .. } => *ended || body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Http1(body) => body.size_hint(),
            Inner::Http2 { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests;
