//! The series a record's label set resolved to, kept for the next record with the same set.
//! prometheus hashes the label values and takes a lock on every `with_label_values`; a record
//! touches up to a dozen series, and most records share their label set with many before them.
//! Each series is resolved the first time a record needs it, so the exposition is exactly what
//! direct lookups give: no zero-valued series appear.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use prometheus::{Counter, Histogram, IntCounter};

use super::labels::ExtraLabel;
use crate::record::{Endpoint, Outcome, Record};

/// One label set's series, each resolved on first use.
#[derive(Default)]
pub struct Series {
    pub requests: OnceLock<IntCounter>,
    /// By token type, in the order `Metrics::observe` counts them.
    pub tokens: [OnceLock<IntCounter>; 5],
    pub cost: OnceLock<Counter>,
    pub usage_missing: OnceLock<IntCounter>,
    pub usage_estimated: OnceLock<IntCounter>,
    pub usage_inconsistent: OnceLock<IntCounter>,
    pub duration: OnceLock<Histogram>,
    pub ttft: OnceLock<Histogram>,
    pub genai_duration: OnceLock<Histogram>,
    pub genai_input_tokens: OnceLock<Histogram>,
    pub genai_output_tokens: OnceLock<Histogram>,
    pub genai_first_chunk: OnceLock<Histogram>,
    pub genai_per_chunk: OnceLock<Histogram>,
}

/// A record's label set as the record states it, before names are capped: the caps map a name
/// to the same label value for the life of the process, so equal sets give equal label values.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    provider: Arc<str>,
    model: Option<Arc<str>>,
    response_model: Option<Arc<str>>,
    endpoint: Endpoint,
    stream: bool,
    outcome: Option<Outcome>,
    extra: Vec<Option<String>>,
}

impl Key {
    fn of(record: &Record, extra: &[ExtraLabel]) -> Key {
        Key {
            provider: record.provider.clone(),
            model: record.model.clone(),
            response_model: record.response_model.clone(),
            endpoint: record.endpoint,
            stream: record.stream,
            outcome: record.outcome,
            extra: extra
                .iter()
                .map(|e| e.value_of(record).map(str::to_owned))
                .collect(),
        }
    }

    /// Whether `record` has this label set, compared in place.
    fn matches(&self, record: &Record, extra: &[ExtraLabel]) -> bool {
        self.provider == record.provider
            && self.model == record.model
            && self.response_model == record.response_model
            && self.endpoint == record.endpoint
            && self.stream == record.stream
            && self.outcome == record.outcome
            && self
                .extra
                .iter()
                .zip(extra)
                .all(|(kept, e)| kept.as_deref() == e.value_of(record))
    }
}

#[derive(Default)]
pub struct SeriesCache {
    // Used by the recorder thread alone in practice; the lock is never contended.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The last label set, checked first without building a key.
    last: Option<(Key, Arc<Series>)>,
    sets: HashMap<Key, Arc<Series>, foldhash::fast::RandomState>,
}

impl SeriesCache {
    /// Distinct label sets kept before the cache starts over (model names come from clients).
    const MAX: usize = 4096;

    /// The series of `record`'s label set.
    pub fn get(&self, record: &Record, extra: &[ExtraLabel]) -> Arc<Series> {
        let mut inner = self.inner.lock();
        if let Some((key, series)) = &inner.last {
            if key.matches(record, extra) {
                return Arc::clone(series);
            }
        }
        let key = Key::of(record, extra);
        if inner.sets.len() >= Self::MAX {
            inner.sets.clear();
        }
        let series = Arc::clone(inner.sets.entry(key.clone()).or_default());
        inner.last = Some((key, Arc::clone(&series)));
        series
    }
}
