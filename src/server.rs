//! Serving: accept loops for the proxy and admin listeners, HTTP/1.1 (tokentap's own, see
//! `http1`) and h2c (hyper's) on each connection, and the graceful drain on shutdown.

mod client_body;
mod coalesced;
mod drain;
mod head_timeout;
pub mod http1;
pub mod listen;
mod sniffed;
mod woken;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Settings;
use crate::{admin, proxy};
pub use client_body::ClientBody;
pub use coalesced::{AfterWork, AfterWrite, WriterHints};
use coalesced::{Coalesced, WriteNow};
use drain::{Drain, Ended};
use head_timeout::HeadTimeout;
use sniffed::Sniffed;

/// The listeners `run` serves; bound by the caller, so tests pass `127.0.0.1:0`.
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish for
/// up to the drain timeout, and returns.
pub async fn run(listeners: Listeners, app: App, shutdown: impl Future<Output = ()>) {
    let stop_proxy = CancellationToken::new();
    let stop_admin = CancellationToken::new();
    // Cancelled at the drain timeout: proxy connections still open are cut, and each request's
    // record says it ended early.
    let cut_proxy = CancellationToken::new();
    let proxy_loop = AcceptLoop {
        app: app.clone(),
        stop: stop_proxy.clone(),
        cut: cut_proxy.clone(),
        role: Role::Proxy,
    };
    let admin_loop = AcceptLoop {
        app: app.clone(),
        stop: stop_admin.clone(),
        cut: stop_admin.clone(),
        role: Role::Admin,
    };
    let progress = tokio::spawn(crate::tracker::feed::publish_progress(
        app.tracker().clone(),
        stop_admin.clone(),
    ));
    let mut proxy = tokio::spawn(proxy_loop.run(listeners.proxy));
    let mut admin = tokio::spawn(admin_loop.run(listeners.admin));
    tokio::select! {
        _ = &mut proxy => {}
        _ = &mut admin => {}
        () = shutdown => {}
    }
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    app.start_draining();
    stop_proxy.cancel();
    // The admin listener stays up while draining so /readyz can say 503.
    let drain_timeout = app.settings().drain_timeout;
    let drained = tokio::time::timeout(drain_timeout, async {
        let _ = (&mut proxy).await;
        app.tasks().close();
        app.tasks().wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            timeout_ms = u64::try_from(drain_timeout.as_millis()).unwrap_or(u64::MAX),
            "drain timeout reached; cutting remaining requests"
        );
        cut_proxy.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut proxy).await;
    }
    stop_admin.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), admin).await;
    let _ = progress.await;
}

#[derive(Clone, Copy)]
enum Role {
    Proxy,
    Admin,
}

struct AcceptLoop {
    app: App,
    stop: CancellationToken,
    cut: CancellationToken,
    role: Role,
}

impl AcceptLoop {
    /// Accepts until `stop`, then waits for the connections it started to finish (or `cut`).
    async fn run(self, listener: TcpListener) {
        let AcceptLoop {
            app,
            stop,
            cut,
            role,
        } = self;
        let drain = Drain::default();
        let head_lines = matches!(role, Role::Proxy);
        let protocols = Arc::new(Protocols::new(app.settings(), head_lines));
        loop {
            let (stream, peer) = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            let protocols = protocols.clone();
            let drain = drain.clone();
            let stop = stop.clone();
            match role {
                Role::Proxy => {
                    let client = proxy::Peer::new(peer);
                    let handle = move |req| proxy::handle_guarded(app.clone(), req, client.clone());
                    tokio::spawn(protocols.serve(stream, peer, handle, drain, stop));
                }
                Role::Admin => {
                    let handle = move |req| admin::handle(app.clone(), req);
                    tokio::spawn(protocols.serve(stream, peer, handle, drain, stop));
                }
            }
        }
        drop(listener);
        drain.finish();
        tokio::select! {
            () = drain.closed() => {}
            () = cut.cancelled() => {
                drain.cut();
                drain.closed().await;
            }
        }
    }
}

/// The HTTP/1.1 and h2c connection settings, shared by every connection of a listener.
struct Protocols {
    http2: http2::Builder<TokioExecutor>,
    /// Longest HTTP/1.1 request head read. Four times `--max-header-bytes`, as for h2c: a head
    /// over the limit but within this is still read, so that the proxy answers it with a
    /// record of its own.
    max_head: usize,
    /// How long a client may take to send the bytes that tell HTTP/1.1 from h2c, and, on
    /// HTTP/1.1, to begin its next request (see `head_timeout`).
    header_timeout: Duration,
    /// HTTP/1.1 requests keep their header lines as they came, for a handler that reads them
    /// so (the proxy's); others get them in the request's map.
    head_lines: bool,
}

impl Protocols {
    fn new(settings: &Settings, head_lines: bool) -> Protocols {
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes * 4).unwrap_or(u32::MAX));
        Protocols {
            http2,
            max_head: settings.max_header_bytes.max(8192) * 4,
            header_timeout: settings.client_header_timeout,
            head_lines,
        }
    }

    /// Serves one connection as HTTP/1.1 or h2c, told apart by its first bytes, answering each
    /// request with `handle`. Chosen here, not by hyper-util's auto builder: its connection
    /// future holds the HTTP/2 state inline, about 5 KiB more per HTTP/1.1 connection (RSS at
    /// 3,000 streams, 35.4 vs 30.0 KiB in a bare hyper proxy).
    ///
    /// Each response's body gives the connection's writer a signal (see `coalesced`). On h2c
    /// the streams of a connection share one signal: it is a hint, so one stream's end only
    /// spares another's write its wait.
    async fn serve<H, F, B>(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        handle: H,
        drain: Drain,
        stop: CancellationToken,
    ) where
        H: Fn(Request<ClientBody>) -> F + Send + Unpin + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: hyper::body::Body<Data = Bytes> + WriterHints + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + Unpin,
    {
        let sniffing = tokio::time::timeout(self.header_timeout, Sniffed::read(stream));
        let sniffed = tokio::select! {
            biased;
            sniffed = sniffing => sniffed,
            // Shutting down: a connection that has not sent a request yet gets none served, and
            // does not hold up the drain.
            () = stop.cancelled() => return,
        };
        let (stream, http2) = match sniffed {
            Ok(Ok(sniffed)) => sniffed,
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "connection failed before its first request");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "connection sent no request in time");
                return;
            }
        };
        let write_now = WriteNow::default();
        if http2 {
            let signal = write_now.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let serving = signal.begin();
                handle(req.map(ClientBody::Http2)).map(move |mut response| {
                    // HTTP/2 has no lines to pass on as they came: they go in the map, their
                    // names lowercased.
                    if let Some(lines) = response.body_mut().head_lines() {
                        lines.append_to(response.headers_mut());
                    }
                    Ok::<_, std::convert::Infallible>(serving.response(response))
                })
            });
            let io = TokioIo::new(Coalesced::new(stream, write_now));
            // Boxed so that HTTP/1.1 connections, the usual case, do not carry its size.
            let ended = Box::pin(drain.watch(self.http2.serve_connection(io, service))).await;
            report(ended, peer);
        } else {
            let signal = write_now.clone();
            // The handler's future boxed: the connection holds it until the answer's head is
            // out, and a box pointer there instead of the ~3 KiB state keeps a long stream's
            // connection small. Boxed as it is made and mapped outside the box: boxing an
            // `async` block that awaits it moved the state three times (into the block, into
            // the box, and into its awaiting place at the first poll).
            let service = move |req: Request<http1::RequestBody>| {
                let serving = signal.begin();
                Box::pin(handle(req.map(ClientBody::Http1)))
                    .map(move |response| serving.response(response))
            };
            // Read through `Sniffed`: the bytes it read come first, and its gate keeps a
            // stream's turns from asking the client's socket again until it has news.
            let io = Coalesced::new(stream, write_now.clone());
            let conn = http1::Connection::new(io, BytesMut::new(), service, self.max_head);
            let conn = if self.head_lines {
                conn.with_head_lines()
            } else {
                conn
            };
            // Pinned where it stands: a connection future passed by value into an async fn
            // that moves it again is held twice in the task.
            let conn = pin!(drain.watch(HeadTimeout::new(conn, self.header_timeout, write_now)));
            report(conn.await, peer);
        }
    }
}

fn report<E: std::fmt::Display>(ended: Ended<E>, peer: SocketAddr) {
    match ended {
        Ended::Closed(Ok(())) => {}
        Ended::Closed(Err(err)) => {
            tracing::debug!(%peer, error = %err, "connection ended with an error");
        }
        Ended::Cut => tracing::debug!(%peer, "connection cut at the drain timeout"),
    }
}
