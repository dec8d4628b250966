//! The proxy path end to end: tokentap in-process between a real HTTP client and a scripted
//! upstream, all on ephemeral loopback ports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/fake_upstream.rs"]
mod fake_upstream;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use fake_upstream::{FakeUpstream, Scenario};
use futures::StreamExt;
use serde_json::{Value, json};

const SSE: &str = "text/event-stream";

#[tokio::test]
async fn a_streamed_answer_reaches_the_client_chunk_by_chunk() {
    let (tx_slot, rx_slot) = tokio::sync::oneshot::channel();
    let slot = std::sync::Arc::new(parking_lot::Mutex::new(Some(tx_slot)));
    let upstream = Upstream::start(handler(move |_req| {
        let slot = slot.clone();
        async move {
            let (tx, response) = channel_body(SSE);
            if let Some(s) = slot.lock().take() {
                let _ = s.send(tx);
            }
            response
        }
    }))
    .await;
    let proxy = Proxy::start(&["--upstream", &upstream.url()], "").await;
    let response = proxy.post_chat()
        .body(r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#)
        .send()
        .await
        .unwrap();
    let tx = rx_slot.await.unwrap();
    let mut body = response.bytes_stream();
    let first = "data: {\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n";
    tx.send(Bytes::from(first)).await.unwrap();
    // The first chunk arrives while the upstream has not sent the second one.
    let got = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, first);
    let last = "data: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\ndata: [DONE]\n\n";
    tx.send(Bytes::from(last)).await.unwrap();
    drop(tx);
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(rest, last.as_bytes());
    let record = proxy.only_record().await;
    assert_eq!(record["outcome"], "ok");
    assert_eq!(record["usage_source"], "upstream");
    assert_eq!(usage_of(&record), [3, 1, 4, 0, 0, 0]);
    assert_eq!(record["stream"], true);
    assert!(record["ttft_ms"].is_u64());
}

#[tokio::test]
async fn bodies_pass_byte_identical_sse_json_and_binary() {
    let binary: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let binary2 = binary.clone();
    let upstream = Upstream::start(handler(move |req| {
        let binary = binary2.clone();
        async move {
            match req.uri().path() {
                "/v1/files/blob" => full(200, "application/octet-stream", binary),
                "/v1/chat/completions" => full(
                    200,
                    SSE,
                    "data: {\"choices\":[]}\r\n\r\n: comment\n\ndata: [DONE]\n\n",
                ),
                _ => full(200, "application/json", "{ \"odd\" :\t[1,2 ,3] }\n"),
            }
        }
    }))
    .await;
    let proxy = Proxy::start(&["--upstream", &upstream.url()], "").await;
    for (method, path, body) in [
        ("GET", "/v1/files/blob?x=1", ""),
        (
            "POST",
            "/v1/chat/completions",
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        ),
        ("POST", "/v1/embeddings", r#"{"model":"m","input":"x"}"#),
    ] {
        let via = proxy
            .client
            .request(method.parse().unwrap(), proxy.url(path))
            .body(body)
            .send()
            .await
            .unwrap();
        let direct = proxy
            .client
            .request(
                method.parse().unwrap(),
                format!("{}{}", upstream.url(), path),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(via.status(), direct.status());
        assert_eq!(
            via.headers().get("content-type"),
            direct.headers().get("content-type")
        );
        assert_eq!(
            via.bytes().await.unwrap(),
            direct.bytes().await.unwrap(),
            "{path}"
        );
    }
    // The query string went upstream unchanged.
    assert_eq!(
        upstream.requests.lock()[0].uri().to_string(),
        "/v1/files/blob?x=1"
    );
    let records = proxy.settled_records().await;
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["endpoint"], "other");
    assert_eq!(records[0]["response_bytes"], 300_000);
}

/// Whole JSON answers are read by the meter after their last write (by the client connection's
/// writer): their usage is still recorded, also when shutdown begins the moment they are out.
#[tokio::test]
async fn large_answers_are_metered_after_the_client_has_them() {
    let floats: Vec<String> = (0..1536)
        .map(|i| format!("{:.9}", (f64::from(i) * 0.37).sin()))
        .collect();
    let embedding = format!(
        r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[{}]}}],"model":"text-embedding-3-small","usage":{{"prompt_tokens":9,"total_tokens":9}}}}"#,
        floats.join(",")
    );
    let chat = format!(
        r#"{{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":5,"completion_tokens":1000,"total_tokens":1005}}}}"#,
        "word ".repeat(1000)
    );
    let (embedding2, chat2) = (embedding.clone(), chat.clone());
    let upstream = Upstream::start(handler(move |req| {
        let body = match req.uri().path() {
            "/v1/embeddings" => embedding2.clone(),
            _ => chat2.clone(),
        };
        async move { full(200, "application/json", body) }
    }))
    .await;
    let mut proxy = Proxy::start(&["--upstream", &upstream.url()], "").await;
    for (path, answer) in [
        ("/v1/embeddings", &embedding),
        ("/v1/chat/completions", &chat),
    ] {
        let got = proxy
            .client
            .post(proxy.url(path))
            .body(r#"{"model":"m","input":"x"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(got.bytes().await.unwrap(), answer.as_bytes(), "{path}");
    }
    proxy.begin_shutdown();
    proxy.wait_stopped().await;
    let records = proxy.settled_records().await;
    assert_eq!(records.len(), 2);
    assert_eq!(usage_of(&records[0]), [9, 0, 9, 0, 0, 0]);
    assert_eq!(records[0]["response_model"], "text-embedding-3-small");
    assert_eq!(usage_of(&records[1]), [5, 1000, 1005, 0, 0, 0]);
    assert_eq!(records[1]["response_model"], "gpt-4o");
    for record in &records {
        assert_eq!(record["outcome"], "ok");
        assert_eq!(record["usage_source"], "upstream");
    }
}

#[tokio::test]
async fn headers_routing_and_key_injection() {
    let a = Upstream::start(handler(|_req| async {
        full(200, "application/json", "{}")
    }))
    .await;
    let b = Upstream::start(handler(|_req| async {
        full(200, "application/json", "{}")
    }))
    .await;
    let toml = format!(
        r#"
        [[providers]]
        name = "alpha"
        base_url = "{}"
        models = ["gpt-*"]

        [[providers]]
        name = "beta"
        base_url = "{}/prefix"
        models = ["claude-*"]
        api_key_env = "TEST_PROVIDER_KEY"
        auth_header = "x-api-key"
        headers = {{ "anthropic-version" = "2023-06-01" }}
    "#,
        a.url(),
        b.url()
    );
    let proxy = Proxy::start(&[], &toml).await;
    let post = |model: &str, extra: Option<(&str, &str)>| {
        let mut req = proxy
            .client
            .post(proxy.url("/v1/messages"))
            .header("authorization", "Bearer sk-client-canary")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .body(json!({"model": model, "max_tokens": 1}).to_string());
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        req.send()
    };
    post("gpt-4o", None).await.unwrap();
    post("claude-sonnet-4-5", None).await.unwrap();
    post("beta/gpt-4o", None).await.unwrap();
    post("unknown-model", Some(("x-tokentap-provider", "beta")))
        .await
        .unwrap();
    post("unknown-model", None).await.unwrap();
    let unknown = post("gpt-4o", Some(("x-tokentap-provider", "127.0.0.1:1")))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_provider");

    let a_reqs = std::mem::take(&mut *a.requests.lock());
    let b_reqs = std::mem::take(&mut *b.requests.lock());
    assert_eq!(
        a_reqs.len(),
        2,
        "gpt-4o by glob, unknown model to the first provider"
    );
    assert_eq!(b_reqs.len(), 3);
    let first_a = &a_reqs[0];
    assert_eq!(
        first_a.headers()["authorization"],
        "Bearer sk-client-canary",
        "no key: the client's passes"
    );
    assert!(
        !first_a.headers().contains_key("x-hop") && !first_a.headers().contains_key("connection")
            || first_a.headers()["connection"] != "keep-alive, x-hop"
    );
    assert!(
        first_a.headers()["x-forwarded-for"]
            .to_str()
            .unwrap()
            .contains("127.0.0.1")
    );
    for req in b_reqs.iter() {
        assert_eq!(req.uri().path(), "/prefix/v1/messages");
        assert_eq!(req.headers()["x-api-key"], "sk-provider-secret");
        assert!(
            !req.headers().contains_key("authorization"),
            "the client's key is replaced"
        );
        assert_eq!(req.headers()["anthropic-version"], "2023-06-01");
    }
    let prefixed: Value = serde_json::from_slice(b_reqs[1].body()).unwrap();
    assert_eq!(
        prefixed["model"], "gpt-4o",
        "the provider prefix is stripped"
    );
    let records = proxy.settled_records().await;
    let providers: Vec<&str> = records
        .iter()
        .map(|r| r["provider"].as_str().unwrap())
        .collect();
    assert_eq!(
        providers,
        ["alpha", "beta", "beta", "beta", "alpha", "alpha"]
    );
    assert_eq!(records[2]["model"], "beta/gpt-4o");
    let all = serde_json::to_string(&records).unwrap();
    assert!(
        !all.contains("sk-client-canary") && !all.contains("sk-provider-secret"),
        "keys never reach a record"
    );
    assert!(records[0]["key_id"].as_str().unwrap().starts_with("key_"));
}

#[tokio::test]
async fn timeouts_answer_504_before_headers_and_end_cleanly_after() {
    let upstream = Upstream::start(handler(|req| async move {
        if req.uri().path().ends_with("/slow-headers") {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return full(200, "application/json", "{}");
        }
        let (tx, response) = channel_body(SSE);
        tokio::spawn(async move {
            let _ = tx
                .send(Bytes::from(
                    "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
                ))
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tx);
        });
        response
    }))
    .await;
    let proxy = Proxy::start(
        &[
            "--upstream",
            &upstream.url(),
            "--first-byte-timeout",
            "300ms",
            "--idle-timeout",
            "300ms",
        ],
        "",
    )
    .await;
    let response = proxy
        .client
        .get(proxy.url("/v1/slow-headers"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert_eq!(body["error"]["type"], "proxy_error");

    let response = proxy.post_chat()
        .body(r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The stream ends cleanly (no transport error) after the idle gap.
    let body = response.bytes().await.unwrap();
    assert!(body.starts_with(b"data: "));
    let records = proxy.settled_records().await;
    assert_eq!(records[0]["outcome"], "timeout");
    assert_eq!(records[0]["status_code"], 504);
    assert_eq!(records[1]["outcome"], "timeout");
    assert_eq!(records[1]["usage_source"], "estimated", "{:#}", records[1]);
    assert_eq!(records[1]["usage"]["completion_tokens"], 1);
}

#[tokio::test]
async fn a_client_leaving_cancels_the_upstream_at_once() {
    let upstream = Upstream::start(handler(|_req| async move {
        let (tx, response) = channel_body(SSE);
        tokio::spawn(async move {
            for i in 0..1000 {
                let chunk = format!("data: {{\"model\":\"m\",\"choices\":[{{\"delta\":{{\"content\":\"w{i} \"}}}}]}}\n\n");
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        response
    }))
    .await;
    let proxy = Proxy::start(&["--upstream", &upstream.url()], "").await;
    let response = proxy
        .post_chat()
        .body(r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"count"}]}"#)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    body.next().await.unwrap().unwrap();
    drop(body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while upstream.closed.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let record = proxy.only_record().await;
    assert_eq!(record["outcome"], "cancelled");
    assert_eq!(record["usage_source"], "estimated");
    assert!(record["usage"]["completion_tokens"].as_u64().unwrap() >= 2);
    assert!(record["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn body_and_header_limits_answer_in_the_error_shape() {
    let upstream = Upstream::start(handler(|_req| async {
        full(200, "application/json", "{}")
    }))
    .await;
    let proxy = Proxy::start(
        &[
            "--upstream",
            &upstream.url(),
            "--max-body",
            "1KiB",
            "--max-header-bytes",
            "2KiB",
        ],
        "",
    )
    .await;
    let big = "x".repeat(4096);
    let response = proxy.post_chat().body(big.clone()).send().await.unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");
    // By chunks, with no Content-Length.
    let stream = futures::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 512]))),
    );
    let response = proxy
        .post_chat()
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let response = proxy
        .client
        .get(proxy.url("/v1/models"))
        .header("x-big", "z".repeat(3000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_headers_too_large");
    assert!(
        upstream.requests.lock().is_empty(),
        "nothing over a limit went upstream"
    );
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
    let records = proxy.settled_records().await;
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["outcome"], "client_error");
}

#[tokio::test]
async fn bad_input_gets_clear_answers_and_the_process_keeps_serving() {
    let upstream = Upstream::start(handler(|req| async move {
        full(200, "application/octet-stream", req.body().clone())
    }))
    .await;
    let proxy = Proxy::start(&["--upstream", &upstream.url()], "").await;
    for body in [
        &b"{\"model\": \"gpt-4o\", \"messages\": ["[..],
        b"\xff\xfe{\"model\":\"\xc3\x28\"}",
        b"",
        b"[1,2,3]",
    ] {
        let response = proxy.post_chat().body(body.to_vec()).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap(), body, "forwarded as sent");
    }
    // HTTP/1.0 from a raw socket.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    raw.write_all(b"POST /v1/echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.ends_with("hi"),
        "{answer}"
    );
    // An upstream that refuses connections: 502 naming the provider.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let refused = Proxy::start(&["--upstream", &dead], "").await;
    let response = refused.post_chat().body("{}").send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`default`")
    );
    let record = refused.only_record().await;
    assert_eq!(record["outcome"], "upstream_error");
    assert_eq!(record["usage_source"], "missing");
    assert_eq!(proxy.settled_records().await.len(), 5);
}

#[tokio::test]
async fn include_usage_is_added_and_its_chunk_hidden_from_the_client() {
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    let asked_none = proxy.post_chat()
        .body(r#"{"model":"gpt-4o-mini","stream":true,"max_tokens":7,"messages":[{"role":"user","content":"one two three"}]}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Only the usage-only chunk is removed; `"usage":null` markers on other chunks may remain.
    assert!(
        !asked_none.contains("\"usage\":{") && !asked_none.contains("\"choices\":[]"),
        "the client did not ask for usage: {asked_none}"
    );
    assert!(asked_none.ends_with("data: [DONE]\n\n"));
    let asked = proxy.post_chat()
        .body(r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"max_tokens":7,"messages":[{"role":"user","content":"one two three"}]}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let usage_chunks = asked
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter(|chunk| chunk["choices"] == json!([]) && chunk["usage"].is_object())
        .count();
    assert_eq!(
        usage_chunks, 1,
        "the client asked for usage: it keeps its chunk"
    );
    let records = proxy.settled_records().await;
    // Demo formula: 3 + (4 + 3 words) = 10 prompt tokens; 7 completion tokens.
    for record in &records {
        assert_eq!(record["usage_source"], "upstream");
        assert_eq!(usage_of(record), [10, 7, 17, 0, 0, 0]);
        assert!(record["chunks"].as_u64().unwrap() >= 8);
    }
}

#[tokio::test]
async fn an_http_1_0_client_gets_its_stream_delimited_by_the_connection_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    let body = r#"{"model":"gpt-4o-mini","stream":true,"max_tokens":6,"messages":[{"role":"user","content":"a b c"}]}"#;
    let mut raw = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    raw.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(
        !answer
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "HTTP/1.0 has no chunked encoding"
    );
    assert!(answer.ends_with("data: [DONE]\n\n"));
    let record = proxy.only_record().await;
    assert_eq!(record["outcome"], "ok");
    // Demo formula: 3 + (4 + 3 words) prompt tokens.
    assert_eq!(usage_of(&record), [10, 6, 16, 0, 0, 0]);
}

/// An upstream that sends a short streamed answer whole, in one write (as a fast upstream
/// does): the client gets it, end of body included, in one write too. Without the write
/// coalescing the chunks and the end of the body went out in two writes.
#[tokio::test]
async fn a_streamed_answer_that_arrived_whole_leaves_in_one_write() {
    let mut events = String::new();
    for text in ["Hel", "lo", " there"] {
        events.push_str(&format!(
            "data: {}\n\n",
            json!({"model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": text}}]})
        ));
    }
    events.push_str("data: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\ndata: [DONE]\n\n");
    let mut whole =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_owned();
    whole.push_str(&format!("{:x}\r\n{events}\r\n0\r\n\r\n", events.len()));
    let fake = FakeUpstream::start().await;
    fake.script("whole", Scenario::new().send(whole));
    let proxy = Proxy::start(&["--upstream", &fake.url()], "").await;

    // A blocking client on its own thread reads as soon as the first bytes arrive.
    let addr = proxy.addr;
    let first_read = tokio::task::spawn_blocking(move || {
        let body = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            client,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: tokentap\r\nx-fake: whole\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let n = client.read(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    })
    .await
    .unwrap();
    assert!(first_read.starts_with("HTTP/1.1 200"), "{first_read}");
    assert!(first_read.contains("data: [DONE]"), "{first_read}");
    assert!(
        first_read.ends_with("\r\n0\r\n\r\n"),
        "the end of the body came in a later write: {first_read:?}"
    );
    assert_eq!(usage_of(&proxy.only_record().await)[..3], [5, 3, 8]);
}

/// The pool behind the meter: an upstream connection goes back for the next request once the
/// metered body has ended, whether the answer came by length or in chunks, from one client
/// connection or several.
#[tokio::test]
async fn answers_one_after_another_share_one_upstream_connection() {
    let json_body = r#"{"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#;
    let events = "data: {\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1,\"total_tokens\":3}}\n\ndata: [DONE]\n\n";
    let fake = FakeUpstream::start().await;
    fake.script(
        "json",
        Scenario::response(200, "application/json", json_body),
    );
    fake.script("sse", Scenario::sse_head().chunk(events).end_chunks());
    let proxy = Proxy::start(&["--upstream", &fake.url()], "").await;
    for (i, scenario) in ["json", "sse", "json", "sse", "json", "sse"]
        .iter()
        .enumerate()
    {
        // A new client connection for every other request.
        let client = if i % 2 == 0 {
            reqwest::Client::builder().no_proxy().build().unwrap()
        } else {
            proxy.client.clone()
        };
        let stream = *scenario == "sse";
        let response = client
            .post(proxy.url("/v1/chat/completions"))
            .header("x-fake", *scenario)
            .json(&json!({"model": "gpt-4o", "stream": stream, "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        assert!(body.contains("\"hi\""), "{body}");
    }
    assert_eq!(fake.connections.load(Ordering::SeqCst), 1);
    let records = proxy.settled_records().await;
    assert_eq!(records.len(), 6);
    for record in &records {
        assert_eq!(usage_of(record)[..3], [2, 1, 3], "{record}");
    }
}
