//! Cost: a price table (USD per million tokens, by model glob) applied to a record's usage.
//! The built-in table is config/prices.toml; an operator's `--prices` file is tried first.

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use crate::record::Usage;

/// The shipped table, compiled in so a bare binary prices requests.
const BUILT_IN: &str = include_str!("../config/prices.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    prices: Vec<PriceEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceEntry {
    models: Vec<String>,
    input: f64,
    cached_input: Option<f64>,
    cache_write: Option<f64>,
    output: f64,
    reasoning: Option<f64>,
}

/// Prices of one model family, each in picodollars (10⁻¹² USD) per token: a price per million
/// tokens to the millionth of a dollar, held as a whole number so that a record's cost is an
/// exact sum. In floating point, 8 tokens at 0.80 and 10 at 4.00 per million came to
/// 0.000046399999999999996, which is how a record then showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
}

impl Price {
    /// The cost of `usage`, in USD. Prompt tokens are split into plain, cache-read and
    /// cache-write parts; completion tokens into plain and reasoning.
    pub fn cost(&self, u: &Usage) -> f64 {
        usd(self.cost_picodollars(u))
    }

    /// The cost of `usage` in picodollars, exactly.
    pub fn cost_picodollars(&self, u: &Usage) -> u128 {
        let cached = u.cached_tokens.min(u.prompt_tokens);
        let written = u.cache_creation_tokens.min(u.prompt_tokens - cached);
        let plain_prompt = u.prompt_tokens - cached - written;
        let reasoning = u.reasoning_tokens.min(u.completion_tokens);
        let plain_completion = u.completion_tokens - reasoning;
        // Each product fits: two u64 multiply to less than u128::MAX. Their sum saturates
        // rather than wraps for prices no one publishes (a price file may say anything).
        let at = |tokens: u64, price: u64| u128::from(tokens) * u128::from(price);
        [
            at(plain_prompt, self.input),
            at(cached, self.cached_input),
            at(written, self.cache_write),
            at(plain_completion, self.output),
            at(reasoning, self.reasoning),
        ]
        .into_iter()
        .fold(0, u128::saturating_add)
    }
}

/// Picodollars as USD: the double nearest to the exact amount, which prints as its decimal
/// digits (a double holds every whole picodollar up to 2⁵³ of them, about 9,000 USD).
pub fn usd(picodollars: u128) -> f64 {
    picodollars as f64 / PICODOLLARS_PER_USD
}

/// USD as picodollars: exact for an amount `usd` made (a record's cost) below about 2,000 USD,
/// where the double's rounding error stays under half a picodollar; rounded otherwise.
pub fn picodollars(usd: f64) -> u128 {
    if usd.is_finite() && usd > 0.0 {
        (usd * PICODOLLARS_PER_USD).round() as u128
    } else {
        0
    }
}

const PICODOLLARS_PER_USD: f64 = 1e12;

/// A price per million tokens, in USD, as picodollars per token: rounded to the millionth of
/// a dollar per million (every published price has fewer decimals).
fn per_token(per_million: f64) -> u64 {
    (per_million * 1e6).round() as u64
}

#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

pub struct PriceTable {
    entries: Vec<(Vec<GlobMatcher>, Price)>,
}

impl PriceTable {
    /// The built-in table, with `override_text` (an operator's file) tried first.
    pub fn load(override_text: Option<(&str, &str)>) -> Result<PriceTable, PriceError> {
        let mut entries = Vec::new();
        if let Some((name, text)) = override_text {
            entries.extend(parse(name, text)?);
        }
        entries.extend(parse("config/prices.toml (built in)", BUILT_IN)?);
        Ok(PriceTable { entries })
    }

    /// The price of `model` (as sent, or without a `provider/` prefix); `None` when unknown.
    pub fn price(&self, model: &str) -> Option<Price> {
        let bare = model.rsplit_once('/').map(|(_, m)| m);
        self.entries
            .iter()
            .find(|(globs, _)| {
                globs
                    .iter()
                    .any(|g| g.is_match(model) || bare.is_some_and(|b| g.is_match(b)))
            })
            .map(|(_, price)| *price)
    }
}

fn parse(name: &str, text: &str) -> Result<Vec<(Vec<GlobMatcher>, Price)>, PriceError> {
    let invalid = |message: String| PriceError::Invalid {
        source_name: name.to_owned(),
        message,
    };
    let file: PriceFile = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
    let mut out = Vec::with_capacity(file.prices.len());
    for (i, e) in file.prices.into_iter().enumerate() {
        let numbers = [
            Some(e.input),
            e.cached_input,
            e.cache_write,
            Some(e.output),
            e.reasoning,
        ];
        if e.models.is_empty() || numbers.iter().flatten().any(|n| !n.is_finite() || *n < 0.0) {
            return Err(invalid(format!(
                "prices[{i}]: needs models and non-negative prices"
            )));
        }
        let globs = e
            .models
            .iter()
            .map(|m| Glob::new(m).map(|g| g.compile_matcher()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| invalid(format!("prices[{i}].models: {err}")))?;
        out.push((
            globs,
            Price {
                input: per_token(e.input),
                cached_input: per_token(e.cached_input.unwrap_or(e.input)),
                cache_write: per_token(e.cache_write.unwrap_or(e.input)),
                output: per_token(e.output),
                reasoning: per_token(e.reasoning.unwrap_or(e.output)),
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"
        [[prices]]
        models = ["gpt-4o-mini*"]
        input = 0.15
        cached_input = 0.075
        output = 0.60
        [[prices]]
        models = ["gpt-4o*"]
        input = 2.5
        output = 10
        [[prices]]
        models = ["claude-sonnet-4*"]
        input = 3
        cached_input = 0.3
        cache_write = 3.75
        output = 15
        [[prices]]
        models = ["o3-mini*"]
        input = 1.1
        output = 4.4
        reasoning = 4.4
    "#;

    fn table() -> PriceTable {
        PriceTable {
            entries: parse("test", TABLE).expect("valid"),
        }
    }

    #[test]
    fn first_matching_glob_wins_and_prefixes_are_ignored() {
        let t = table();
        assert_eq!(
            t.price("gpt-4o-mini-2024-07-18").map(|p| p.input),
            Some(150_000)
        );
        assert_eq!(
            t.price("gpt-4o-2024-08-06").map(|p| p.input),
            Some(2_500_000)
        );
        assert_eq!(t.price("openai/gpt-4o").map(|p| p.input), Some(2_500_000));
        assert!(t.price("mystery-model").is_none());
    }

    #[test]
    fn cached_and_reasoning_tokens_are_priced_apart() {
        let t = table();
        // 1149 prompt of which 1024 cached, 353 completion: gpt-4o-mini.
        let u = Usage {
            prompt_tokens: 1149,
            completion_tokens: 353,
            total_tokens: 1502,
            cached_tokens: 1024,
            ..Usage::default()
        };
        let cost = t.price("gpt-4o-mini").expect("priced").cost(&u);
        let want = (125.0 * 0.15 + 1024.0 * 0.075 + 353.0 * 0.60) / 1e6;
        assert!((cost - want).abs() < 1e-12, "{cost} vs {want}");
        // Anthropic cache writes at their own price.
        let u = Usage {
            prompt_tokens: 130,
            completion_tokens: 5,
            total_tokens: 135,
            cached_tokens: 100,
            cache_creation_tokens: 20,
            ..Usage::default()
        };
        let cost = t.price("claude-sonnet-4-5").expect("priced").cost(&u);
        let want = (10.0 * 3.0 + 100.0 * 0.3 + 20.0 * 3.75 + 5.0 * 15.0) / 1e6;
        assert!((cost - want).abs() < 1e-12);
        // Reasoning inside completion.
        let u = Usage {
            prompt_tokens: 11,
            completion_tokens: 327,
            total_tokens: 338,
            reasoning_tokens: 320,
            ..Usage::default()
        };
        let cost = t.price("o3-mini").expect("priced").cost(&u);
        assert!((cost - (11.0 * 1.1 + 327.0 * 4.4) / 1e6).abs() < 1e-12);
    }

    #[test]
    fn a_cost_is_exact_and_reads_as_its_decimal_digits() {
        let t = PriceTable {
            entries: parse(
                "test",
                "[[prices]]\nmodels = [\"haiku\"]\ninput = 0.80\noutput = 4.00\n\n[[prices]]\nmodels = [\"embed\"]\ninput = 0.02\noutput = 0.0\n",
            )
            .expect("valid"),
        };
        let u = Usage {
            prompt_tokens: 8,
            completion_tokens: 10,
            total_tokens: 18,
            ..Usage::default()
        };
        let haiku = t.price("haiku").expect("priced");
        assert_eq!(haiku.cost_picodollars(&u), 46_400_000);
        // In floating point this was 0.000046399999999999996.
        let cost = haiku.cost(&u);
        assert_eq!(serde_json::to_string(&cost).expect("a number"), "0.0000464");
        assert_eq!(picodollars(cost), 46_400_000);
        // Prices with every decimal they are published with, and the sum of many costs.
        for (per_million, tokens, want) in [
            (0.01875, 1_000_000u64, "0.01875"),
            (0.3125, 3, "9.375e-7"),
            (150.0, 12_345, "1.85175"),
        ] {
            let price = Price {
                input: per_token(per_million),
                cached_input: 0,
                cache_write: 0,
                output: 0,
                reasoning: 0,
            };
            let u = Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
                ..Usage::default()
            };
            assert_eq!(
                serde_json::to_string(&price.cost(&u)).expect("a number"),
                want
            );
        }
        let embed = t.price("embed").expect("priced");
        let six = Usage {
            prompt_tokens: 6,
            total_tokens: 6,
            ..Usage::default()
        };
        let total: u128 = (0..3).map(|_| picodollars(embed.cost(&six))).sum();
        assert_eq!(usd(total), 3.6e-7);
        assert_eq!(picodollars(f64::NAN) + picodollars(-1.0), 0);
        // A price file may say anything: the sum saturates, it never wraps to a small cost.
        let absurd = Price {
            input: u64::MAX,
            cached_input: u64::MAX,
            cache_write: u64::MAX,
            output: u64::MAX,
            reasoning: u64::MAX,
        };
        let most = Usage {
            prompt_tokens: u64::MAX,
            completion_tokens: u64::MAX,
            total_tokens: u64::MAX,
            ..Usage::default()
        };
        assert_eq!(absurd.cost_picodollars(&most), u128::MAX);
    }

    #[test]
    fn the_shipped_table_is_valid_and_prices_the_big_vendors() {
        let t = PriceTable::load(None).expect("config/prices.toml is valid");
        for model in [
            "gpt-4o",
            "gpt-4o-mini-2024-07-18",
            "o3-mini",
            "claude-sonnet-4-5",
            "deepseek-chat",
            "gemini-2.5-flash",
            "mistral-large-latest",
            "llama-3.3-70b-versatile",
            "text-embedding-3-small",
        ] {
            assert!(t.price(model).is_some(), "{model} unpriced");
        }
        assert!(parse("bad", "[[prices]]\nmodels = []\ninput = 1\noutput = 1\n").is_err());
        assert!(
            parse(
                "bad",
                "[[prices]]\nmodels = [\"x\"]\ninput = -1\noutput = 1\n"
            )
            .is_err()
        );
    }
}
