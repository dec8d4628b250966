//! The admin API as operators use it: totals that equal the records, filters and paging, the
//! live feed seen by a real SSE client, conversations, cost, and exports a spreadsheet reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

/// After a test: nothing in flight, and every request became exactly one record.
async fn assert_nothing_lost(proxy: &Proxy) {
    let records = proxy.settled_records().await;
    let counts = proxy.admin_json("/api/counts").await;
    assert_eq!(counts["active"], 0);
    assert_eq!(counts["dropped"], 0);
    assert_eq!(counts["started"].as_u64().unwrap(), records.len() as u64);
    assert_eq!(proxy.admin_json("/api/active").await["active"], json!([]));
    let mut ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), records.len(), "every id once");
}

fn chat(model: &str, stream: bool, max: u32) -> String {
    json!({"model": model, "stream": stream, "max_tokens": max, "messages": [{"role": "user", "content": "one two three"}]}).to_string()
}

const SUMMED: &[&str] = &[
    "requests",
    "ok",
    "errors",
    "cancelled",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cache_creation_tokens",
    "usage_missing",
    "estimated",
    "partial",
];

fn sum(records: &[&Value]) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for key in SUMMED {
        let total: u64 = records
            .iter()
            .map(|r| match *key {
                "requests" => 1,
                "ok" => u64::from(r["outcome"] == "ok"),
                "cancelled" => u64::from(r["outcome"] == "cancelled"),
                "errors" => u64::from(r["outcome"] != "ok" && r["outcome"] != "cancelled"),
                "usage_missing" => u64::from(r["usage_source"] == "missing"),
                "estimated" => u64::from(r["usage_source"] == "estimated"),
                "partial" => u64::from(r["usage_source"] == "partial"),
                k => r["usage"][k].as_u64().unwrap(),
            })
            .sum();
        out.insert(*key, total);
    }
    out
}

fn of(totals: &Value) -> BTreeMap<&'static str, u64> {
    SUMMED
        .iter()
        .map(|k| (*k, totals[*k].as_u64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_equal_the_records_under_200_concurrent_mixed_requests() {
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let client = proxy.client.clone();
        let base = proxy.url("");
        tasks.push(tokio::spawn(async move {
            let model = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5"][i as usize % 3];
            let (path, body) = match i % 5 {
                0 => ("/v1/chat/completions", chat(model, true, 1 + i % 7)),
                1 => ("/v1/chat/completions", chat(model, false, 1 + i % 5)),
                2 => ("/v1/embeddings", json!({"model": "text-embedding-3-small", "input": "a b c"}).to_string()),
                3 => ("/v1/messages", json!({"model": model, "max_tokens": 3, "stream": i % 2 == 0, "messages": [{"role": "user", "content": "hi"}]}).to_string()),
                _ => ("/v1/responses", json!({"model": model, "input": "hi", "max_output_tokens": 2, "stream": true}).to_string()),
            };
            let mut req = client.post(format!("{base}{path}")).body(body);
            match i % 11 {
                3 => req = req.header("x-demo-status", "500"),
                4 => req = req.header("x-demo-abort-after", "1"),
                _ => {}
            }
            if i % 13 == 0 {
                req = req.header("x-demo-chunk-delay-ms", "200");
            }
            let response = req.send().await.unwrap();
            if i % 13 == 0 {
                // Leave after the first bytes.
                let mut body = response.bytes_stream();
                let _ = body.next().await;
            } else {
                let _ = response.bytes().await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_nothing_lost(&proxy).await;
    let records = proxy.admin_json("/api/requests?limit=10000").await;
    let records: Vec<Value> = records["requests"].as_array().unwrap().clone();
    assert_eq!(records.len(), 200);
    let totals = proxy.admin_json("/api/totals").await;
    let all: Vec<&Value> = records.iter().collect();
    assert_eq!(of(&totals["total"]), sum(&all));
    for (provider, p) in totals["providers"].as_object().unwrap() {
        for (model, m) in p["models"].as_object().unwrap() {
            let these: Vec<&Value> = records
                .iter()
                .filter(|r| r["provider"] == *provider && r["model"] == *model)
                .collect();
            assert_eq!(of(&m["total"]), sum(&these), "{provider}/{model}");
            let streamed: Vec<&Value> = these
                .iter()
                .copied()
                .filter(|r| r["stream"] == true)
                .collect();
            let whole: Vec<&Value> = these
                .iter()
                .copied()
                .filter(|r| r["stream"] == false)
                .collect();
            assert_eq!(
                of(&m["streaming"]),
                sum(&streamed),
                "{provider}/{model} streaming"
            );
            assert_eq!(
                of(&m["non_streaming"]),
                sum(&whole),
                "{provider}/{model} non-streaming"
            );
        }
    }
    assert!(totals["total"]["errors"].as_u64().unwrap() > 0);
    assert!(totals["total"]["cancelled"].as_u64().unwrap() > 0);
    assert!(totals["total"]["estimated"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn filters_wildcards_paging_time_and_bad_parameters() {
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    for (model, user) in [
        ("gpt-4o", "ann"),
        ("gpt-4o-mini", "bob"),
        ("claude-sonnet-4-5", "ann"),
        ("gpt-4o", "cy"),
    ] {
        proxy
            .post_chat()
            .header("x-tokentap-user", user)
            .body(chat(model, false, 2))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    proxy
        .post_chat()
        .header("x-demo-status", "400")
        .body(chat("gpt-4o", false, 2))
        .send()
        .await
        .unwrap();
    assert_nothing_lost(&proxy).await;
    let count = |q: &'static str| {
        let proxy = &proxy;
        async move {
            proxy.admin_json(&format!("/api/requests?{q}")).await["total"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(count("model=gpt-*").await, 4);
    assert_eq!(count("model=gpt-4o").await, 3);
    assert_eq!(count("model=*sonnet*").await, 1);
    assert_eq!(count("user=ann").await, 2);
    assert_eq!(count("outcome=client_error").await, 1);
    assert_eq!(count("provider=def*").await, 5);
    assert_eq!(count("since=1h").await, 5);
    assert_eq!(count("until=1h").await, 0);
    assert_eq!(
        count("since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z").await,
        5
    );
    let page = proxy.admin_json("/api/requests?limit=2&offset=1").await;
    let all = proxy.admin_json("/api/requests").await;
    assert_eq!(page["requests"].as_array().unwrap().len(), 2);
    assert_eq!(page["requests"][0]["id"], all["requests"][1]["id"]);
    assert_eq!(page["total"], 5);
    // Newest first.
    assert!(all["requests"][0]["started_at"].as_str() >= all["requests"][4]["started_at"].as_str());
    let one = proxy
        .admin_json(&format!(
            "/api/requests/{}",
            all["requests"][0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(one["id"], all["requests"][0]["id"]);
    assert_eq!(
        proxy
            .client
            .get(proxy.admin_url("/api/requests/req_nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let totals = proxy
        .admin_json("/api/totals?provider=default&model=gpt-*")
        .await;
    assert_eq!(totals["total"]["requests"], 4);
    assert_eq!(
        totals["providers"]["default"]["models"]
            .as_object()
            .unwrap()
            .len(),
        2
    );
    let series = proxy
        .admin_json("/api/timeseries?bucket=minute&since=1h")
        .await;
    assert_eq!(series["bucket"], "minute");
    let points = series["points"].as_array().unwrap();
    assert!(!points.is_empty());
    assert_eq!(
        points
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum::<u64>(),
        5
    );
    assert!(points[0]["start"].as_str().unwrap().ends_with(":00Z"));

    for (route, param) in [
        ("/api/requests?limit=0", "limit"),
        ("/api/requests?limit=ten", "limit"),
        ("/api/requests?offset=-3", "offset"),
        ("/api/requests?since=last-tuesday", "since"),
        ("/api/requests?until=soon", "until"),
        ("/api/requests?outcome=fine", "outcome"),
        ("/api/requests?colour=red", "colour"),
        ("/api/totals?include_active=perhaps", "include_active"),
        ("/api/totals?limit=3", "limit"),
        ("/api/timeseries?bucket=week", "bucket"),
        ("/api/export?format=xml", "format"),
    ] {
        let response = proxy
            .client
            .get(proxy.admin_url(route))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{route}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{param}`")),
            "{route}: {body}"
        );
    }
}

#[tokio::test]
async fn include_active_counts_requests_in_flight() {
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    let response = proxy
        .post_chat()
        .header("x-demo-chunk-delay-ms", "200")
        .body(chat("gpt-4o", true, 20))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    assert_eq!(
        proxy.admin_json("/api/totals").await["total"]["requests"],
        0
    );
    assert_eq!(
        proxy.admin_json("/api/totals?include_active=true").await["total"]["requests"],
        1
    );
    assert_eq!(
        proxy.admin_json("/api/active").await["active"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    drop(body);
    assert_nothing_lost(&proxy).await;
}

#[tokio::test]
async fn conversations_group_turns_in_order() {
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    for (i, conversation) in ["c-1", "c-2", "c-1", "c-1"].iter().enumerate() {
        proxy
            .post_chat()
            .header(
                if i == 3 {
                    "x-session-id"
                } else {
                    "x-conversation-id"
                },
                *conversation,
            )
            .body(chat("gpt-4o", i % 2 == 0, 2 + i as u32))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    assert_nothing_lost(&proxy).await;
    let c = proxy.admin_json("/api/conversations/c-1").await;
    assert_eq!(c["conversation_id"], "c-1");
    let turns = c["requests"].as_array().unwrap();
    let completions: Vec<u64> = turns
        .iter()
        .map(|t| t["usage"]["completion_tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(completions, [2, 4, 5], "turns in order");
    assert_eq!(c["total"]["requests"], 3);
    assert_eq!(c["total"]["completion_tokens"], 11);
    assert!(turns.iter().all(|t| t["duration_ms"].is_u64()));
    assert!(turns[0]["ttft_ms"].is_u64() && turns[0]["decode_ms"].is_u64());
    assert_eq!(
        proxy
            .client
            .get(proxy.admin_url("/api/conversations/none"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn cost_for_cached_and_reasoning_tokens_and_unknown_models() {
    let upstream = Upstream::start(handler(|req| async move {
        let body: Value = serde_json::from_slice(req.body()).unwrap_or(Value::Null);
        let usage = match body["model"].as_str() {
            Some("gpt-4o-mini") => json!({"prompt_tokens": 1149, "completion_tokens": 353, "total_tokens": 1502, "prompt_tokens_details": {"cached_tokens": 1024}}),
            Some("o3-mini") => json!({"prompt_tokens": 11, "completion_tokens": 327, "total_tokens": 338, "completion_tokens_details": {"reasoning_tokens": 320}}),
            _ => json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}),
        };
        let answer = json!({"object": "chat.completion", "model": body["model"], "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}], "usage": usage});
        full(200, "application/json", answer.to_string())
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.toml");
    std::fs::write(&prices, "[[prices]]\nmodels = [\"gpt-4o-mini*\"]\ninput = 1.0\ncached_input = 0.5\noutput = 2.0\n\n[[prices]]\nmodels = [\"o3-mini*\"]\ninput = 1.0\noutput = 4.0\nreasoning = 8.0\n").unwrap();
    let proxy = Proxy::start(
        &[
            "--upstream",
            &upstream.url(),
            "--prices",
            prices.to_str().unwrap(),
        ],
        "",
    )
    .await;
    for model in ["gpt-4o-mini", "o3-mini", "house-model-7b"] {
        proxy
            .post_chat()
            .body(json!({"model": model}).to_string())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    assert_nothing_lost(&proxy).await;
    let records = proxy.settled_records().await;
    let cost = |i: usize| records[i]["cost_usd"].as_f64();
    // 125 plain + 1024 cached prompt, 353 completion.
    assert!((cost(0).unwrap() - (125.0 * 1.0 + 1024.0 * 0.5 + 353.0 * 2.0) / 1e6).abs() < 1e-12);
    // 7 plain + 320 reasoning completion.
    assert!((cost(1).unwrap() - (11.0 * 1.0 + 7.0 * 4.0 + 320.0 * 8.0) / 1e6).abs() < 1e-12);
    assert_eq!(cost(2), None, "an unknown model is never priced at zero");
    let totals = proxy.admin_json("/api/totals").await;
    assert_eq!(totals["total"]["unpriced"], 1);
    let expected = cost(0).unwrap() + cost(1).unwrap();
    assert!((totals["total"]["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-6);
    let metrics = proxy.metrics_text().await;
    assert!(metrics.contains("tokentap_cost_usd_total{model=\"o3-mini\",provider=\"default\"}"));
}

#[tokio::test]
async fn exports_read_back_in_a_csv_reader_and_as_json_lines() {
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    proxy.post_chat()
        .header("x-tokentap-tags", "team=a\"b,env=prod")
        .body(json!({"model": "gpt-4o", "max_tokens": 3, "user": "name, with \"quotes\"\nand a newline", "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    proxy
        .client
        .post(proxy.url("/v1/embeddings"))
        .body(json!({"model": "text-embedding-3-small", "input": "x"}).to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_nothing_lost(&proxy).await;
    let response = proxy
        .client
        .get(proxy.admin_url("/api/export?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let csv = response.text().await.unwrap();
    let script =
        "import csv, sys, json\nrows = list(csv.DictReader(sys.stdin))\nprint(json.dumps(rows))";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), csv.as_bytes()).unwrap();
    let rows: Vec<Value> =
        serde_json::from_slice(&child.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["user"], "name, with \"quotes\"\nand a newline");
    assert_eq!(rows[0]["completion_tokens"], "3");
    assert_eq!(rows[1]["endpoint"], "embeddings");
    let tags: Value = serde_json::from_str(rows[0]["tags"].as_str().unwrap()).unwrap();
    assert_eq!(tags["team"], "a\"b");
    let jsonl = proxy
        .client
        .get(proxy.admin_url("/api/export?format=jsonl"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["usage"]["completion_tokens"], 3);
    let since_future = proxy
        .client
        .get(proxy.admin_url("/api/export?format=jsonl&since=2999-01-01T00:00:00Z"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(since_future.is_empty());
}

/// Reads SSE events (name, data) and comments from a live-feed response until `until` says stop.
async fn read_feed(
    response: reqwest::Response,
    mut until: impl FnMut(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !until(&events) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("feed went quiet")
            .unwrap()
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(c) = line.strip_prefix(": ") {
                    name = "comment".into();
                    data = c.to_owned();
                } else if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_owned();
                }
            }
            events.push((name, data));
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_shows_snapshot_started_progress_finished_and_pings() {
    let (proxy, _demo) =
        Proxy::with_demo(&["--sse-heartbeat", "300ms", "--admin-token", "adm"]).await;
    let unauthorised = proxy
        .client
        .get(proxy.admin_url("/api/active/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
    let feed = proxy
        .client
        .get(proxy.admin_url("/api/active/stream?token=adm"))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.headers()["content-type"], "text/event-stream");
    let client = proxy.client.clone();
    let url = proxy.url("/v1/chat/completions");
    let request = tokio::spawn(async move {
        client
            .post(url)
            .header("x-demo-chunk-delay-ms", "150")
            .body(chat("gpt-4o", true, 10))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    let events = read_feed(feed, |events| {
        events.iter().any(|e| e.0 == "finished")
            && events.iter().any(|e| e.0 == "comment" && e.1 == "ping")
    })
    .await;
    request.await.unwrap();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e.0.as_str())
        .filter(|n| *n != "comment")
        .collect();
    assert_eq!(names.first(), Some(&"snapshot"));
    assert_eq!(names.get(1), Some(&"started"));
    assert_eq!(names.last(), Some(&"finished"));
    let progress = names.iter().filter(|n| **n == "progress").count();
    // 10 chunks 150 ms apart: about 1.5 s of streaming, at most one progress per 500 ms.
    assert!((1..=5).contains(&progress), "{names:?}");
    let finished: Value =
        serde_json::from_str(&events.iter().rev().find(|e| e.0 == "finished").unwrap().1).unwrap();
    assert_eq!(finished["outcome"], "ok");
    assert_eq!(finished["usage"]["completion_tokens"], 10);
    let snapshot: Value = serde_json::from_str(&events[0].1).unwrap();
    assert!(snapshot["active"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_does_not_hold_the_proxy_back() {
    let (proxy, _demo) = Proxy::with_demo(&["--max-subscribers", "2"]).await;
    // Two subscribers that never read a byte, then a third that is refused.
    let stalled_a = proxy
        .client
        .get(proxy.admin_url("/api/active/stream"))
        .send()
        .await
        .unwrap();
    let stalled_b = proxy
        .client
        .get(proxy.admin_url("/api/active/stream"))
        .send()
        .await
        .unwrap();
    let third = proxy
        .client
        .get(proxy.admin_url("/api/active/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 503);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = proxy.client.clone();
        let url = proxy.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                client
                    .post(&url)
                    .body(chat("gpt-4o", true, 30))
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("proxy held back")
            .unwrap();
    }
    assert_nothing_lost(&proxy).await;
    assert_eq!(proxy.settled_records().await.len(), 800);
    drop((stalled_a, stalled_b));
}

#[tokio::test]
async fn named_keys_show_their_name_and_the_dashboard_is_served() {
    let (upstream_demo, _demo) = Proxy::with_demo(&[]).await;
    drop(upstream_demo);
    let upstream = Upstream::start(handler(|_req| async {
        full(200, "application/json", "{}")
    }))
    .await;
    let toml = format!(
        "upstream = \"{}\"\n[[keys]]\nname = \"search-team\"\nenv = \"TEST_PROVIDER_KEY\"\n",
        upstream.url()
    );
    let proxy = Proxy::start(&["--admin-token", "adm"], &toml).await;
    for key in ["sk-provider-secret", "sk-someone-else"] {
        proxy
            .post_chat()
            .bearer_auth(key)
            .body("{}")
            .send()
            .await
            .unwrap();
    }
    let records = proxy.settled_records().await;
    assert_eq!(records[0]["key_id"], "search-team");
    assert!(records[1]["key_id"].as_str().unwrap().starts_with("key_"));
    let page = proxy
        .client
        .get(proxy.admin_url("/"))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("/stream"));
    assert_eq!(
        proxy
            .client
            .get(proxy.admin_url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        proxy
            .client
            .get(proxy.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn active_requests_show_their_time_to_first_token_while_streaming() {
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    // Without include_usage, so tokentap adds it and strips its chunk: the stripping path.
    let response = proxy
        .post_chat()
        .header("x-demo-chunk-delay-ms", "100")
        .body(chat("gpt-4o", true, 30))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    body.next().await.unwrap().unwrap();
    let active = proxy.admin_json("/api/active").await;
    let entry = &active["active"][0];
    assert!(entry["ttft_ms"].is_u64(), "{entry}");
    assert!(entry["chunks"].as_u64().unwrap() >= 1);
    drop(body);
    assert_nothing_lost(&proxy).await;
}
