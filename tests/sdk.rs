//! The official `openai` and `anthropic` Python SDKs, streaming and not, through tokentap to the
//! demo upstream: each SDK sees what it would see direct, and every call becomes a record with
//! its usage. `.ci/run` installs both; without them these tests fail with a clear message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// Runs `tests/python/<script>` against `base_url`; it exits 0 only when every check of what its
/// SDK (the Python package `package`) saw held.
async fn run_check(script: &str, package: &str, base_url: &str) {
    let script = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(base_url)
        .output()
        .await
        .expect("python3 must be installed (.ci/run installs it with the SDKs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed (is `{package}` installed? pip install {package})\nstdout: {stdout}\nstderr: {stderr}"
    );
}

/// A call the SDK made: answered, with the provider's usage, and the SDK's key nowhere in it.
fn assert_answered_with_usage(record: &serde_json::Value, key: &str) {
    assert_eq!(record["outcome"], "ok", "{record:#}");
    assert_eq!(record["usage_source"], "upstream", "{record:#}");
    assert!(!serde_json::to_string(record).unwrap().contains(key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_through_the_proxy() {
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    run_check("sdk_check.py", "openai", &proxy.url("/v1")).await;
    let records = proxy.settled_records().await;
    assert_eq!(records.len(), 7, "{records:#?}");
    for record in &records {
        assert_answered_with_usage(record, "sk-sdk-test");
        assert!(record["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    }
    // Three streams of 5 tokens a choice: one choice twice, and n=2 (10 in all).
    let mut streamed: Vec<u64> = records
        .iter()
        .filter(|r| r["stream"] == true)
        .map(|r| r["usage"]["completion_tokens"].as_u64().unwrap())
        .collect();
    streamed.sort_unstable();
    assert_eq!(streamed, [5, 5, 10], "{records:#?}");
    let two_choices = records
        .iter()
        .filter(|r| r["stream"] == false && r["usage"]["completion_tokens"] == 10)
        .count();
    assert_eq!(two_choices, 1, "the whole answer with n=2: {records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_python_sdk_works_through_the_proxy() {
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    // The Anthropic SDK adds `/v1/messages` to its base URL itself.
    run_check("anthropic_check.py", "anthropic", &proxy.url("")).await;
    let mut records = proxy.settled_records().await;
    assert_eq!(records.len(), 4, "{records:#?}");
    // The token count is forwarded and recorded, as no message: endpoint other, no usage.
    let counts: Vec<_> = records
        .iter()
        .filter(|r| r["endpoint"] == "other")
        .cloned()
        .collect();
    assert_eq!(counts.len(), 1, "{records:#?}");
    assert_eq!(
        (&counts[0]["outcome"], &counts[0]["usage_source"]),
        (&serde_json::json!("ok"), &serde_json::json!("missing")),
        "{:#}",
        counts[0]
    );
    assert!(
        !serde_json::to_string(&counts[0])
            .unwrap()
            .contains("sk-ant-sdk-test")
    );
    records.retain(|r| r["endpoint"] != "other");
    for record in &records {
        assert_answered_with_usage(record, "sk-ant-sdk-test");
        assert_eq!(record["endpoint"], "messages", "{record:#}");
        assert_eq!(record["usage"]["completion_tokens"], 5, "{record:#}");
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
