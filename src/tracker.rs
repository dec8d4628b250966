//! The tracker: requests in flight (a sharded map, touched once at start and once at the end),
//! completed records (a bounded ring) and running totals. Finished requests are handed to a
//! recorder thread through a bounded queue that the request path never waits on; the recorder
//! does the slow part (normalising, estimating with a tokenizer, pricing) off every stream's path.

pub mod feed;
mod in_flight;
mod recorder;
mod seq_hash;
pub mod totals;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use time::OffsetDateTime;

pub use feed::{Feed, FeedEvent};
pub use in_flight::{Active, BodyEnd, InFlight, RequestStart};
pub(crate) use recorder::Finished;
use totals::RunningTotals;
pub use totals::{Totals, TotalsTree};

use crate::cost::PriceTable;
use crate::metrics::labels::ModelLabels;
use crate::metrics::{Metrics, RecordNotes};
use crate::record::Record;

/// How many finished requests may wait for the recorder before new ones are dropped (counted).
/// tokio's channel holds them in blocks of 32 made as they fill, so memory follows the backlog,
/// not this bound: std's bounded channel writes all its slots when it is made, and 65,536 of
/// them (a finished request is 320 bytes) were 21 MB of resident memory from the start, about
/// half of a fresh process's.
const QUEUE: usize = 65_536;

/// A cheap-to-clone handle on the shared tracker.
#[derive(Clone)]
pub struct Tracker(Arc<Inner>);

/// What the tracker is built with.
pub struct TrackerParts {
    pub max_records: usize,
    pub max_models: usize,
    pub max_subscribers: usize,
    pub metrics: Arc<Metrics>,
    pub prices: Arc<PriceTable>,
}

struct Inner {
    active: DashMap<u64, Arc<Active>, seq_hash::SeqHash>,
    // Written by the recorder thread only; readers copy out what they need. Never held across
    // an await.
    completed: RwLock<VecDeque<Arc<Record>>>,
    max_records: usize,
    /// Boxed: a `Finished` is about 400 bytes, and sent by value it was copied eight times on
    /// its way through the channel into the recorder (390 instructions a record, callgrind).
    queue: tokio::sync::mpsc::Sender<Box<Finished>>,
    next_seq: AtomicU64,
    started: AtomicU64,
    recorded: AtomicU64,
    dropped: AtomicU64,
    metrics: Arc<Metrics>,
    prices: Arc<PriceTable>,
    // Written by the recorder thread once per record; read by totals queries. No await inside.
    totals: Mutex<RunningTotals>,
    totals_models: ModelLabels,
    since: OffsetDateTime,
    feed: Feed,
}

/// Counters that prove no request was lost: `started == recorded + dropped + active`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TrackerCounts {
    pub started: u64,
    pub recorded: u64,
    pub dropped: u64,
    pub active: u64,
}

impl Tracker {
    /// Starts the tracker and its recorder thread (which ends when the last handle is dropped).
    pub fn start(parts: TrackerParts) -> std::io::Result<Tracker> {
        let TrackerParts {
            max_records,
            max_models,
            max_subscribers,
            metrics,
            prices,
        } = parts;
        let (queue, receiver) = tokio::sync::mpsc::channel(QUEUE);
        let tracker = Tracker(Arc::new(Inner {
            active: DashMap::default(),
            completed: RwLock::new(VecDeque::with_capacity(max_records.min(1 << 16))),
            max_records,
            prices,
            totals: Mutex::new(RunningTotals::default()),
            totals_models: ModelLabels::new(max_models),
            since: OffsetDateTime::now_utc(),
            feed: Feed::new(max_subscribers),
            queue,
            next_seq: AtomicU64::new(1),
            started: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            metrics,
        }));
        recorder::spawn(Arc::downgrade(&tracker.0), receiver)?;
        Ok(tracker)
    }

    pub fn counts(&self) -> TrackerCounts {
        // Read `recorded` first: a request finishing meanwhile then shows as active, not lost.
        let recorded = self.0.recorded.load(Ordering::Acquire);
        let dropped = self.0.dropped.load(Ordering::Acquire);
        let active = self.0.active.len() as u64;
        let started = self.0.started.load(Ordering::Acquire);
        TrackerCounts {
            started,
            recorded,
            dropped,
            active,
        }
    }

    /// Snapshots of the requests in flight, oldest first.
    pub fn active(&self) -> Vec<Record> {
        let mut entries: Vec<Arc<Active>> = self
            .0
            .active
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect();
        entries.sort_by_key(|a| a.seq);
        entries.iter().map(|a| a.snapshot()).collect()
    }

    /// Completed records, newest first.
    pub fn recent(&self) -> Vec<Arc<Record>> {
        self.0.completed.read().iter().rev().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Record>> {
        self.0
            .completed
            .read()
            .iter()
            .rev()
            .find(|r| &*r.id == id)
            .cloned()
    }

    fn next_seq(&self) -> u64 {
        self.0.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn feed(&self) -> &Feed {
        &self.0.feed
    }

    pub fn prices(&self) -> &PriceTable {
        &self.0.prices
    }

    /// When the totals started counting (the process start).
    pub fn since(&self) -> OffsetDateTime {
        self.0.since
    }

    /// The running totals; with `include_active`, requests in flight count as they stand.
    pub fn totals(&self, include_active: bool) -> TotalsTree {
        if !include_active {
            return self.0.totals.lock().tree();
        }
        let mut running = self.0.totals.lock().clone();
        for record in self.active() {
            let key = self.0.totals_models.label(record.model.as_deref());
            running.add(&record, key);
        }
        running.tree()
    }

    /// The live entry of a request in flight.
    pub fn active_entries(&self) -> Vec<Arc<Active>> {
        self.0
            .active
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect()
    }

    fn insert_active(&self, active: Arc<Active>) {
        if self.0.feed.watched() {
            self.0.feed.publish(FeedEvent::Started, &active.snapshot());
        }
        self.0.started.fetch_add(1, Ordering::AcqRel);
        self.0.active.insert(active.seq, active);
    }

    fn submit(&self, finished: Box<Finished>) {
        let seq = finished.active.seq;
        match self.0.queue.try_send(finished) {
            Ok(()) => {}
            Err(
                tokio::sync::mpsc::error::TrySendError::Full(_)
                | tokio::sync::mpsc::error::TrySendError::Closed(_),
            ) => {
                // Never stall a stream for bookkeeping: count the loss instead.
                if let Some((_, active)) = self.0.active.remove(&seq) {
                    active.gauge.dec();
                }
                self.0.metrics.record_dropped();
                self.0.dropped.fetch_add(1, Ordering::AcqRel);
                tracing::warn!("record queue full; a record was dropped");
            }
        }
    }

    fn store(&self, record: Arc<Record>, notes: RecordNotes, seq: u64) {
        self.0.metrics.observe(&record, notes);
        let model_key = self
            .0
            .totals_models
            .label(record.model.as_deref().or(record.response_model.as_deref()));
        self.0.totals.lock().add(&record, model_key);
        if self.0.feed.watched() {
            self.0.feed.publish(FeedEvent::Finished, &record);
        }
        {
            let mut ring = self.0.completed.write();
            if ring.len() >= self.0.max_records {
                ring.pop_front();
            }
            ring.push_back(record);
        }
        self.0.recorded.fetch_add(1, Ordering::AcqRel);
        if let Some((_, active)) = self.0.active.remove(&seq) {
            active.gauge.dec();
        }
    }
}

#[cfg(test)]
mod tests;
