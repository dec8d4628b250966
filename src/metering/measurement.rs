//! What the meter learns from a response, and how each API family's events feed it. Only the
//! response's own usage locations are read (top level, `x_groq.usage`, `choices[i].usage`,
//! `response.usage`, `message.usage`); a usage-shaped object anywhere else is not usage.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::usage::{Members, RawUsage, merge_into};
use crate::record::Endpoint;

/// The API family a response belongs to, chosen from the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Messages,
}

impl Dialect {
    pub fn of(endpoint: Endpoint) -> Option<Dialect> {
        match endpoint {
            Endpoint::Chat => Some(Dialect::Chat),
            Endpoint::Completions => Some(Dialect::Completions),
            Endpoint::Embeddings => Some(Dialect::Embeddings),
            Endpoint::Responses => Some(Dialect::Responses),
            Endpoint::Messages => Some(Dialect::Messages),
            Endpoint::Other => None,
        }
    }
}

/// Text kept for a local token count is capped: an estimate needs no more.
const MAX_TEXT: usize = 4 << 20;
const FIRST_TEXT: usize = 128;

#[derive(Debug, Default)]
pub struct Measurement {
    /// The last usage object carried (merged field by field for Anthropic's events), as JSON
    /// text: the typed path copies it verbatim, with no tree built while the answer streams.
    pub usage: Option<RawUsage>,
    /// `usage`'s counts, read with its text by the typed path: the recorder then normalises
    /// them without reading the text again. `None` when the usage came another way or its
    /// counts were not plain (the recorder reads the text).
    pub usage_counts: Option<Box<Members>>,
    pub response_model: Option<Arc<str>>,
    /// The model the request named: an answer naming the same one shares it, not a copy.
    pub request_model: Option<Arc<str>>,
    /// Output text seen, for an estimate when no usage arrives.
    pub text: String,
    pub first_content_at: Option<Instant>,
    pub last_content_at: Option<Instant>,
    /// Data events (not counting `[DONE]`), or 1 for a non-streamed body.
    pub chunks: u64,
    pub tool_calls: u64,
    /// The upstream's own end-of-answer marker was seen.
    pub terminal: bool,
    /// An error the upstream reported inside its answer.
    pub error: Option<String>,
    pub parse_errors: u64,
}

impl Measurement {
    /// The usage object as a tree, for comparing readings: the typed path keeps the provider's
    /// text, the `Value` path a re-serialised one.
    #[cfg(test)]
    pub fn usage_value(&self) -> Option<Value> {
        self.usage
            .as_ref()
            .map(|u| serde_json::from_str(u.get()).expect("usage text is JSON"))
    }

    pub fn push_text(&mut self, text: &str, now: Instant) {
        if text.is_empty() {
            return;
        }
        if self.first_content_at.is_none() {
            self.first_content_at = Some(now);
        }
        self.last_content_at = Some(now);
        if self.text.capacity() == 0 {
            // Room for a short answer at once: growing a byte string from nothing a token at a
            // time took five allocations for twenty tokens.
            self.text.reserve(text.len().max(FIRST_TEXT));
        }
        let room = MAX_TEXT.saturating_sub(self.text.len());
        if room >= text.len() {
            self.text.push_str(text);
        } else {
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(&text[..cut]);
        }
    }

    fn set_usage(&mut self, usage: &Value, merge: bool) {
        let Some(map) = usage.as_object() else { return };
        let earlier = match (&self.usage, merge) {
            (Some(text), true) => serde_json::from_str::<Map<String, Value>>(text.get()).ok(),
            _ => None,
        };
        let text = match earlier {
            Some(mut earlier) => {
                merge_into(&mut earlier, map);
                serde_json::value::to_raw_value(&earlier)
            }
            None => serde_json::value::to_raw_value(map),
        };
        if let Ok(text) = text {
            self.usage = Some(text.into());
            self.usage_counts = None;
        }
    }

    fn set_model(&mut self, model: Option<&Value>) {
        if let Some(model) = model.and_then(Value::as_str) {
            self.set_model_str(model);
        }
    }

    pub(super) fn set_model_str(&mut self, model: &str) {
        if self.response_model.as_deref() != Some(model) {
            self.response_model = Some(match &self.request_model {
                Some(asked) if **asked == *model => Arc::clone(asked),
                // OpenAI's answers name a dated version of the model asked for.
                _ => crate::repeated::model(model),
            });
        }
    }

    /// The event's usage object (JSON text of an object) replaces any earlier one (OpenAI's
    /// streams carry it once).
    /// `usage` is JSON text the caller has checked; `counts` are its counts, where read.
    pub(super) fn set_usage_text(&mut self, usage: &str, counts: Option<Box<Members>>) {
        self.usage = Some(RawUsage::checked(usage));
        self.usage_counts = counts;
    }

    fn set_error(&mut self, error: &Value) {
        let message = match error {
            Value::Null => return,
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string()),
            other => other.to_string(),
        };
        self.error = Some(message);
    }

    fn text_at(&mut self, value: Option<&Value>, now: Instant) {
        if let Some(text) = value.and_then(Value::as_str) {
            self.push_text(text, now);
        }
    }

    /// Takes in one parsed event (or a whole non-streamed body). Returns whether the event is a
    /// usage-only chat chunk (`choices: []` plus usage), the one a stripped stream drops.
    pub fn observe(&mut self, root: &Value, dialect: Dialect, event: &str, now: Instant) -> bool {
        let Some(obj) = root.as_object() else {
            self.parse_errors += 1;
            return false;
        };
        match dialect {
            Dialect::Chat | Dialect::Completions | Dialect::Embeddings => {
                self.observe_openai(obj, now)
            }
            Dialect::Responses => {
                self.observe_responses(obj, event, now);
                false
            }
            Dialect::Messages => {
                self.observe_messages(obj, event, now);
                false
            }
        }
    }

    fn observe_openai(&mut self, obj: &Map<String, Value>, now: Instant) -> bool {
        self.set_model(obj.get("model"));
        if let Some(error) = obj.get("error") {
            self.set_error(error);
        }
        let choices = obj.get("choices").and_then(Value::as_array);
        let usage = [
            obj.get("usage"),
            obj.get("x_groq").and_then(|x| x.get("usage")),
        ]
        .into_iter()
        .flatten()
        .chain(choices.into_iter().flatten().filter_map(|c| c.get("usage")))
        .find(|u| u.is_object());
        if let Some(usage) = usage {
            self.set_usage(usage, false);
        }
        for choice in choices.into_iter().flatten() {
            self.text_at(choice.get("text"), now);
            // A `null` delta is no delta, as the typed reading takes it: the message counts.
            let delta = choice.get("delta").filter(|d| !d.is_null());
            let Some(part) = delta.or_else(|| choice.get("message")) else {
                continue;
            };
            for key in ["content", "reasoning_content", "reasoning", "refusal"] {
                self.text_at(part.get(key), now);
            }
            for call in part
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if call.get("id").is_some_and(|id| !id.is_null()) {
                    self.tool_calls += 1;
                }
                if let Some(function) = call.get("function") {
                    self.text_at(function.get("name"), now);
                    self.text_at(function.get("arguments"), now);
                }
            }
        }
        usage.is_some() && choices.is_some_and(Vec::is_empty)
    }

    fn observe_responses(&mut self, obj: &Map<String, Value>, event: &str, now: Instant) {
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or(event);
        if obj.get("object").and_then(Value::as_str) == Some("response") {
            // A whole, non-streamed response.
            self.observe_response_object(obj, now, true);
            self.terminal = true;
            return;
        }
        match kind {
            "response.created"
            | "response.in_progress"
            | "response.queued"
            | "response.completed"
            | "response.incomplete"
            | "response.failed" => {
                if let Some(response) = obj.get("response").and_then(Value::as_object) {
                    self.observe_response_object(response, now, false);
                }
                if matches!(
                    kind,
                    "response.completed" | "response.incomplete" | "response.failed"
                ) {
                    self.terminal = true;
                }
            }
            "response.output_item.added" => {
                let item_kind = obj
                    .get("item")
                    .and_then(|i| i.get("type"))
                    .and_then(Value::as_str);
                if item_kind.is_some_and(|k| k.ends_with("_call") && k != "reasoning") {
                    self.tool_calls += 1;
                }
            }
            "error" => {
                let error = obj.get("error").unwrap_or(&Value::Null);
                match obj.get("message") {
                    Some(message) => self.set_error(message),
                    None => self.set_error(error),
                }
            }
            k if k.ends_with(".delta") => self.text_at(obj.get("delta"), now),
            _ => {}
        }
    }

    fn observe_response_object(
        &mut self,
        response: &Map<String, Value>,
        now: Instant,
        whole: bool,
    ) {
        self.set_model(response.get("model"));
        if let Some(usage) = response.get("usage") {
            self.set_usage(usage, false);
        }
        if let Some(error) = response.get("error") {
            self.set_error(error);
        }
        if !whole {
            return;
        }
        for item in response
            .get("output")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if item
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("_call"))
            {
                self.tool_calls += 1;
                self.text_at(item.get("arguments"), now);
            }
            for part in item
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                self.text_at(part.get("text"), now);
            }
            for part in item
                .get("summary")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                self.text_at(part.get("text"), now);
            }
        }
    }

    fn observe_messages(&mut self, obj: &Map<String, Value>, event: &str, now: Instant) {
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or(event);
        match kind {
            "message" => {
                // A whole, non-streamed message.
                self.set_model(obj.get("model"));
                if let Some(usage) = obj.get("usage") {
                    self.set_usage(usage, false);
                }
                for block in obj
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.content_block(block, now);
                }
                self.terminal = true;
            }
            "message_start" => {
                if let Some(message) = obj.get("message") {
                    self.set_model(message.get("model"));
                    if let Some(usage) = message.get("usage") {
                        self.set_usage(usage, true);
                    }
                }
            }
            "message_delta" => {
                if let Some(usage) = obj.get("usage") {
                    self.set_usage(usage, true);
                }
            }
            "content_block_start" => {
                if let Some(block) = obj.get("content_block") {
                    self.content_block(block, now);
                }
            }
            "content_block_delta" => {
                if let Some(delta) = obj.get("delta") {
                    for key in ["text", "partial_json", "thinking"] {
                        self.text_at(delta.get(key), now);
                    }
                }
            }
            "message_stop" => self.terminal = true,
            "error" => self.set_error(obj.get("error").unwrap_or(&Value::Null)),
            _ => {}
        }
    }

    fn content_block(&mut self, block: &Value, now: Instant) {
        match block.get("type").and_then(Value::as_str) {
            Some("tool_use" | "server_tool_use") => {
                self.tool_calls += 1;
                if let Some(input) = block
                    .get("input")
                    .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                {
                    self.push_text(&input.to_string(), now);
                }
            }
            _ => {
                self.text_at(block.get("text"), now);
                self.text_at(block.get("thinking"), now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_naming_the_model_asked_for_shares_it() {
        let asked: Arc<str> = Arc::from("gpt-4o-mini");
        let mut m = Measurement {
            request_model: Some(Arc::clone(&asked)),
            ..Measurement::default()
        };
        m.set_model_str("gpt-4o-mini");
        assert!(
            m.response_model
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, &asked))
        );
        m.set_model_str("gpt-4o-mini-2024-07-18");
        assert_eq!(m.response_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        assert!(
            !m.response_model
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, &asked))
        );
        // A dated model, named by answer after answer, is shared from the thread's cache.
        let dated = m.response_model.clone().expect("a model");
        let mut next = Measurement::default();
        next.set_model_str("gpt-4o-mini-2024-07-18");
        assert!(next.response_model.is_some_and(|r| Arc::ptr_eq(&r, &dated)));
        // Without a model asked for, the answer's is its own.
        let mut m = Measurement::default();
        m.set_model_str("gpt-4o-mini");
        assert_eq!(m.response_model.as_deref(), Some("gpt-4o-mini"));
    }

    #[test]
    fn kept_text_is_capped_on_a_character_boundary() {
        let mut m = Measurement::default();
        let now = Instant::now();
        let block = "é".repeat(1 << 20); // 2 MiB of two-byte characters
        for _ in 0..3 {
            m.push_text(&block, now);
        }
        m.push_text("x", now);
        assert!(m.text.len() <= MAX_TEXT && m.text.len() > MAX_TEXT - 2);
        assert!(m.text.chars().all(|c| c == 'é'));
        assert!(m.last_content_at.is_some());
    }
}
