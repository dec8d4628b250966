//! One request in flight: its entry in the active map, updated with per-request atomics only,
//! and the handle that turns it into exactly one record, whichever way it ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::Tracker;
use super::recorder::Finished;
use crate::metering::measurement::{Dialect, Measurement};
use crate::metering::usage::Usage;
use crate::record::{Endpoint, Outcome, Record, RequestId, UsageSource};

/// What is known of a request when it starts.
#[derive(Debug, Clone)]
pub struct RequestStart {
    /// Shared with the record (and its copies in the feed and the ring), not copied.
    pub id: RequestId,
    /// The wall clock when it started: read once with the id's timestamp.
    pub started_at: OffsetDateTime,
    pub provider: Arc<str>,
    pub model: Option<Arc<str>>,
    pub endpoint: Endpoint,
    pub stream: bool,
    pub request_bytes: u64,
    pub key_id: Option<Arc<str>>,
    pub user: Option<String>,
    pub conversation_id: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// How a response body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    Complete,
    UpstreamFailed(String),
    Timeout(String),
    /// The client left before the answer was complete; the upstream call was dropped.
    ClientGone,
    /// The client left, and the rest of the answer was read (`drain`).
    ClientGoneDrained,
    ClientGoneDrainFailed(String),
    /// tokentap itself failed (a panic) while streaming.
    Panicked,
}

/// A request as the live views see it.
pub struct Active {
    pub(super) seq: u64,
    pub(super) start: RequestStart,
    pub(super) started: Instant,
    response_bytes: AtomicU64,
    chunks: AtomicU64,
    /// Microseconds from start to the first content, plus one (0 = none yet).
    first_content_us: AtomicU64,
    /// This request's share of `tokentap_active_requests`.
    pub(super) gauge: prometheus::IntGauge,
    // Per request, set once when the response headers arrive.
    response: Mutex<Option<(u16, Option<String>)>>,
}

impl Active {
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn stream(&self) -> bool {
        self.start.stream
    }

    /// Response frames so far.
    pub fn chunks(&self) -> u64 {
        self.chunks.load(Ordering::Relaxed)
    }

    /// The record so far, its duration up to now.
    pub fn snapshot(&self) -> Record {
        self.snapshot_at(Instant::now())
    }

    /// The record so far, its duration up to `now`.
    pub fn snapshot_at(&self, now: Instant) -> Record {
        let response = self.response.lock().clone();
        let first = self.first_content_us.load(Ordering::Relaxed);
        let s = &self.start;
        Record {
            id: s.id,
            started_at: s.started_at,
            finished_at: None,
            provider: s.provider.clone(),
            model: s.model.clone(),
            response_model: None,
            endpoint: s.endpoint,
            stream: s.stream,
            outcome: None,
            status_code: response.as_ref().map(|r| r.0),
            error: None,
            usage: Usage::default(),
            raw_usage: None,
            usage_source: UsageSource::Missing,
            cost_usd: None,
            upstream_request_id: response.and_then(|r| r.1),
            duration_ms: millis(now.duration_since(self.started)),
            ttft_ms: (first > 0).then(|| (first - 1) / 1000),
            decode_ms: None,
            chunks: self.chunks.load(Ordering::Relaxed),
            request_bytes: s.request_bytes,
            response_bytes: self.response_bytes.load(Ordering::Relaxed),
            tool_calls: 0,
            key_id: s.key_id.clone(),
            user: s.user.clone(),
            conversation_id: s.conversation_id.clone(),
            tags: s.tags.clone(),
        }
    }
}

pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The request path's handle. Finishing consumes it; dropping it unfinished (the client went
/// away before any response) records the request as cancelled.
pub struct InFlight {
    tracker: Tracker,
    active: Arc<Active>,
    /// When the request went upstream (ttft counts from here).
    sent_at: Instant,
    request_body: Option<Bytes>,
    dialect: Option<Dialect>,
    finished: bool,
}

impl InFlight {
    pub fn start(
        tracker: &Tracker,
        start: RequestStart,
        request_body: Option<Bytes>,
        dialect: Option<Dialect>,
    ) -> InFlight {
        let now = Instant::now();
        let gauge = tracker.metrics().request_started(&start.provider);
        let active = Arc::new(Active {
            seq: tracker.next_seq(),
            start,
            started: now,
            response_bytes: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            first_content_us: AtomicU64::new(0),
            response: Mutex::new(None),
            gauge,
        });
        tracker.insert_active(Arc::clone(&active));
        InFlight {
            tracker: tracker.clone(),
            active,
            sent_at: now,
            request_body,
            dialect,
            finished: false,
        }
    }

    pub fn id(&self) -> &str {
        &self.active.start.id
    }

    /// The model the request named, if any.
    pub fn model(&self) -> Option<&Arc<str>> {
        self.active.start.model.as_ref()
    }

    /// When the request went upstream: when it started, as its exchange is made right after.
    pub fn sent_at(&self) -> Instant {
        self.sent_at
    }

    pub fn response_headers(&self, status: u16, upstream_request_id: Option<String>) {
        *self.active.response.lock() = Some((status, upstream_request_id));
    }

    pub fn progress(&self, bytes: u64) {
        self.active
            .response_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        self.active.chunks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn first_content(&self, at: Instant) {
        if self.active.first_content_us.load(Ordering::Relaxed) == 0 {
            let us = at.saturating_duration_since(self.sent_at).as_micros();
            let us = u64::try_from(us).unwrap_or(u64::MAX - 1) + 1;
            self.active.first_content_us.store(us, Ordering::Relaxed);
        }
    }

    /// The response body ended.
    pub fn finish(
        mut self,
        end: BodyEnd,
        measurement: Option<Measurement>,
        response_bytes: u64,
        now: Instant,
    ) {
        self.finished = true;
        let response = self.active.response.lock().clone();
        let outcome_hint = Ending::Body(end);
        self.submit(outcome_hint, response, measurement, response_bytes, now);
    }

    /// The request failed before any response: `outcome` and the error tokentap answered.
    pub fn fail(mut self, outcome: Outcome, status: u16, error: String) {
        self.finished = true;
        self.submit(
            Ending::Failed { outcome, error },
            Some((status, None)),
            None,
            0,
            Instant::now(),
        );
    }

    fn submit(
        &mut self,
        ending: Ending,
        response: Option<(u16, Option<String>)>,
        measurement: Option<Measurement>,
        response_bytes: u64,
        now: Instant,
    ) {
        let (status, upstream_request_id) = match response {
            Some((status, id)) => (Some(status), id),
            None => (None, None),
        };
        self.tracker.submit(Box::new(Finished {
            active: Arc::clone(&self.active),
            ending,
            status,
            upstream_request_id,
            measurement,
            response_bytes,
            sent_at: self.sent_at,
            ended_at: now,
            // The start's wall clock moved on by the monotonic time since: one clock read
            // fewer per request, and `finished_at - started_at` is the record's duration.
            finished_at: self.active.start.started_at
                + now.saturating_duration_since(self.active.started),
            request_body: self.request_body.take(),
            dialect: self.dialect,
        }));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.finished {
            let response = self.active.response.lock().clone();
            // Unwinding from a panic in the handler: still exactly one record, saying so.
            let ending = if std::thread::panicking() {
                Ending::Failed {
                    outcome: Outcome::ProxyError,
                    error: "internal error while handling the request".into(),
                }
            } else {
                Ending::Body(BodyEnd::ClientGone)
            };
            self.submit(ending, response, None, 0, Instant::now());
        }
    }
}

/// How the request ended, as the recorder needs it.
#[derive(Debug)]
pub(crate) enum Ending {
    Body(BodyEnd),
    Failed { outcome: Outcome, error: String },
}
