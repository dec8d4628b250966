//! Transport round trips: errors, aborts, keep-alive, h2c, pacing and a large stream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::DemoOptions;
use super::{Server, chat_body, client, parse, post, sse};

#[tokio::test]
async fn models_and_errors() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let response = client().get(server.url("/v1/models")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let v = parse(&response.text().await.unwrap());
    assert_eq!(v["object"], "list");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "claude-sonnet-4-5")
    );
    assert_eq!(v["data"][0]["owned_by"], "tokentap-demo");

    let check = |status: u16, expected: u16, text: &str| {
        assert_eq!(status, expected, "{text}");
        let v = parse(text);
        assert!(v["error"]["message"].is_string());
        assert!(v["error"]["type"].is_string());
        assert_eq!(v["error"]["code"], Value::Null);
    };
    let (status, _, text) = post(&server, "/v1/nothing", &json!({}), &[]).await;
    check(status, 404, &text);
    assert_eq!(parse(&text)["error"]["type"], "invalid_request_error");
    let (status, _, text) = post(&server, "/v1/models", &json!({}), &[]).await;
    check(status, 405, &text);
    let response = client()
        .get(server.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    check(status, 405, &response.text().await.unwrap());
    let response = client()
        .post(server.url("/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    check(status, 400, &response.text().await.unwrap());
    let (status, _, text) = post(&server, "/v1/chat/completions", &json!([1]), &[]).await;
    check(status, 400, &text);
    let (status, _, text) = post(
        &server,
        "/v1/chat/completions",
        &chat_body(),
        &[("x-demo-status", "429")],
    )
    .await;
    check(status, 429, &text);
    let (status, _, text) = post(
        &server,
        "/v1/chat/completions",
        &chat_body(),
        &[("x-demo-status", "503")],
    )
    .await;
    check(status, 503, &text);
    let (status, _, text) = post(
        &server,
        "/v1/chat/completions",
        &chat_body(),
        &[("x-demo-status", "abc")],
    )
    .await;
    check(status, 400, &text);
    let (status, _, text) = post(
        &server,
        "/v1/chat/completions",
        &chat_body(),
        &[("x-demo-chunk-delay-ms", "-1")],
    )
    .await;
    check(status, 400, &text);
    server.stop().await;
}

/// Raw HTTP/1.1: the abort closes the connection mid-stream, without the chunked terminator.
#[tokio::test]
async fn abort_after_drops_the_connection() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let body = json!({"messages": [], "stream": true, "stream_options": {"include_usage": true}})
        .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: demo\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nx-demo-abort-after: 2\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("connection not closed")
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert_eq!(text.matches("\"content\":\" ").count(), 2, "{text}");
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("\"usage\":{"));
    assert!(!text.contains("\r\n0\r\n\r\n"));

    // The same through reqwest: the body read fails.
    let response = client()
        .post(server.url("/v1/messages"))
        .header("x-demo-abort-after", "0")
        .body(json!({"messages": [], "stream": true}).to_string())
        .send()
        .await
        .unwrap();
    assert!(response.text().await.is_err());
    server.stop().await;
}

/// Raw HTTP/1.1 keep-alive: two requests on one connection.
#[tokio::test]
async fn keep_alive_over_raw_http1() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = "GET /models HTTP/1.1\r\nhost: demo\r\n\r\n";
    for _ in 0..2 {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    assert_eq!(body.len(), length);
                    assert_eq!(parse(body)["object"], "list");
                    break;
                }
            }
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
    }
    server.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut body = chat_body();
    body["stream"] = json!(true);
    let response = client
        .post(server.url("/v1/chat/completions"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let text = response.text().await.unwrap();
    assert_eq!(sse(&text).len(), 1 + 16 + 1 + 1);
    server.stop().await;
}

#[tokio::test]
async fn pacing_is_applied() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let mut body = chat_body();
    body["stream"] = json!(true);
    body["max_tokens"] = json!(4);
    let headers = [
        ("x-demo-first-chunk-delay-ms", "60"),
        ("x-demo-chunk-delay-ms", "30"),
    ];
    let started = Instant::now();
    let (_, _, text) = post(&server, "/v1/chat/completions", &body, &headers).await;
    assert!(started.elapsed() >= Duration::from_millis(60 + 3 * 30));
    assert_eq!(sse(&text).len(), 1 + 4 + 1 + 1);
    body["stream"] = json!(false);
    let started = Instant::now();
    let (status, _, _) = post(&server, "/v1/chat/completions", &body, &headers).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(60 + 3 * 30));
    server.stop().await;

    let paced = DemoOptions::paced();
    assert_eq!(paced.first_chunk_delay, Duration::from_millis(200));
    assert_eq!(paced.chunk_delay, Duration::from_millis(20));
}

#[tokio::test]
async fn large_unpaced_stream() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let body = json!({"messages": [{"role": "user", "content": "go"}], "stream": true,
        "max_tokens": 1_000_000, "stream_options": {"include_usage": true}});
    let (_, _, text) = post(&server, "/v1/chat/completions", &body, &[]).await;
    let events = sse(&text);
    assert_eq!(events.len(), 1 + 100_000 + 1 + 1 + 1);
    let usage = parse(&events[events.len() - 2].1);
    assert_eq!(usage["usage"]["completion_tokens"], 100_000);
    server.stop().await;
}
