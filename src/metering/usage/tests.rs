use proptest::prelude::*;
use serde_json::json;

use super::*;

fn norm(v: Value, family: UsageFamily) -> Result<Normalized, UsageError> {
    normalize(v.as_object().expect("object"), family)
}

fn usage(v: Value) -> Usage {
    norm(v, UsageFamily::OpenAi).expect("valid").usage
}

#[test]
fn openai_chat_with_details() {
    let u = usage(
        json!({"prompt_tokens": 1149, "completion_tokens": 353, "total_tokens": 1502,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}}),
    );
    assert_eq!(
        u,
        Usage {
            prompt_tokens: 1149,
            completion_tokens: 353,
            total_tokens: 1502,
            cached_tokens: 1024,
            reasoning_tokens: 0,
            cache_creation_tokens: 0
        }
    );
}

#[test]
fn responses_api_input_output() {
    let u = usage(
        json!({"input_tokens": 11, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 327, "output_tokens_details": {"reasoning_tokens": 320}, "total_tokens": 338}),
    );
    assert_eq!(
        (
            u.prompt_tokens,
            u.completion_tokens,
            u.reasoning_tokens,
            u.total_tokens
        ),
        (11, 327, 320, 338)
    );
}

#[test]
fn anthropic_input_excludes_cache() {
    let n = norm(json!({"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 5}), UsageFamily::Anthropic).expect("valid");
    assert_eq!(
        n.usage,
        Usage {
            prompt_tokens: 130,
            completion_tokens: 5,
            total_tokens: 135,
            cached_tokens: 100,
            reasoning_tokens: 0,
            cache_creation_tokens: 20
        }
    );
    assert!(!n.inconsistent);
    // The cache fields alone identify Anthropic's convention, whatever the endpoint.
    assert_eq!(
        usage(json!({"input_tokens": 1, "cache_read_input_tokens": 2, "output_tokens": 3}))
            .prompt_tokens,
        3
    );
}

#[test]
fn anthropic_message_start_alone_is_prompt_only() {
    let n = norm(
        json!({"input_tokens": 25, "cache_read_input_tokens": 0}),
        UsageFamily::Anthropic,
    )
    .expect("valid");
    assert!(n.prompt_only);
    assert_eq!(n.usage.prompt_tokens, 25);
}

#[test]
fn deepseek_and_moonshot_cache_names() {
    assert_eq!(usage(json!({"prompt_tokens": 22, "completion_tokens": 93, "total_tokens": 115, "prompt_cache_hit_tokens": 7, "prompt_cache_miss_tokens": 15})).cached_tokens, 7);
    assert_eq!(usage(json!({"prompt_tokens": 101, "completion_tokens": 32, "total_tokens": 133, "cached_tokens": 101})).cached_tokens, 101);
}

#[test]
fn openrouter_cache_write_tokens() {
    let u = usage(
        json!({"prompt_tokens": 254, "completion_tokens": 5, "total_tokens": 259,
        "prompt_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 9}}),
    );
    assert_eq!((u.cached_tokens, u.cache_creation_tokens), (3, 9));
}

#[test]
fn hidden_thinking_becomes_reasoning() {
    let n = norm(
        json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 40}),
        UsageFamily::OpenAi,
    )
    .expect("valid");
    assert!(n.inconsistent);
    assert_eq!(
        (
            n.usage.completion_tokens,
            n.usage.reasoning_tokens,
            n.usage.total_tokens
        ),
        (30, 25, 40)
    );
    let n = norm(json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 40, "completion_tokens_details": {"reasoning_tokens": 2}}), UsageFamily::OpenAi).expect("valid");
    assert!(
        n.inconsistent,
        "stated reasoning: counted as inconsistent, left as stated"
    );
    assert_eq!(n.usage.completion_tokens, 5);
}

#[test]
fn missing_total_is_derived_embeddings_have_no_completion() {
    assert_eq!(
        usage(json!({"prompt_tokens": 3, "completion_tokens": 4})).total_tokens,
        7
    );
    let u = usage(json!({"prompt_tokens": 12, "total_tokens": 12}));
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (12, 0, 12)
    );
}

#[test]
fn strings_accepted_bad_counts_refused() {
    assert_eq!(
        usage(json!({"prompt_tokens": "12", "completion_tokens": " 3 "})).total_tokens,
        15
    );
    assert_eq!(
        usage(json!({"prompt_tokens": 12.0, "completion_tokens": 1})).prompt_tokens,
        12
    );
    let e = |v| norm(v, UsageFamily::OpenAi).expect_err("refused");
    assert_eq!(
        e(json!({"prompt_tokens": -1, "completion_tokens": 3})),
        UsageError::Negative("prompt_tokens")
    );
    assert_eq!(
        e(json!({"prompt_tokens": "-4"})),
        UsageError::Negative("prompt_tokens")
    );
    assert_eq!(
        e(json!({"prompt_tokens": "lots"})),
        UsageError::NotANumber("prompt_tokens")
    );
    assert_eq!(
        e(json!({"prompt_tokens": 1.5})),
        UsageError::NotANumber("prompt_tokens")
    );
    assert_eq!(
        e(json!({"prompt_tokens": [1]})),
        UsageError::NotANumber("prompt_tokens")
    );
    assert_eq!(
        e(json!({"completion_tokens": 1e300})),
        UsageError::TooLarge("completion_tokens")
    );
    assert_eq!(
        e(json!({"total_tokens": u64::MAX})),
        UsageError::TooLarge("total_tokens")
    );
    assert_eq!(e(json!({"foo": 1})), UsageError::Empty);
    assert_eq!(e(json!({})), UsageError::Empty);
}

#[test]
fn merge_keeps_earlier_fields_and_takes_later_values() {
    let mut start = json!({"input_tokens": 25, "cache_read_input_tokens": 4, "output_tokens": 1});
    let delta = json!({"output_tokens": 15, "input_tokens": null});
    merge_into(
        start.as_object_mut().expect("obj"),
        delta.as_object().expect("obj"),
    );
    let n = norm(start, UsageFamily::Anthropic).expect("valid");
    assert_eq!(
        (
            n.usage.prompt_tokens,
            n.usage.completion_tokens,
            n.usage.total_tokens
        ),
        (29, 15, 44)
    );
}

proptest! {
    #[test]
    fn normalised_usage_obeys_the_convention(p in 0u64..1_000_000, c in 0u64..1_000_000, cached in 0u64..1000,
            reasoning in proptest::option::of(0u64..1000), extra in 0u64..1000, with_total: bool) {
        let mut raw = json!({"prompt_tokens": p, "completion_tokens": c, "prompt_tokens_details": {"cached_tokens": cached}});
        if let Some(r) = reasoning {
            raw["completion_tokens_details"] = json!({"reasoning_tokens": r});
        }
        if with_total {
            raw["total_tokens"] = json!(p + c + extra);
        }
        let n = norm(raw, UsageFamily::OpenAi).expect("valid");
        let u = n.usage;
        prop_assert_eq!(u.prompt_tokens, p);
        prop_assert_eq!(u.cached_tokens, cached);
        if with_total {
            prop_assert_eq!(u.total_tokens, p + c + extra);
            prop_assert_eq!(n.inconsistent, extra > 0);
        } else {
            prop_assert_eq!(u.total_tokens, p + c);
        }
        if reasoning.is_none() {
            prop_assert_eq!(u.prompt_tokens + u.completion_tokens, u.total_tokens);
        }
    }

    #[test]
    fn never_panics(v in proptest::collection::btree_map("[a-z_]{1,12}", prop_oneof![
            any::<i64>().prop_map(Value::from), any::<f64>().prop_map(Value::from),
            "[0-9a-z-]{0,5}".prop_map(Value::from), Just(Value::Null)], 0..8)) {
        let map: Map<String, Value> = v.into_iter().collect();
        let _ = normalize(&map, UsageFamily::OpenAi);
        let _ = normalize(&map, UsageFamily::Anthropic);
    }
}
