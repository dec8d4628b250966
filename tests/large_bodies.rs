//! 100 MiB up and 100 MiB down through the proxy, streamed: the process's peak memory must not
//! grow with the body. Alone in its own test binary so the peak is this test's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

const MIB: usize = 1 << 20;
const TOTAL: usize = 100 * MIB;

/// Peak resident memory of this process so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_mebibytes_stream_both_ways_in_bounded_memory() {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let block = Bytes::from(vec![b'x'; MIB]);
    // The upstream counts uploads frame by frame and streams downloads from one shared block.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (counter, block) = (counter.clone(), block.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (counter, block) = (counter.clone(), block.clone());
                        async move {
                            let mut body = req.into_body();
                            while let Some(frame) = body.frame().await {
                                if let Ok(data) = frame.unwrap().into_data() {
                                    counter.fetch_add(data.len() as u64, Ordering::SeqCst);
                                }
                            }
                            let chunks = futures::stream::iter(
                                (0..TOTAL / MIB)
                                    .map(move |_| Ok::<_, Infallible>(Frame::data(block.clone()))),
                            );
                            Ok::<_, Infallible>(hyper::Response::new(StreamBody::new(chunks)))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let proxy = Proxy::start(&["--upstream", &upstream, "--max-body", "200MiB"], "").await;
    let before = peak_rss();
    let upload = futures::stream::iter(
        (0..TOTAL / MIB).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'u'; MIB]))),
    );
    let response = proxy
        .client
        .post(proxy.url("/v1/files"))
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut downloaded = 0usize;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        downloaded += chunk.unwrap().len();
    }
    assert_eq!(received.load(Ordering::SeqCst), TOTAL as u64);
    assert_eq!(downloaded, TOTAL);
    let grown = peak_rss().saturating_sub(before);
    // 200 MiB moved; buffering either body whole would show as 100 MiB or more.
    assert!(
        grown < 48 * MIB as u64,
        "peak RSS grew by {} MiB",
        grown / MIB as u64
    );
    let record = proxy.only_record().await;
    assert_eq!(record["endpoint"], "other");
    assert_eq!(record["response_bytes"], TOTAL as u64);
    assert_eq!(record["outcome"], "ok");
}
