//! Round-trip tests of the demo upstream: a real server on 127.0.0.1:0, real HTTP clients.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{DemoOptions, completion_tokens_for, prompt_tokens_for, serve};

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
        Self { addr, shutdown, task }
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

async fn post(server: &Server, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, String, String) {
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
    assert_eq!(v["choices"][0]["message"]["content"], super::tokens::answer_text(16));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], prompt);
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(v["usage"]["total_tokens"], prompt + 16);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(v["usage"]["completion_tokens_details"]["reasoning_tokens"], 0);

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
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, d)| parse(d)).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "", "refusal": null}));
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
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, d)| parse(d)).collect();
    for chunk in &chunks[..chunks.len() - 1] {
        assert_eq!(chunk["usage"], Value::Null);
        assert!(chunk.get("usage").is_some());
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], prompt);
    assert_eq!(last["usage"]["completion_tokens"], 5);
    assert_eq!(last["usage"]["total_tokens"], prompt + 5);
    server.stop().await;
}

#[tokio::test]
async fn chat_tool_calls() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let mut body = chat_body();
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
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
        .map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(parse(&arguments)["text"], " lorem ipsum dolor sit");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
    server.stop().await;
}

#[tokio::test]
async fn legacy_completions() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "once upon a time", "max_tokens": 3});
    assert_eq!(prompt_tokens_for("/v1/completions", &body), 5);
    let (_, _, text) = post(&server, "/v1/completions", &body, &[]).await;
    let v = parse(&text);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], " lorem ipsum dolor");
    assert_eq!(v["usage"], json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}));

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

#[tokio::test]
async fn embeddings() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let body = json!({"model": "text-embedding-3-small", "input": ["hello world", "hello world", "x"], "dimensions": 8});
    assert_eq!(prompt_tokens_for("/v1/embeddings", &body), 3 + 3 + 2);
    let (status, _, text) = post(&server, "/v1/embeddings", &body, &[]).await;
    assert_eq!(status, 200);
    let v = parse(&text);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    assert_eq!(v["data"][2]["index"], 2);
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["data"][0]["embedding"], v["data"][1]["embedding"]);
    assert_ne!(v["data"][0]["embedding"], v["data"][2]["embedding"]);
    assert_eq!(v["usage"], json!({"prompt_tokens": 8, "total_tokens": 8}));

    let body = json!({"input": [1, 2, 3], "encoding_format": "base64"});
    let (_, _, text) = post(&server, "/embeddings", &body, &[]).await;
    let v = parse(&text);
    assert_eq!(v["data"][0]["embedding"].as_str().unwrap().len(), (1536 * 4 / 3) * 4);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    server.stop().await;
}

#[tokio::test]
async fn responses_api() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let body = json!({"model": "o4-mini", "input": "tell me a joke", "instructions": "be funny", "max_output_tokens": 3});
    let prompt = prompt_tokens_for("/v1/responses", &body);
    assert_eq!(prompt, 3 + 4 + 4 + 2);
    let (_, _, text) = post(&server, "/v1/responses", &body, &[]).await;
    let v = parse(&text);
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["output"][0]["content"][0]["text"], " lorem ipsum dolor");
    assert_eq!(v["usage"]["input_tokens"], prompt);
    assert_eq!(v["usage"]["output_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], prompt + 3);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 0);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (_, _, text) = post(&server, "/responses", &streamed, &[]).await;
    let events = sse(&text);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (name, data)) in events.iter().enumerate() {
        let v = parse(data);
        assert_eq!(v["type"].as_str(), name.as_deref());
        assert_eq!(v["sequence_number"], i);
    }
    assert_eq!(parse(&events[4].1)["delta"], " lorem");
    assert_eq!(parse(&events[7].1)["text"], " lorem ipsum dolor");
    let completed = parse(&events[10].1);
    assert_eq!(completed["response"]["status"], "completed");
    assert_eq!(completed["response"]["usage"]["output_tokens"], 3);
    assert_eq!(completed["response"]["usage"]["input_tokens"], prompt);
    assert!(!text.contains("[DONE]"));
    server.stop().await;
}

#[tokio::test]
async fn anthropic_messages() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let body = json!({"model": "claude-sonnet-4-5", "system": "be kind", "max_tokens": 20,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]});
    let prompt = prompt_tokens_for("/v1/messages", &body);
    assert_eq!(prompt, 3 + 4 + 2 + 2);
    assert_eq!(completion_tokens_for(&body), 20);
    let (_, _, text) = post(&server, "/v1/messages", &body, &[]).await;
    let v = parse(&text);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": prompt, "output_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["max_tokens"] = json!(2);
    let (_, _, text) = post(&server, "/messages", &streamed, &[]).await;
    let events = sse(&text);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &events {
        assert_eq!(parse(data)["type"].as_str(), name.as_deref());
    }
    let start = parse(&events[0].1);
    assert_eq!(start["message"]["usage"]["input_tokens"], prompt);
    assert_eq!(start["message"]["usage"]["output_tokens"], 1);
    assert_eq!(parse(&events[4].1)["delta"], json!({"type": "text_delta", "text": " ipsum"}));
    let delta = parse(&events[6].1);
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 2);
    server.stop().await;
}

#[tokio::test]
async fn models_and_errors() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let response = client().get(server.url("/v1/models")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let v = parse(&response.text().await.unwrap());
    assert_eq!(v["object"], "list");
    assert!(v["data"].as_array().unwrap().iter().any(|m| m["id"] == "claude-sonnet-4-5"));
    assert_eq!(v["data"][0]["owned_by"], "tokentap-demo");

    let check = |status: u16, expected: u16, text: &str| {
        assert_eq!(status, expected, "{text}");
        let v = parse(text);
        assert!(v["error"]["message"].is_string());
        assert!(v["error"]["type"].is_string());
        assert_eq!(v["error"]["code"], Value::Null);
    };
    let (status, _, text) = post(&server, "/v1/nothing", &json!({}), &[]).await;
    check(status, 404, &text);
    assert_eq!(parse(&text)["error"]["type"], "invalid_request_error");
    let (status, _, text) = post(&server, "/v1/models", &json!({}), &[]).await;
    check(status, 405, &text);
    let response = client().get(server.url("/v1/chat/completions")).send().await.unwrap();
    let status = response.status().as_u16();
    check(status, 405, &response.text().await.unwrap());
    let response = client()
        .post(server.url("/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    check(status, 400, &response.text().await.unwrap());
    let (status, _, text) = post(&server, "/v1/chat/completions", &json!([1]), &[]).await;
    check(status, 400, &text);
    let (status, _, text) = post(&server, "/v1/chat/completions", &chat_body(), &[("x-demo-status", "429")]).await;
    check(status, 429, &text);
    let (status, _, text) = post(&server, "/v1/chat/completions", &chat_body(), &[("x-demo-status", "503")]).await;
    check(status, 503, &text);
    let (status, _, text) = post(&server, "/v1/chat/completions", &chat_body(), &[("x-demo-status", "abc")]).await;
    check(status, 400, &text);
    let (status, _, text) = post(&server, "/v1/chat/completions", &chat_body(), &[("x-demo-chunk-delay-ms", "-1")]).await;
    check(status, 400, &text);
    server.stop().await;
}

/// Raw HTTP/1.1: the abort closes the connection mid-stream, without the chunked terminator.
#[tokio::test]
async fn abort_after_drops_the_connection() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let body = json!({"messages": [], "stream": true, "stream_options": {"include_usage": true}}).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: demo\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nx-demo-abort-after: 2\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("connection not closed")
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert_eq!(text.matches("\"content\":\" ").count(), 2, "{text}");
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("\"usage\":{"));
    assert!(!text.contains("\r\n0\r\n\r\n"));

    // The same through reqwest: the body read fails.
    let response = client()
        .post(server.url("/v1/messages"))
        .header("x-demo-abort-after", "0")
        .body(json!({"messages": [], "stream": true}).to_string())
        .send()
        .await
        .unwrap();
    assert!(response.text().await.is_err());
    server.stop().await;
}

/// Raw HTTP/1.1 keep-alive: two requests on one connection.
#[tokio::test]
async fn keep_alive_over_raw_http1() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = "GET /models HTTP/1.1\r\nhost: demo\r\n\r\n";
    for _ in 0..2 {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("tokentap-demo\"}]}") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
    }
    server.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let client = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let mut body = chat_body();
    body["stream"] = json!(true);
    let response = client.post(server.url("/v1/chat/completions")).body(body.to_string()).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let text = response.text().await.unwrap();
    assert_eq!(sse(&text).len(), 1 + 16 + 1 + 1);
    server.stop().await;
}

#[tokio::test]
async fn pacing_is_applied() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let mut body = chat_body();
    body["stream"] = json!(true);
    body["max_tokens"] = json!(4);
    let headers = [("x-demo-first-chunk-delay-ms", "60"), ("x-demo-chunk-delay-ms", "30")];
    let started = Instant::now();
    let (_, _, text) = post(&server, "/v1/chat/completions", &body, &headers).await;
    assert!(started.elapsed() >= Duration::from_millis(60 + 3 * 30));
    assert_eq!(sse(&text).len(), 1 + 4 + 1 + 1);
    body["stream"] = json!(false);
    let started = Instant::now();
    let (status, _, _) = post(&server, "/v1/chat/completions", &body, &headers).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(60 + 3 * 30));
    server.stop().await;

    let paced = DemoOptions::paced();
    assert_eq!(paced.first_chunk_delay, Duration::from_millis(200));
    assert_eq!(paced.chunk_delay, Duration::from_millis(20));
}

#[tokio::test]
async fn large_unpaced_stream() {
    let server = Server::start(DemoOptions::unpaced()).await;
    let body = json!({"messages": [{"role": "user", "content": "go"}], "stream": true,
        "max_tokens": 1_000_000, "stream_options": {"include_usage": true}});
    let (_, _, text) = post(&server, "/v1/chat/completions", &body, &[]).await;
    let events = sse(&text);
    assert_eq!(events.len(), 1 + 100_000 + 1 + 1 + 1);
    let usage = parse(&events[events.len() - 2].1);
    assert_eq!(usage["usage"]["completion_tokens"], 100_000);
    server.stop().await;
}

#[test]
fn routes_match_suffixes() {
    use super::Route;
    assert_eq!(Route::from_path("/v1/chat/completions"), Some(Route::Chat));
    assert_eq!(Route::from_path("/chat/completions/"), Some(Route::Chat));
    assert_eq!(Route::from_path("/openai/v1/completions?x=y"), Some(Route::Completions));
    assert_eq!(Route::from_path("/v1/embeddings"), Some(Route::Embeddings));
    assert_eq!(Route::from_path("/v1/responses"), Some(Route::Responses));
    assert_eq!(Route::from_path("/v1/messages"), Some(Route::Messages));
    assert_eq!(Route::from_path("/v1/models"), Some(Route::Models));
    assert_eq!(Route::from_path("/"), None);
    assert_eq!(Route::from_path("/v1/chat"), None);
    assert_eq!(prompt_tokens_for("/v1/unknown", &json!({})), 0);
}
