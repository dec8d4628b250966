//! One provider's connections: HTTP/1.1 connections kept between requests, or one HTTP/2
//! connection shared by all requests when TLS negotiates it.
//!
//! tokentap's own, not hyper-util's legacy client: that client hashes its pool key (SipHash,
//! byte by byte) twice per request, takes the pool's lock twice, races every checkout against
//! a connect, and spawns a task per HTTP/1.1 response only to put the connection back when the
//! body ends. Here the response body itself gives its connection back when the upstream has
//! sent all of it (`ResponseBody`), and a provider has exactly one pool, so there is no key.
//!
//! An idle connection is closed once it has been idle for longer than the idle timeout: by the
//! request that finds it so, or by a sweep every half timeout, or when the provider closes it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_rustls::builderstates::WantsSchemes;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::OutboundBody;
use super::connect::{Connected, Connector};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no response from the provider.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made: TCP, TLS or the HTTP/2 preface failed.
    #[error("cannot connect")]
    Connect(#[source] BoxError),
    /// The exchange on an open connection failed, or the request body did.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The request's path cannot be put on the provider's base URL.
    #[error("cannot address the request")]
    Address(#[from] http::uri::InvalidUriParts),
}

impl ClientError {
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect(_))
    }
}

/// An HTTP/1.1 connection between two requests.
struct Idle {
    sender: http1::SendRequest<OutboundBody>,
    since: Instant,
}

/// HTTP/1.1 connections not in use, the most recently used last: a request takes the warmest.
type IdleList = Mutex<VecDeque<Idle>>;

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

/// Closes expired idle connections while no request comes to find them: after a burst, the
/// thousands of connections it opened (each with its read buffer) are let go within a timeout
/// and a half. Ends with the pool.
async fn sweep(idle: Weak<IdleList>, timeout: Duration) {
    let mut ticks = tokio::time::interval(timeout / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(idle) = idle.upgrade() else {
            return;
        };
        close_expired(&mut idle.lock(), timeout);
    }
}

pub struct Pool {
    connector: Connector,
    scheme: Scheme,
    authority: Authority,
    /// The base URL as the connector takes it: only its scheme and authority count.
    connect_to: Uri,
    /// The `Host` header of an HTTP/1.1 request that has none, made once.
    host: HeaderValue,
    idle: Arc<IdleList>,
    idle_timeout: Duration,
    /// The idle list's sweeper is running (started with the first HTTP/1.1 connection).
    sweeping: AtomicBool,
    /// The HTTP/2 connection, once TLS has negotiated one.
    shared: Mutex<Shared>,
    /// No request needs to look at `shared`: the provider is plain HTTP, or its TLS
    /// negotiated HTTP/1.1.
    http1_only: AtomicBool,
}

/// Where a TLS provider's HTTP/2 connection stands.
enum Shared {
    None,
    /// A request is making a connection that may be it; its sender is dropped when done.
    Connecting(watch::Receiver<()>),
    Open(http2::SendRequest<OutboundBody>),
}

/// What became of a request offered to an HTTP/2 connection.
enum Offered {
    Answered(Response<ResponseBody>),
    /// The connection closed before it took the request, which can go on another.
    Unsent(Request<OutboundBody>, hyper::Error),
}

/// What a request that found no idle connection does (see `Pool::http2_turn`).
enum Turn {
    Open(http2::SendRequest<OutboundBody>),
    Wait(watch::Receiver<()>),
    Lead(watch::Sender<()>),
    Alone,
}

impl Pool {
    pub fn new(
        scheme: Scheme,
        authority: Authority,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Pool, String> {
        let tls = HttpsConnectorBuilder::new().with_webpki_roots();
        Pool::with_tls(scheme, authority, connect_timeout, idle_timeout, tls)
    }

    /// A pool whose TLS connections trust what `tls` trusts (tests trust their own CA).
    fn with_tls(
        scheme: Scheme,
        authority: Authority,
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
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let host = HeaderValue::try_from(host).map_err(|err| err.to_string())?;
        let http1_only = AtomicBool::new(!connector.is_tls());
        Ok(Pool {
            connector,
            scheme,
            authority,
            connect_to,
            host,
            idle: Arc::default(),
            idle_timeout,
            sweeping: AtomicBool::new(false),
            shared: Mutex::new(Shared::None),
            http1_only,
        })
    }

    /// Whether connections are made over TLS.
    #[cfg(test)]
    pub fn is_tls(&self) -> bool {
        self.connector.is_tls()
    }

    /// Sends `request` (origin-form URI: path and query only) and waits for the response head.
    /// A request that a pooled connection closed before taking is sent again on another one;
    /// a request that was sent is never sent twice.
    pub async fn send(
        &self,
        mut request: Request<OutboundBody>,
    ) -> Result<Response<ResponseBody>, ClientError> {
        let http1_only = self.http1_only.load(Ordering::Relaxed);
        // Offered once to an HTTP/2 connection that closed before taking it.
        let mut offered = false;
        if !http1_only {
            if let Some(sender) = self.open_http2() {
                match self.send_http2(sender, request).await? {
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
        while let Some(mut sender) = self.checkout() {
            self.prepare_http1(&mut request);
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.reusable(response, sender)),
                Err(mut err) => match err.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(err.into_error().into()),
                },
            }
        }
        let mut may_lead = !http1_only;
        let lead = loop {
            match self.http2_turn(may_lead) {
                Turn::Open(sender) => match self.send_http2(sender, request).await? {
                    Offered::Answered(response) => return Ok(response),
                    // Once more, on what the next turn finds: it sees this one closed.
                    Offered::Unsent(unsent, _) if !offered => {
                        request = unsent;
                        offered = true;
                    }
                    Offered::Unsent(_, err) => return Err(err.into()),
                },
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
            Connected::Http1(mut sender) => {
                self.http1_only.store(true, Ordering::Relaxed);
                if !self.sweeping.swap(true, Ordering::Relaxed) {
                    tokio::spawn(sweep(Arc::downgrade(&self.idle), self.idle_timeout));
                }
                drop(lead);
                self.prepare_http1(&mut request);
                let response = sender.send_request(request).await?;
                Ok(self.reusable(response, sender))
            }
            Connected::Http2(sender) => {
                self.share(&sender);
                drop(lead);
                match self.send_http2(sender, request).await? {
                    Offered::Answered(response) => Ok(response),
                    Offered::Unsent(_, err) => Err(err.into()),
                }
            }
        }
    }

    fn open_http2(&self) -> Option<http2::SendRequest<OutboundBody>> {
        match &*self.shared.lock() {
            Shared::Open(sender) if !sender.is_closed() => Some(sender.clone()),
            _ => None,
        }
    }

    /// What a request that found no idle connection does. The first to find no HTTP/2
    /// connection makes one and the others wait for it, as TLS may negotiate the HTTP/2
    /// connection they will all share: a burst of requests at start, or after the provider
    /// closed its connection, opens one connection, not one each. A request that waited once
    /// never leads (`may_lead`): if that connection failed or is HTTP/1.1, it connects alone,
    /// so a provider that cannot be reached fails every waiting request at once, not in turn.
    fn http2_turn(&self, may_lead: bool) -> Turn {
        let mut shared = self.shared.lock();
        match &*shared {
            Shared::Open(sender) if !sender.is_closed() => return Turn::Open(sender.clone()),
            // `has_changed` fails once the connecting request is done or gone.
            Shared::Connecting(connecting) if may_lead && connecting.has_changed().is_ok() => {
                return Turn::Wait(connecting.clone());
            }
            _ if !may_lead => return Turn::Alone,
            _ => {}
        }
        let (lead, connecting) = watch::channel(());
        *shared = Shared::Connecting(connecting);
        Turn::Lead(lead)
    }

    /// Keeps `sender` as the shared connection, unless another one is open.
    fn share(&self, sender: &http2::SendRequest<OutboundBody>) {
        let mut shared = self.shared.lock();
        if !matches!(&*shared, Shared::Open(open) if !open.is_closed()) {
            *shared = Shared::Open(sender.clone());
        }
    }

    async fn send_http2(
        &self,
        mut sender: http2::SendRequest<OutboundBody>,
        mut request: Request<OutboundBody>,
    ) -> Result<Offered, ClientError> {
        // HTTP/2 names the authority in the request itself (`:authority`), not in `Host`.
        if request.uri().scheme().is_none() {
            let mut uri = std::mem::take(request.uri_mut()).into_parts();
            uri.scheme = Some(self.scheme.clone());
            uri.authority = Some(self.authority.clone());
            *request.uri_mut() = Uri::from_parts(uri)?;
        }
        match sender.try_send_request(request).await {
            Ok(response) => Ok(Offered::Answered(response.map(|body| ResponseBody {
                inner: body,
                reuse: None,
                ended: false,
            }))),
            Err(mut err) => match err.take_message() {
                Some(unsent) => Ok(Offered::Unsent(unsent, err.into_error())),
                None => Err(err.into_error().into()),
            },
        }
    }

    fn prepare_http1(&self, request: &mut Request<OutboundBody>) {
        // Origin form, also for a request first offered to an HTTP/2 connection.
        if request.uri().scheme().is_some() {
            if let Some(path) = request.uri().path_and_query().cloned() {
                *request.uri_mut() = Uri::from(path);
            }
        }
        // A `Host` among the provider's configured headers stays.
        request
            .headers_mut()
            .entry(header::HOST)
            .or_insert_with(|| self.host.clone());
    }

    /// The most recently idle connection that can take a request now. Connections idle past
    /// the timeout, or closed by the provider meanwhile, are dropped on the way.
    fn checkout(&self) -> Option<http1::SendRequest<OutboundBody>> {
        let mut idle = self.idle.lock();
        close_expired(&mut idle, self.idle_timeout);
        let mut at = idle.len();
        while at > 0 {
            at -= 1;
            if idle[at].sender.is_ready() {
                return idle.remove(at).map(|conn| conn.sender);
            }
            if idle[at].sender.is_closed() {
                idle.remove(at);
            }
            // Otherwise still finishing its last exchange: left for a later request.
        }
        None
    }

    fn reusable(
        &self,
        response: Response<Incoming>,
        sender: http1::SendRequest<OutboundBody>,
    ) -> Response<ResponseBody> {
        response.map(|body| ResponseBody {
            inner: body,
            reuse: Some(Reuse {
                sender,
                idle: Arc::clone(&self.idle),
            }),
            ended: false,
        })
    }
}

/// What gives an HTTP/1.1 connection back to its pool.
struct Reuse {
    sender: http1::SendRequest<OutboundBody>,
    idle: Arc<IdleList>,
}

/// An upstream response body. Over HTTP/1.1 it holds its connection, and gives it back to the
/// pool when dropped after the upstream sent all of it; a body dropped before its end closes
/// the connection with it, as the rest of that answer would otherwise come first on it.
pub struct ResponseBody {
    inner: Incoming,
    reuse: Option<Reuse>,
    /// The upstream said the body is over (a chunked body ends only on the next poll).
    ended: bool,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() {
            self.ended = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let Some(reuse) = self.reuse.take() else {
            return;
        };
        // The connection may not be ready yet: on another worker thread, hyper's connection
        // task may not have asked for the next request when this body saw its end (about one
        // stream in ten thousand, by the TIME_WAIT count), or the request body is still being
        // sent. It goes back all the same; `checkout` takes only a ready one, and one that
        // closed (`Connection: close`) is dropped there or by the sweep.
        if self.is_end_stream() && !reuse.sender.is_closed() {
            reuse.idle.lock().push_back(Idle {
                sender: reuse.sender,
                since: Instant::now(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
