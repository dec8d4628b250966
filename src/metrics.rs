//! The Prometheus exposition: one `Metrics` struct registered into an injected `Registry`,
//! updated when a record is written (the active gauge when a request starts and ends). Every
//! label value comes from a closed enum, the configured providers, or the bounded model set.

mod active;
pub mod labels;
mod series;

use std::borrow::Cow;
use std::cell::OnceCell;
use std::sync::OnceLock;

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::record::{Endpoint, Outcome, Record, UsageSource};
use active::ActiveGauges;
use labels::{ExtraLabel, ModelLabels};
use series::SeriesCache;

/// Bucket lists, configurable under `[metrics]` in the config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// Request duration, seconds (also the GenAI operation duration and time to first chunk).
    pub duration: Vec<f64>,
    /// Time to first token, seconds.
    pub ttft: Vec<f64>,
    /// Tokens per request (the GenAI token-usage histogram).
    pub tokens: Vec<f64>,
    /// Seconds per output chunk.
    pub per_chunk: Vec<f64>,
}

impl Default for Buckets {
    fn default() -> Buckets {
        Buckets {
            // The GenAI semantic conventions' boundaries, extended past 900 s for reasoning models.
            duration: vec![
                0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
                81.92, 163.84, 327.68, 655.36, 1310.72,
            ],
            ttft: vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 300.0, 900.0,
            ],
            tokens: vec![
                1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
                4194304.0, 16777216.0, 67108864.0,
            ],
            per_chunk: vec![
                0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
            ],
        }
    }
}

/// What the recorder knows of a record beyond its fields.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecordNotes {
    pub usage_inconsistent: bool,
    pub sse_parse_errors: u64,
}

pub struct Metrics {
    registry: Registry,
    models: ModelLabels,
    /// Opted-in record fields, each with its own bounded value set.
    extra: Vec<(ExtraLabel, ModelLabels)>,
    extra_labels: Vec<ExtraLabel>,
    series: SeriesCache,
    requests: IntCounterVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    active: ActiveGauges,
    duration: HistogramVec,
    ttft: HistogramVec,
    usage_missing: IntCounterVec,
    usage_estimated: IntCounterVec,
    usage_inconsistent: IntCounterVec,
    sse_parse_errors: IntCounterVec,
    records_dropped: IntCounter,
    genai_tokens: HistogramVec,
    genai_duration: HistogramVec,
    genai_first_chunk: HistogramVec,
    genai_per_chunk: HistogramVec,
}

const GENAI: &[&str] = &[
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
];

impl Metrics {
    /// Creates every metric and registers it (with process metrics and build info) in `registry`.
    pub fn new(
        registry: Registry,
        max_models: usize,
        buckets: &Buckets,
    ) -> Result<Metrics, prometheus::Error> {
        Metrics::with_labels(registry, max_models, buckets, &[], 0)
    }

    /// `new`, with record fields the operator opted in as labels of the request, token and
    /// cost counters, each capped at `max_label_values` values (the rest report as `other`).
    pub fn with_labels(
        registry: Registry,
        max_models: usize,
        buckets: &Buckets,
        extra: &[ExtraLabel],
        max_label_values: usize,
    ) -> Result<Metrics, prometheus::Error> {
        let with_extra = |base: &[&'static str]| -> Vec<&'static str> {
            base.iter()
                .copied()
                .chain(extra.iter().map(|e| e.name()))
                .collect()
        };
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram = |name: &str,
                         help: &str,
                         labels: &[&str],
                         b: &[f64]|
         -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(b.to_vec()), labels)?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let genai_tokens_labels: Vec<&str> = std::iter::once("gen_ai_token_type")
            .chain(GENAI.iter().copied())
            .collect();
        let metrics = Metrics {
            models: ModelLabels::new(max_models),
            extra: extra
                .iter()
                .map(|e| (*e, ModelLabels::new(max_label_values)))
                .collect(),
            extra_labels: extra.to_vec(),
            series: SeriesCache::default(),
            requests: counter(
                "tokentap_requests_total",
                "Requests that ended, by how they ended.",
                &with_extra(&["provider", "model", "endpoint", "stream", "outcome"]),
            )?,
            tokens: counter(
                "tokentap_tokens_total",
                "Tokens used, by type (prompt includes cached and cache_creation; completion includes reasoning).",
                &with_extra(&["provider", "model", "type"]),
            )?,
            cost: {
                let c = CounterVec::new(
                    Opts::new(
                        "tokentap_cost_usd_total",
                        "Cost of requests, in US dollars.",
                    ),
                    &with_extra(&["provider", "model"]),
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            active: {
                let g = IntGaugeVec::new(
                    Opts::new("tokentap_active_requests", "Requests in flight."),
                    &["provider"],
                )?;
                registry.register(Box::new(g.clone()))?;
                ActiveGauges::new(g)
            },
            duration: histogram(
                "tokentap_request_duration_seconds",
                "Whole request duration, in seconds.",
                &["provider", "model", "endpoint", "stream"],
                &buckets.duration,
            )?,
            ttft: histogram(
                "tokentap_time_to_first_token_seconds",
                "From the request sent upstream to the first content, in seconds.",
                &["provider", "model"],
                &buckets.ttft,
            )?,
            usage_missing: counter(
                "tokentap_usage_missing_total",
                "Requests whose usage could not be counted at all.",
                &["provider", "model"],
            )?,
            usage_estimated: counter(
                "tokentap_usage_estimated_total",
                "Requests whose usage was counted locally (wholly or in part) because the provider gave none.",
                &["provider", "model"],
            )?,
            usage_inconsistent: counter(
                "tokentap_usage_inconsistent_total",
                "Requests whose usage parts do not add up to the provider's total.",
                &["provider", "model"],
            )?,
            sse_parse_errors: counter(
                "tokentap_sse_parse_errors_total",
                "Events of a response the meter could not parse.",
                &["provider"],
            )?,
            records_dropped: {
                let c = IntCounter::new(
                    "tokentap_records_dropped_total",
                    "Records lost because the recorder queue was full.",
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            genai_tokens: histogram(
                "gen_ai_client_token_usage",
                "Measures number of input and output tokens used (OpenTelemetry GenAI).",
                &genai_tokens_labels,
                &buckets.tokens,
            )?,
            genai_duration: histogram(
                "gen_ai_client_operation_duration_seconds",
                "GenAI operation duration, in seconds (OpenTelemetry GenAI).",
                GENAI,
                &buckets.duration,
            )?,
            genai_first_chunk: histogram(
                "gen_ai_client_operation_time_to_first_chunk_seconds",
                "Time to receive the first chunk of a streamed answer, in seconds (OpenTelemetry GenAI).",
                GENAI,
                &buckets.duration,
            )?,
            genai_per_chunk: histogram(
                "gen_ai_client_operation_time_per_output_chunk_seconds",
                "Time between output chunks of a streamed answer, in seconds (OpenTelemetry GenAI).",
                GENAI,
                &buckets.per_chunk,
            )?,
            registry,
        };
        let build = IntGaugeVec::new(
            Opts::new("tokentap_build_info", "tokentap's version; always 1."),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics.registry.register(Box::new(build))?;
        #[cfg(target_os = "linux")]
        metrics.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(metrics)
    }

    /// Counts a request as active; the returned gauge is decremented when it ends, so the
    /// gauge is found once per request (see `active`).
    pub fn request_started(&self, provider: &str) -> prometheus::IntGauge {
        let gauge = self.active.of(provider);
        gauge.inc();
        gauge
    }

    pub fn record_dropped(&self) {
        self.records_dropped.inc();
    }

    /// The label values of a record's series.
    fn names<'r>(&self, record: &'r Record) -> Names<'r> {
        Names {
            provider: &record.provider,
            model: self
                .models
                .label(record.model.as_deref().or(record.response_model.as_deref())),
            response_model: self
                .models
                .label(record.response_model.as_deref().or(record.model.as_deref())),
            endpoint: record.endpoint.as_str(),
            stream: if record.stream { "true" } else { "false" },
            outcome: record.outcome.unwrap_or(Outcome::ProxyError).as_str(),
            extra: self
                .extra
                .iter()
                .map(|(label, values)| label.value_of(record).map_or("", |v| values.label(Some(v))))
                .collect(),
        }
    }

    /// Counts one finished request. Series are looked up in prometheus only the first time a
    /// label set needs them (`series.rs`).
    pub fn observe(&self, record: &Record, notes: RecordNotes) {
        let series = self.series.get(record, &self.extra_labels);
        let names = OnceCell::new();
        let names = || names.get_or_init(|| self.names(record));
        series
            .requests
            .get_or_init(|| {
                let n = names();
                let base = [n.provider, n.model, n.endpoint, n.stream, n.outcome];
                self.requests.with_label_values(&labels(&base, &n.extra))
            })
            .inc();
        let u = &record.usage;
        if record.usage_source != UsageSource::Missing {
            let counts = [
                ("prompt", u.prompt_tokens),
                ("completion", u.completion_tokens),
                ("cached", u.cached_tokens),
                ("reasoning", u.reasoning_tokens),
                ("cache_creation", u.cache_creation_tokens),
            ];
            for ((kind, n), counter) in counts.into_iter().zip(&series.tokens) {
                // Zero adds nothing, and creates no series.
                if n > 0 {
                    counter
                        .get_or_init(|| {
                            let names = names();
                            let base = [names.provider, names.model, kind];
                            self.tokens.with_label_values(&labels(&base, &names.extra))
                        })
                        .inc_by(n);
                }
            }
        }
        if let Some(cost) = record.cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
            series
                .cost
                .get_or_init(|| {
                    let n = names();
                    self.cost
                        .with_label_values(&labels(&[n.provider, n.model], &n.extra))
                })
                .inc_by(cost);
        }
        let by_model = |slot: &OnceLock<IntCounter>, vec: &IntCounterVec| {
            slot.get_or_init(|| {
                let n = names();
                vec.with_label_values(&[n.provider, n.model])
            })
            .inc();
        };
        match record.usage_source {
            UsageSource::Missing if record.endpoint != Endpoint::Other => {
                by_model(&series.usage_missing, &self.usage_missing);
            }
            UsageSource::Estimated | UsageSource::Partial => {
                by_model(&series.usage_estimated, &self.usage_estimated);
            }
            _ => {}
        }
        if notes.usage_inconsistent {
            by_model(&series.usage_inconsistent, &self.usage_inconsistent);
        }
        if notes.sse_parse_errors > 0 {
            self.sse_parse_errors
                .with_label_values(&[&*record.provider])
                .inc_by(notes.sse_parse_errors);
        }
        let seconds = record.duration_ms as f64 / 1000.0;
        series
            .duration
            .get_or_init(|| {
                let n = names();
                self.duration
                    .with_label_values(&[n.provider, n.model, n.endpoint, n.stream])
            })
            .observe(seconds);
        if let Some(ttft) = record.ttft_ms {
            series
                .ttft
                .get_or_init(|| {
                    let n = names();
                    self.ttft.with_label_values(&[n.provider, n.model])
                })
                .observe(ttft as f64 / 1000.0);
        }
        let Some(operation) = operation_name(record.endpoint) else {
            return;
        };
        let genai = |vec: &HistogramVec, token_type: Option<&str>| -> Histogram {
            let n = names();
            match token_type {
                Some(t) => {
                    vec.with_label_values(&[t, operation, n.provider, n.model, n.response_model])
                }
                None => vec.with_label_values(&[operation, n.provider, n.model, n.response_model]),
            }
        };
        series
            .genai_duration
            .get_or_init(|| genai(&self.genai_duration, None))
            .observe(seconds);
        if record.usage_source != UsageSource::Missing {
            series
                .genai_input_tokens
                .get_or_init(|| genai(&self.genai_tokens, Some("input")))
                .observe(u.prompt_tokens as f64);
            if record.endpoint != Endpoint::Embeddings {
                series
                    .genai_output_tokens
                    .get_or_init(|| genai(&self.genai_tokens, Some("output")))
                    .observe(u.completion_tokens as f64);
            }
        }
        if record.stream {
            if let Some(ttft) = record.ttft_ms {
                series
                    .genai_first_chunk
                    .get_or_init(|| genai(&self.genai_first_chunk, None))
                    .observe(ttft as f64 / 1000.0);
            }
            if let (Some(decode), true) = (record.decode_ms, record.chunks > 1) {
                let per_chunk = decode as f64 / 1000.0 / (record.chunks - 1) as f64;
                series
                    .genai_per_chunk
                    .get_or_init(|| genai(&self.genai_per_chunk, None))
                    .observe(per_chunk);
            }
        }
    }

    /// The text exposition of everything registered.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(16 << 10);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// A record's label values, computed only when a series must be looked up.
struct Names<'r> {
    provider: &'r str,
    model: &'r str,
    response_model: &'r str,
    endpoint: &'static str,
    stream: &'static str,
    outcome: &'static str,
    extra: Vec<&'r str>,
}

/// Base label values followed by the opted-in ones; without any, the base values themselves.
fn labels<'v>(base: &'v [&'v str], extra: &[&'v str]) -> Cow<'v, [&'v str]> {
    if extra.is_empty() {
        Cow::Borrowed(base)
    } else {
        Cow::Owned(base.iter().chain(extra).copied().collect())
    }
}

/// The GenAI convention's `gen_ai.operation.name` for an endpoint.
fn operation_name(endpoint: Endpoint) -> Option<&'static str> {
    match endpoint {
        Endpoint::Chat | Endpoint::Messages | Endpoint::Responses => Some("chat"),
        Endpoint::Completions => Some("text_completion"),
        Endpoint::Embeddings => Some("embeddings"),
        Endpoint::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(model: String) -> Record {
        Record {
            model: Some(model.into()),
            ..Record::sample()
        }
    }

    #[test]
    fn ten_thousand_client_models_stay_under_the_cap() {
        let registry = Registry::new();
        let metrics = Metrics::new(registry.clone(), 200, &Buckets::default()).expect("metrics");
        for i in 0..10_000 {
            metrics.observe(&record(format!("model-{i}")), RecordNotes::default());
        }
        for family in registry.gather() {
            if family.name() == "tokentap_requests_total" {
                // 200 models plus `other`.
                assert_eq!(family.get_metric().len(), 201);
            }
        }
        let text = String::from_utf8(metrics.render().expect("render")).expect("utf8");
        assert!(text.contains("model=\"other\""));
        assert!(text.contains(
            "tokentap_tokens_total{model=\"other\",provider=\"p\",type=\"prompt\"} 29400"
        ));
        assert!(text.contains("tokentap_cost_usd_total{model=\"other\",provider=\"p\"} 4900"));
        // 900 ms over 9 gaps between 10 chunks: 0.1 s per chunk.
        assert!(text.contains("gen_ai_client_operation_time_per_output_chunk_seconds_sum{gen_ai_operation_name=\"chat\""));
    }

    /// The exposition of tokentap's own families (process metrics change between calls).
    fn own_families(metrics: &Metrics) -> String {
        let families: Vec<_> = metrics
            .registry
            .gather()
            .into_iter()
            .filter(|f| f.name().starts_with("tokentap_") || f.name().starts_with("gen_ai_"))
            .collect();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("encode");
        String::from_utf8(out).expect("utf8")
    }

    /// Records whose label sets differ in one field at a time, in an order where each record
    /// follows one that differs from it in a single field (the cache's last-set check sees
    /// every near miss). The request and GenAI duration counts per label set must be what
    /// counting the records gives, and series appear only where a count was added.
    #[test]
    fn cached_series_count_every_label_set_apart() {
        let mut records = vec![record("a".to_owned())];
        type Change = dyn Fn(&mut Record, usize);
        let variants: [&Change; 6] = [
            &|r, i| r.model = Some(["a", "b", "c"][i % 3].into()),
            &|r, i| r.response_model = [None, Some(std::sync::Arc::from("r"))][i % 2].clone(),
            &|r, i| r.outcome = Some([Outcome::Ok, Outcome::UpstreamError][i % 2]),
            &|r, i| r.stream = i % 2 == 0,
            &|r, i| r.key_id = [None, Some("k1".into())][i % 2].clone(),
            &|r, i| r.endpoint = [Endpoint::Chat, Endpoint::Completions][i % 2],
        ];
        // Each pass changes one field of every record so far, walking back and forth.
        for (field, change) in variants.iter().enumerate() {
            let values = if field == 0 { 3 } else { 2 };
            let mut next = Vec::new();
            for (n, r) in records.iter().enumerate() {
                let mut order: Vec<usize> = (0..values).collect();
                if n % 2 == 1 {
                    order.reverse();
                }
                for v in order {
                    let mut changed = r.clone();
                    change(&mut changed, v);
                    next.push(changed);
                }
            }
            records = next;
        }
        assert_eq!(records.len(), 3 * 2 * 2 * 2 * 2 * 2);
        let metrics = Metrics::with_labels(
            Registry::new(),
            100,
            &Buckets::default(),
            &[ExtraLabel::KeyId],
            10,
        )
        .expect("metrics");
        let mut requests = std::collections::HashMap::new();
        let mut genai = std::collections::HashMap::new();
        for (i, r) in records.iter().cycle().take(records.len() * 3).enumerate() {
            // Some records twice in a row, so the last-set path also hits.
            let times = if i % 5 == 0 { 2 } else { 1 };
            for _ in 0..times {
                metrics.observe(r, RecordNotes::default());
                let model = r.model.as_deref().unwrap_or("unknown");
                *requests
                    .entry(format!(
                        "endpoint=\"{}\",key_id=\"{}\",model=\"{model}\",outcome=\"{}\",provider=\"p\",stream=\"{}\"",
                        r.endpoint.as_str(),
                        r.key_id.as_deref().unwrap_or(""),
                        r.outcome.map_or("", |o| o.as_str()),
                        r.stream
                    ))
                    .or_insert(0u64) += 1;
                let operation = operation_name(r.endpoint).unwrap_or_default();
                let response = r.response_model.as_deref().unwrap_or(model);
                *genai
                    .entry(format!(
                        "gen_ai_operation_name=\"{operation}\",gen_ai_provider_name=\"p\",gen_ai_request_model=\"{model}\",gen_ai_response_model=\"{response}\""
                    ))
                    .or_insert(0u64) += 1;
            }
        }
        let text = own_families(&metrics);
        let read = |family: &str| -> std::collections::HashMap<String, u64> {
            text.lines()
                .filter_map(|line| line.strip_prefix(family)?.strip_prefix('{'))
                .map(|rest| {
                    let (labels, value) = rest.split_once("} ").expect("a sample");
                    (labels.to_owned(), value.parse().expect("a count"))
                })
                .collect()
        };
        assert_eq!(read("tokentap_requests_total"), requests);
        assert_eq!(
            read("gen_ai_client_operation_duration_seconds_count"),
            genai
        );
        // No reasoning tokens were counted, so no reasoning series exists.
        assert!(!text.contains("type=\"reasoning\""), "{text}");
    }
}
