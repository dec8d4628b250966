//! The pool against a raw HTTP/1.1 server on loopback that counts its connections and says,
//! per test, how it answers.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderValue;
use http_body::Frame;
use http_body_util::{BodyExt, Either, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// How the test server answers each request.
#[derive(Clone, Copy)]
enum Answer {
    /// `200`, a 5-byte body by `Content-Length`, connection kept.
    KeepAlive,
    /// The same in chunked encoding.
    Chunked,
    /// The same, then the connection is closed without a word.
    ThenHangUp,
    /// The same with `Connection: close`, and closed.
    Close,
}

struct Server {
    base: Uri,
    connections: Arc<AtomicUsize>,
    /// Connections that have ended (the client closed, or the server did).
    closed: Arc<AtomicUsize>,
    /// Each request's head as received.
    heads: Arc<Mutex<Vec<String>>>,
}

async fn server(answer: Answer) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base: Uri = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (count, ended, seen) = (connections.clone(), closed.clone(), heads.clone());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            let ended = ended.clone();
            let conversation = async move {
                let mut buf = Vec::new();
                loop {
                    // One request: a head, no body (the tests send none).
                    let end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head: Vec<u8> = buf.drain(..end).collect();
                    seen.lock().push(String::from_utf8(head).unwrap());
                    let response: &[u8] = match answer {
                        Answer::KeepAlive | Answer::ThenHangUp => {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
                        }
                        Answer::Chunked => {
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                        }
                        Answer::Close => {
                            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello"
                        }
                    };
                    if socket.write_all(response).await.is_err() {
                        return;
                    }
                    if matches!(answer, Answer::ThenHangUp | Answer::Close) {
                        return;
                    }
                }
            };
            tokio::spawn(async move {
                conversation.await;
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Server {
        base,
        connections,
        closed,
        heads,
    }
}

fn pool_for(base: &Uri) -> Pool {
    Pool::new(
        base.scheme().unwrap().clone(),
        base.authority().unwrap().clone(),
        HeaderMap::new(),
        Duration::from_secs(5),
        Duration::from_secs(90),
    )
    .unwrap()
}

fn get(path: &str) -> Request<OutboundBody> {
    Request::get(path)
        .body(Either::Left(Full::new(Bytes::new())))
        .unwrap()
}

/// Sends a request and reads its body to the end, as the meter does.
async fn exchange(pool: &Pool, request: Request<OutboundBody>) -> String {
    let response = pool.send(request, RequestLines::default()).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn requests_one_after_another_share_one_connection() {
    for answer in [Answer::KeepAlive, Answer::Chunked] {
        let server = server(answer).await;
        let pool = pool_for(&server.base);
        for _ in 0..5 {
            assert_eq!(exchange(&pool, get("/v1/models")).await, "hello");
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn a_body_dropped_before_its_end_takes_its_connection_with_it() {
    let server = server(Answer::Chunked).await;
    let pool = pool_for(&server.base);
    let response = pool.send(get("/a"), RequestLines::default()).await.unwrap();
    drop(response);
    assert_eq!(exchange(&pool, get("/b")).await, "hello");
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_provider_closed_is_not_used_again() {
    for answer in [Answer::Close, Answer::ThenHangUp] {
        let server = server(answer).await;
        let pool = pool_for(&server.base);
        assert_eq!(exchange(&pool, get("/a")).await, "hello");
        // Let the hang-up reach the connection's task, as it does between real requests.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(exchange(&pool, get("/b")).await, "hello");
        assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn concurrent_requests_get_connections_of_their_own() {
    let server = server(Answer::KeepAlive).await;
    let pool = pool_for(&server.base);
    let first = pool.send(get("/a"), RequestLines::default()).await.unwrap();
    let second = pool.send(get("/b"), RequestLines::default()).await.unwrap();
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    for response in [first, second] {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
    }
    // Both went back: two more requests at once open nothing new.
    let (a, b) = tokio::join!(exchange(&pool, get("/c")), exchange(&pool, get("/d")));
    assert_eq!((a.as_str(), b.as_str()), ("hello", "hello"));
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_idle_connection_past_its_time_is_closed_not_reused() {
    let server = server(Answer::KeepAlive).await;
    let mut pool = pool_for(&server.base);
    pool.idle_timeout = Duration::from_millis(20);
    assert_eq!(exchange(&pool, get("/a")).await, "hello");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(exchange(&pool, get("/b")).await, "hello");
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_idle_connection_past_its_time_is_closed_with_no_request_to_find_it() {
    let server = server(Answer::KeepAlive).await;
    let mut pool = pool_for(&server.base);
    pool.idle_timeout = Duration::from_millis(40);
    assert_eq!(exchange(&pool, get("/a")).await, "hello");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.closed.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the idle connection stayed open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(pool.idle.is_empty());
}

/// Idle connections kept in two threads' lists: each thread takes its own warmest first, even
/// when the other thread gave one back later, and another thread's when it has none of its own.
#[tokio::test]
async fn a_thread_takes_its_own_idle_connection_first_then_another_threads() {
    let server = server(Answer::KeepAlive).await;
    let addr: std::net::SocketAddr = server.base.authority().unwrap().as_str().parse().unwrap();
    let mut conns = Vec::new();
    for _ in 0..3 {
        let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        conns.push(http1::Connection::new(http1::Io::Plain(socket)));
    }
    let ports: Vec<Option<u16>> = conns.iter().map(http1::Connection::local_port).collect();
    let (c, b, a) = (
        conns.pop().unwrap(),
        conns.pop().unwrap(),
        conns.pop().unwrap(),
    );
    // Threads are numbered as they first ask, so the list count that keeps these two apart is
    // known only once both have their numbers.
    let numbers = std::sync::Barrier::new(2);
    let turn = std::sync::Barrier::new(2);
    let idle = std::sync::OnceLock::<IdleList>::new();
    let mine = |me: usize, other: usize| {
        let lists = me.abs_diff(other) + 1;
        idle.get_or_init(|| IdleList::new(lists))
    };
    let taken = |idle: &IdleList| idle.checkout(Duration::MAX).map(|conn| conn.local_port());
    let (numbers, turn) = (&numbers, &turn);
    let (x, y) = std::thread::scope(|s| {
        let (to_y, from_x) = std::sync::mpsc::channel();
        let (to_x, from_y) = std::sync::mpsc::channel();
        let x = s.spawn(move || {
            let me = thread_number();
            to_y.send(me).unwrap();
            let idle = mine(me, from_y.recv().unwrap());
            numbers.wait();
            idle.give_back(a);
            turn.wait(); // y gives back b
            turn.wait();
            let own = taken(idle);
            turn.wait(); // y takes its own, then gives back c
            turn.wait();
            let other = taken(idle);
            (own, other)
        });
        let y = s.spawn(move || {
            let me = thread_number();
            to_x.send(me).unwrap();
            let idle = mine(me, from_x.recv().unwrap());
            numbers.wait();
            turn.wait(); // x gives back a
            idle.give_back(b);
            turn.wait();
            turn.wait(); // x takes its own
            let own = taken(idle);
            let none = taken(idle);
            idle.give_back(c);
            turn.wait();
            (own, none)
        });
        (x.join().unwrap(), y.join().unwrap())
    });
    assert_eq!(x, (Some(ports[0]), Some(ports[2])));
    assert_eq!(y, (Some(ports[1]), None));
}

#[tokio::test]
async fn an_idle_connection_the_provider_closed_is_let_go_before_its_time() {
    let server = server(Answer::ThenHangUp).await;
    let mut pool = pool_for(&server.base);
    // Expired only after 20 s: before that, only the sweep's look at the socket lets it go.
    pool.idle_timeout = Duration::from_secs(20);
    let start = Instant::now();
    assert_eq!(exchange(&pool, get("/a")).await, "hello");
    assert_eq!(pool.idle.len(), 1);
    while !pool.idle.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(19),
            "a closed connection stayed in the pool"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_request_goes_in_origin_form_with_the_providers_host() {
    let server = server(Answer::KeepAlive).await;
    let pool = pool_for(&server.base);
    exchange(&pool, get("/v1/models?x=1")).await;
    let heads = server.heads.lock().clone();
    let host = server.base.authority().unwrap().as_str().to_owned();
    assert_eq!(
        heads[0],
        format!("GET /v1/models?x=1 HTTP/1.1\r\nhost: {host}\r\n\r\n")
    );
}

/// A provider's key and configured headers, one of them `Host`.
fn own_headers() -> HeaderMap {
    let mut own = HeaderMap::new();
    own.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer sk-provider"),
    );
    own.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    own.insert(header::HOST, HeaderValue::from_static("gateway.internal"));
    own
}

/// A client's lines, and the `x-forwarded-for` grown from them.
fn client_lines() -> RequestLines {
    RequestLines {
        client: Some(crate::wire::lines::parsed(
            b"HTTP/1.1 200 OK\r\nX-Stainless-Lang: python\r\nContent-Length: 0\r\n\r\n",
        )),
        forwarded_for: Some(HeaderValue::from_static("10.0.0.1, 127.0.0.2")),
    }
}

#[tokio::test]
async fn every_http1_request_carries_the_providers_own_headers_first() {
    let server = server(Answer::KeepAlive).await;
    let pool = Pool::new(
        Scheme::HTTP,
        server.base.authority().unwrap().clone(),
        own_headers(),
        Duration::from_secs(5),
        Duration::from_secs(90),
    )
    .unwrap();
    for _ in 0..2 {
        let response = pool
            .send(get("/v1/messages"), client_lines())
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
    }
    let heads = server.heads.lock().clone();
    // A configured `Host` is the only one.
    let expected = "GET /v1/messages HTTP/1.1\r\nauthorization: Bearer sk-provider\r\n\
                    anthropic-version: 2023-06-01\r\nhost: gateway.internal\r\n\
                    X-Stainless-Lang: python\r\nx-forwarded-for: 10.0.0.1, 127.0.0.2\r\n\r\n";
    assert_eq!(heads, [expected, expected]);
}

#[test]
fn the_host_header_names_a_port_only_when_it_is_not_the_schemes() {
    let host = |base: &str| {
        let base: Uri = base.parse().unwrap();
        let own = pool_for(&base).own.http1;
        let line = std::str::from_utf8(&own).unwrap().to_owned();
        line.strip_prefix("host: ").unwrap().trim_end().to_owned()
    };
    assert_eq!(host("http://127.0.0.1:8080"), "127.0.0.1:8080");
    assert_eq!(host("http://models.internal"), "models.internal");
    assert_eq!(host("http://models.internal:80"), "models.internal");
    assert_eq!(host("https://api.openai.com:443"), "api.openai.com");
    assert_eq!(host("https://gw.example:8443"), "gw.example:8443");
    assert_eq!(host("http://[::1]:9000"), "[::1]:9000");
}

#[tokio::test]
async fn a_provider_that_is_not_listening_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base: Uri = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(listener);
    let Err(err) = pool_for(&base)
        .send(get("/"), RequestLines::default())
        .await
    else {
        panic!("a request to a closed port got an answer");
    };
    assert!(err.is_connect(), "{err:?}");
}

/// A provider behind TLS on loopback, with a certificate made for this run, that offers
/// `alpn` and answers "hello" and the request's URI and version. Over HTTP/2 with `goaway`, it
/// closes each connection gracefully once the connection's first request is answered.
struct TlsServer {
    base: Uri,
    connections: Arc<AtomicUsize>,
    client_config: rustls::ClientConfig,
}

async fn tls_server(alpn: &[u8]) -> TlsServer {
    tls_server_with(alpn, false, None).await
}

/// `max_streams`: the HTTP/2 streams a connection allows open at once. A request for `/held`
/// gets a head and a body that never ends.
async fn tls_server_with(alpn: &[u8], goaway: bool, max_streams: Option<u32>) -> TlsServer {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let mut server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    server_config.alpn_protocols = vec![alpn.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client_config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base: Uri = format!("https://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let answered = Arc::new(tokio::sync::Notify::new());
                let service = {
                    let answered = answered.clone();
                    service_fn(move |request: Request<Incoming>| {
                        answered.notify_one();
                        async move {
                            let body = if request.uri().path() == "/held" {
                                let never = futures::stream::pending::<
                                    Result<Frame<Bytes>, std::convert::Infallible>,
                                >();
                                http_body_util::StreamBody::new(never).boxed()
                            } else {
                                let mut text =
                                    format!("hello {} {:?}", request.uri(), request.version());
                                // What a test of the headers sent looks for.
                                for name in ["authorization", "x-stainless-lang", "x-forwarded-for"]
                                {
                                    if let Some(value) = request.headers().get(name) {
                                        text.push_str(&format!(" {name}={value:?}"));
                                    }
                                }
                                Full::new(Bytes::from(text)).boxed()
                            };
                            Ok::<_, std::convert::Infallible>(Response::new(body))
                        }
                    })
                };
                let io = TokioIo::new(tls);
                if h2 {
                    let executor = hyper_util::rt::TokioExecutor::new();
                    let conn = hyper::server::conn::http2::Builder::new(executor)
                        .max_concurrent_streams(max_streams)
                        .serve_connection(io, service);
                    let mut conn = std::pin::pin!(conn);
                    if goaway {
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            () = answered.notified() => conn.as_mut().graceful_shutdown(),
                        }
                    }
                    let _ = conn.await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    TlsServer {
        base,
        connections,
        client_config,
    }
}

fn tls_pool_for(server: &TlsServer) -> Pool {
    let tls = HttpsConnectorBuilder::new().with_tls_config(server.client_config.clone());
    Pool::with_tls(
        Scheme::HTTPS,
        server.base.authority().unwrap().clone(),
        HeaderMap::new(),
        Duration::from_secs(5),
        Duration::from_secs(90),
        tls,
    )
    .unwrap()
}

#[tokio::test]
async fn http2_over_tls_carries_every_request_on_one_connection() {
    let server = tls_server(b"h2").await;
    let pool = tls_pool_for(&server);
    let authority = server.base.authority().unwrap().as_str();
    let expected = format!("hello https://{authority}/v1/models?x=1 HTTP/2.0");
    assert_eq!(exchange(&pool, get("/v1/models?x=1")).await, expected);
    // At once, and one after another: still the one connection.
    let (a, b) = tokio::join!(exchange(&pool, get("/a")), exchange(&pool, get("/b")));
    assert!(
        a.starts_with("hello https://") && b.ends_with("/b HTTP/2.0"),
        "{a} / {b}"
    );
    assert_eq!(exchange(&pool, get("/c")).await.split(' ').count(), 3);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn every_http2_request_carries_the_providers_own_headers_and_the_clients_lines() {
    let server = tls_server(b"h2").await;
    let tls = HttpsConnectorBuilder::new().with_tls_config(server.client_config.clone());
    let authority = server.base.authority().unwrap().clone();
    let pool = Pool::with_tls(
        Scheme::HTTPS,
        authority.clone(),
        own_headers(),
        Duration::from_secs(5),
        Duration::from_secs(90),
        tls,
    )
    .unwrap();
    let response = pool
        .send(get("/v1/messages"), client_lines())
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        format!(
            "hello https://{authority}/v1/messages HTTP/2.0 \
             authorization=\"Bearer sk-provider\" x-stainless-lang=\"python\" \
             x-forwarded-for=\"10.0.0.1, 127.0.0.2\""
        )
    );
}

#[tokio::test]
async fn a_shared_http2_connection_the_provider_closed_is_replaced() {
    let server = tls_server_with(b"h2", true, None).await;
    let pool = tls_pool_for(&server);
    for path in ["/a", "/b", "/c"] {
        assert!(exchange(&pool, get(path)).await.ends_with(" HTTP/2.0"));
        // Let the GOAWAY and the close reach the connection's task.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn past_a_connections_stream_limit_http2_opens_another_connection() {
    let server = tls_server_with(b"h2", false, Some(1)).await;
    let pool = tls_pool_for(&server);
    // The first answer teaches the pool the limit (SETTINGS); then one stream is held open.
    assert!(exchange(&pool, get("/a")).await.ends_with(" HTTP/2.0"));
    let held = pool
        .send(get("/held"), RequestLines::default())
        .await
        .unwrap();
    // Without a second connection this would wait for the held stream to end.
    let second = tokio::time::timeout(Duration::from_secs(10), exchange(&pool, get("/b"))).await;
    assert!(second.expect("answered, not queued").ends_with(" HTTP/2.0"));
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    // The held stream's end frees its place: the next request opens nothing new.
    drop(held);
    assert!(exchange(&pool, get("/c")).await.ends_with(" HTTP/2.0"));
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn http1_over_tls_reuses_its_connection() {
    let server = tls_server(b"http/1.1").await;
    let pool = tls_pool_for(&server);
    for _ in 0..3 {
        assert_eq!(
            exchange(&pool, get("/v1/models")).await,
            "hello /v1/models HTTP/1.1"
        );
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_certificate_the_pool_does_not_trust_is_a_connect_error() {
    let server = tls_server(b"h2").await;
    // The pool of a real provider trusts Mozilla's roots, not this run's certificate.
    let pool = pool_for(&server.base);
    let Err(err) = pool.send(get("/"), RequestLines::default()).await else {
        panic!("an untrusted certificate was accepted");
    };
    assert!(err.is_connect(), "{err:?}");
}

/// Eight requests at once to a provider no connection is open to yet: over HTTP/2 they share
/// the one connection the first opens; over HTTP/1.1 each needs its own.
#[tokio::test]
async fn a_burst_of_first_requests_opens_one_http2_connection_or_one_http1_each() {
    for (alpn, version, connections) in [
        (&b"h2"[..], " HTTP/2.0", 1),
        (&b"http/1.1"[..], " HTTP/1.1", 8),
    ] {
        let server = tls_server(alpn).await;
        let pool = tls_pool_for(&server);
        let burst = (0..8).map(|i| exchange(&pool, get(&format!("/{i}"))));
        let answers = futures::future::join_all(burst).await;
        assert!(answers.iter().all(|a| a.ends_with(version)), "{answers:?}");
        assert_eq!(server.connections.load(Ordering::SeqCst), connections);
    }
}

#[tokio::test]
async fn a_burst_to_a_tls_provider_that_is_down_fails_every_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
    drop(listener);
    let pool = Pool::new(
        Scheme::HTTPS,
        authority,
        HeaderMap::new(),
        Duration::from_secs(5),
        Duration::from_secs(90),
    )
    .unwrap();
    let burst = (0..4).map(|_| pool.send(get("/"), RequestLines::default()));
    for result in futures::future::join_all(burst).await {
        let Err(err) = result else {
            panic!("a request to a closed port got an answer");
        };
        assert!(err.is_connect(), "{err:?}");
    }
}
