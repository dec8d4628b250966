//! Load on loopback, bounded in count and time. `TOKENTAP_LOAD=heavy` runs the heavy tier
//! (2,000 concurrent paced streams, 1,000,000 short requests, a 10-minute soak with mixed
//! endings); the default light tier is what CI runs. `scripts/load.sh` runs the heavy tier in
//! release mode. After each phase every invariant must hold and memory must stay flat.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::json;

struct Tier {
    concurrent_streams: usize,
    stream_pace_ms: u64,
    short_requests: usize,
    soak: Duration,
}

fn tier() -> (Tier, &'static str) {
    match std::env::var("TOKENTAP_LOAD").as_deref() {
        Ok("heavy") => (
            Tier {
                concurrent_streams: 2000,
                stream_pace_ms: 50,
                short_requests: 1_000_000,
                soak: Duration::from_secs(600),
            },
            "heavy",
        ),
        _ => (
            Tier {
                concurrent_streams: 500,
                stream_pace_ms: 20,
                short_requests: 5_000,
                soak: Duration::from_secs(8),
            },
            "light",
        ),
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kib * 1024
}

fn chat(stream: bool, max: u32) -> String {
    json!({"model": "gpt-4o-mini", "stream": stream, "max_tokens": max, "messages": [{"role": "user", "content": "count to ten please"}]}).to_string()
}

/// Nothing in flight, nothing lost, totals equal the records' sums.
async fn check(proxy: &Proxy, expected: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let c = proxy.app.tracker().counts();
        if c.active == 0 && c.started == c.recorded + c.dropped && c.started >= expected {
            assert_eq!(c.dropped, 0, "records dropped under load");
            assert_eq!(c.started, expected, "{c:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let totals = proxy.admin_json("/api/totals").await;
    assert_eq!(totals["total"]["requests"].as_u64().unwrap(), expected);
    let per_model: u64 = totals["providers"]["default"]["models"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["total"]["total_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(per_model, totals["total"]["total_tokens"].as_u64().unwrap());
    let metrics = proxy.metrics_text().await;
    let requests: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("tokentap_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(requests, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tier() {
    let (tier, name) = tier();
    let (proxy, _demo) = Proxy::with_demo(&["--max-records", "1000"]).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(tier.concurrent_streams)
        .build()
        .unwrap();
    let url = proxy.url("/v1/chat/completions");
    let mut sent = 0u64;

    // Phase 1: concurrent paced streams, all held open together.
    let before = rss_bytes();
    let peak = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::with_capacity(tier.concurrent_streams);
    for _ in 0..tier.concurrent_streams {
        let (client, url, pace) = (client.clone(), url.clone(), tier.stream_pace_ms.to_string());
        streams.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .header("x-demo-chunk-delay-ms", pace)
                .body(chat(true, 20))
                .send()
                .await
                .unwrap();
            let mut body = response.bytes_stream();
            let mut n = 0;
            while let Some(chunk) = body.next().await {
                n += chunk.unwrap().len();
            }
            n
        }));
    }
    let sampler = {
        let (peak, app) = (peak.clone(), proxy.app.clone());
        tokio::spawn(async move {
            for _ in 0..200 {
                if app.tracker().counts().active as usize >= 1 {
                    peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    for stream in streams {
        assert!(stream.await.unwrap() > 0);
    }
    sampler.abort();
    sent += tier.concurrent_streams as u64;
    check(&proxy, sent).await;
    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "[{name}] {} concurrent streams: RSS grew {} KiB ({} B per stream, client and upstream included)",
        tier.concurrent_streams,
        grown / 1024,
        grown / tier.concurrent_streams as u64
    );

    // Phase 2: many short requests, 64 at a time.
    let next = Arc::new(AtomicU64::new(0));
    let total = tier.short_requests as u64;
    let mut workers = Vec::new();
    for _ in 0..64 {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                client
                    .post(&url)
                    .body(chat(false, 1))
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    sent += total;
    check(&proxy, sent).await;

    // Phase 3: a soak with mixed endings; RSS must not creep.
    let started = tokio::time::Instant::now();
    let mut samples = Vec::new();
    let mut round = 0u64;
    while started.elapsed() < tier.soak {
        let mut batch = Vec::new();
        for i in 0..32u64 {
            let (client, url) = (client.clone(), url.clone());
            let kind = (round * 32 + i) % 5;
            batch.push(tokio::spawn(async move {
                let mut req = client.post(url);
                req = match kind {
                    0 => req.body(chat(true, 8)),
                    1 => req.body(chat(false, 4)),
                    2 => req.header("x-demo-status", "503").body(chat(false, 4)),
                    3 => req.header("x-demo-abort-after", "2").body(chat(true, 8)),
                    _ => req
                        .header("x-demo-chunk-delay-ms", "20")
                        .body(chat(true, 8)),
                };
                let response = req.send().await.unwrap();
                if kind == 4 {
                    let mut body = response.bytes_stream();
                    let _ = body.next().await; // leave early
                } else {
                    let _ = response.bytes().await;
                }
            }));
        }
        for task in batch {
            task.await.unwrap();
        }
        sent += 32;
        round += 1;
        if round % 10 == 0 {
            samples.push(rss_bytes());
        }
    }
    check(&proxy, sent).await;
    if samples.len() >= 4 {
        let settled = samples[samples.len() / 4];
        let last = *samples.last().unwrap();
        eprintln!(
            "[{name}] soak: {round} rounds, RSS {} -> {} KiB",
            settled / 1024,
            last / 1024
        );
        assert!(
            last < settled + (64 << 20),
            "RSS crept during the soak: {settled} -> {last}"
        );
    }
}
