//! What must never happen: a client choosing the upstream host, a redirect followed, an admin
//! route answering without its token, a smuggled request reaching the upstream, or an API key
//! coming out of any door (logs at every level, /metrics, admin JSON, the live feed, exports,
//! error bodies).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A listener on another loopback address that counts every connection made to it.
async fn canary() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, hits)
}

/// tokentap in front of an upstream that answers every request `200 {}`.
async fn proxy_to_empty_answers() -> (Upstream, Proxy) {
    let upstream = Upstream::start(handler(|_req| async {
        full(200, "application/json", "{}")
    }))
    .await;
    let proxy = Proxy::start(&["--upstream", &upstream.url()], "").await;
    (upstream, proxy)
}

/// Sends raw bytes and returns what came back before the connection closed (or 2 s passed).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn no_client_input_can_choose_the_upstream_host() {
    let (canary_addr, canary_hits) = canary().await;
    let (upstream, proxy) = proxy_to_empty_answers().await;
    let attempts = [
        format!(
            "GET http://{canary_addr}/v1/models HTTP/1.1\r\nHost: {canary_addr}\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "CONNECT {canary_addr} HTTP/1.1\r\nHost: {canary_addr}\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /v1/models HTTP/1.1\r\nHost: {canary_addr}\r\nX-Forwarded-Host: {canary_addr}\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /v1/models HTTP/1.1\r\nHost: x\r\nx-tokentap-provider: http://{canary_addr}\r\nConnection: close\r\n\r\n"
        ),
        format!("GET //{canary_addr}/v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ];
    for attempt in &attempts {
        let answer = raw(proxy.addr, attempt.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 "), "{attempt}: {answer}");
    }
    let body = json!({"model": format!("http://{canary_addr}/gpt-4o"), "messages": []}).to_string();
    proxy.post_chat().body(body).send().await.unwrap();
    let body = json!({"model": format!("{canary_addr}/gpt-4o")}).to_string();
    proxy.post_chat().body(body).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        canary_hits.load(Ordering::SeqCst),
        0,
        "a client reached another host"
    );
    // Whatever reached an upstream reached the configured one, with its own Host.
    for req in upstream.requests.lock().iter() {
        assert_eq!(req.headers()["host"], upstream.addr.to_string());
    }
}

/// Two values of a credential header: the meter would attribute the first, and the provider
/// might bill either. Refused with a 400 before anything goes upstream, over HTTP/1.1 and h2c,
/// and still recorded, with no key.
#[tokio::test]
async fn a_credential_header_sent_twice_is_refused_and_recorded() {
    let (upstream, proxy) = proxy_to_empty_answers().await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let body = json!({"model": "gpt-4o", "messages": []}).to_string();
    let twice = [
        ("authorization", "Bearer sk-first", "Bearer sk-second"),
        ("x-api-key", "sk-first", "sk-first"),
        ("Authorization", "Bearer sk-same", "Bearer sk-same"),
    ];
    for client in [&proxy.client, &h2] {
        for (name, first, second) in twice {
            let answer = client
                .post(proxy.url("/v1/chat/completions"))
                .header(name, first)
                .header(name, second)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 400, "{name}");
            let error: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(error["error"]["code"], "repeated_credential");
            assert_eq!(error["error"]["type"], "invalid_request_error");
            let message = error["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(&name.to_ascii_lowercase()) && !message.contains("sk-"),
                "{message}"
            );
        }
    }
    // One of each is no repetition: `authorization` is the key read, as before.
    let once = proxy
        .post_chat()
        .header("authorization", "Bearer sk-one")
        .header("x-api-key", "sk-other")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(once.status(), 200);

    assert_eq!(
        upstream.requests.lock().len(),
        1,
        "only the last one went upstream"
    );
    let records = proxy.settled_records().await;
    assert_eq!(records.len(), 7);
    for record in &records[..6] {
        assert_eq!(record["status_code"], 400, "{record}");
        assert_eq!(record["outcome"], "client_error", "{record}");
        assert!(record["key_id"].is_null(), "{record}");
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(b"sk-one");
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(records[6]["key_id"], format!("key_{hex}"));
}

#[tokio::test]
async fn redirects_from_the_upstream_are_answered_not_followed() {
    let (canary_addr, canary_hits) = canary().await;
    let location = format!("http://{canary_addr}/v1/chat/completions");
    let upstream = Upstream::start(handler(move |_req| {
        let location = location.clone();
        async move {
            let mut response = full(307, "application/json", "{}");
            response
                .headers_mut()
                .insert("location", location.parse().unwrap());
            response
        }
    }))
    .await;
    let proxy = Proxy::start(&["--upstream", &upstream.url()], "").await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .post(proxy.url("/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307);
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .contains(&canary_addr)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(canary_hits.load(Ordering::SeqCst), 0);
    assert_eq!(proxy.only_record().await["outcome"], "ok");
}

#[tokio::test]
async fn every_admin_route_but_the_probes_needs_the_token_and_cors_is_off() {
    let (proxy, _demo) = Proxy::with_demo(&["--admin-token", "t0ken"]).await;
    let routes = [
        "/",
        "/metrics",
        "/api/active",
        "/api/active/stream",
        "/api/requests",
        "/api/requests/x",
        "/api/totals",
        "/api/conversations/x",
        "/api/timeseries",
        "/api/export",
        "/api/counts",
    ];
    for route in routes {
        for token in [None, Some("wrong"), Some("t0ke"), Some("t0ken0")] {
            let mut req = proxy.client.get(proxy.admin_url(route));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let response = req.send().await.unwrap();
            assert_eq!(response.status(), 401, "{route} with {token:?}");
            assert!(
                !response
                    .headers()
                    .contains_key("access-control-allow-origin")
            );
        }
        let ok = proxy
            .client
            .get(proxy.admin_url(route))
            .bearer_auth("t0ken")
            .send()
            .await
            .unwrap();
        assert_ne!(ok.status(), 401, "{route}");
        assert!(
            !ok.headers().contains_key("access-control-allow-origin"),
            "{route}: CORS is off"
        );
    }
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            proxy
                .client
                .get(proxy.admin_url(probe))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let preflight = proxy
        .client
        .request(reqwest::Method::OPTIONS, proxy.admin_url("/api/requests"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 405);
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn smuggling_attempts_never_reach_the_upstream_as_a_second_request() {
    let (upstream, proxy) = proxy_to_empty_answers().await;
    let smuggled = "GET /v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let attempts = [
        format!(
            "POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbody{smuggled}"
        ),
        format!("POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nbody{smuggled}"),
        format!(
            "POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n{smuggled}"
        ),
    ];
    for attempt in &attempts {
        let _ = raw(proxy.addr, attempt.as_bytes()).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let paths: Vec<String> = upstream
        .requests
        .lock()
        .iter()
        .map(|r| r.uri().path().to_owned())
        .collect();
    assert!(!paths.iter().any(|p| p.contains("smuggled")), "{paths:?}");
    // Still serving.
    assert_eq!(
        proxy
            .client
            .get(proxy.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

fn sync_get(addr: &str, path: &str, token: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A child's stdout and stderr, read on threads as it writes them: a chatty child never blocks
/// on a full pipe, and the test can look at what it has written so far.
struct ChildOutput {
    text: Arc<parking_lot::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ChildOutput {
    fn capture(child: &mut std::process::Child) -> ChildOutput {
        let text = Arc::new(parking_lot::Mutex::new(String::new()));
        let pipes: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        let readers = pipes
            .into_iter()
            .map(|mut pipe| {
                let text = text.clone();
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 8192];
                    while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                        text.lock().push_str(&String::from_utf8_lossy(&chunk[..n]));
                    }
                })
            })
            .collect();
        ChildOutput { text, readers }
    }

    /// The address logged after `key=` in the line that says `tokentap serving`.
    fn logged_address(&self, key: &str) -> Option<String> {
        let text = self.text.lock();
        let line = text.lines().find(|l| l.contains("tokentap serving"))?;
        let value = line.split(&format!("{key}=")).nth(1)?;
        Some(value.split_whitespace().next()?.to_owned())
    }

    /// Everything the child wrote, once it has exited.
    fn all(self) -> String {
        for reader in self.readers {
            reader.join().unwrap();
        }
        self.text.lock().clone()
    }
}

#[test]
fn a_canary_key_never_comes_out_of_any_door() {
    const CANARY: &str = "sk-canary-7f3a9c2e";
    // Port 0, and the bound addresses read from the log: a port picked free beforehand can be
    // taken by another test's connection before tokentap binds it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokentap"))
        .args([
            "--demo",
            "--demo-pacing",
            "off",
            "--log-level",
            "trace",
            "--admin-token",
            "adm",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = ChildOutput::capture(&mut child);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (proxy, admin) = loop {
        if let (Some(proxy), Some(admin)) = (
            output.logged_address("listen"),
            output.logged_address("admin"),
        ) {
            break (proxy, admin);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tokentap exited ({status}): {}", output.all());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tokentap did not start: {}", output.all());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A live-feed subscriber, read at the end.
    let mut feed = TcpStream::connect(&admin).unwrap();
    write!(
        feed,
        "GET /api/active/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer adm\r\n\r\n"
    )
    .unwrap();
    let requests = [
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CANARY}\r\nContent-Type: application/json\r\nContent-Length: 77\r\nConnection: close\r\n\r\n{{\"model\":\"gpt-4o\",\"stream\":true,\"max_tokens\":3,\"messages\":[],\"user\":\"u1\"}}  "
        ),
        format!(
            "POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: {CANARY}\r\nContent-Length: 40\r\nConnection: close\r\n\r\n{{\"model\":\"claude-x\",\"max_tokens\":2}}    "
        ),
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CANARY}\r\nContent-Length: 999999999999\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CANARY}\r\nx-tokentap-provider: nope\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: {CANARY}\r\nx-big: {}\r\nConnection: close\r\n\r\n",
            "z".repeat(70_000)
        ),
    ];
    let mut answers = String::new();
    for request in &requests {
        let mut stream = TcpStream::connect(&proxy).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        answers.push_str(&String::from_utf8_lossy(&out));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut doors = answers;
    for path in [
        "/metrics",
        "/api/requests",
        "/api/active",
        "/api/totals",
        "/api/export?format=csv",
        "/api/export?format=jsonl",
        "/api/timeseries?bucket=minute",
    ] {
        let body = sync_get(&admin, path, "adm");
        assert!(body.starts_with("HTTP/1.1 200"), "{path}: {body}");
        doors.push_str(&body);
    }
    assert!(doors.contains("key_"), "records carry the key fingerprint");
    feed.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut live = Vec::new();
    let _ = feed.read_to_end(&mut live);
    let live = String::from_utf8_lossy(&live).into_owned();
    assert!(live.contains("event: finished"), "{live}");
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    child.wait().unwrap();
    let logs = output.all();
    assert!(logs.contains("request"), "trace logs were written");
    for (door, text) in [
        ("responses and admin API", &doors),
        ("live feed", &live),
        ("logs", &logs),
    ] {
        assert!(!text.contains(CANARY), "the canary key came out of: {door}");
        assert!(
            !text.contains("canary-7f3a"),
            "part of the canary key came out of: {door}"
        );
    }
}
