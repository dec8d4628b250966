//! The recorder thread: turns each finished request into its record, off the request path.
//! Normalising usage and counting tokens with a tokenizer happen here.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::in_flight::{Active, BodyEnd, Ending, millis};
use super::{Inner, Tracker};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;

use crate::cost::{Price, PriceTable};
use crate::metering::estimate;
use crate::metering::measurement::{Dialect, Measurement};
use crate::metering::usage::{
    Usage, UsageError, UsageFamily, compact, normalize_counts, normalize_text,
};
use crate::metrics::RecordNotes;
use crate::record::{Outcome, Record, UsageSource};

pub(crate) struct Finished {
    pub(super) active: Arc<Active>,
    pub(super) ending: Ending,
    pub(super) status: Option<u16>,
    pub(super) upstream_request_id: Option<String>,
    pub(super) measurement: Option<Measurement>,
    pub(super) response_bytes: u64,
    pub(super) sent_at: Instant,
    pub(super) ended_at: Instant,
    pub(super) finished_at: OffsetDateTime,
    pub(super) request_body: Option<Bytes>,
    pub(super) dialect: Option<Dialect>,
}

/// Pause between batches while records keep coming. Each wake-up costs the thread about 11 µs
/// besides its records (the switch, and its maps brought back into the cache): at 20,000
/// requests a second, 1 ms pauses made the recorder 1.45 µs of CPU a request and 5 ms pauses
/// 1.05. A record shows up at most this late, which no scrape or feed can tell.
const BUSY_PAUSE: Duration = Duration::from_millis(5);
/// Wake-ups closer together than this mean records are coming often: the thread then takes
/// them in batches instead of waking for each.
const QUIET: Duration = Duration::from_millis(20);

fn record(tracker: &Tracker, finished: Box<Finished>, prices: &mut PriceCache) {
    let seq = finished.active.seq;
    let (mut record, notes) = build_record(finished);
    // Still alone: `make_mut` below clones nothing.
    let cost = prices.cost(tracker.prices(), &record);
    Arc::make_mut(&mut record).cost_usd = cost;
    log_record(&record);
    tracker.store(record, notes, seq);
}

/// Model name → price, so the price table's globs run once per model, not once per record.
#[derive(Default)]
struct PriceCache(HashMap<String, Option<Price>, foldhash::fast::RandomState>);

impl PriceCache {
    /// Distinct models remembered before the cache starts over (client-chosen names).
    const MAX: usize = 4096;

    /// The record's cost, when its usage is known and its model has a price.
    fn cost(&mut self, table: &PriceTable, r: &Record) -> Option<f64> {
        if r.usage_source == UsageSource::Missing {
            return None;
        }
        let price = [r.response_model.as_deref(), r.model.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|model| self.lookup(table, model))?;
        Some(price.cost(&r.usage))
    }

    fn lookup(&mut self, table: &PriceTable, model: &str) -> Option<Price> {
        if let Some(known) = self.0.get(model) {
            return *known;
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let price = table.price(model);
        self.0.insert(model.to_owned(), price);
        price
    }
}

pub(super) fn spawn(
    tracker: Weak<Inner>,
    mut queue: tokio::sync::mpsc::Receiver<Box<Finished>>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("tokentap-recorder".into())
        .spawn(move || {
            let mut prices = PriceCache::default();
            // Writes a record; false once the tracker is gone.
            let mut write = |finished| match tracker.upgrade() {
                Some(inner) => {
                    record(&Tracker(inner), finished, &mut prices);
                    true
                }
                None => false,
            };
            let mut woken_at: Option<std::time::Instant> = None;
            loop {
                // Quiet: the next record wakes this thread.
                let Some(finished) = queue.blocking_recv() else {
                    return;
                };
                let now = std::time::Instant::now();
                let busy = woken_at.is_some_and(|at| now.duration_since(at) < QUIET);
                woken_at = Some(now);
                if !write(finished) {
                    return;
                }
                // Then take what is queued, a pause apart, for as long as records keep coming:
                // blocking in recv() while they do would make every request wake this thread, a
                // context switch per request on a busy proxy. Records show up at most one pause
                // late. Woken soon after the last wake, the thread pauses first (the next
                // records are on their way); woken after a quiet spell, it looks at once and
                // blocks again, so a lone record (a slow stream's) costs one wake-up.
                if busy {
                    std::thread::sleep(BUSY_PAUSE);
                }
                loop {
                    let mut taken = 0;
                    loop {
                        match queue.try_recv() {
                            Ok(finished) => {
                                if !write(finished) {
                                    return;
                                }
                                taken += 1;
                            }
                            Err(TryRecvError::Empty) => break,
                            // Every sender (held by the tracker) is gone.
                            Err(TryRecvError::Disconnected) => return,
                        }
                    }
                    if taken == 0 {
                        break;
                    }
                    std::thread::sleep(BUSY_PAUSE);
                }
            }
        })
        .map(|_| ())
}

/// Builds the record of a finished request, in the allocation it is kept in: a `Record` is
/// 432 bytes, and built on the stack it was copied five times on its way into its `Arc`
/// (about 380 instructions a record, callgrind).
pub(crate) fn build_record(f: Box<Finished>) -> (Arc<Record>, RecordNotes) {
    let mut notes = RecordNotes::default();
    // Its duration runs to the end of the request.
    let mut kept = Arc::new(f.active.snapshot_at(f.ended_at));
    // Alone: `make_mut` hands out the record in place, never a clone.
    let record = Arc::make_mut(&mut kept);
    record.finished_at = Some(f.finished_at);
    record.status_code = f.status;
    record.upstream_request_id = f.upstream_request_id;
    record.response_bytes = f.response_bytes;
    let (outcome, error) = outcome_of(&f.ending, f.status, f.measurement.as_ref());
    record.outcome = Some(outcome);
    record.error = error;

    let Some(mut m) = f.measurement else {
        record.usage_source = UsageSource::Missing;
        return (kept, notes);
    };
    notes.sse_parse_errors = m.parse_errors;
    record.response_model = m.response_model.take();
    record.chunks = m.chunks;
    record.tool_calls = m.tool_calls;
    record.ttft_ms = m
        .first_content_at
        .map(|at| millis(at.saturating_duration_since(f.sent_at)));
    record.decode_ms = match (m.first_content_at, m.last_content_at) {
        (Some(first), Some(last)) => Some(millis(last.saturating_duration_since(first))),
        _ => None,
    };
    let dialect = f.dialect;
    let family = match dialect {
        Some(Dialect::Messages) => UsageFamily::Anthropic,
        _ => UsageFamily::OpenAi,
    };
    let answered = f.status.is_some_and(|s| (200..300).contains(&s)) && m.error.is_none();
    // The model whose tokenizer counts locally; named only when something is counted (a
    // record with stated usage, nearly all of them, needs no copy of it).
    let tokenizer_model = |r: &Record| {
        r.response_model
            .as_deref()
            .or(r.model.as_deref())
            .unwrap_or_default()
            .to_owned()
    };
    let estimate_prompt = |model: &str| {
        dialect.and_then(|d| {
            estimate::prompt_tokens(f.request_body.as_deref().unwrap_or_default(), d, model)
        })
    };
    let stated = m.usage.as_ref().map(|raw| match &m.usage_counts {
        // Read as the answer passed: the same answer as reading the text.
        Some(counts) => normalize_counts(counts, family),
        None => normalize_text(raw, family),
    });
    record.raw_usage = m.usage.take().map(compact);
    let countable =
        answered || matches!(outcome, Outcome::Cancelled | Outcome::Timeout) && f.status.is_some();
    match stated {
        Some(Ok(n)) if n.prompt_only => {
            // Anthropic's message_start came, the final counts did not.
            let completion = estimate::text_tokens(&m.text, &tokenizer_model(record));
            record.usage = Usage {
                completion_tokens: completion,
                total_tokens: n.usage.prompt_tokens + completion,
                ..n.usage
            };
            record.usage_source = UsageSource::Partial;
        }
        Some(Ok(n)) => {
            notes.usage_inconsistent = n.inconsistent;
            record.usage = n.usage;
            record.usage_source = UsageSource::Upstream;
        }
        Some(Err(err)) if err != UsageError::Empty => {
            tracing::warn!(id = %record.id, provider = %record.provider, error = %err, "provider usage refused");
            record.usage_source = UsageSource::Missing;
        }
        // No usage, or an object that states no count: count locally what can be counted.
        _ if countable => {
            let model = tokenizer_model(record);
            match estimate_prompt(&model) {
                Some(prompt) => {
                    let completion = estimate::text_tokens(&m.text, &model);
                    record.usage = Usage {
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                        total_tokens: prompt + completion,
                        ..Usage::default()
                    };
                    record.usage_source = UsageSource::Estimated;
                }
                None => record.usage_source = UsageSource::Missing,
            }
        }
        _ => record.usage_source = UsageSource::Missing,
    }
    (kept, notes)
}

/// The one log line of a request. Never a key: records hold only fingerprints.
fn log_record(r: &Record) {
    tracing::info!(
        id = %r.id,
        provider = %r.provider,
        model = r.model.as_deref().unwrap_or("-"),
        endpoint = r.endpoint.as_str(),
        stream = r.stream,
        status = r.status_code.unwrap_or(0),
        outcome = r.outcome.map_or("-", |o| o.as_str()),
        duration_ms = r.duration_ms,
        prompt_tokens = r.usage.prompt_tokens,
        completion_tokens = r.usage.completion_tokens,
        usage_source = ?r.usage_source,
        "request"
    );
}

fn outcome_of(
    ending: &Ending,
    status: Option<u16>,
    m: Option<&Measurement>,
) -> (Outcome, Option<String>) {
    let upstream_error = m.and_then(|m| m.error.clone());
    match ending {
        Ending::Failed { outcome, error } => (*outcome, Some(error.clone())),
        Ending::Body(end) => {
            let by_status = match status {
                Some(s) if s >= 500 => Some(Outcome::UpstreamError),
                Some(s) if s >= 400 => Some(Outcome::ClientError),
                _ => None,
            };
            match end {
                BodyEnd::Complete => match (by_status, upstream_error) {
                    (Some(outcome), error) => (
                        outcome,
                        error.or_else(|| status.map(|s| format!("upstream answered {s}"))),
                    ),
                    (None, Some(error)) => (Outcome::UpstreamError, Some(error)),
                    (None, None) => (Outcome::Ok, None),
                },
                BodyEnd::UpstreamFailed(e) => (Outcome::UpstreamError, Some(e.clone())),
                BodyEnd::Timeout(e) => (Outcome::Timeout, Some(e.clone())),
                BodyEnd::ClientGone | BodyEnd::ClientGoneDrained => (
                    Outcome::Cancelled,
                    Some("client disconnected before the answer was complete".into()),
                ),
                BodyEnd::Panicked => (
                    Outcome::ProxyError,
                    Some("internal error while streaming the answer".into()),
                ),
                BodyEnd::ClientGoneDrainFailed(e) => (
                    Outcome::Cancelled,
                    Some(format!(
                        "client disconnected; draining the upstream failed: {e}"
                    )),
                ),
            }
        }
    }
}
