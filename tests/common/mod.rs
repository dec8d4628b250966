//! The integration harness: tokentap in-process on ephemeral loopback ports, in front of either
//! the demo upstream or a scripted test upstream written here (sharing no code with the meter).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use tokentap::cli::Cli;
use tokentap::config::{FileConfig, Settings};
use tokentap::{App, Listeners};

pub type TestBody = BoxBody<Bytes, Infallible>;
pub type Handler = Arc<
    dyn Fn(Request<Bytes>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

/// A test upstream: every request is answered by `handler` (after its body is read whole).
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<parking_lot::Mutex<Vec<Request<Bytes>>>>,
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    pub closed: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
}

impl Upstream {
    pub async fn start(handler: Handler) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (reqs, conns, closes, stop2) = (
            requests.clone(),
            connections.clone(),
            closed.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = stop2.cancelled() => return,
                    a = listener.accept() => a.unwrap(),
                };
                conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (handler, reqs, closes) = (handler.clone(), reqs.clone(), closes.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (handler, reqs) = (handler.clone(), reqs.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let req = Request::from_parts(parts, body);
                            reqs.lock().push(clone_request(&req));
                            Ok::<_, Infallible>(handler(req).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    closes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        Upstream {
            addr,
            requests,
            connections,
            closed,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn clone_request(req: &Request<Bytes>) -> Request<Bytes> {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.headers_mut() = req.headers().clone();
    copy
}

pub fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            http_body_util::Full::new(body.into())
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

/// A streamed response whose chunks the test sends through the returned channel.
pub fn channel_body(content_type: &str) -> (mpsc::Sender<Bytes>, Response<TestBody>) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let response = Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(StreamBody::new(stream).boxed())
        .unwrap();
    (tx, response)
}

pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// tokentap running in-process.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub app: App,
    stop: CancellationToken,
    done: Option<tokio::task::JoinHandle<()>>,
    pub client: reqwest::Client,
}

impl Proxy {
    /// Starts tokentap with these flags (plus the TOML text) in front of the given upstream.
    pub async fn start(args: &[&str], toml: &str) -> Proxy {
        let mut argv = vec![
            "tokentap",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let file = FileConfig::parse(toml).unwrap();
        let settings = Settings::from_layers(&cli, file, &|name| match name {
            "TEST_PROVIDER_KEY" => Some("sk-provider-secret".into()),
            _ => None,
        })
        .unwrap();
        Proxy::start_with(settings).await
    }

    pub async fn start_with(settings: Settings) -> Proxy {
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let app = App::new(settings).unwrap();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let done = tokio::spawn(tokentap::run(
            Listeners { proxy, admin },
            app.clone(),
            async move { stopped.cancelled().await },
        ));
        Proxy {
            addr,
            admin: admin_addr,
            app,
            stop,
            done: Some(done),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    /// In front of the demo upstream (unpaced).
    pub async fn with_demo(args: &[&str]) -> (Proxy, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(tokentap::demo::serve(
            listener,
            tokentap::demo::DemoOptions::unpaced(),
            stop.clone(),
        ));
        let mut all = vec!["--upstream", url.as_str()];
        all.extend_from_slice(args);
        (Proxy::start(&all, "").await, stop)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// A `POST /v1/chat/completions` to the proxy, to add headers and a body to.
    pub fn post_chat(&self) -> reqwest::RequestBuilder {
        self.client.post(self.url("/v1/chat/completions"))
    }

    /// The `/metrics` exposition (no token).
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn admin_json(&self, path: &str) -> Value {
        self.client
            .get(self.admin_url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until every request has become a record, then returns the records, oldest first.
    pub async fn settled_records(&self) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let counts = self.app.tracker().counts();
            if counts.active == 0 && counts.started == counts.recorded + counts.dropped {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "requests never settled: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut records: Vec<Value> = self
            .app
            .tracker()
            .recent()
            .iter()
            .map(|r| serde_json::to_value(&**r).unwrap())
            .collect();
        records.reverse();
        records
    }

    /// The one record of a test that sent one request.
    pub async fn only_record(&self) -> Value {
        let records = self.settled_records().await;
        assert_eq!(records.len(), 1, "{records:#?}");
        records.into_iter().next().unwrap()
    }

    /// Starts the graceful shutdown (as SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&self) {
        self.stop.cancel();
    }

    /// Waits for `run` to return after a shutdown began.
    pub async fn wait_stopped(&mut self) {
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(30), done)
                .await
                .unwrap()
                .unwrap();
        }
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(30), done)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `usage` of a record as the six counts, in contract order.
pub fn usage_of(record: &Value) -> [u64; 6] {
    let u = &record["usage"];
    [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "cache_creation_tokens",
    ]
    .map(|k| u[k].as_u64().unwrap())
}
