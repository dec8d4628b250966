//! Local token counts, for answers that end without the provider's usage. tiktoken's encodings
//! are loaded once, on first need, by the recorder thread (never on a stream's path).

use std::sync::OnceLock;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

use super::measurement::Dialect;

/// Which encoding a model uses: o200k_base for the gpt-4o, o-series, gpt-4.1 and gpt-5
/// families, cl100k_base otherwise (the closest public stand-in for other vendors).
pub fn uses_o200k(model: &str) -> bool {
    let model = model.rsplit('/').next().unwrap_or(model);
    [
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "chatgpt-4o",
        "o1",
        "o3",
        "o4",
        "gpt-oss",
    ]
    .iter()
    .any(|prefix| model.starts_with(prefix))
}

fn encoding(model: &str) -> Option<&'static CoreBPE> {
    static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    if uses_o200k(model) {
        O200K
            .get_or_init(|| tiktoken_rs::o200k_base().ok())
            .as_ref()
    } else {
        CL100K
            .get_or_init(|| tiktoken_rs::cl100k_base().ok())
            .as_ref()
    }
}

/// Tokens in `text` under `model`'s encoding (0 for empty text).
pub fn text_tokens(text: &str, model: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    encoding(model).map_or(0, |bpe| bpe.encode_ordinary(text).len() as u64)
}

/// Estimated prompt tokens of a request body, or `None` when it holds nothing countable.
/// Chat-style requests add OpenAI's documented framing: 3 per message and 3 for the reply.
pub fn prompt_tokens(body: &[u8], dialect: Dialect, model: &str) -> Option<u64> {
    let root: Value = serde_json::from_slice(body).ok()?;
    let mut text = String::new();
    let mut messages = 0u64;
    let collect = |v: &Value, text: &mut String| collect_text(v, text);
    match dialect {
        Dialect::Chat | Dialect::Messages | Dialect::Responses => {
            for key in ["system", "instructions"] {
                if let Some(v) = root.get(key) {
                    collect(v, &mut text);
                    messages += 1;
                }
            }
            let list = root.get("messages").or_else(|| root.get("input"));
            match list {
                Some(Value::Array(items)) => {
                    for item in items {
                        messages += 1;
                        match item.get("content") {
                            Some(content) => collect(content, &mut text),
                            None => collect(item, &mut text),
                        }
                    }
                }
                Some(other) => {
                    messages += 1;
                    collect(other, &mut text);
                }
                None => {}
            }
        }
        Dialect::Completions => collect(root.get("prompt")?, &mut text),
        Dialect::Embeddings => {
            let input = root.get("input")?;
            // Token-id inputs are already tokens.
            if let Some(ids) = token_ids(input) {
                return Some(ids);
            }
            collect(input, &mut text);
        }
    }
    if text.is_empty() && messages == 0 {
        return None;
    }
    let framing = if messages > 0 { 3 * messages + 3 } else { 0 };
    Some(text_tokens(&text, model) + framing)
}

fn token_ids(input: &Value) -> Option<u64> {
    let items = input.as_array()?;
    if items.iter().all(Value::is_number) && !items.is_empty() {
        return Some(items.len() as u64);
    }
    if items
        .iter()
        .all(|i| i.as_array().is_some_and(|a| a.iter().all(Value::is_number)))
        && !items.is_empty()
    {
        return Some(
            items
                .iter()
                .filter_map(Value::as_array)
                .map(|a| a.len() as u64)
                .sum(),
        );
    }
    None
}

/// Appends the text of a string, an array of strings or content parts (`{"text": …}`).
fn collect_text(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(s);
        }
        Value::Array(items) => items.iter().for_each(|i| collect_text(i, out)),
        Value::Object(o) => {
            for key in ["text", "content", "input_text"] {
                if let Some(v) = o.get(key) {
                    collect_text(v, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_by_model_family() {
        assert!(uses_o200k("gpt-4o-mini"));
        assert!(uses_o200k("o3-mini"));
        assert!(uses_o200k("openai/gpt-5"));
        assert!(!uses_o200k("gpt-3.5-turbo"));
        assert!(!uses_o200k("claude-sonnet-4-5"));
    }

    #[test]
    fn counts_known_strings() {
        // "hello world" is two tokens in both encodings.
        assert_eq!(text_tokens("hello world", "gpt-4o"), 2);
        assert_eq!(text_tokens("hello world", "gpt-3.5-turbo"), 2);
        assert_eq!(text_tokens("", "gpt-4o"), 0);
    }

    #[test]
    fn prompt_of_a_chat_request() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"system","content":"hello world"},{"role":"user","content":[{"type":"text","text":"hello world"}]}]}"#;
        // The two texts, 3 per message, 3 for the reply.
        let text = text_tokens("hello world\nhello world", "gpt-4o");
        assert_eq!(
            prompt_tokens(body, Dialect::Chat, "gpt-4o"),
            Some(text + 6 + 3)
        );
        assert_eq!(
            prompt_tokens(br#"{"input":[[1,2,3],[4]]}"#, Dialect::Embeddings, "x"),
            Some(4)
        );
        assert_eq!(prompt_tokens(b"not json", Dialect::Chat, "x"), None);
        assert_eq!(prompt_tokens(br#"{"model":"x"}"#, Dialect::Chat, "x"), None);
    }
}
