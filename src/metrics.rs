//! The Prometheus exposition: one `Metrics` struct registered into an injected `Registry`,
//! updated when a record is written (the active gauge when a request starts and ends). Every
//! label value comes from a closed enum, the configured providers, or the bounded model set.

pub mod labels;

use std::borrow::Cow;

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::record::{Endpoint, Outcome, Record, UsageSource};
use labels::{ExtraLabel, ModelLabels};

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
    requests: IntCounterVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    active: IntGaugeVec,
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
                g
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
    /// label lookup happens once per request.
    pub fn request_started(&self, provider: &str) -> prometheus::IntGauge {
        let gauge = self.active.with_label_values(&[provider]);
        gauge.inc();
        gauge
    }

    pub fn record_dropped(&self) {
        self.records_dropped.inc();
    }

    /// Counts one finished request.
    pub fn observe(&self, record: &Record, notes: RecordNotes) {
        let provider = record.provider.as_str();
        let model = self
            .models
            .label(record.model.as_deref().or(record.response_model.as_deref()));
        let endpoint = record.endpoint.as_str();
        let stream = if record.stream { "true" } else { "false" };
        let outcome = record.outcome.unwrap_or(Outcome::ProxyError).as_str();
        let extra: Vec<&str> = self
            .extra
            .iter()
            .map(|(label, values)| label.value_of(record).map_or("", |v| values.label(Some(v))))
            .collect();
        self.requests
            .with_label_values(&labels(
                &[provider, model, endpoint, stream, outcome],
                &extra,
            ))
            .inc();
        let u = &record.usage;
        if record.usage_source != UsageSource::Missing {
            for (kind, n) in [
                ("prompt", u.prompt_tokens),
                ("completion", u.completion_tokens),
                ("cached", u.cached_tokens),
                ("reasoning", u.reasoning_tokens),
                ("cache_creation", u.cache_creation_tokens),
            ] {
                // Zero adds nothing; skipping it saves a label lookup per record.
                if n > 0 {
                    self.tokens
                        .with_label_values(&labels(&[provider, model, kind], &extra))
                        .inc_by(n);
                }
            }
        }
        if let Some(cost) = record.cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
            self.cost
                .with_label_values(&labels(&[provider, model], &extra))
                .inc_by(cost);
        }
        match record.usage_source {
            UsageSource::Missing if record.endpoint != Endpoint::Other => {
                self.usage_missing
                    .with_label_values(&[provider, model])
                    .inc();
            }
            UsageSource::Estimated | UsageSource::Partial => {
                self.usage_estimated
                    .with_label_values(&[provider, model])
                    .inc();
            }
            _ => {}
        }
        if notes.usage_inconsistent {
            self.usage_inconsistent
                .with_label_values(&[provider, model])
                .inc();
        }
        if notes.sse_parse_errors > 0 {
            self.sse_parse_errors
                .with_label_values(&[provider])
                .inc_by(notes.sse_parse_errors);
        }
        let seconds = record.duration_ms as f64 / 1000.0;
        self.duration
            .with_label_values(&[provider, model, endpoint, stream])
            .observe(seconds);
        if let Some(ttft) = record.ttft_ms {
            self.ttft
                .with_label_values(&[provider, model])
                .observe(ttft as f64 / 1000.0);
        }
        let Some(operation) = operation_name(record.endpoint) else {
            return;
        };
        let response_model = self
            .models
            .label(record.response_model.as_deref().or(record.model.as_deref()));
        let genai = [operation, provider, model, response_model];
        self.genai_duration
            .with_label_values(&genai)
            .observe(seconds);
        if record.usage_source != UsageSource::Missing {
            let [operation, provider, model, response_model] = genai;
            self.genai_tokens
                .with_label_values(&["input", operation, provider, model, response_model])
                .observe(u.prompt_tokens as f64);
            if record.endpoint != Endpoint::Embeddings {
                self.genai_tokens
                    .with_label_values(&["output", operation, provider, model, response_model])
                    .observe(u.completion_tokens as f64);
            }
        }
        if record.stream {
            if let Some(ttft) = record.ttft_ms {
                self.genai_first_chunk
                    .with_label_values(&genai)
                    .observe(ttft as f64 / 1000.0);
            }
            if let (Some(decode), true) = (record.decode_ms, record.chunks > 1) {
                let per_chunk = decode as f64 / 1000.0 / (record.chunks - 1) as f64;
                self.genai_per_chunk
                    .with_label_values(&genai)
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
    use crate::metering::usage::Usage;

    fn record(model: String) -> Record {
        Record {
            id: "r".into(),
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            finished_at: Some(time::OffsetDateTime::UNIX_EPOCH),
            provider: "p".into(),
            model: Some(model),
            response_model: None,
            endpoint: Endpoint::Chat,
            stream: true,
            outcome: Some(Outcome::Ok),
            status_code: Some(200),
            error: None,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                total_tokens: 5,
                ..Usage::default()
            },
            raw_usage: None,
            usage_source: UsageSource::Upstream,
            cost_usd: Some(0.5),
            upstream_request_id: None,
            duration_ms: 1500,
            ttft_ms: Some(200),
            decode_ms: Some(900),
            chunks: 10,
            request_bytes: 1,
            response_bytes: 1,
            tool_calls: 0,
            key_id: None,
            user: None,
            conversation_id: None,
            tags: Default::default(),
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
}
