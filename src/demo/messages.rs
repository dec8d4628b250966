//! `POST …/messages`: the Anthropic Messages API, a whole `message` or Anthropic's event stream
//! (`event: <type>\ndata: {json}\n\n`): `message_start` (usage with the input tokens and
//! `output_tokens: 1`), `content_block_start`, `ping`, one `content_block_delta` (`text_delta`)
//! per completion token, `content_block_stop`, `message_delta` (stop reason and the cumulative
//! `output_tokens`) and `message_stop`.

use bytes::BytesMut;
use http::{Response, StatusCode};
use serde_json::json;

use super::Call;
use super::body::{DemoBody, Script, json_response, push_event, sse_response};
use super::tokens::{answer_text, word};

/// Answers an Anthropic Messages request.
pub(super) fn respond(call: &Call<'_>) -> Response<DemoBody> {
    let id = format!("msg_demo{:016x}", call.serial);
    let stop_reason = if call.truncated {
        "max_tokens"
    } else {
        "end_turn"
    };
    if call.stream {
        let script = MessagesScript {
            id,
            model: call.model.clone(),
            stop_reason,
            prompt_tokens: call.prompt_tokens,
            completion_tokens: call.completion_tokens,
        };
        return sse_response(Box::new(script), call.completion_tokens, call.pacing);
    }
    let message = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [{"type": "text", "text": answer_text(call.completion_tokens)}],
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": call.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": call.completion_tokens
        }
    });
    json_response(StatusCode::OK, &message)
}

/// The streamed message.
struct MessagesScript {
    id: String,
    model: String,
    stop_reason: &'static str,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Script for MessagesScript {
    fn preamble(&mut self, out: &mut BytesMut) {
        let start = json!({
            "type": "message_start",
            "message": {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": self.prompt_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 1
                }
            }
        });
        push_event(out, "message_start", &start);
        out.extend_from_slice(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        );
        out.extend_from_slice(b"event: ping\ndata: {\"type\": \"ping\"}\n\n");
    }

    fn chunk(&mut self, index: u64, out: &mut BytesMut) {
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"",
        );
        out.extend_from_slice(word(index).as_bytes());
        out.extend_from_slice(b"\"}}\n\n");
    }

    fn finish(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        );
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": self.completion_tokens}
        });
        push_event(out, "message_delta", &delta);
        out.extend_from_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    }
}
