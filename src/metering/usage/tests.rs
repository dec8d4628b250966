use proptest::prelude::*;
use serde_json::json;
use serde_json::value::RawValue;

use super::members::{Detail, Details, Top};
use super::*;
use crate::metering::json_reader::Reader;

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

/// A member value for the text-reading test: every kind `count` and the details lookups treat
/// differently.
fn member_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..2_000_000).prop_map(|n| n.to_string()),
        Just("-3".to_owned()),
        Just("2.0".to_owned()),
        Just("1.5".to_owned()),
        Just("1e300".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just(r#"" 12 ""#.to_owned()),
        Just(r#""x""#.to_owned()),
        Just("[1]".to_owned()),
    ]
}

/// Keys `normalize` reads (and one it does not), at the top level and in `*_details`.
const TOP_KEYS: &[&str] = &[
    "prompt_tokens",
    "input_tokens",
    "completion_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "prompt_cache_hit_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "audio_tokens",
];
const DETAILS: &[&str] = &[
    "prompt_tokens_details",
    "input_tokens_details",
    "completion_tokens_details",
    "output_tokens_details",
];
const DETAIL_KEYS: &[&str] = &[
    "cached_tokens",
    "cache_write_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "audio_tokens",
];

fn object(members: Vec<(String, String)>, spaced: bool) -> String {
    let sep = if spaced { ",\n  " } else { "," };
    let body: Vec<String> = members
        .into_iter()
        .map(|(k, v)| format!("\"{k}\":{}{v}", if spaced { " " } else { "" }))
        .collect();
    format!("{{{}}}", body.join(sep))
}

fn usage_text() -> impl Strategy<Value = String> {
    let detail = prop_oneof![
        proptest::collection::vec(
            (proptest::sample::select(DETAIL_KEYS), member_value()),
            0..4
        )
        .prop_map(|m| object(
            m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            false
        )),
        Just("null".to_owned()),
        Just("7".to_owned()),
        Just("[{\"cached_tokens\":1}]".to_owned()),
        Just("\"cached\"".to_owned()),
        Just(r#"{"cached\u005ftokens":4}"#.to_owned()),
    ];
    // Members `normalize` does not read, as providers send them: skipped, whatever they hold.
    let other = proptest::sample::select(vec![
        r#""standard""#,
        r#""a \"quoted\" \\ \u00e9 }""#,
        r#"{"ephemeral_5m_input_tokens":0,"nested":[1,{"x":"]"}]}"#,
        "[]",
        "[[],{}]",
        "-1.5e3",
        "false",
        "{}",
    ]);
    let member = prop_oneof![
        3 => (proptest::sample::select(TOP_KEYS), member_value()).prop_map(|(k, v)| (k.to_owned(), v)),
        1 => (proptest::sample::select(DETAILS), detail).prop_map(|(k, v)| (k.to_owned(), v)),
        1 => other.prop_map(|v| ("service_tier".to_owned(), v.to_owned())),
        // A key that names a count only once its escape is decoded.
        1 => member_value().prop_map(|v| (r"prompt\u005ftokens".to_owned(), v)),
    ];
    // Repeated keys happen: both readings must then keep the last one.
    (proptest::collection::vec(member, 0..9), any::<bool>())
        .prop_map(|(m, spaced)| object(m, spaced))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Reading the members straight from the text gives what reading the whole tree gives.
    #[test]
    fn text_reading_is_tree_reading(text in usage_text()) {
        let raw = RawUsage::from(RawValue::from_string(text.clone()).expect("valid JSON"));
        let map: Map<String, Value> = serde_json::from_str(&text).expect("an object");
        for family in [UsageFamily::OpenAi, UsageFamily::Anthropic] {
            prop_assert_eq!(normalize_text(&raw, family), normalize(&map, family), "{}", text);
        }
        let compacted = compact(raw);
        prop_assert!(!compacted.get().contains('\n'));
        let again: Map<String, Value> = serde_json::from_str(compacted.get()).expect("still JSON");
        prop_assert_eq!(again, map);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Where the hand reading takes a usage object, it reads what the tree holds.
    #[test]
    fn scanning_reads_what_the_tree_holds(text in usage_text()) {
        if let Some(scanned) = Members::scan(&text) {
            prop_assert_eq!(view(&scanned), tree_view(&text), "{}", text);
        }
    }

    /// And it takes every object of plain counts, however its members are ordered and spaced.
    #[test]
    fn scanning_takes_plain_counts(text in plain_usage_text()) {
        let scanned = Members::scan(&text);
        prop_assert!(scanned.is_some(), "not taken: {}", text);
        prop_assert_eq!(scanned.map(|m| view(&m)), Some(tree_view(&text)), "{}", text);
    }
}

/// `Members::read` at a reader over `text`: the text it passed over, and the counts.
fn read_at_reader(text: &str) -> Option<(&str, Option<Members>)> {
    let mut reader = Reader::new(text);
    let mut counts = Members::default();
    let (read, counted) = counts.read(&mut reader)?;
    reader.end()?;
    Some((read, counted.then_some(counts)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// The meter's reading as it passes gives `scan`'s counts, and takes the value whole.
    #[test]
    fn reading_as_it_passes_is_scanning(text in usage_text()) {
        prop_assert_eq!(read_at_reader(&text), Some((text.as_str(), Members::scan(&text))), "{}", text);
    }

    #[test]
    fn reading_as_it_passes_takes_plain_counts(text in plain_usage_text()) {
        let read = read_at_reader(&text).and_then(|(_, counts)| counts);
        prop_assert!(read.is_some(), "not taken: {}", text);
        prop_assert_eq!(read, Members::scan(&text), "{}", text);
    }
}

/// Everything `normalize` can ask of a usage object, as it answers.
type View = Vec<(&'static str, bool, Result<Option<u64>, UsageError>)>;

fn view(members: &impl UsageMembers) -> View {
    let top = Top::ALL
        .into_iter()
        .map(|key| (key.name(), members.has_top(key), members.top(key)));
    let nested = Details::ALL.into_iter().flat_map(|outer| {
        Detail::ALL
            .into_iter()
            .map(move |key| (key.name(), false, members.nested(outer, key)))
    });
    top.chain(nested).collect()
}

fn tree_view(text: &str) -> View {
    view(&serde_json::from_str::<Map<String, Value>>(text).expect("an object"))
}

/// A usage object of plain counts and members `normalize` does not read, each key once.
fn plain_usage_text() -> impl Strategy<Value = String> {
    let count = prop_oneof![
        4 => (0u64..2_000_000).prop_map(|n| n.to_string()),
        1 => Just("null".to_owned()),
        1 => Just("18446744073709551615".to_owned()),
    ];
    let detail =
        proptest::collection::btree_map(proptest::sample::select(DETAIL_KEYS), count.clone(), 0..4)
            .prop_map(|m| {
                object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                    false,
                )
            });
    let value = prop_oneof![
        3 => count,
        1 => detail,
        1 => Just(r#"{"nested":[1,{"x":"]"}],"s":"a \"b\" }"}"#.to_owned()),
    ];
    let keys: Vec<&str> = TOP_KEYS
        .iter()
        .chain(DETAILS)
        .copied()
        .chain(["service_tier"])
        .collect();
    (
        proptest::collection::btree_map(proptest::sample::select(keys), value, 0..8),
        any::<bool>(),
    )
        .prop_map(|(m, spaced)| {
            // A details key gets an object, any other a count (or the opaque object).
            let members = m
                .into_iter()
                .map(|(k, v)| {
                    let v = match (DETAILS.contains(&k), v.starts_with('{')) {
                        (true, false) => "{}".to_owned(),
                        (false, true) if k != "service_tier" => "0".to_owned(),
                        _ => v,
                    };
                    (k.to_owned(), v)
                })
                .collect();
            object(members, spaced)
        })
}

#[test]
fn scanning_takes_the_usage_objects_providers_send() {
    for text in [
        r#"{"completion_tokens":16,"completion_tokens_details":{"accepted_prediction_tokens":0,"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0},"prompt_tokens":12,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":0},"total_tokens":28}"#,
        "{\n    \"prompt_tokens\": 19,\n    \"completion_tokens\": 10,\n    \"total_tokens\": 29,\n    \"prompt_tokens_details\": {\n      \"cached_tokens\": 0\n    }\n  }",
        r#"{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}"#,
        r#"{"prompt_tokens":10,"completion_tokens":null,"total_tokens":10}"#,
        "{}",
    ] {
        let scanned = Members::scan(text);
        assert!(scanned.is_some(), "not taken: {text}");
        assert_eq!(read_at_reader(text), Some((text, scanned)), "{text}");
        let scanned = Members::scan(text);
        assert_eq!(scanned.map(|m| view(&m)), Some(tree_view(text)), "{text}");
    }
    // What it leaves to the tree.
    for text in [
        r#"{"prompt_tokens":"12"}"#,
        r#"{"prompt_tokens":1.0}"#,
        r#"{"prompt_tokens":-1}"#,
        r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
        r#"{"prompt_tokens_details":null}"#,
        r#"{"prompt_tokens":18446744073709551616}"#,
        r#"{"prompt\u005ftokens":1}"#,
    ] {
        assert_eq!(Members::scan(text), None, "{text}");
        assert_eq!(read_at_reader(text), Some((text, None)), "{text}");
    }
    // A value that is no object, read and passed over.
    for text in ["5", "null", "[1,{\"a\":2}]", "\"x\""] {
        assert_eq!(read_at_reader(text), Some((text, None)), "{text}");
    }
    // Whitespace around the value is not its text; invalid JSON is declined.
    assert_eq!(
        read_at_reader(" {\"prompt_tokens\": 3} "),
        Some((
            "{\"prompt_tokens\": 3}",
            Members::scan("{\"prompt_tokens\": 3}")
        ))
    );
    for text in [
        r#"{"prompt_tokens":01}"#,
        r#"{"prompt_tokens":1,}"#,
        r#"{"a\q":1}"#,
        "{",
    ] {
        assert_eq!(read_at_reader(text), None, "{text}");
    }
}

#[test]
fn text_that_is_no_object_is_refused() {
    for text in ["5", "[1]", "\"usage\"", "null"] {
        let raw = RawUsage::from(RawValue::from_string(text.to_owned()).expect("JSON"));
        assert_eq!(
            normalize_text(&raw, UsageFamily::OpenAi),
            Err(UsageError::NotAnObject),
            "{text}"
        );
    }
}

#[test]
fn compact_drops_only_the_whitespace_between_tokens() {
    let pretty = "{\n  \"prompt_tokens\": 12,\n  \"note\": \"a \\\"b\\\" c\\\\\",\n  \"d\": {\"x\" : [1, 2]}\n}";
    let raw = RawUsage::from(RawValue::from_string(pretty.to_owned()).expect("JSON"));
    assert_eq!(
        compact(raw).get(),
        r#"{"prompt_tokens":12,"note":"a \"b\" c\\","d":{"x":[1,2]}}"#
    );
    let unicode = "{ \"mot clé\" : \"déjà vu \\u00e9\" ,\t\"n\" :\r\n 1 }";
    let raw = RawUsage::from(RawValue::from_string(unicode.to_owned()).expect("JSON"));
    assert_eq!(compact(raw).get(), r#"{"mot clé":"déjà vu \u00e9","n":1}"#);
    let tight = RawUsage::from(RawValue::from_string(r#"{"a":"x y"}"#.to_owned()).expect("JSON"));
    assert_eq!(compact(tight).get(), r#"{"a":"x y"}"#);
}

#[test]
fn raw_usage_is_written_as_the_json_it_is() {
    let raw = RawUsage::checked(r#"{"prompt_tokens":3,"note":"a \"b\""}"#);
    let record = serde_json::json!({ "raw_usage": raw });
    assert_eq!(record["raw_usage"]["prompt_tokens"], 3);
    assert_eq!(
        serde_json::to_string(&raw).expect("serialises"),
        r#"{"prompt_tokens":3,"note":"a \"b\""}"#
    );
}
