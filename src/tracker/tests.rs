use std::time::Duration;

use super::*;
use crate::cost::PriceTable;
use crate::metrics::{Buckets, Metrics};
use crate::record::{Endpoint, Outcome};

fn tracker_with(max_records: usize) -> Tracker {
    let metrics =
        Metrics::new(prometheus::Registry::new(), 10, &Buckets::default()).expect("metrics");
    Tracker::start(TrackerParts {
        max_records,
        max_models: 10,
        max_subscribers: 1,
        metrics: Arc::new(metrics),
        prices: Arc::new(PriceTable::load(None).expect("prices")),
    })
    .expect("tracker")
}

fn tracker() -> Tracker {
    tracker_with(100)
}

fn start(id: &str) -> RequestStart {
    RequestStart {
        id: id.into(),
        started_at: time::OffsetDateTime::now_utc(),
        provider: "p".into(),
        model: Some("m".into()),
        endpoint: Endpoint::Chat,
        stream: false,
        request_bytes: 0,
        key_id: None,
        user: None,
        conversation_id: None,
        tags: Default::default(),
    }
}

fn settle(t: &Tracker) -> TrackerCounts {
    for _ in 0..1000 {
        let c = t.counts();
        if c.active == 0 && c.started == c.recorded + c.dropped {
            return c;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("never settled: {:?}", t.counts());
}

#[test]
fn every_ending_makes_exactly_one_record() {
    let t = tracker();
    InFlight::start(&t, start("a"), None, None).fail(Outcome::ClientError, 413, "too big".into());
    drop(InFlight::start(&t, start("b"), None, None));
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _in_flight = InFlight::start(&t, start("c"), None, None);
        panic!("handler bug");
    }));
    assert!(panicked.is_err());
    let counts = settle(&t);
    assert_eq!(counts.started, 3);
    assert_eq!(counts.recorded, 3);
    let outcome = |id: &str| t.get(id).expect("recorded").outcome;
    assert_eq!(outcome("a"), Some(Outcome::ClientError));
    assert_eq!(outcome("b"), Some(Outcome::Cancelled));
    assert_eq!(outcome("c"), Some(Outcome::ProxyError));
    let exposition = String::from_utf8(t.metrics().render().expect("render")).expect("utf8");
    assert!(
        exposition.contains("tokentap_active_requests{provider=\"p\"} 0"),
        "{exposition}"
    );
}

#[test]
fn a_recorder_that_went_quiet_records_what_comes_next() {
    let t = tracker();
    InFlight::start(&t, start("first"), None, None).fail(Outcome::ClientError, 400, "x".into());
    settle(&t);
    // Long past the quiet spell after which the recorder waits for a record instead of polling.
    std::thread::sleep(Duration::from_millis(200));
    InFlight::start(&t, start("after"), None, None).fail(Outcome::ClientError, 400, "x".into());
    assert_eq!(settle(&t).recorded, 2);
    assert!(t.get("after").is_some());
}

#[test]
fn the_ring_keeps_the_newest_records() {
    let t = tracker_with(3);
    for i in 0..5 {
        InFlight::start(&t, start(&format!("r{i}")), None, None).fail(
            Outcome::ClientError,
            400,
            "x".into(),
        );
    }
    settle(&t);
    let recent = t.recent();
    let ids: Vec<&str> = recent.iter().map(|r| &*r.id).collect();
    assert_eq!(ids, ["r4", "r3", "r2"]);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let t = tracker();
    // Hold the ring: the recorder blocks on its first record and the queue fills behind it.
    let ring = t.0.completed.write();
    let total = QUEUE + 50;
    // Were a submit to wait for the recorder, this loop would never end: the ring is held.
    for i in 0..total {
        InFlight::start(&t, start(&format!("q{i}")), None, None).fail(
            Outcome::ClientError,
            400,
            "x".into(),
        );
    }
    drop(ring);
    let counts = settle(&t);
    assert_eq!(counts.started, total as u64);
    assert!(counts.dropped >= 49, "{counts:?}");
    assert_eq!(counts.recorded + counts.dropped, total as u64);
    let exposition = String::from_utf8(t.metrics().render().expect("render")).expect("utf8");
    assert!(
        exposition.contains(&format!(
            "tokentap_records_dropped_total {}",
            counts.dropped
        )),
        "{exposition}"
    );
    assert!(exposition.contains("tokentap_active_requests{provider=\"p\"} 0"));
}

#[test]
fn a_record_finishes_its_duration_after_it_started() {
    let t = tracker();
    let in_flight = InFlight::start(&t, start("timed"), None, None);
    std::thread::sleep(Duration::from_millis(30));
    in_flight.fail(Outcome::ClientError, 400, "bad".into());
    settle(&t);
    let record = t.get("timed").expect("recorded");
    let finished = record.finished_at.expect("finished");
    let took = finished - record.started_at;
    assert!(record.duration_ms >= 30, "{}", record.duration_ms);
    // Both from the same monotonic reading: they agree to the millisecond.
    assert_eq!(
        u64::try_from(took.whole_milliseconds()).expect("not negative"),
        record.duration_ms
    );
}
