//! The fault suite: a byte-level fake upstream and raw clients misbehave in every way listed in
//! the reliability issue, and after each case the invariants hold: every request is exactly one
//! record, nothing stays active, totals equal the records, /metrics equals the records and
//! still passes promtool, and a canary request still works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/fake_upstream.rs"]
mod fake_upstream;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use common::*;
use fake_upstream::{FakeUpstream, Scenario, Step};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT: &str = "/v1/chat/completions";

fn event(json: &Value) -> String {
    format!("data: {json}\n\n")
}

fn content(text: &str) -> String {
    event(
        &json!({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}),
    )
}

fn usage_chunk(p: u64, c: u64) -> String {
    event(
        &json!({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}),
    )
}

/// An SSE stream of `chunks` content chunks `w0 `, `w1 `… each followed by `pause_ms`, then a
/// usage chunk of 1 prompt token and `completion` completion tokens.
fn paced_stream(chunks: usize, pause_ms: u64, completion: u64) -> Scenario {
    let mut s = Scenario::sse_head();
    for i in 0..chunks {
        s = s.chunk(content(&format!("w{i} "))).sleep_ms(pause_ms);
    }
    s.chunk(usage_chunk(1, completion)).end_chunks()
}

async fn start(fake: &FakeUpstream, extra: &[&str]) -> Proxy {
    let mut args = vec!["--upstream", fake.url().leak() as &str];
    args.extend_from_slice(extra);
    Proxy::start(&args, "").await
}

/// A fake upstream whose scenario `echo` answers `{"ok":true}`.
async fn echo_upstream() -> FakeUpstream {
    let fake = FakeUpstream::start().await;
    fake.script(
        "echo",
        Scenario::response(200, "application/json", r#"{"ok":true}"#),
    );
    fake
}

/// tokentap's own error answer: the `status`, and a body naming `code`.
fn assert_error_answer(reply: (u16, Result<Vec<u8>, String>), status: u16, code: &str) {
    assert_eq!(reply.0, status);
    let body = String::from_utf8(reply.1.unwrap()).unwrap();
    assert!(body.contains(code), "`{code}` not in {body}");
}

/// Sends a streamed chat request with scenario `name` and returns (status, body bytes or error).
async fn call(proxy: &Proxy, name: &str, body: &str) -> (u16, Result<Vec<u8>, String>) {
    let response = proxy
        .client
        .post(proxy.url(CHAT))
        .header("x-fake", name)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => return (status, Err(format!("{e}: after {} bytes", out.len()))),
        }
    }
    (status, Ok(out))
}

const STREAM_BODY: &str = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}"#;

/// The invariants every case ends with.
async fn invariants(proxy: &Proxy, fake: &FakeUpstream, expected_records: usize) -> Vec<Value> {
    let records = proxy.settled_records().await;
    assert_eq!(records.len(), expected_records, "{records:#?}");
    let counts = proxy.app.tracker().counts();
    assert_eq!((counts.active, counts.dropped), (0, 0));
    assert_eq!(counts.started, counts.recorded);
    let mut ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), records.len(), "each id once");
    // Totals equal the records.
    let totals = proxy.admin_json("/api/totals").await;
    let sum = |k: &str| {
        records
            .iter()
            .map(|r| r["usage"][k].as_u64().unwrap())
            .sum::<u64>()
    };
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(totals["total"][k].as_u64().unwrap(), sum(k), "{k}");
    }
    assert_eq!(
        totals["total"]["requests"].as_u64().unwrap(),
        records.len() as u64
    );
    // /metrics equals the records and still parses.
    let metrics = proxy.metrics_text().await;
    let mut from_metrics = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("tokentap_tokens_total{"))
    {
        let kind = line
            .split("type=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        *from_metrics.entry(kind).or_insert(0u64) +=
            line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
    }
    let counted: Vec<&Value> = records
        .iter()
        .filter(|r| r["usage_source"] != "missing")
        .collect();
    let want = |k: &str| {
        counted
            .iter()
            .map(|r| r["usage"][k].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        from_metrics.get("prompt").copied().unwrap_or(0),
        want("prompt_tokens")
    );
    assert_eq!(
        from_metrics.get("completion").copied().unwrap_or(0),
        want("completion_tokens")
    );
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("promtool (Debian's prometheus package) is needed");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    assert!(
        promtool.wait().unwrap().success(),
        "/metrics no longer parses"
    );
    // A canary request still works.
    fake.script(
        "canary",
        Scenario::response(
            200,
            "application/json",
            r#"{"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
        ),
    );
    let (status, body) = call(proxy, "canary", r#"{"model":"m"}"#).await;
    assert_eq!(status, 200);
    assert!(body.is_ok());
    let after = proxy.settled_records().await;
    assert_eq!(after.len(), expected_records + 1);
    assert_eq!(after.last().unwrap()["usage_source"], "upstream");
    records
}

#[tokio::test]
async fn upstream_resets_and_stalls() {
    let fake = FakeUpstream::start().await;
    let proxy = start(
        &fake,
        &["--first-byte-timeout", "500ms", "--idle-timeout", "500ms"],
    )
    .await;
    fake.script("reset-before-headers", Scenario::new().then(Step::Reset));
    fake.script(
        "reset-after-headers",
        Scenario::sse_head().chunk(content("Hi")).then(Step::Reset),
    );
    fake.script(
        "reset-mid-event",
        Scenario::sse_head()
            .chunk(content("Hi"))
            .chunk("data: {\"model\":\"gpt-4o\",\"cho")
            .then(Step::Reset),
    );
    fake.script("stall-before-headers", Scenario::new().then(Step::Stall));
    fake.script(
        "stall-between-chunks",
        Scenario::sse_head().chunk(content("Hi")).then(Step::Stall),
    );
    fake.script(
        "close-without-terminator",
        Scenario::sse_head().chunk(content("Hi")).then(Step::Close),
    );
    fake.script(
        "garbage",
        Scenario::new()
            .send("NOT HTTP AT ALL\r\n\r\n")
            .then(Step::Close),
    );

    let reply = call(&proxy, "reset-before-headers", STREAM_BODY).await;
    assert_error_answer(reply, 502, "upstream_");
    let (status, body) = call(&proxy, "reset-after-headers", STREAM_BODY).await;
    assert_eq!(status, 200);
    assert!(
        body.is_err(),
        "a reset upstream is a broken stream for the client too"
    );
    let (_, body) = call(&proxy, "reset-mid-event", STREAM_BODY).await;
    assert!(body.is_err());
    let reply = call(&proxy, "stall-before-headers", STREAM_BODY).await;
    assert_error_answer(reply, 504, "upstream_timeout");
    let (status, body) = call(&proxy, "stall-between-chunks", STREAM_BODY).await;
    assert_eq!(status, 200);
    assert_eq!(
        body.unwrap(),
        content("Hi").as_bytes(),
        "ends cleanly after the idle timeout"
    );
    let (_, body) = call(&proxy, "close-without-terminator", STREAM_BODY).await;
    assert!(body.is_err());
    let (status, _) = call(&proxy, "garbage", STREAM_BODY).await;
    assert_eq!(status, 502);

    let records = invariants(&proxy, &fake, 7).await;
    let outcomes: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "upstream_error",
            "upstream_error",
            "upstream_error",
            "timeout",
            "timeout",
            "upstream_error",
            "upstream_error"
        ]
    );
    for i in [1, 2, 4, 5] {
        assert_eq!(
            records[i]["usage_source"], "estimated",
            "streamed text is counted: {}",
            records[i]
        );
        assert_eq!(records[i]["usage"]["completion_tokens"], 1);
    }
    assert_eq!(records[0]["usage_source"], "missing");
}

#[tokio::test]
async fn malformed_sse_is_metered_as_far_as_it_can_be() {
    let fake = FakeUpstream::start().await;
    let proxy = start(&fake, &[]).await;
    let cases: Vec<(&str, Scenario, Option<[u64; 3]>)> = vec![
        (
            "no-blank-line-at-end",
            Scenario::sse_head()
                .chunk(content("a"))
                .chunk(usage_chunk(5, 1).trim_end())
                .end_chunks(),
            Some([5, 1, 6]),
        ),
        (
            "cr-only",
            Scenario::sse_head()
                .chunk(content("a").replace('\n', "\r"))
                .chunk(usage_chunk(6, 2).replace('\n', "\r"))
                .end_chunks(),
            Some([6, 2, 8]),
        ),
        (
            "bom",
            Scenario::sse_head()
                .chunk(format!("\u{feff}{}", usage_chunk(7, 3)))
                .end_chunks(),
            Some([7, 3, 10]),
        ),
        (
            "comments-only",
            Scenario::sse_head()
                .chunk(": keep-alive\n\n: still here\n\n")
                .end_chunks(),
            None,
        ),
        (
            "non-json-data",
            Scenario::sse_head()
                .chunk("data: hello\n\ndata: {not json\n\n")
                .chunk(usage_chunk(8, 1))
                .end_chunks(),
            Some([8, 1, 9]),
        ),
        (
            "json-not-object",
            Scenario::sse_head()
                .chunk("data: [1,2]\n\ndata: \"x\"\n\ndata: 42\n\n")
                .chunk(usage_chunk(9, 1))
                .end_chunks(),
            Some([9, 1, 10]),
        ),
        (
            "no-done",
            Scenario::sse_head()
                .chunk(content("a"))
                .chunk(usage_chunk(4, 4))
                .end_chunks(),
            Some([4, 4, 8]),
        ),
        (
            "trickle",
            {
                let mut s = Scenario::sse_head();
                for b in (content("abc") + &usage_chunk(3, 2) + "data: [DONE]\n\n").bytes() {
                    s = s.chunk([b]);
                }
                s.end_chunks()
            },
            Some([3, 2, 5]),
        ),
        (
            "big-event",
            Scenario::sse_head()
                .chunk(content(&"x".repeat(10 << 20)))
                .chunk(usage_chunk(2, 9))
                .end_chunks(),
            Some([2, 9, 11]),
        ),
    ];
    for (name, scenario, _) in &cases {
        fake.script(name, scenario.clone());
    }
    let mut sent = Vec::new();
    for (name, scenario, _) in &cases {
        let (status, body) = call(&proxy, name, STREAM_BODY).await;
        assert_eq!(status, 200, "{name}");
        let body = body.unwrap();
        // Bytes pass through unchanged: the concatenated chunk payloads.
        let expected: Vec<u8> = scenario
            .steps
            .iter()
            .skip(1)
            .filter_map(|s| match s {
                Step::Send(b) => Some(b.clone()),
                _ => None,
            })
            .flat_map(|framed| dechunk(&framed))
            .collect();
        assert_eq!(body, expected, "{name}");
        sent.push(name);
    }
    let records = invariants(&proxy, &fake, cases.len()).await;
    for ((name, _, want), record) in cases.iter().zip(&records) {
        match want {
            Some(u) => {
                assert_eq!(record["usage_source"], "upstream", "{name}");
                assert_eq!(
                    [
                        &record["usage"]["prompt_tokens"],
                        &record["usage"]["completion_tokens"],
                        &record["usage"]["total_tokens"]
                    ],
                    u.map(Value::from).each_ref(),
                    "{name}"
                );
            }
            None => assert_ne!(record["usage_source"], "upstream", "{name}"),
        }
        assert_eq!(record["outcome"], "ok", "{name}");
    }
}

/// The payload of one chunked-encoding frame.
fn dechunk(framed: &[u8]) -> Vec<u8> {
    let text = framed;
    let Some(line_end) = text.windows(2).position(|w| w == b"\r\n") else {
        return Vec::new();
    };
    let size = usize::from_str_radix(std::str::from_utf8(&text[..line_end]).unwrap(), 16).unwrap();
    text[line_end + 2..line_end + 2 + size].to_vec()
}

#[tokio::test]
async fn odd_usage_counts_and_error_answers() {
    let fake = FakeUpstream::start().await;
    let proxy = start(&fake, &[]).await;
    let whole = |usage: Value| {
        Scenario::response(200, "application/json", json!({"model": "gpt-4o", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"}}], "usage": usage}).to_string())
    };
    fake.script(
        "negative",
        whole(json!({"prompt_tokens": -5, "completion_tokens": 2})),
    );
    fake.script(
        "huge",
        whole(json!({"prompt_tokens": 1e18, "completion_tokens": 2})),
    );
    fake.script(
        "strings",
        whole(json!({"prompt_tokens": "12", "completion_tokens": "3", "total_tokens": "15"})),
    );
    fake.script("no-counts", whole(json!({})));
    fake.script(
        "error-json-429",
        Scenario::response(
            429,
            "application/json",
            r#"{"error":{"message":"slow down","type":"rate_limit"}}"#,
        ),
    );
    fake.script(
        "error-text-503",
        Scenario::response(503, "text/plain", "upstream overloaded"),
    );
    fake.script(
        "error-event-in-200",
        Scenario::sse_head()
            .chunk(content("partial"))
            .chunk("event: error\ndata: {\"error\":{\"message\":\"server had an error\"}}\n\n")
            .end_chunks(),
    );
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello there"}]}"#;
    for name in [
        "negative",
        "huge",
        "strings",
        "no-counts",
        "error-json-429",
        "error-text-503",
        "error-event-in-200",
    ] {
        let (status, answer) = call(&proxy, name, body).await;
        assert!(answer.is_ok(), "{name}");
        match name {
            "error-json-429" => assert_eq!(status, 429),
            "error-text-503" => {
                assert_eq!(status, 503);
                assert_eq!(
                    answer.unwrap(),
                    b"upstream overloaded",
                    "upstream errors pass through unchanged"
                );
            }
            _ => assert_eq!(status, 200),
        }
    }
    let r = invariants(&proxy, &fake, 7).await;
    assert_eq!(
        (&r[0]["usage_source"], &r[0]["outcome"]),
        (&json!("missing"), &json!("ok")),
        "negative counts are refused"
    );
    assert!(
        r[0]["raw_usage"].is_object(),
        "the provider's object is kept as evidence"
    );
    assert_eq!(r[1]["usage_source"], "missing", "absurd counts are refused");
    assert_eq!(
        (&r[2]["usage_source"], &r[2]["usage"]["total_tokens"]),
        (&json!("upstream"), &json!(15))
    );
    assert_eq!(
        r[3]["usage_source"], "estimated",
        "an empty usage object is no usage"
    );
    assert_eq!(
        (
            &r[4]["outcome"],
            &r[4]["status_code"],
            &r[4]["usage_source"]
        ),
        (&json!("client_error"), &json!(429), &json!("missing"))
    );
    assert_eq!(
        (&r[5]["outcome"], &r[5]["status_code"]),
        (&json!("upstream_error"), &json!(503))
    );
    assert_eq!(r[6]["outcome"], "upstream_error");
    assert_eq!(r[6]["error"], "server had an error");
    assert_eq!(r[4]["upstream_request_id"], "fake-429");
}

#[tokio::test]
async fn gzip_answers_and_a_gzip_bomb() {
    let fake = FakeUpstream::start().await;
    let proxy = start(&fake, &[]).await;
    let answer = json!({"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25}}).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(answer.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b' '; 1 << 20];
    bomb.write_all(b"{\"pad\":\"").unwrap();
    for _ in 0..300 {
        bomb.write_all(&zeros).unwrap();
    }
    let bomb = bomb.finish().unwrap();
    let with_encoding = |body: &[u8]| {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        Scenario::new().send(head).send(body)
    };
    fake.script("gzip", with_encoding(&gz));
    fake.script("bomb", with_encoding(&bomb));
    let raw_client = reqwest::Client::builder().no_proxy().build().unwrap();
    for (name, expected) in [("gzip", &gz), ("bomb", &bomb)] {
        let response = raw_client
            .post(proxy.url(CHAT))
            .header("x-fake", name)
            .header("accept-encoding", "gzip")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-encoding"], "gzip");
        assert_eq!(
            &response.bytes().await.unwrap()[..],
            &expected[..],
            "{name}: compressed bytes pass as sent"
        );
    }
    let r = invariants(&proxy, &fake, 2).await;
    assert_eq!(
        (&r[0]["usage_source"], &r[0]["usage"]["total_tokens"]),
        (&json!("upstream"), &json!(25))
    );
    assert_eq!(
        r[1]["usage_source"], "missing",
        "the bomb is not metered past its cap"
    );
    assert_eq!(r[1]["outcome"], "ok");
}

#[tokio::test]
async fn clients_that_leave_at_every_moment() {
    let fake = FakeUpstream::start().await;
    let proxy = start(&fake, &[]).await;
    fake.script("slow-headers", Scenario::new().sleep_ms(300).send("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n").then(Step::Stall));
    fake.script(
        "stalled-stream",
        Scenario::sse_head().chunk(content("one")).then(Step::Stall),
    );
    // Before the response headers.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nx-fake: slow-headers\r\nContent-Length: {}\r\n\r\n{STREAM_BODY}",
        STREAM_BODY.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);
    // While the upstream is stalled mid-stream.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nx-fake: stalled-stream\r\nContent-Length: {}\r\n\r\n{STREAM_BODY}",
        STREAM_BODY.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 256];
    let _ = stream.read(&mut first).await.unwrap();
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.open.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream connections left open after clients left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = invariants(&proxy, &fake, 2).await;
    assert_eq!(r[0]["outcome"], "cancelled");
    assert_eq!(r[1]["outcome"], "cancelled");
    assert_eq!(r[1]["usage_source"], "estimated");
}

#[tokio::test]
async fn a_slow_reader_gets_back_pressure_not_buffering() {
    let fake = FakeUpstream::start().await;
    let proxy = start(&fake, &[]).await;
    // 64 MiB of events; the client reads nothing for a while.
    let mut s = Scenario::sse_head();
    let block = content(&"y".repeat(60_000));
    for _ in 0..1100 {
        s = s.chunk(&block);
    }
    fake.script("firehose", s.chunk(usage_chunk(1, 1)).end_chunks());
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nx-fake: firehose\r\nContent-Length: {}\r\n\r\n{STREAM_BODY}",
        STREAM_BODY.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Held back by the client, the proxy holds the upstream back too: little has moved.
    let moved = proxy
        .app
        .tracker()
        .active()
        .first()
        .map_or(0, |r| r.response_bytes);
    assert!(
        moved < 16 << 20,
        "{moved} bytes were pulled from the upstream for a client that read none"
    );
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 || buf[..n].ends_with(b"0\r\n\r\n") {
            break;
        }
        total += n;
    }
    assert!(total > 60 << 20);
    let r = invariants(&proxy, &fake, 1).await;
    assert_eq!(r[0]["outcome"], "ok");
}

#[tokio::test]
async fn malformed_client_requests_get_clear_answers() {
    let fake = echo_upstream().await;
    let proxy = start(&fake, &["--max-body", "64KiB"]).await;
    let nested = "[".repeat(10_000) + &"]".repeat(10_000);
    for body in [
        "{\"model\": \"gpt-4o\", \"mess",
        "",
        &nested,
        "{\"model\":\"\u{0}\"}",
    ] {
        let (status, _) = call(&proxy, "echo", body).await;
        assert_eq!(status, 200, "forwarded as sent");
    }
    let forwarded: Vec<Vec<u8>> = fake
        .received
        .lock()
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(forwarded[2].len(), nested.len());
    // Over the limit with Expect: 100-continue: refused before the body is sent.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(format!("POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 413"));
    // 1,000 headers, and a 1 MiB header.
    let many: String = (0..1000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let huge = format!("x-huge: {}\r\n", "h".repeat(1 << 20));
    for extra in [many, huge] {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let _ = stream
            .write_all(format!("GET /v1/models HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes())
            .await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    // Bad header bytes.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header: \x01\x02\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"));
    // Pipelined requests are answered in order.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let one =
        format!("POST {CHAT} HTTP/1.1\r\nHost: x\r\nx-fake: echo\r\nContent-Length: 2\r\n\r\n{{}}");
    stream
        .write_all(format!("{one}{one}").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while answer.windows(11).filter(|w| w == b"{\"ok\":true}").count() < 2
        && tokio::time::Instant::now() < deadline
    {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        answer.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        String::from_utf8_lossy(&answer)
            .matches("HTTP/1.1 200")
            .count(),
        2
    );
    drop(stream);
    // Four forwarded, the 413, two pipelined; hyper itself answers the 431s and the 400
    // before any handler runs, so those make no record.
    invariants(&proxy, &fake, 7).await;
}

#[tokio::test]
async fn slowloris_and_slow_bodies_are_cut_while_other_traffic_flows() {
    let fake = echo_upstream().await;
    let proxy = start(
        &fake,
        &[
            "--client-header-timeout",
            "500ms",
            "--client-body-timeout",
            "500ms",
        ],
    )
    .await;
    // Headers one line at a time, never finished.
    let mut slowloris = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    slowloris
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A body that stops arriving.
    let mut slow_body = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    slow_body.write_all(format!("POST {CHAT} HTTP/1.1\r\nHost: x\r\nx-fake: echo\r\nContent-Length: 100\r\n\r\n{{\"model\":").as_bytes()).await.unwrap();
    // Meanwhile others are served.
    for _ in 0..5 {
        let (status, _) = call(&proxy, "echo", "{}").await;
        assert_eq!(status, 200);
    }
    let mut trickle = tokio::spawn(async move {
        for i in 0..100 {
            if slowloris
                .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    let closed = tokio::time::timeout(Duration::from_secs(20), &mut trickle)
        .await
        .expect("slowloris never cut")
        .unwrap();
    assert!(closed, "the header timeout closed the slow connection");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow_body.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_body_timeout"));
    let r = invariants(&proxy, &fake, 6).await;
    assert_eq!(
        r.iter().filter(|r| r["outcome"] == "client_error").count(),
        1
    );
}

#[tokio::test]
async fn connections_silent_or_stuck_in_the_h2c_preface_are_closed_at_the_header_timeout() {
    let fake = echo_upstream().await;
    let proxy = start(&fake, &["--client-header-timeout", "500ms"]).await;
    let silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut half_preface = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    for mut stream in [silent, half_preface] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
            .await
            .expect("the connection was never closed");
        // Closed with nothing sent; unread bytes make the close a reset.
        match read {
            Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
            Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
    // Served after, not while the two wait: with a 500 ms header timeout, a keep-alive
    // connection idle that long is closed too, and the final check's request would race it.
    let (status, _) = call(&proxy, "echo", "{}").await;
    assert_eq!(status, 200);
    invariants(&proxy, &fake, 1).await;
}

#[tokio::test]
async fn a_keep_alive_connection_outlives_the_header_timeout_while_busy_and_closes_when_idle() {
    let fake = FakeUpstream::start().await;
    fake.script("slow-stream", paced_stream(8, 150, 8));
    let proxy = start(&fake, &["--client-header-timeout", "300ms"]).await;
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // Two streams of 1.2 s each on one connection, four header timeouts apart.
    for _ in 0..2 {
        let request = format!(
            "POST {CHAT} HTTP/1.1\r\nHost: x\r\nx-fake: slow-stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{STREAM_BODY}",
            STREAM_BODY.len()
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.ends_with(b"0\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf))
                .await
                .expect("the stream stalled")
                .unwrap();
            assert!(
                n > 0,
                "closed mid-stream: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("w7 "), "{answer}");
    }
    // Idle now: closed at the header timeout, with nothing more sent.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut rest))
        .await
        .expect("the idle connection was never closed");
    assert_eq!(read.unwrap(), 0, "{rest:?}");
    let r = invariants(&proxy, &fake, 2).await;
    assert!(
        r.iter()
            .all(|r| r["outcome"] == "ok" && r["usage"]["completion_tokens"] == 8),
        "{r:#?}"
    );
}

#[tokio::test]
async fn the_whole_request_timeout_also_bounds_the_wait_for_headers() {
    let fake = FakeUpstream::start().await;
    fake.script("stall-before-headers", Scenario::new().then(Step::Stall));
    // The first-byte timeout alone would wait 30 s; the whole request may only take 500 ms.
    let proxy = start(
        &fake,
        &["--first-byte-timeout", "30s", "--request-timeout", "500ms"],
    )
    .await;
    let started = std::time::Instant::now();
    let reply = call(&proxy, "stall-before-headers", STREAM_BODY).await;
    assert_error_answer(reply, 504, "upstream_timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let r = invariants(&proxy, &fake, 1).await;
    assert_eq!(r[0]["outcome"], "timeout");
}

#[tokio::test]
async fn the_whole_request_timeout_ends_a_stream_that_never_goes_idle() {
    let fake = FakeUpstream::start().await;
    fake.script("endless", paced_stream(100, 50, 1));
    // Chunks every 50 ms: the idle timeout never fires, the whole-request one does.
    let proxy = start(
        &fake,
        &["--idle-timeout", "2s", "--request-timeout", "600ms"],
    )
    .await;
    let (status, body) = call(&proxy, "endless", STREAM_BODY).await;
    assert_eq!(status, 200);
    let body = body.expect("the stream ends cleanly");
    assert!(
        body.starts_with(content("w0 ").as_bytes()) && body.len() < 100 * content("w00 ").len()
    );
    let r = invariants(&proxy, &fake, 1).await;
    assert_eq!(r[0]["outcome"], "timeout");
    assert_eq!(r[0]["usage_source"], "estimated");
}
