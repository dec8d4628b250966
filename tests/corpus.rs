//! Every recorded provider response in tests/corpus, served by a test upstream and fetched
//! through tokentap: the client must get the exact bytes, and the record the expected usage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn every_case_is_forwarded_byte_exact_and_metered() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| (n.ends_with(".sse") || n.ends_with(".json")) && !n.ends_with(".expect.json"))
        .collect();
    names.sort();
    assert!(names.len() >= 21);
    for name in names {
        let body = std::fs::read(dir.join(&name)).unwrap();
        let expect: Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{name}.expect.json"))).unwrap(),
        )
        .unwrap();
        let status = expect["http_status"].as_u64().unwrap_or(400) as u16;
        let sse = name.ends_with(".sse");
        let served = body.clone();
        let upstream = Upstream::start(handler(move |_req| {
            let served = served.clone();
            async move {
                full(
                    status,
                    if sse {
                        "text/event-stream"
                    } else {
                        "application/json"
                    },
                    served,
                )
            }
        }))
        .await;
        let proxy = Proxy::start(&["--upstream", &upstream.url()], "").await;
        let path = match expect["api"].as_str().unwrap() {
            "chat.completions" => "/v1/chat/completions",
            "completions" => "/v1/completions",
            "embeddings" => "/v1/embeddings",
            "responses" => "/v1/responses",
            other => panic!("{other}"),
        };
        // The client asks for usage itself, so nothing is injected and nothing stripped.
        let request = serde_json::json!({
            "model": expect["model"].as_str().unwrap_or("gpt-4o"),
            "stream": sse,
            "stream_options": if sse && path != "/v1/responses" { serde_json::json!({"include_usage": true}) } else { Value::Null },
            "messages": [{"role": "user", "content": "hello there"}],
        });
        let response = proxy
            .client
            .post(proxy.url(path))
            .body(request.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        assert_eq!(
            response.bytes().await.unwrap(),
            body,
            "{name}: bytes changed"
        );
        let record = proxy.only_record().await;
        let keys = [
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "cache_creation_tokens",
        ];
        let stated = keys.iter().any(|k| !expect["usage"][k].is_null());
        if stated {
            assert_eq!(record["usage_source"], "upstream", "{name}");
            let want = keys.map(|k| expect["usage"][k].as_u64().unwrap_or(0));
            assert_eq!(usage_of(&record), want, "{name}");
            assert!(record["raw_usage"].is_object(), "{name}");
        } else {
            assert_ne!(
                record["usage_source"], "upstream",
                "{name}: no usage was stated"
            );
            assert!(record["raw_usage"].is_null());
        }
        let expected_outcome = if status >= 400 || name.contains("error") {
            "client_error|upstream_error"
        } else {
            "ok"
        };
        assert!(
            expected_outcome.split('|').any(|o| record["outcome"] == o),
            "{name}: {}",
            record["outcome"]
        );
        assert_eq!(record["response_bytes"], body.len() as u64, "{name}");
        if let Some(model) = expect["model"].as_str() {
            assert_eq!(record["response_model"], model, "{name}");
        }
        proxy.stop().await;
    }
}
