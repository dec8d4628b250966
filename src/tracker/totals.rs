//! Running totals, kept incrementally per provider → model → streaming / non-streaming as each
//! record is written, so a totals query never scans the records.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::{Outcome, Record, UsageSource};

/// Sums over a set of records. Averages are derived when serialised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub cancelled: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub cache_creation_tokens: u64,
    pub usage_missing: u64,
    pub estimated: u64,
    pub partial: u64,
    /// The known costs, summed exactly (picodollars), and the requests without one (unpriced
    /// models).
    pub cost_picodollars: u128,
    pub unpriced: u64,
    /// Successful answers that reported zero tokens: a data-quality signal.
    pub zero_token_ok: u64,
    duration_ms_sum: u64,
    ttft_ms_sum: u64,
    ttft_count: u64,
}

impl Totals {
    pub fn add(&mut self, r: &Record) {
        self.requests += 1;
        match r.outcome {
            Some(Outcome::Ok) => self.ok += 1,
            Some(Outcome::Cancelled) => self.cancelled += 1,
            Some(
                Outcome::ClientError
                | Outcome::UpstreamError
                | Outcome::Timeout
                | Outcome::ProxyError,
            ) => self.errors += 1,
            None => {}
        }
        let u = &r.usage;
        self.prompt_tokens += u.prompt_tokens;
        self.completion_tokens += u.completion_tokens;
        self.total_tokens += u.total_tokens;
        self.cached_tokens += u.cached_tokens;
        self.reasoning_tokens += u.reasoning_tokens;
        self.cache_creation_tokens += u.cache_creation_tokens;
        match r.usage_source {
            UsageSource::Missing => self.usage_missing += 1,
            UsageSource::Estimated => self.estimated += 1,
            UsageSource::Partial => self.partial += 1,
            UsageSource::Upstream => {}
        }
        match r.cost_usd {
            Some(cost) => {
                self.cost_picodollars = self
                    .cost_picodollars
                    .saturating_add(crate::cost::picodollars(cost))
            }
            None if r.usage_source != UsageSource::Missing && u.total_tokens > 0 => {
                self.unpriced += 1
            }
            None => {}
        }
        if r.outcome == Some(Outcome::Ok)
            && u.total_tokens == 0
            && r.endpoint != crate::record::Endpoint::Other
        {
            self.zero_token_ok += 1;
        }
        self.duration_ms_sum += r.duration_ms;
        if let Some(ttft) = r.ttft_ms {
            self.ttft_ms_sum += ttft;
            self.ttft_count += 1;
        }
    }

    pub fn merge(&mut self, o: &Totals) {
        self.requests += o.requests;
        self.ok += o.ok;
        self.errors += o.errors;
        self.cancelled += o.cancelled;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.total_tokens += o.total_tokens;
        self.cached_tokens += o.cached_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.cache_creation_tokens += o.cache_creation_tokens;
        self.usage_missing += o.usage_missing;
        self.estimated += o.estimated;
        self.partial += o.partial;
        self.cost_picodollars = self.cost_picodollars.saturating_add(o.cost_picodollars);
        self.unpriced += o.unpriced;
        self.zero_token_ok += o.zero_token_ok;
        self.duration_ms_sum += o.duration_ms_sum;
        self.ttft_ms_sum += o.ttft_ms_sum;
        self.ttft_count += o.ttft_count;
    }

    pub fn avg_duration_ms(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.duration_ms_sum as f64 / self.requests as f64)
    }

    pub fn avg_ttft_ms(&self) -> Option<f64> {
        (self.ttft_count > 0).then(|| self.ttft_ms_sum as f64 / self.ttft_count as f64)
    }
}

impl Serialize for Totals {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out {
            requests: u64,
            ok: u64,
            errors: u64,
            cancelled: u64,
            prompt_tokens: u64,
            completion_tokens: u64,
            total_tokens: u64,
            cached_tokens: u64,
            reasoning_tokens: u64,
            cache_creation_tokens: u64,
            usage_missing: u64,
            estimated: u64,
            partial: u64,
            cost_usd: f64,
            unpriced: u64,
            zero_token_ok: u64,
            avg_duration_ms: Option<f64>,
            avg_ttft_ms: Option<f64>,
        }
        Out {
            requests: self.requests,
            ok: self.ok,
            errors: self.errors,
            cancelled: self.cancelled,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.total_tokens,
            cached_tokens: self.cached_tokens,
            reasoning_tokens: self.reasoning_tokens,
            cache_creation_tokens: self.cache_creation_tokens,
            usage_missing: self.usage_missing,
            estimated: self.estimated,
            partial: self.partial,
            cost_usd: crate::cost::usd(self.cost_picodollars),
            unpriced: self.unpriced,
            zero_token_ok: self.zero_token_ok,
            avg_duration_ms: self.avg_duration_ms(),
            avg_ttft_ms: self.avg_ttft_ms(),
        }
        .serialize(s)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelTotals {
    pub total: Totals,
    pub streaming: Totals,
    pub non_streaming: Totals,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProviderTotals {
    pub total: Totals,
    pub models: BTreeMap<String, ModelTotals>,
}

/// Totals for every provider and model, as served; model keys are capped like metric labels.
#[derive(Debug, Clone, Default)]
pub struct TotalsTree {
    pub total: Totals,
    pub providers: BTreeMap<String, ProviderTotals>,
}

/// The running totals as kept: the leaves alone (provider → model → streaming or not), each
/// record added to one. The sums above them are made when the totals are read, which is rare:
/// adding every record at all four levels took about 530 instructions of the recorder's 3.5k
/// a record (callgrind).
#[derive(Debug, Clone, Default)]
pub struct RunningTotals {
    providers: BTreeMap<String, BTreeMap<String, Leaves>>,
}

#[derive(Debug, Clone, Default)]
struct Leaves {
    streaming: Totals,
    non_streaming: Totals,
}

impl Leaves {
    fn add_under(models: &mut BTreeMap<String, Leaves>, r: &Record, model_key: &str) {
        if let Some(leaves) = models.get_mut(model_key) {
            return leaves.add(r);
        }
        let mut leaves = Leaves::default();
        leaves.add(r);
        models.insert(model_key.to_owned(), leaves);
    }

    fn add(&mut self, r: &Record) {
        if r.stream {
            self.streaming.add(r);
        } else {
            self.non_streaming.add(r);
        }
    }
}

impl RunningTotals {
    /// Adds a record under `model_key` (the bounded model name).
    pub fn add(&mut self, r: &Record, model_key: &str) {
        // Found, or inserted: keys are allocated once, not per record.
        if let Some(models) = self.providers.get_mut(&*r.provider) {
            return Leaves::add_under(models, r, model_key);
        }
        let mut models = BTreeMap::new();
        Leaves::add_under(&mut models, r, model_key);
        self.providers.insert(r.provider.to_string(), models);
    }

    /// The tree with its sums: each model's, each provider's and the whole.
    pub fn tree(&self) -> TotalsTree {
        let mut tree = TotalsTree::default();
        for (provider, models) in &self.providers {
            let mut kept = ProviderTotals::default();
            for (model, leaves) in models {
                let mut total = leaves.streaming.clone();
                total.merge(&leaves.non_streaming);
                kept.total.merge(&total);
                let model_totals = ModelTotals {
                    total,
                    streaming: leaves.streaming.clone(),
                    non_streaming: leaves.non_streaming.clone(),
                };
                kept.models.insert(model.clone(), model_totals);
            }
            tree.total.merge(&kept.total);
            tree.providers.insert(provider.clone(), kept);
        }
        tree
    }
}

impl TotalsTree {
    /// The part whose provider and model names match; totals are re-summed from what is kept.
    pub fn filtered(
        &self,
        provider: impl Fn(&str) -> bool,
        model: impl Fn(&str) -> bool,
    ) -> TotalsTree {
        let mut out = TotalsTree::default();
        for (name, p) in self.providers.iter().filter(|(name, _)| provider(name)) {
            let mut kept = ProviderTotals::default();
            for (m, t) in p.models.iter().filter(|(m, _)| model(m)) {
                kept.total.merge(&t.total);
                kept.models.insert(m.clone(), t.clone());
            }
            if !kept.models.is_empty() {
                out.total.merge(&kept.total);
                out.providers.insert(name.clone(), kept);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::usage::Usage;

    fn record(provider: &str, stream: bool, prompt: u64, outcome: Outcome) -> Record {
        Record {
            provider: provider.into(),
            stream,
            outcome: Some(outcome),
            usage: Usage {
                prompt_tokens: prompt,
                completion_tokens: 2,
                total_tokens: prompt + 2,
                ..Usage::default()
            },
            cost_usd: Some(0.25),
            ttft_ms: stream.then_some(10),
            ..Record::sample()
        }
    }

    /// Costs add up exactly, however small: rounded to a micro-dollar, three embeddings of six
    /// tokens at 0.02 per million showed 0, and a float sum of a thousand showed its error.
    #[test]
    fn costs_sum_exactly() {
        let mut totals = Totals::default();
        let one = Record {
            cost_usd: Some(1.2e-7),
            ..record("openai", false, 6, Outcome::Ok)
        };
        for _ in 0..3 {
            totals.add(&one);
        }
        let served = |t: &Totals| serde_json::to_value(t).expect("serialises")["cost_usd"].clone();
        assert_eq!(served(&totals), serde_json::json!(3.6e-7));
        let mut float_sum = 3.6e-7;
        for _ in 3..1000 {
            totals.add(&one);
            float_sum += 1.2e-7;
        }
        assert_ne!(float_sum, 1.2e-4, "the float sum drifts");
        assert_eq!(served(&totals), serde_json::json!(1.2e-4));
    }

    /// Every level of the served tree is the sum of the records under it, added one by one.
    #[test]
    fn the_tree_sums_each_level_from_the_leaves() {
        let records = [
            (record("openai", true, 3, Outcome::Ok), "gpt-4o"),
            (record("openai", false, 5, Outcome::Ok), "gpt-4o"),
            (
                record("openai", false, 7, Outcome::UpstreamError),
                "gpt-4o-mini",
            ),
            (record("anthropic", true, 11, Outcome::Cancelled), "claude"),
        ];
        let mut running = RunningTotals::default();
        for (r, model) in &records {
            running.add(r, model);
        }
        let tree = running.tree();
        let sum = |keep: &dyn Fn(&Record, &str) -> bool| {
            let mut t = Totals::default();
            records
                .iter()
                .filter(|(r, m)| keep(r, m))
                .for_each(|(r, _)| t.add(r));
            t
        };
        assert_eq!(tree.total, sum(&|_, _| true));
        let openai = &tree.providers["openai"];
        assert_eq!(openai.total, sum(&|r, _| &*r.provider == "openai"));
        let gpt = &openai.models["gpt-4o"];
        let in_gpt = |r: &Record, m: &str| &*r.provider == "openai" && m == "gpt-4o";
        assert_eq!(gpt.total, sum(&in_gpt));
        assert_eq!(gpt.streaming, sum(&|r, m| in_gpt(r, m) && r.stream));
        assert_eq!(gpt.non_streaming, sum(&|r, m| in_gpt(r, m) && !r.stream));
        assert_eq!(
            (
                tree.total.requests,
                tree.total.prompt_tokens,
                tree.total.errors
            ),
            (4, 26, 1)
        );
        assert_eq!(tree.providers["anthropic"].total.cancelled, 1);
        assert_eq!(openai.models["gpt-4o-mini"].streaming, Totals::default());
        // Filtering keeps the sums of what it keeps.
        let filtered = tree.filtered(|p| p == "openai", |m| m == "gpt-4o");
        assert_eq!(filtered.total, sum(&in_gpt));
    }
}
