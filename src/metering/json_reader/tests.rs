use proptest::prelude::*;
use serde::de::IgnoredAny;

use super::*;

/// The whole text is one value, checked.
fn takes(text: &str) -> bool {
    let mut r = Reader::new(text);
    r.skip_value().is_some() && r.end().is_some()
}

fn serde_takes(text: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(text).is_ok()
}

#[test]
fn checks_the_grammar_as_serde_json_does() {
    let texts = [
        "0",
        "-0",
        "-0.5e+10",
        "1E5",
        "12.25e-3",
        "1e999",
        "123456789012345678901234567890",
        " \t\r\n{ \"a\" : [ 1 , true , false , null , \"x\" ] } \n",
        r#"{"k\"ey":{"\u00e9":"\ud800"}}"#,
        r#""\"\\\/\b\f\n\r\t\u0041""#,
        r#""é ☃ 😀""#,
        "[]",
        "{}",
        "[[[]]]",
        // Refused by both.
        "",
        " ",
        "01",
        "-",
        "+1",
        ".5",
        "1.",
        "1.e5",
        "1e",
        "1e+",
        "0x10",
        "1 2",
        "tru",
        "nul",
        "True",
        "[1,]",
        "[,1]",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{a:1}",
        "{\"a\":}",
        "[1 2]",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"a\tb\"",
        "\"a\nb\"",
        "\"open",
        "{\"a\":1",
        "[1",
        "{\"a\":1}}",
        "'x'",
        "NaN",
        "Infinity",
    ];
    for text in texts {
        assert_eq!(takes(text), serde_takes(text), "{text:?}");
    }
}

#[test]
fn nesting_deeper_than_serde_json_allows_is_declined() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(takes(&deep(100)) && serde_takes(&deep(100)));
    // serde_json's `Value`, where a declined event goes, refuses it too.
    assert!(serde_json::from_str::<serde_json::Value>(&deep(200)).is_err());
    assert!(!takes(&deep(200)));
}

#[test]
fn strings_are_decoded_as_serde_json_decodes_them() {
    for text in [
        r#""plain""#,
        r#""""#,
        r#""caf\u00e9 \"q\" \\ \/ \b\f\n\r\t""#,
        r#""\ud83d\ude00 and \u2603""#,
        r#""é already""#,
        r#""a\u0000b""#,
    ] {
        let mut r = Reader::new(text);
        let read = r.string().expect(text);
        assert_eq!(
            read,
            serde_json::from_str::<String>(text).expect(text),
            "{text}"
        );
        assert_eq!(
            matches!(read, Cow::Borrowed(_)),
            !text.contains('\\'),
            "{text}"
        );
        assert!(r.end().is_some());
    }
    // A lone surrogate is no character: declined, as serde_json refuses it.
    for text in [
        r#""\ud800""#,
        r#""\ud800\u0041""#,
        r#""\udc00""#,
        r#""\ud800x""#,
    ] {
        assert!(Reader::new(text).string().is_none(), "{text}");
        assert!(serde_json::from_str::<String>(text).is_err(), "{text}");
    }
}

#[test]
fn a_raw_value_is_its_exact_text() {
    let text = r#"{ "usage" :  {"a": [1, {"b": "}"}]}  , "n": 2 }"#;
    let mut r = Reader::new(text);
    let mut raw = Vec::new();
    r.object(|r, key| {
        raw.push((key.to_vec(), r.raw_value()?));
        Some(())
    })
    .expect("object");
    assert_eq!(
        raw,
        [
            (b"usage".to_vec(), r#"{"a": [1, {"b": "}"}]}"#),
            (b"n".to_vec(), "2")
        ]
    );
}

#[test]
fn a_key_with_an_escape_is_declined_where_it_would_be_matched() {
    let text = r#"{"mod\u0065l":"m"}"#;
    assert!(Reader::new(text).object(|r, _| r.skip_value()).is_none());
    assert!(takes(text));
}

/// JSON-like text: valid values, and the same cut, spliced and retyped.
fn json_like() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| serde_json::json!(f).to_string()),
        "[-+0-9.eE]{1,8}",
        "\\PC{0,6}".prop_map(|s| serde_json::Value::String(s).to_string()),
        r#""([a-z"\\/bfnrtu0-9A-F]|\\u[0-9a-fA-F]{4}|\\[a-z]){0,6}""#,
    ];
    let value = leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-z]{0,3}", inner), 0..4).prop_map(|v| {
                let members: Vec<String> = v.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(" , "))
            }),
        ]
    });
    (
        value,
        0usize..64,
        0usize..3,
        "[ \t\n{}\\[\\],:\"\\\\0-9a-z.+-]",
    )
        .prop_map(|(text, at, edit, piece)| {
            let mut at = at.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + 1).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            match edit {
                0 => text,
                1 => format!("{}{piece}{}", &text[..at], &text[at..]),
                _ => format!("{}{piece}{}", &text[..at], &text[end..]),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn takes_exactly_what_serde_json_takes(text in json_like()) {
        prop_assert_eq!(takes(&text), serde_takes(&text), "{:?}", text);
    }

    #[test]
    fn plain_run_stops_at_the_first_byte_that_needs_work(
        bytes in prop::collection::vec(prop_oneof![0x20u8..0x7f, any::<u8>()], 0..40),
    ) {
        let naive = bytes
            .iter()
            .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
            .unwrap_or(bytes.len());
        prop_assert_eq!(plain_run(&bytes), naive);
    }
}

proptest! {
    #[test]
    fn digits_counts_the_leading_ascii_digits(
        bytes in prop::collection::vec(prop_oneof![b'0'..=b'9', any::<u8>()], 0..40),
    ) {
        let naive = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        prop_assert_eq!(digits(&bytes), naive);
    }
}

#[test]
fn digits_are_counted_up_to_the_first_non_digit_in_any_place_of_a_word() {
    let naive = |bytes: &[u8]| bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    // Every byte value as the stop, at every place in the first two words and in the tail,
    // followed by digits and by bytes whose +6 carries (0xFA and up).
    for stop in 0..=255u8 {
        for at in 0..20 {
            for after in [b'7', 0xFF, b'/'] {
                let mut text = vec![b'5'; at];
                text.push(stop);
                text.extend_from_slice(&[after; 9]);
                for len in at..=text.len() {
                    let bytes = &text[..len];
                    assert_eq!(digits(bytes), naive(bytes), "{bytes:?}");
                }
            }
        }
    }
    assert_eq!(digits(b""), 0);
    assert_eq!(digits(b"0123456789012345678"), 19);
}

#[test]
fn whole_numbers_are_read_and_anything_else_is_left() {
    for (text, want) in [
        ("0", Some(0)),
        (" 42", Some(42)),
        ("18446744073709551615", Some(u64::MAX)),
        ("7,", Some(7)),
        ("7}", Some(7)),
        ("18446744073709551616", None),
        ("-1", None),
        ("1.0", None),
        ("1e3", None),
        ("2E3", None),
        ("01", None),
        ("null", None),
        ("\"3\"", None),
        ("", None),
    ] {
        let mut r = Reader::new(text);
        let start = text.len() - text.trim_start().len();
        assert_eq!(r.whole_number(), want, "{text:?}");
        // Declined, nothing but whitespace is consumed: the value is still there to be checked.
        let digits = text
            .trim_start()
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let end = start + if want.is_some() { digits } else { 0 };
        assert_eq!(r.pos, end, "{text:?}");
    }
}
