//! Round-trip tests of the demo upstream: a real server on 127.0.0.1:0, real HTTP clients.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{DemoOptions, prompt_tokens_for, serve};

mod apis;
mod transport;

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(options: DemoOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, options, shutdown.clone()));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn post(
    server: &Server,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut request = client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// Splits an SSE body into `(event name, data)` pairs, checking the `\n\n` framing.
fn sse(text: &str) -> Vec<(Option<String>, String)> {
    assert!(text.ends_with("\n\n"), "unterminated stream: {text:?}");
    text.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                } else {
                    panic!("unexpected line {line:?}");
                }
            }
            (event, data.unwrap())
        })
        .collect()
}

fn parse(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|e| panic!("bad JSON {data:?}: {e}"))
}

fn chat_body() -> Value {
    json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "you are terse"},
        {"role": "user", "content": "say hello to the world"},
    ]})
}

#[tokio::test]
async fn chat_whole_and_streamed() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let body = chat_body();
    let prompt = prompt_tokens_for("/v1/chat/completions", &body);
    assert_eq!(prompt, 3 + (4 + 3) + (4 + 5));
    let (status, _, text) = post(&server, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(status, 200);
    let v = parse(&text);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        super::tokens::answer_text(16)
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], prompt);
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(v["usage"]["total_tokens"], prompt + 16);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );

    // Streamed without usage: no usage key anywhere.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["max_tokens"] = json!(5);
    let (status, content_type, text) = post(&server, "/chat/completions", &streamed, &[]).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/event-stream"));
    let events = sse(&text);
    assert_eq!(events.len(), 1 + 5 + 1 + 1);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| parse(d))
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    let content: String = chunks[1..6]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, " lorem ipsum dolor sit amet");
    assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "length");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert!(chunk.get("usage").is_none());
    }

    // Streamed with usage: `usage: null` everywhere, then the usage chunk.
    streamed["stream_options"] = json!({"include_usage": true});
    let (_, _, text) = post(&server, "/v1/chat/completions?x=1", &streamed, &[]).await;
    let events = sse(&text);
    assert_eq!(events.len(), 1 + 5 + 1 + 1 + 1);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| parse(d))
        .collect();
    for chunk in &chunks[..chunks.len() - 1] {
        assert_eq!(chunk["usage"], Value::Null);
        assert!(chunk.get("usage").is_some());
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], prompt);
    assert_eq!(last["usage"]["completion_tokens"], 5);
    assert_eq!(last["usage"]["total_tokens"], prompt + 5);
    assert_eq!(last["usage"], super::chat::chat_usage(prompt, 5));
    for key in [
        "id",
        "object",
        "created",
        "model",
        "service_tier",
        "system_fingerprint",
    ] {
        assert_eq!(last[key], chunks[0][key], "{key}");
    }
    // Written as text, the chunk is what serde_json writes for it: compact, keys in its order.
    assert_eq!(events[events.len() - 2].1, last.to_string());
    server.stop().await;
}

#[tokio::test]
async fn chat_tool_calls() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let mut body = chat_body();
    body["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
    body["max_completion_tokens"] = json!(4);
    let (_, _, text) = post(&server, "/v1/chat/completions", &body, &[]).await;
    let v = parse(&text);
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let arguments = parse(call["function"]["arguments"].as_str().unwrap());
    assert_eq!(arguments["text"], " lorem ipsum dolor sit");
    assert_eq!(v["usage"]["completion_tokens"], 4);

    body["stream"] = json!(true);
    let (_, _, text) = post(&server, "/v1/chat/completions", &body, &[]).await;
    let events = sse(&text);
    assert_eq!(events.len(), 1 + 4 + 1 + 1);
    let chunks: Vec<Value> = events[..6].iter().map(|(_, d)| parse(d)).collect();
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["index"], 0);
    assert_eq!(first["type"], "function");
    assert_eq!(first["function"]["name"], "get_weather");
    assert_eq!(first["function"]["arguments"], "");
    let arguments: String = chunks[1..5]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(parse(&arguments)["text"], " lorem ipsum dolor sit");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
    server.stop().await;
}

#[tokio::test]
async fn legacy_completions() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let body =
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": "once upon a time", "max_tokens": 3});
    assert_eq!(prompt_tokens_for("/v1/completions", &body), 5);
    let (_, _, text) = post(&server, "/v1/completions", &body, &[]).await;
    let v = parse(&text);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], " lorem ipsum dolor");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
    );

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (_, _, text) = post(&server, "/completions", &streamed, &[]).await;
    let events = sse(&text);
    assert_eq!(events.len(), 3 + 1 + 1 + 1);
    assert_eq!(events[5].1, "[DONE]");
    let chunks: Vec<Value> = events[..5].iter().map(|(_, d)| parse(d)).collect();
    assert_eq!(chunks[0]["choices"][0]["text"], " lorem");
    assert_eq!(chunks[0]["usage"], Value::Null);
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["total_tokens"], 8);
    server.stop().await;
}

/// Choice `i` of each chunk of a stream, its texts joined (content, or legacy `text`).
fn joined(chunks: &[Value], choice: u64, read: impl Fn(&Value) -> Option<&str>) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().into_iter().flatten())
        .filter(|c| c["index"] == choice)
        .filter_map(read)
        .collect()
}

#[tokio::test]
async fn n_choices_in_chat_and_legacy_completions() {
    use super::tokens::choice_text;
    let server = Server::start(DemoOptions::unpaced()).await;
    let mut body = chat_body();
    body["n"] = json!(3);
    body["max_tokens"] = json!(4);
    let prompt = prompt_tokens_for("/v1/chat/completions", &body);
    let (_, _, text) = post(&server, "/v1/chat/completions", &body, &[]).await;
    let v = parse(&text);
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, choice) in (0u64..).zip(choices) {
        assert_eq!(choice["index"], i);
        assert_eq!(choice["message"]["content"], choice_text(i, 4));
    }
    assert_ne!(
        choices[0]["message"]["content"],
        choices[1]["message"]["content"]
    );
    assert_eq!(v["usage"]["completion_tokens"], 12, "every choice's tokens");
    assert_eq!(v["usage"]["total_tokens"], prompt + 12);

    // Streamed: each step's event for every choice, the usage of all of them.
    body["n"] = json!(2);
    body["max_tokens"] = json!(3);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (_, _, text) = post(&server, "/v1/chat/completions", &body, &[]).await;
    let events = sse(&text);
    assert_eq!(events.len(), 2 + 3 * 2 + 2 + 1 + 1);
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| parse(d))
        .collect();
    for i in 0..2 {
        let content = joined(&chunks, i, |c| c["delta"]["content"].as_str());
        assert_eq!(content, choice_text(i, 3), "choice {i}");
        let finishes: Vec<&Value> = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().into_iter().flatten())
            .filter(|c| c["index"] == i && !c["finish_reason"].is_null())
            .collect();
        assert_eq!(finishes.len(), 1);
    }
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 6);

    // With tools, each choice calls the tool under an id of its own.
    let mut tools = chat_body();
    tools["n"] = json!(2);
    tools["tools"] = json!([{"type": "function", "function": {"name": "lookup"}}]);
    let (_, _, text) = post(&server, "/v1/chat/completions", &tools, &[]).await;
    let v = parse(&text);
    let id = |i: usize| v["choices"][i]["message"]["tool_calls"][0]["id"].clone();
    assert_ne!(id(0), id(1));

    // n of 0 is one choice; the legacy API too.
    let mut one = chat_body();
    one["n"] = json!(0);
    let (_, _, text) = post(&server, "/v1/chat/completions", &one, &[]).await;
    assert_eq!(parse(&text)["choices"].as_array().unwrap().len(), 1);
    let legacy = json!({"prompt": "once upon a time", "max_tokens": 3, "n": 2});
    let (_, _, text) = post(&server, "/v1/completions", &legacy, &[]).await;
    let v = parse(&text);
    assert_eq!(v["choices"][1]["text"], choice_text(1, 3));
    assert_eq!(v["usage"]["completion_tokens"], 6);
    let mut streamed = legacy.clone();
    streamed["stream"] = json!(true);
    let (_, _, text) = post(&server, "/v1/completions", &streamed, &[]).await;
    let events = sse(&text);
    assert_eq!(events.len(), 3 * 2 + 2 + 1);
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| parse(d))
        .collect();
    for i in 0..2 {
        assert_eq!(
            joined(&chunks, i, |c| c["text"].as_str()),
            choice_text(i, 3)
        );
    }
    server.stop().await;
}

#[test]
fn routes_match_suffixes() {
    use super::Route;
    assert_eq!(Route::from_path("/v1/chat/completions"), Some(Route::Chat));
    assert_eq!(Route::from_path("/chat/completions/"), Some(Route::Chat));
    assert_eq!(
        Route::from_path("/openai/v1/completions?x=y"),
        Some(Route::Completions)
    );
    assert_eq!(Route::from_path("/v1/embeddings"), Some(Route::Embeddings));
    assert_eq!(Route::from_path("/v1/responses"), Some(Route::Responses));
    assert_eq!(Route::from_path("/v1/messages"), Some(Route::Messages));
    assert_eq!(
        Route::from_path("/v1/messages/count_tokens"),
        Some(Route::CountTokens)
    );
    assert_eq!(Route::from_path("/v1/count_tokens"), None);
    assert_eq!(Route::from_path("/v1/models"), Some(Route::Models));
    assert_eq!(Route::from_path("/"), None);
    assert_eq!(Route::from_path("/v1/chat"), None);
    assert_eq!(prompt_tokens_for("/v1/unknown", &json!({})), 0);
}
