//! Deterministic token arithmetic of the demo upstream.
//!
//! The formulas are documented on the parent module ([`crate::demo`]); the proxy's tests compute
//! their expected ground truth through [`super::prompt_tokens_for`] and
//! [`super::completion_tokens_for`], which delegate here.

use serde_json::Value;

/// Completion tokens produced when the request sets no limit.
pub(super) const DEFAULT_COMPLETION_TOKENS: u64 = 16;
/// Upper clamp of the completion token count.
pub(super) const MAX_COMPLETION_TOKENS: u64 = 100_000;

/// The fixed word list; completion token `i` is `WORDS[i % WORDS.len()]`.
const WORDS: [&str; 16] = [
    " lorem",
    " ipsum",
    " dolor",
    " sit",
    " amet",
    " consectetur",
    " adipiscing",
    " elit",
    " sed",
    " do",
    " eiusmod",
    " tempor",
    " incididunt",
    " ut",
    " labore",
    " et",
];

/// Text of completion token `index` (a word prefixed by a space; plain ASCII, no JSON escaping needed).
pub(super) fn word(index: u64) -> &'static str {
    // The modulo keeps the index in bounds.
    WORDS[(index % WORDS.len() as u64) as usize]
}

/// The whole answer text: the concatenation of the first `tokens` words.
pub(super) fn answer_text(tokens: u64) -> String {
    choice_text(0, tokens)
}

/// The answer text of choice `choice` (of a request's `n`): `tokens` words from word `choice`
/// on, so that each choice reads differently and choice 0 is [`answer_text`].
pub(super) fn choice_text(choice: u64, tokens: u64) -> String {
    let mut text = String::with_capacity(usize::try_from(tokens.saturating_mul(8)).unwrap_or(0));
    for index in 0..tokens {
        text.push_str(word(choice + index));
    }
    text
}

/// Most choices a request may ask for, as OpenAI allows.
const MAX_CHOICES: u64 = 128;

/// The choices a chat or legacy completion request asks for: `n`, else 1, clamped to
/// `1..=128`. Each has the request's completion tokens, so the usage counts them `n` times.
pub(super) fn choices(body: &Value) -> u64 {
    body.get("n")
        .and_then(number_as_u64)
        .unwrap_or(1)
        .clamp(1, MAX_CHOICES)
}

/// Number of whitespace-separated words.
pub(super) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The completion limit the request asks for, if any (`max_tokens`, `max_completion_tokens`, then
/// `max_output_tokens`; negative numbers count as 0, fractions are truncated).
fn requested_limit(body: &Value) -> Option<u64> {
    ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|key| body.get(key).and_then(number_as_u64))
}

fn number_as_u64(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    if value.as_i64().is_some() {
        return Some(0);
    }
    // `as` saturates; NaN and negatives are excluded first.
    value.as_f64().map(|f| {
        if f.is_finite() && f > 0.0 {
            f as u64
        } else {
            0
        }
    })
}

/// Completion tokens of a request: its limit if given, else 16, clamped to `1..=100_000`.
pub(super) fn completion_tokens(body: &Value) -> u64 {
    requested_limit(body)
        .unwrap_or(DEFAULT_COMPLETION_TOKENS)
        .clamp(1, MAX_COMPLETION_TOKENS)
}

/// Whether the answer is reported as cut by the limit (`length` / `max_tokens`): the request set a
/// limit below the natural answer length of 16 tokens.
pub(super) fn truncated(body: &Value) -> bool {
    requested_limit(body).is_some_and(|limit| limit < DEFAULT_COMPLETION_TOKENS)
}

/// Words of a text content: a string, or an array of parts (strings or objects with a `text` string).
fn content_words(content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(text)) => words(text),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part {
                Value::String(text) => words(text),
                _ => part.get("text").and_then(Value::as_str).map_or(0, words),
            })
            .sum(),
        _ => 0,
    }
}

/// `3 + Σ(4 + words(content)) + words(system)` over a message list (a string counts as one message).
fn conversation(messages: Option<&Value>, system: Option<&Value>) -> u64 {
    let messages = match messages {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| 4 + content_words(item.get("content")))
            .sum(),
        Some(Value::String(text)) => 4 + words(text),
        _ => 0,
    };
    3 + messages + content_words(system)
}

/// Chat Completions: `messages`, with no separate system field.
pub(super) fn chat_prompt(body: &Value) -> u64 {
    conversation(body.get("messages"), None)
}

/// Responses API: `input` (string or item list) plus `instructions`.
pub(super) fn responses_prompt(body: &Value) -> u64 {
    conversation(body.get("input"), body.get("instructions"))
}

/// Anthropic Messages: `messages` plus `system` (string or text blocks).
pub(super) fn messages_prompt(body: &Value) -> u64 {
    conversation(body.get("messages"), body.get("system"))
}

/// Legacy completions: words of `prompt` (string or array; token ids count 1 each, token arrays
/// their length) plus 1.
pub(super) fn completions_prompt(body: &Value) -> u64 {
    let words_in = match body.get("prompt") {
        Some(Value::String(text)) => words(text),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => words(text),
                Value::Number(_) => 1,
                Value::Array(ids) => ids.len() as u64,
                _ => 0,
            })
            .sum(),
        _ => 0,
    };
    words_in + 1
}

/// The inputs of an embeddings request, as a list of single inputs.
pub(super) fn embedding_inputs(body: &Value) -> Vec<&Value> {
    match body.get("input") {
        None | Some(Value::Null) => Vec::new(),
        // A flat array of numbers is a single token-array input.
        Some(array @ Value::Array(items))
            if !items.is_empty() && items.iter().all(Value::is_number) =>
        {
            vec![array]
        }
        Some(Value::Array(items)) => items.iter().collect(),
        Some(single) => vec![single],
    }
}

/// Tokens of one embeddings input: words + 1 for a string, the length of a token array.
pub(super) fn embedding_input_tokens(input: &Value) -> u64 {
    match input {
        Value::String(text) => words(text) + 1,
        Value::Array(ids) => ids.len() as u64,
        Value::Number(_) => 1,
        _ => 0,
    }
}

/// Embeddings: `Σ over inputs`.
pub(super) fn embeddings_prompt(body: &Value) -> u64 {
    embedding_inputs(body)
        .into_iter()
        .map(embedding_input_tokens)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn completion_limits() {
        assert_eq!(completion_tokens(&json!({})), 16);
        assert_eq!(completion_tokens(&json!({"max_tokens": 5})), 5);
        assert_eq!(completion_tokens(&json!({"max_completion_tokens": 7})), 7);
        assert_eq!(completion_tokens(&json!({"max_output_tokens": 9})), 9);
        assert_eq!(completion_tokens(&json!({"max_tokens": null})), 16);
        assert_eq!(completion_tokens(&json!({"max_tokens": 0})), 1);
        assert_eq!(completion_tokens(&json!({"max_tokens": -3})), 1);
        assert_eq!(completion_tokens(&json!({"max_tokens": 2.9})), 2);
        assert_eq!(completion_tokens(&json!({"max_tokens": "x"})), 16);
        assert_eq!(
            completion_tokens(&json!({"max_tokens": 10_000_000})),
            100_000
        );
        assert!(truncated(&json!({"max_tokens": 5})));
        assert!(!truncated(&json!({"max_tokens": 16})));
        assert!(!truncated(&json!({})));
    }

    #[test]
    fn words_and_text() {
        assert_eq!(words("  hello   big\nworld\t"), 3);
        assert_eq!(words(""), 0);
        assert_eq!(answer_text(3), " lorem ipsum dolor");
        assert_eq!(answer_text(17).split_whitespace().count(), 17);
        assert_eq!(word(16), " lorem");
    }

    #[test]
    fn chat_prompt_formula() {
        let body = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello there"}, {"type": "image_url"}]},
            {"role": "assistant", "content": null},
        ]});
        assert_eq!(chat_prompt(&body), 3 + (4 + 2) + (4 + 2) + 4);
        assert_eq!(chat_prompt(&json!({})), 3);
    }

    #[test]
    fn responses_and_messages_prompt_formula() {
        assert_eq!(
            responses_prompt(&json!({"input": "one two three", "instructions": "be nice"})),
            3 + 4 + 3 + 2
        );
        let items = json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "a b"}]}]});
        assert_eq!(responses_prompt(&items), 3 + 4 + 2);
        let anthropic = json!({
            "system": [{"type": "text", "text": "sys prompt here"}],
            "messages": [{"role": "user", "content": "hi"}],
        });
        assert_eq!(messages_prompt(&anthropic), 3 + 3 + 4 + 1);
    }

    #[test]
    fn completions_prompt_formula() {
        assert_eq!(completions_prompt(&json!({"prompt": "say this"})), 3);
        assert_eq!(completions_prompt(&json!({"prompt": ["a b", "c"]})), 4);
        assert_eq!(completions_prompt(&json!({"prompt": [1, 2, 3]})), 4);
        assert_eq!(completions_prompt(&json!({})), 1);
    }

    #[test]
    fn embeddings_prompt_formula() {
        assert_eq!(embeddings_prompt(&json!({"input": "a b c"})), 4);
        assert_eq!(embeddings_prompt(&json!({"input": ["a b", "c"]})), 3 + 2);
        assert_eq!(embeddings_prompt(&json!({"input": [1, 2, 3]})), 3);
        assert_eq!(embeddings_prompt(&json!({"input": [[1, 2], [3]]})), 3);
        assert_eq!(embeddings_prompt(&json!({})), 0);
        assert_eq!(embedding_inputs(&json!({"input": [[1, 2], [3]]})).len(), 2);
    }
}
