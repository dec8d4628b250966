//! Usage normaliser: any JSON object, under both families, must never panic, and reading it
//! from its text must give what reading its tree gives. When it is accepted and states no
//! `total_tokens`, the total is the sum of the parts: `total_tokens == prompt_tokens +
//! completion_tokens` (counts are capped at 1e12, so the sum cannot overflow). Accepted counts
//! never exceed four capped counts (prompt may add Anthropic cache reads and writes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;
use tokentap::metering::usage::{RawUsage, UsageFamily, normalize, normalize_text};

fuzz_target!(|input: &[u8]| {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(input) else {
        return;
    };
    let raw: Box<RawValue> = serde_json::from_slice(input).expect("parsed as a Value above");
    let raw = RawUsage::from(raw);
    let total_stated = map.get("total_tokens").is_some_and(|v| !v.is_null());
    for family in [UsageFamily::OpenAi, UsageFamily::Anthropic] {
        // Reading the members from the text must give what reading the tree gives.
        assert_eq!(
            normalize_text(&raw, family),
            normalize(&map, family),
            "{family:?}: text and tree readings differ"
        );
        let Ok(n) = normalize(&map, family) else {
            continue;
        };
        let u = n.usage;
        if !total_stated {
            assert_eq!(
                u.total_tokens,
                u.prompt_tokens + u.completion_tokens,
                "{family:?}: total is not prompt + completion: {u:?}"
            );
            assert!(
                !n.inconsistent,
                "{family:?}: no total stated, yet flagged inconsistent"
            );
        }
        for v in [
            u.prompt_tokens,
            u.completion_tokens,
            u.total_tokens,
            u.cached_tokens,
            u.reasoning_tokens,
            u.cache_creation_tokens,
        ] {
            assert!(
                v <= 4_000_000_000_000,
                "{family:?}: count {v} beyond the caps: {u:?}"
            );
        }
    }
});
