//! `POST …/responses`: the OpenAI Responses API, a whole `response` object or a typed event
//! stream (`event: <type>\ndata: {json}\n\n`, every event with `type` and `sequence_number`, no
//! `[DONE]`): `response.created`, `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, one `response.output_text.delta` per completion token,
//! `response.output_text.done`, `response.content_part.done`, `response.output_item.done` and
//! `response.completed` (the full response with its usage).

use bytes::BytesMut;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::Call;
use super::body::{DemoBody, Script, json_response, json_str, push_event, push_u64, sse_response};
use super::tokens::{answer_text, word};

/// Fields of a response object that do not change while it is produced.
struct Shape {
    id: String,
    item_id: String,
    created: u64,
    model: String,
    instructions: Value,
    max_output_tokens: Value,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Shape {
    fn new(call: &Call<'_>) -> Self {
        Self {
            id: format!("resp_demo{:016x}", call.serial),
            item_id: format!("msg_demo{:016x}", call.serial),
            created: call.created,
            model: call.model.clone(),
            instructions: call
                .body
                .get("instructions")
                .cloned()
                .unwrap_or(Value::Null),
            max_output_tokens: call
                .body
                .get("max_output_tokens")
                .cloned()
                .unwrap_or(Value::Null),
            prompt_tokens: call.prompt_tokens,
            completion_tokens: call.completion_tokens,
        }
    }

    fn part(text: &str) -> Value {
        json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text})
    }

    fn item(&self, status: &str, content: Value) -> Value {
        json!({
            "id": self.item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content
        })
    }

    /// The response object; `output` and `usage` only when completed.
    fn response(&self, completed: Option<&str>) -> Value {
        let (status, output, usage) = match completed {
            Some(text) => (
                "completed",
                json!([self.item("completed", json!([Self::part(text)]))]),
                json!({
                    "input_tokens": self.prompt_tokens,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": self.completion_tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": self.prompt_tokens + self.completion_tokens
                }),
            ),
            None => ("in_progress", json!([]), Value::Null),
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "store": false,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": {}
        })
    }
}

/// Answers a Responses API request.
pub(super) fn respond(call: &Call<'_>) -> Response<DemoBody> {
    let shape = Shape::new(call);
    if call.stream {
        let delta_mid = format!(
            r#","item_id":{},"output_index":0,"content_index":0,"delta":""#,
            json_str(&shape.item_id)
        );
        let script = ResponsesScript {
            shape,
            sequence: 0,
            delta_mid,
        };
        return sse_response(Box::new(script), call.completion_tokens, call.pacing);
    }
    let text = answer_text(call.completion_tokens);
    json_response(StatusCode::OK, &shape.response(Some(&text)))
}

/// The streamed response.
struct ResponsesScript {
    shape: Shape,
    /// The next event's `sequence_number`.
    sequence: u64,
    /// `,"item_id":…,"output_index":0,"content_index":0,"delta":"` of the delta events.
    delta_mid: String,
}

impl ResponsesScript {
    /// Appends one event built from `fields` (an object) plus `type` and `sequence_number`.
    fn event(&mut self, out: &mut BytesMut, kind: &str, mut fields: Value) {
        if let Value::Object(map) = &mut fields {
            map.insert("type".to_owned(), Value::from(kind));
            map.insert("sequence_number".to_owned(), Value::from(self.sequence));
        }
        self.sequence += 1;
        push_event(out, kind, &fields);
    }
}

impl Script for ResponsesScript {
    fn preamble(&mut self, out: &mut BytesMut) {
        let response = self.shape.response(None);
        self.event(out, "response.created", json!({"response": response}));
        self.event(out, "response.in_progress", json!({"response": response}));
        let item = self.shape.item("in_progress", json!([]));
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        );
        let added = json!({
            "item_id": self.shape.item_id,
            "output_index": 0,
            "content_index": 0,
            "part": Shape::part("")
        });
        self.event(out, "response.content_part.added", added);
    }

    fn chunk(&mut self, index: u64, out: &mut BytesMut) {
        out.extend_from_slice(
            b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":",
        );
        push_u64(out, self.sequence);
        self.sequence += 1;
        out.extend_from_slice(self.delta_mid.as_bytes());
        out.extend_from_slice(word(index).as_bytes());
        out.extend_from_slice(b"\",\"logprobs\":[]}\n\n");
    }

    fn finish(&mut self, out: &mut BytesMut) {
        let text = answer_text(self.shape.completion_tokens);
        let item_id = self.shape.item_id.clone();
        self.event(
            out,
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
        );
        self.event(
            out,
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": Shape::part(&text)}),
        );
        let item = self.shape.item("completed", json!([Shape::part(&text)]));
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        );
        let response = self.shape.response(Some(&text));
        self.event(out, "response.completed", json!({"response": response}));
    }
}
