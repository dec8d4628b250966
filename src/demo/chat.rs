//! `POST …/chat/completions`: OpenAI Chat Completions, whole (`chat.completion`) or streamed
//! (`chat.completion.chunk` events in `data: {json}\n\n` framing, ending with `data: [DONE]`).
//!
//! A request with a non-empty `tools` array gets one call of the first tool instead of text: its
//! arguments are `{"text":"<answer text>"}`, streamed in one fragment per completion token.
//! With `n`, each of the `n` choices answers so: choice `i`'s text starts at word `i`, and its
//! tool call's id has `_i` added after the first's; a stream sends each step's event for every
//! choice in turn.

use bytes::BytesMut;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::Call;
use super::body::{DemoBody, Script, json_response, json_str, sse_response};
use super::tokens::{choice_text, word};

/// Opening of the tool arguments (before the first word).
const ARGS_OPEN: &str = r#"{"text":""#;
/// Closing of the tool arguments (after the last word).
const ARGS_CLOSE: &str = r#""}"#;
/// The same, escaped inside a JSON string.
const ARGS_OPEN_ESCAPED: &str = r#"{\"text\":\""#;
const ARGS_CLOSE_ESCAPED: &str = r#"\"}"#;

/// The `usage` object of Chat Completions.
pub(super) fn chat_usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// `chat_usage` as the text it serialises to (serde_json's key order), for the usage chunk of a
/// stream: built as a `Value` tree, serialised and freed per stream, that chunk cost the bench's
/// upstream more than the rest of the stream (76k against 41k instructions per 20-chunk stream
/// under callgrind), a cost only the proxy that asks for usage made it pay.
fn chat_usage_text(prompt: u64, completion: u64) -> String {
    format!(
        r#"{{"completion_tokens":{completion},"completion_tokens_details":{{"accepted_prediction_tokens":0,"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0}},"prompt_tokens":{prompt},"prompt_tokens_details":{{"audio_tokens":0,"cached_tokens":0}},"total_tokens":{}}}"#,
        prompt + completion
    )
}

/// The name of the tool to call, if the request offers tools.
fn tool_name(body: &Value) -> Option<String> {
    let first = body.get("tools")?.as_array()?.first()?;
    let name = first
        .pointer("/function/name")
        .or_else(|| first.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("demo_tool");
    Some(name.to_owned())
}

/// The tool call id of choice `choice`: the request's own for the first, suffixed for the others.
fn choice_call_id(call_id: &str, choice: u64) -> String {
    match choice {
        0 => call_id.to_owned(),
        _ => format!("{call_id}_{choice}"),
    }
}

/// Whether `stream_options.include_usage` is true.
pub(super) fn include_usage(body: &Value) -> bool {
    body.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Answers a chat completion request.
pub(super) fn respond(call: &Call<'_>) -> Response<DemoBody> {
    let id = format!("chatcmpl-demo{:016x}", call.serial);
    let tool = tool_name(call.body);
    let call_id = format!("call_demo{:016x}", call.serial);
    let finish = match (&tool, call.truncated) {
        (Some(_), _) => "tool_calls",
        (None, true) => "length",
        (None, false) => "stop",
    };
    if call.stream {
        let usage = include_usage(call.body);
        let script = ChatScript::new(call, &id, tool.map(|name| (call_id, name)), finish, usage);
        return sse_response(Box::new(script), call.completion_tokens, call.pacing);
    }
    let choices: Vec<Value> = (0..call.choices)
        .map(|choice| {
            let text = choice_text(choice, call.completion_tokens);
            let message = match &tool {
                Some(name) => json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "id": choice_call_id(&call_id, choice),
                        "type": "function",
                        "function": {"name": name, "arguments": format!("{ARGS_OPEN}{text}{ARGS_CLOSE}")}
                    }],
                    "refusal": null,
                    "annotations": []
                }),
                None => {
                    json!({"role": "assistant", "content": text, "refusal": null, "annotations": []})
                }
            };
            json!({"index": choice, "message": message, "logprobs": null, "finish_reason": finish})
        })
        .collect();
    let completion = json!({
        "id": id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "choices": choices,
        "usage": chat_usage(call.prompt_tokens, call.all_completion_tokens()),
        "service_tier": "default",
        "system_fingerprint": "fp_demo"
    });
    json_response(StatusCode::OK, &completion)
}

/// The streamed chat completion: for each step (role, each token, finish) one event per choice.
struct ChatScript {
    /// `data: {"id":…,"choices":[{"index":<choice>,"delta":`, one for each choice: every chunk
    /// starts with its choice's.
    heads: Vec<String>,
    /// `,"logprobs":null,"finish_reason":null}]` + `,"usage":null` when usage is included + `}\n\n`.
    tail: String,
    /// The same tail with `null` replaced by `"<finish>"`, for the finishing chunk.
    finish_tail: String,
    /// `(call id, tool name)` when answering with a tool call.
    tool: Option<(String, String)>,
    total: u64,
    /// The final usage chunk (`"choices": []`) with its framing, when `include_usage` is set.
    usage_chunk: Option<String>,
}

impl ChatScript {
    fn new(
        call: &Call<'_>,
        id: &str,
        tool: Option<(String, String)>,
        finish: &str,
        include_usage: bool,
    ) -> Self {
        let usage_null = if include_usage {
            r#","usage":null"#
        } else {
            ""
        };
        let head = format!(
            r#"data: {{"id":{},"object":"chat.completion.chunk","created":{},"model":{},"service_tier":"default","system_fingerprint":"fp_demo","choices":[{{"index":"#,
            json_str(id),
            call.created,
            json_str(&call.model),
        );
        let heads = (0..call.choices)
            .map(|choice| format!(r#"{head}{choice},"delta":"#))
            .collect();
        // The members in serde_json's order, as the whole answer's are.
        let usage_chunk = include_usage.then(|| {
            format!(
                r#"data: {{"choices":[],"created":{},"id":{},"model":{},"object":"chat.completion.chunk","service_tier":"default","system_fingerprint":"fp_demo","usage":{}}}"#,
                call.created,
                json_str(id),
                json_str(&call.model),
                chat_usage_text(call.prompt_tokens, call.all_completion_tokens()),
            ) + "\n\n"
        });
        Self {
            heads,
            tail: format!(r#","logprobs":null,"finish_reason":null}}]{usage_null}}}"#) + "\n\n",
            finish_tail: format!(r#","logprobs":null,"finish_reason":"{finish}"}}]{usage_null}}}"#)
                + "\n\n",
            tool,
            total: call.completion_tokens,
            usage_chunk,
        }
    }
}

impl Script for ChatScript {
    fn preamble(&mut self, out: &mut BytesMut) {
        for (choice, head) in (0u64..).zip(&self.heads) {
            out.extend_from_slice(head.as_bytes());
            match &self.tool {
                Some((call_id, name)) => {
                    out.extend_from_slice(
                        br#"{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"#,
                    );
                    out.extend_from_slice(json_str(&choice_call_id(call_id, choice)).as_bytes());
                    out.extend_from_slice(br#","type":"function","function":{"name":"#);
                    out.extend_from_slice(json_str(name).as_bytes());
                    out.extend_from_slice(br#","arguments":""}}],"refusal":null}"#);
                }
                None => {
                    out.extend_from_slice(br#"{"role":"assistant","content":"","refusal":null}"#)
                }
            }
            out.extend_from_slice(self.tail.as_bytes());
        }
    }

    fn chunk(&mut self, index: u64, out: &mut BytesMut) {
        for (choice, head) in (0u64..).zip(&self.heads) {
            out.extend_from_slice(head.as_bytes());
            if self.tool.is_some() {
                out.extend_from_slice(br#"{"tool_calls":[{"index":0,"function":{"arguments":""#);
                if index == 0 {
                    out.extend_from_slice(ARGS_OPEN_ESCAPED.as_bytes());
                }
                out.extend_from_slice(word(choice + index).as_bytes());
                if index + 1 == self.total {
                    out.extend_from_slice(ARGS_CLOSE_ESCAPED.as_bytes());
                }
                out.extend_from_slice(br#""}}]}"#);
            } else {
                out.extend_from_slice(br#"{"content":""#);
                out.extend_from_slice(word(choice + index).as_bytes());
                out.extend_from_slice(br#""}"#);
            }
            out.extend_from_slice(self.tail.as_bytes());
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        for head in &self.heads {
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(b"{}");
            out.extend_from_slice(self.finish_tail.as_bytes());
        }
        if let Some(chunk) = &self.usage_chunk {
            out.extend_from_slice(chunk.as_bytes());
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_text_is_the_usage_value_written_out() {
        for (prompt, completion) in [(0, 0), (12, 20), (1 << 40, 7)] {
            assert_eq!(
                chat_usage_text(prompt, completion),
                chat_usage(prompt, completion).to_string()
            );
        }
    }
}
