//! Round trips of the embeddings, Responses and Anthropic Messages APIs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use serde_json::json;

use super::super::{DemoOptions, completion_tokens_for, prompt_tokens_for};
use super::{Server, parse, post, sse};

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
    assert_eq!(
        v["data"][0]["embedding"].as_str().unwrap().len(),
        (1536 * 4 / 3) * 4
    );
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

    // count_tokens: the input a message with this body counts (answered without the wait of a
    // paced answer).
    let paced = Server::start(DemoOptions::paced()).await;
    let (status, _, text) = post(&paced, "/v1/messages/count_tokens", &body, &[]).await;
    assert_eq!(
        (status, parse(&text)),
        (200, json!({"input_tokens": prompt}))
    );
    paced.stop().await;

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
    assert_eq!(
        parse(&events[4].1)["delta"],
        json!({"type": "text_delta", "text": " ipsum"})
    );
    let delta = parse(&events[6].1);
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 2);
    server.stop().await;
}
