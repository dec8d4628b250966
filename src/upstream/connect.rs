//! Opening a connection to a provider: TCP, TLS for `https://` (rustls, ALPN offering HTTP/2 and
//! HTTP/1.1), then the HTTP conversation TLS negotiated: HTTP/2 driven by a task of its own,
//! HTTP/1.1 by the requests that use it (`http1`).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use http::Uri;
use http::uri::Scheme;
use hyper::client::conn::http2;
use hyper::rt::{Read, Write};
use hyper_rustls::builderstates::WantsSchemes;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower_service::Service;

use super::OutboundBody;
use super::http1;
use super::pool::{BoxError, ClientError};

/// How connections to the provider are opened. Two connector types, not one for both: a
/// connection's task holds its stream type inline, and the TLS stream is about 1 KiB larger
/// (RSS at 3,000 streams), which a plain-HTTP upstream (a local model server) would carry
/// unused.
pub enum Connector {
    Plain(HttpConnector),
    Tls(HttpsConnector<HttpConnector>),
}

/// A connection ready for requests.
pub enum Connected {
    Http1(http1::Connection),
    /// With the number of streams the provider allows open at once, kept current.
    Http2(http2::SendRequest<OutboundBody>, Arc<AtomicUsize>),
}

impl Connector {
    /// A connector for `scheme`, whose TLS connections trust what `tls` trusts.
    pub fn new(
        scheme: &Scheme,
        connect_timeout: Duration,
        tls: HttpsConnectorBuilder<WantsSchemes>,
    ) -> Result<Connector, String> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        if *scheme == Scheme::HTTPS {
            // https is allowed: the TLS connector wrapping this one handles it.
            http.enforce_http(false);
            let tls = tls.https_only().enable_http1().enable_http2();
            Ok(Connector::Tls(tls.wrap_connector(http)))
        } else if *scheme == Scheme::HTTP {
            Ok(Connector::Plain(http))
        } else {
            Err(format!(
                "has scheme `{scheme}`: only http and https are served"
            ))
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Connector::Tls(_))
    }

    /// Opens a connection to `to` (only its scheme and authority count).
    pub async fn connect(&self, to: Uri) -> Result<Connected, ClientError> {
        match self {
            Connector::Plain(connector) => {
                handshake(connector.clone(), to, |io| {
                    http1::Io::Plain(io.into_inner())
                })
                .await
            }
            Connector::Tls(connector) => {
                handshake(connector.clone(), to, |io| {
                    http1::Io::Tls(Box::new(TokioIo::new(io)))
                })
                .await
            }
        }
    }
}

/// Opens a connection with `connector` and starts the HTTP/1.1 or HTTP/2 conversation its TLS
/// negotiated; `http1` makes the socket of an HTTP/1.1 one.
async fn handshake<C>(
    mut connector: C,
    to: Uri,
    http1: impl FnOnce(C::Response) -> http1::Io,
) -> Result<Connected, ClientError>
where
    C: Service<Uri>,
    C::Response: Read + Write + Connection + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
{
    poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(|err| ClientError::Connect(err.into()))?;
    let io = connector
        .call(to)
        .await
        .map_err(|err| ClientError::Connect(err.into()))?;
    if io.connected().is_negotiated_h2() {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|err| ClientError::Connect(err.into()))?;
        let limit = Arc::new(AtomicUsize::new(connection.current_max_send_streams()));
        let connection = StreamLimit {
            connection: Box::pin(connection),
            limit: limit.clone(),
        };
        drive(connection);
        Ok(Connected::Http2(sender, limit))
    } else {
        Ok(Connected::Http1(http1::Connection::new(http1(io))))
    }
}

/// An HTTP/2 connection that publishes, each time it is polled, how many streams the provider
/// allows open at once (its `SETTINGS_MAX_CONCURRENT_STREAMS`, which may change): hyper tells
/// only the connection, and the connection lives in its task. Boxed so that it can be read
/// between polls without unsafe pinning.
struct StreamLimit<C> {
    connection: Pin<Box<C>>,
    limit: Arc<AtomicUsize>,
}

impl<T, E> Future for StreamLimit<http2::Connection<T, OutboundBody, E>>
where
    T: Read + Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ClientConnExec<OutboundBody, T> + Unpin,
{
    type Output = hyper::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        let done = self.connection.as_mut().poll(cx);
        let limit = self
            .connection
            .as_ref()
            .get_ref()
            .current_max_send_streams();
        self.limit.store(limit, Ordering::Relaxed);
        done
    }
}

/// Runs a connection on a task of its own until it ends. `map`, not an `async` block awaiting
/// the connection: the block would hold it twice over (1,352 bytes, not 672, for HTTP/1.1) in
/// the task every connection keeps.
fn drive<C>(connection: C)
where
    C: Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(connection.map(|ended| {
        if let Err(err) = ended {
            tracing::debug!(error = %err, "upstream connection ended");
        }
    }));
}
