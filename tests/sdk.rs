//! The official `openai` and `anthropic` Python SDKs, streaming and not, through tokentap to the
//! demo upstream: each SDK sees what it would see direct, and every call becomes a record with
//! its usage. `.ci/run` installs both; without them these tests fail with a clear message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_through_the_proxy() {
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sdk_check.py");
    let base_url = proxy.url("/v1");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&base_url)
        .output()
        .await
        .expect("python3 must be installed (.ci/run installs it with the openai package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK check failed (is `openai` installed? pip install openai)\nstdout: {stdout}\nstderr: {stderr}"
    );
    let records = proxy.settled_records().await;
    assert_eq!(records.len(), 5, "{records:#?}");
    for record in &records {
        assert_eq!(record["outcome"], "ok", "{record:#}");
        assert_eq!(record["usage_source"], "upstream", "{record:#}");
        assert!(record["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
        assert!(
            !serde_json::to_string(record)
                .unwrap()
                .contains("sk-sdk-test")
        );
    }
    let streamed: Vec<_> = records.iter().filter(|r| r["stream"] == true).collect();
    assert_eq!(streamed.len(), 2);
    for record in streamed {
        assert_eq!(record["usage"]["completion_tokens"], 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_python_sdk_works_through_the_proxy() {
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/anthropic_check.py"
    );
    // The Anthropic SDK adds `/v1/messages` to its base URL itself.
    let base_url = proxy.url("");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&base_url)
        .output()
        .await
        .expect("python3 must be installed (.ci/run installs it with the anthropic package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK check failed (is `anthropic` installed? pip install anthropic)\nstdout: {stdout}\nstderr: {stderr}"
    );
    let records = proxy.settled_records().await;
    assert_eq!(records.len(), 3, "{records:#?}");
    for record in &records {
        assert_eq!(record["endpoint"], "messages", "{record:#}");
        assert_eq!(record["outcome"], "ok", "{record:#}");
        assert_eq!(record["usage_source"], "upstream", "{record:#}");
        assert_eq!(record["usage"]["completion_tokens"], 5, "{record:#}");
        assert!(
            !serde_json::to_string(record)
                .unwrap()
                .contains("sk-ant-sdk-test")
        );
    }
    // Two calls had a system prompt of two words; the raw stream had none.
    let mut prompts: Vec<u64> = records
        .iter()
        .map(|r| r["usage"]["prompt_tokens"].as_u64().unwrap())
        .collect();
    prompts.sort_unstable();
    assert_eq!(prompts, [12, 14, 14], "{records:#?}");
    assert_eq!(records.iter().filter(|r| r["stream"] == true).count(), 2);
}
