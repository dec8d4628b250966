//! The tracker's cost on a request's path: start (active map, gauge), ten progress updates,
//! and the hand-off of the finished request to the recorder, from 2 threads at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tokentap::cost::PriceTable;
use tokentap::metrics::{Buckets, Metrics};
use tokentap::record::Endpoint;
use tokentap::tracker::{BodyEnd, InFlight, RequestStart, Tracker, TrackerParts};

fn tracker() -> Tracker {
    let metrics = Metrics::new(prometheus::Registry::new(), 200, &Buckets::default()).unwrap();
    Tracker::start(TrackerParts {
        max_records: 10_000,
        max_models: 200,
        max_subscribers: 8,
        metrics: Arc::new(metrics),
        prices: Arc::new(PriceTable::load(None).unwrap()),
    })
    .unwrap()
}

fn start(i: u64) -> RequestStart {
    RequestStart {
        id: format!("req_{i:016x}").as_str().into(),
        started_at: time::OffsetDateTime::now_utc(),
        provider: "openai".into(),
        model: Some("gpt-4o-mini".into()),
        endpoint: Endpoint::Chat,
        stream: true,
        request_bytes: 200,
        key_id: None,
        user: None,
        conversation_id: None,
        tags: Default::default(),
    }
}

/// One request's tracker work: start, 10 progress updates, finish.
fn one_request(tracker: &Tracker, i: u64) {
    let in_flight = InFlight::start(tracker, start(i), None, None);
    for _ in 0..10 {
        in_flight.progress(180);
    }
    in_flight.finish(BodyEnd::Complete, None, 1800, tokio::time::Instant::now());
}

fn bench(c: &mut Criterion) {
    let tracker = tracker();
    c.bench_function("tracker/request_2_threads", |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(2);
            let began = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2u64 {
                    let tracker = tracker.clone();
                    s.spawn(move || {
                        for i in 0..per_thread {
                            one_request(&tracker, t << 40 | i);
                        }
                    });
                }
            });
            // Wall time of 2 threads doing iters requests together: time per request overall.
            let elapsed = began.elapsed();
            // Let the recorder catch up between samples so the queue never fills.
            while tracker.counts().active > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            elapsed
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
