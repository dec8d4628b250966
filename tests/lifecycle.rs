//! How requests live and end: graceful drain on shutdown, h2c clients, and the `drain`
//! disconnect policy that still records the provider's own usage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::StreamExt;

const SSE: &str = "text/event-stream";

fn chunk(text: &str) -> Bytes {
    Bytes::from(format!(
        "data: {{\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n"
    ))
}

const USAGE_END: &str = "data: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":22,\"total_tokens\":33}}\n\ndata: [DONE]\n\n";

/// An upstream whose streams wait for the test to release them.
async fn gated_upstream() -> (
    Upstream,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::mpsc::Sender<Bytes>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let upstream = Upstream::start(handler(move |_req| {
        let tx = tx.clone();
        async move {
            let (sender, response) = channel_body(SSE);
            let _ = sender.send(chunk("first")).await;
            let _ = tx.send(sender);
            response
        }
    }))
    .await;
    (upstream, rx)
}

#[tokio::test]
async fn shutdown_lets_streams_in_flight_finish_and_readyz_says_503() {
    let (upstream, mut gates) = gated_upstream().await;
    let mut proxy = Proxy::start(
        &["--upstream", &upstream.url(), "--drain-timeout", "20s"],
        "",
    )
    .await;
    let body =
        r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let mut streams = Vec::new();
    for _ in 0..5 {
        let response = proxy.post_chat().body(body).send().await.unwrap();
        let mut stream = response.bytes_stream();
        stream.next().await.unwrap().unwrap();
        streams.push(stream);
    }
    let mut senders = Vec::new();
    for _ in 0..5 {
        senders.push(gates.recv().await.unwrap());
    }
    assert_eq!(
        proxy
            .client
            .get(proxy.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    proxy.begin_shutdown();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = proxy
            .client
            .get(proxy.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never went 503"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // New connections are no longer accepted.
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(fresh.get(proxy.url("/v1/models")).send().await.is_err());
    // The streams in flight still complete.
    for sender in senders {
        sender.send(chunk("more")).await.unwrap();
        sender.send(Bytes::from(USAGE_END)).await.unwrap();
    }
    for mut stream in streams {
        let mut rest = Vec::new();
        while let Some(piece) = stream.next().await {
            rest.extend_from_slice(&piece.unwrap());
        }
        assert!(rest.ends_with(b"data: [DONE]\n\n"));
    }
    proxy.wait_stopped().await;
    let records = proxy.settled_records().await;
    assert_eq!(records.len(), 5);
    for record in records {
        assert_eq!(record["outcome"], "ok");
        assert_eq!(usage_of(&record), [11, 22, 33, 0, 0, 0]);
    }
}

#[tokio::test]
async fn the_drain_timeout_cuts_what_is_left_and_says_so() {
    let (upstream, mut gates) = gated_upstream().await;
    let mut proxy = Proxy::start(
        &["--upstream", &upstream.url(), "--drain-timeout", "300ms"],
        "",
    )
    .await;
    let response = proxy
        .post_chat()
        .body(r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    let _sender = gates.recv().await.unwrap();
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    proxy.begin_shutdown();
    proxy.wait_stopped().await;
    let records = proxy.settled_records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["outcome"], "cancelled");
    assert_eq!(records[0]["usage_source"], "estimated");
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(proxy.url("/v1/chat/completions"))
        .body(r#"{"model":"gpt-4o-mini","stream":true,"max_tokens":4,"messages":[{"role":"user","content":"a b"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let record = proxy.only_record().await;
    assert_eq!(record["outcome"], "ok");
    assert_eq!(usage_of(&record), [9, 4, 13, 0, 0, 0]);
}

#[tokio::test]
async fn a_request_line_that_starts_like_the_h2c_preface_is_served_as_http1() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":3,"messages":[{"role":"user","content":"a b"}]}"#;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // "P" could still open "PRI * HTTP/2.0"; the rest of the line settles it.
    stream.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rest = format!(
        "OST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let record = proxy.only_record().await;
    assert_eq!(record["outcome"], "ok");
    assert_eq!(usage_of(&record), [9, 3, 12, 0, 0, 0]);
}

#[tokio::test]
async fn connections_that_sent_no_request_do_not_hold_up_shutdown() {
    use tokio::io::AsyncWriteExt;
    let (proxy, _demo) =
        Proxy::with_demo(&["--drain-timeout", "60s", "--client-header-timeout", "60s"]).await;
    let _silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut half_preface = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // A request on a third connection: by its answer, the two are accepted.
    let answer = proxy
        .post_chat()
        .body(r#"{"model":"gpt-4o-mini","max_tokens":2,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let started = std::time::Instant::now();
    proxy.stop().await;
    // Neither the 60 s drain timeout nor the 60 s header timeout was waited for.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn under_drain_a_leaving_client_still_gets_the_providers_usage_recorded() {
    let (upstream, mut gates) = gated_upstream().await;
    let proxy = Proxy::start(
        &[
            "--upstream",
            &upstream.url(),
            "--on-client-disconnect",
            "drain",
            "--drain-max",
            "10s",
        ],
        "",
    )
    .await;
    let response = proxy
        .post_chat()
        .body(r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    let sender = gates.recv().await.unwrap();
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The upstream is still being read: it can send the rest.
    sender.send(chunk("more")).await.unwrap();
    sender.send(Bytes::from(USAGE_END)).await.unwrap();
    drop(sender);
    let record = proxy.only_record().await;
    assert_eq!(record["outcome"], "cancelled");
    assert_eq!(record["usage_source"], "upstream");
    assert_eq!(usage_of(&record), [11, 22, 33, 0, 0, 0]);
}
