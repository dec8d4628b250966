// Temporary: a bare hyper proxy, to measure the cost floor. Not committed.
use http_body_util::{Either, Full, Limited};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use tokio::net::TcpListener;
type B = Either<Full<bytes::Bytes>, Limited<hyper::body::Incoming>>;
#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[tokio::main]
async fn main() {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Arc<Client<HttpConnector, B>> =
        Arc::new(Client::builder(TokioExecutor::new()).build(http));
    let l = TcpListener::bind("127.0.0.1:18795").await.unwrap();
    loop {
        let (s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let client = client.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let client = client.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    parts.uri = format!("http://127.0.0.1:18901{}", parts.uri.path())
                        .parse()
                        .unwrap();
                    let req = hyper::Request::from_parts(
                        parts,
                        Either::Right(Limited::new(body, 1 << 20)),
                    );
                    client.request(req).await
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}
