//! The demo upstream: a built-in, simulated OpenAI-compatible (and Anthropic) server.
//!
//! `tokentap --demo` serves it on a loopback port so the proxy can be tried offline, and the
//! integration tests and benchmarks start it in-process as their fast upstream. It shares no code
//! with the rest of the crate on purpose: it is the independent ground truth the token meter is
//! checked against. It speaks HTTP/1.1 (keep-alive) and h2c.
//!
//! # Routes
//!
//! Matched on the path's last segments, so `/v1/chat/completions` and `/chat/completions` both
//! work (the query string is ignored):
//!
//! | Method | Path suffix          | Answer                                                    |
//! |--------|----------------------|-----------------------------------------------------------|
//! | POST   | `/chat/completions`  | `chat.completion` / `chat.completion.chunk` stream         |
//! | POST   | `/completions`       | legacy `text_completion` (streamed or not)                |
//! | POST   | `/embeddings`        | deterministic embeddings (`dimensions`, default 1536)     |
//! | POST   | `/responses`         | Responses API `response` / typed event stream             |
//! | POST   | `/messages`          | Anthropic Messages `message` / event stream               |
//! | POST   | `/messages/count_tokens` | Anthropic's `{"input_tokens": N}`, the prompt's count |
//! | GET    | `/models`            | model list                                                |
//!
//! Anything else is a 404, a wrong method a 405 and a body that is not a JSON object a 400, all
//! with OpenAI's error shape `{"error":{"message","type":"invalid_request_error","code":null}}`.
//! Streams follow each API's exact framing: OpenAI `data: {json}\n\n` ending with
//! `data: [DONE]\n\n` (the usage chunk, `"choices": []`, only with
//! `stream_options.include_usage: true`, in which case every other chunk carries `"usage": null`);
//! Responses and Anthropic `event: <type>\ndata: {json}\n\n`. A chat request with a non-empty
//! `tools` array is answered with one call of the first tool (arguments `{"text":"…"}`, one
//! argument fragment per completion token, finish reason `tool_calls`).
//!
//! # Token counts (deterministic)
//!
//! - **Completion tokens** = `max_tokens`, else `max_completion_tokens`, else `max_output_tokens`
//!   if given, else 16; clamped to `1..=100_000`. Completion token `i` is the `i`-th word, cycling,
//!   of a fixed list prefixed by a space (`" lorem"`, `" ipsum"`, `" dolor"`, …), and each is one
//!   streamed content chunk (`delta.content`, `text`, `delta`, `text_delta` or a tool-argument
//!   fragment). The finish reason is `length` (Anthropic `max_tokens`) when the request's limit is
//!   below 16, else `stop` (`end_turn`).
//! - **Prompt tokens**, with `words(s)` = number of whitespace-separated words:
//!   - chat completions, responses, messages: `3 + Σ over messages (4 + words(text content))`
//!     `+ words(system or instructions)`; the messages are `messages` (Responses: `input`, where a
//!     plain string is one message); a content (and `system`) is a string or an array of parts
//!     whose `text` strings are counted; other parts, tools and names count nothing;
//!   - legacy completions: `words(prompt) + 1` (`prompt` a string or an array of strings; token
//!     ids count 1 each);
//!   - embeddings: `Σ over inputs (words(input) + 1)`; a token-array input counts its length.
//! - **Choices**: a chat or legacy completion request with `n` (clamped to `1..=128`) gets `n`
//!   choices, choice `i`'s text starting at word `i`, each of the completion tokens above; its
//!   usage counts `n` times the completion tokens, and a stream sends one event per choice for
//!   each step (role, each token, finish).
//! - **Total** = prompt + completion. [`prompt_tokens_for`] and [`completion_tokens_for`] compute
//!   the same numbers for tests (completion per choice).
//!
//! # Per-request test controls (request headers)
//!
//! - `x-demo-first-chunk-delay-ms: N` / `x-demo-chunk-delay-ms: N` override the pacing of
//!   [`DemoOptions`] for this request. The first delay precedes the first streamed event (sent
//!   together with the first content chunk); the chunk delay precedes every later content chunk.
//!   A non-streamed answer waits `first + (n - 1) × chunk` for `n` completion tokens.
//! - `x-demo-status: NNN` (400..=599) answers that status with an OpenAI-shaped error body.
//! - `x-demo-abort-after: N` (streams only) sends the first `N` content chunks (all of them if `N`
//!   is larger), then drops the connection abruptly: no finish chunk, no usage, no terminator.
//!
//! A malformed control header is answered with a 400.

mod body;
mod chat;
mod completions;
mod embeddings;
mod messages;
mod responses;
mod tokens;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use body::{DemoBody, Pacing, error_response, json_response};

/// Largest accepted request body.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Pacing of the demo upstream's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoOptions {
    /// Delay before the first streamed chunk (time to first token). Zero = none.
    pub first_chunk_delay: Duration,
    /// Delay between streamed chunks. Zero = unpaced.
    pub chunk_delay: Duration,
}

impl DemoOptions {
    /// Realistic pacing: 200 ms to the first chunk, then 20 ms per chunk.
    pub fn paced() -> Self {
        Self {
            first_chunk_delay: Duration::from_millis(200),
            chunk_delay: Duration::from_millis(20),
        }
    }

    /// No pacing at all: as fast as possible (tests, benchmarks).
    pub fn unpaced() -> Self {
        Self {
            first_chunk_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
        }
    }
}

/// Serves the demo upstream on `listener` until `shutdown` is cancelled (then stops accepting,
/// drops the open connections and returns). HTTP/1.1 with keep-alive and h2c. Never panics on bad
/// input; accept errors (e.g. too many open files) are logged and retried after a short pause.
pub async fn serve(
    listener: TcpListener,
    options: DemoOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                tracing::debug!(%error, "demo upstream: accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_millis(20)) => continue,
                }
            }
        };
        // Small SSE writes must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let service = service_fn(move |request| async move {
                Ok::<_, Infallible>(handle(request, options).await)
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "demo upstream: connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// The API a request path addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Messages,
    /// Anthropic's `POST /v1/messages/count_tokens`.
    CountTokens,
    Models,
}

impl Route {
    fn from_path(path: &str) -> Option<Self> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let mut segments = path.rsplit('/').filter(|segment| !segment.is_empty());
        let last = segments.next()?;
        let previous = segments.next();
        match (previous, last) {
            (Some("chat"), "completions") => Some(Self::Chat),
            (_, "completions") => Some(Self::Completions),
            (_, "embeddings") => Some(Self::Embeddings),
            (_, "responses") => Some(Self::Responses),
            (_, "messages") => Some(Self::Messages),
            (Some("messages"), "count_tokens") => Some(Self::CountTokens),
            (_, "models") => Some(Self::Models),
            _ => None,
        }
    }
}

/// The prompt tokens the demo upstream reports for a request `body` sent to `path` (see the
/// module documentation for the formula; 0 for paths it does not serve).
pub fn prompt_tokens_for(path: &str, body: &Value) -> u64 {
    match Route::from_path(path) {
        Some(Route::Chat) => tokens::chat_prompt(body),
        Some(Route::Completions) => tokens::completions_prompt(body),
        Some(Route::Embeddings) => tokens::embeddings_prompt(body),
        Some(Route::Responses) => tokens::responses_prompt(body),
        Some(Route::Messages | Route::CountTokens) => tokens::messages_prompt(body),
        Some(Route::Models) | None => 0,
    }
}

/// The completion tokens the demo upstream produces for a request `body` (chat, legacy
/// completions, responses and messages alike), per choice: a chat or legacy completion request
/// with `n` gets `n` choices of this many each.
pub fn completion_tokens_for(body: &Value) -> u64 {
    tokens::completion_tokens(body)
}

/// Everything an API writer needs to answer one request.
struct Call<'a> {
    body: &'a Value,
    model: String,
    prompt_tokens: u64,
    /// Per choice.
    completion_tokens: u64,
    /// `n` of a chat or legacy completion request, else 1.
    choices: u64,
    /// Finish with `length` / `max_tokens` instead of `stop` / `end_turn`.
    truncated: bool,
    stream: bool,
    pacing: Pacing,
    /// Unique per request, for ids.
    serial: u64,
    /// Unix seconds.
    created: u64,
}

impl Call<'_> {
    /// The completion tokens the usage reports: every choice's.
    fn all_completion_tokens(&self) -> u64 {
        self.completion_tokens * self.choices
    }
}

/// The per-request header controls.
struct Controls {
    status: Option<StatusCode>,
    pacing: Pacing,
}

impl Controls {
    fn from_headers(headers: &HeaderMap, options: DemoOptions) -> Result<Self, String> {
        let first = header_u64(headers, "x-demo-first-chunk-delay-ms")?;
        let chunk = header_u64(headers, "x-demo-chunk-delay-ms")?;
        let abort_after = header_u64(headers, "x-demo-abort-after")?;
        let status = match header_u64(headers, "x-demo-status")? {
            None => None,
            Some(code @ 400..=599) => StatusCode::from_u16(code as u16).ok(),
            Some(code) => return Err(format!("x-demo-status must be in 400..=599, got {code}")),
        };
        Ok(Self {
            status,
            pacing: Pacing {
                first: first.map_or(options.first_chunk_delay, Duration::from_millis),
                chunk: chunk.map_or(options.chunk_delay, Duration::from_millis),
                abort_after,
            },
        })
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, String> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| format!("invalid {name} header: expected a non-negative integer"))
}

fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Answers one request.
async fn handle(request: Request<Incoming>, options: DemoOptions) -> Response<DemoBody> {
    let controls = match Controls::from_headers(request.headers(), options) {
        Ok(controls) => controls,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, &message),
    };
    if let Some(status) = controls.status {
        let message = format!(
            "Simulated error: x-demo-status asked for {}",
            status.as_u16()
        );
        return error_response(status, &message);
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let Some(route) = Route::from_path(&path) else {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {path})"),
        );
    };
    let expected = if route == Route::Models {
        Method::GET
    } else {
        Method::POST
    };
    if method != expected {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("Method {method} not allowed for {path}; use {expected}"),
        );
        if let Ok(allow) = http::HeaderValue::from_str(expected.as_str()) {
            response.headers_mut().insert(http::header::ALLOW, allow);
        }
        return response;
    }
    if route == Route::Models {
        return models();
    }

    let bytes = match Limited::new(request.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
        }
        Err(_) => {
            return error_response(StatusCode::BAD_REQUEST, "Could not read the request body");
        }
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "We could not parse the JSON body of your request. (HINT: This likely means you \
                 aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            );
        }
    };

    let default_model = match route {
        Route::Messages | Route::CountTokens => "claude-sonnet-4-5",
        Route::Embeddings => "text-embedding-3-small",
        _ => "gpt-4o-mini",
    };
    let call = Call {
        body: &body,
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(default_model)
            .to_owned(),
        prompt_tokens: prompt_tokens_for(&path, &body),
        completion_tokens: completion_tokens_for(&body),
        choices: match route {
            Route::Chat | Route::Completions => tokens::choices(&body),
            _ => 1,
        },
        truncated: tokens::truncated(&body),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        pacing: controls.pacing,
        serial: next_serial(),
        created: unix_now(),
    };

    if !matches!(route, Route::Embeddings | Route::CountTokens) && !call.stream {
        // A whole answer arrives when the last token would have been streamed.
        let later = u32::try_from(call.completion_tokens.saturating_sub(1)).unwrap_or(u32::MAX);
        let wait = call
            .pacing
            .chunk
            .checked_mul(later)
            .and_then(|rest| rest.checked_add(call.pacing.first))
            .unwrap_or(Duration::MAX);
        if !wait.is_zero() {
            tokio::time::sleep_until(body::deadline_after(wait)).await;
        }
    }

    match route {
        Route::Chat => chat::respond(&call),
        Route::Completions => completions::respond(&call),
        Route::Embeddings => embeddings::respond(&call),
        Route::Responses => responses::respond(&call),
        Route::Messages => messages::respond(&call),
        // What a message with this body would count as input, answered at once.
        Route::CountTokens => {
            body::json_response(StatusCode::OK, &json!({"input_tokens": call.prompt_tokens}))
        }
        Route::Models => models(),
    }
}

/// `GET /models`.
fn models() -> Response<DemoBody> {
    const MODELS: [(&str, u64, &str); 5] = [
        ("gpt-4o-mini", 1_721_172_741, "tokentap-demo"),
        ("gpt-4o", 1_715_367_049, "tokentap-demo"),
        ("o4-mini", 1_744_225_351, "tokentap-demo"),
        ("text-embedding-3-small", 1_705_948_997, "tokentap-demo"),
        ("claude-sonnet-4-5", 1_759_104_000, "tokentap-demo"),
    ];
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, created, owner)| json!({"id": id, "object": "model", "created": created, "owned_by": owner}))
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}
