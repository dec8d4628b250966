//! `POST …/completions` (not chat): OpenAI legacy completions, object `text_completion`, whole or
//! streamed in `data: {json}\n\n` framing with the same usage rules as chat completions
//! (`stream_options.include_usage`) and a final `data: [DONE]`. With `n`, `n` choices as in chat:
//! choice `i`'s text starts at word `i`, and a stream sends each token's event for every choice.

use bytes::BytesMut;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::Call;
use super::body::{DemoBody, Script, json_response, json_str, push_data, sse_response};
use super::chat::include_usage;
use super::tokens::{choice_text, word};

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Answers a legacy completion request.
pub(super) fn respond(call: &Call<'_>) -> Response<DemoBody> {
    let id = format!("cmpl-demo{:016x}", call.serial);
    let finish = if call.truncated { "length" } else { "stop" };
    if call.stream {
        let script = CompletionScript::new(call, &id, finish, include_usage(call.body));
        return sse_response(Box::new(script), call.completion_tokens, call.pacing);
    }
    let completion = json!({
        "id": id,
        "object": "text_completion",
        "created": call.created,
        "model": call.model,
        "choices": (0..call.choices).map(|choice| json!({
            "text": choice_text(choice, call.completion_tokens),
            "index": choice,
            "logprobs": null,
            "finish_reason": finish
        })).collect::<Vec<_>>(),
        "usage": usage(call.prompt_tokens, call.all_completion_tokens()),
        "system_fingerprint": "fp_demo"
    });
    json_response(StatusCode::OK, &completion)
}

/// The streamed legacy completion: for each token, and for the finish, one event per choice.
struct CompletionScript {
    /// `data: {"id":…,"choices":[{"text":"`
    head: String,
    /// `","index":<choice>,"logprobs":null,"finish_reason":null}]` (+ `,"usage":null`) `}\n\n`,
    /// one for each choice.
    tails: Vec<String>,
    /// The finishing chunks (empty text, finish reason), every choice's.
    finish_chunks: String,
    usage_chunk: Option<Value>,
}

impl CompletionScript {
    fn new(call: &Call<'_>, id: &str, finish: &str, include_usage: bool) -> Self {
        let usage_null = if include_usage {
            r#","usage":null"#
        } else {
            ""
        };
        let head = format!(
            r#"data: {{"id":{},"object":"text_completion","created":{},"model":{},"system_fingerprint":"fp_demo","choices":[{{"text":""#,
            json_str(id),
            call.created,
            json_str(&call.model),
        );
        let tails = (0..call.choices)
            .map(|choice| {
                format!(
                    r#"","index":{choice},"logprobs":null,"finish_reason":null}}]{usage_null}}}"#
                ) + "\n\n"
            })
            .collect();
        let finish_chunks = (0..call.choices)
            .map(|choice| {
                format!(
                    r#"{head}","index":{choice},"logprobs":null,"finish_reason":"{finish}"}}]{usage_null}}}"#
                ) + "\n\n"
            })
            .collect();
        let usage_chunk = include_usage.then(|| {
            json!({
                "id": id,
                "object": "text_completion",
                "created": call.created,
                "model": call.model,
                "system_fingerprint": "fp_demo",
                "choices": [],
                "usage": usage(call.prompt_tokens, call.all_completion_tokens())
            })
        });
        Self {
            head,
            tails,
            finish_chunks,
            usage_chunk,
        }
    }
}

impl Script for CompletionScript {
    fn preamble(&mut self, _out: &mut BytesMut) {}

    fn chunk(&mut self, index: u64, out: &mut BytesMut) {
        for (choice, tail) in (0u64..).zip(&self.tails) {
            out.extend_from_slice(self.head.as_bytes());
            out.extend_from_slice(word(choice + index).as_bytes());
            out.extend_from_slice(tail.as_bytes());
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(self.finish_chunks.as_bytes());
        if let Some(chunk) = &self.usage_chunk {
            push_data(out, chunk);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}
