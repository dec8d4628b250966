//! The Prometheus exposition as operators use it: `promtool check metrics` on a busy process,
//! and a real Prometheus server scraping tokentap, whose PromQL answers must equal the records.
//! Debian's `prometheus` package provides both binaries; `.ci/run` installs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Mixed traffic of every kind and ending through the demo upstream.
async fn busy(proxy: &Proxy) {
    let chat = |model: &str, stream: bool, max: u32| json!({"model": model, "stream": stream, "max_tokens": max, "messages": [{"role": "user", "content": "count the words here"}]});
    type Call = (&'static str, Value, Option<(&'static str, &'static str)>);
    let calls: Vec<Call> = vec![
        ("/v1/chat/completions", chat("gpt-4o-mini", false, 5), None),
        ("/v1/chat/completions", chat("gpt-4o-mini", true, 9), None),
        ("/v1/chat/completions", chat("gpt-4o", true, 3), None),
        (
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "one two", "max_tokens": 4}),
            None,
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["a b", "c"]}),
            None,
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o", "input": "hi there", "max_output_tokens": 6, "stream": true}),
            None,
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 7, "stream": true, "messages": [{"role": "user", "content": "hello"}]}),
            None,
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 2, "messages": [{"role": "user", "content": "hello"}]}),
            None,
        ),
        (
            "/v1/chat/completions",
            chat("gpt-4o", false, 5),
            Some(("x-demo-status", "429")),
        ),
        (
            "/v1/chat/completions",
            chat("gpt-4o", true, 50),
            Some(("x-demo-abort-after", "3")),
        ),
    ];
    for (path, body, header) in calls {
        let mut req = proxy.client.post(proxy.url(path)).body(body.to_string());
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        if let Ok(response) = req.send().await {
            let _ = response.bytes().await;
        }
    }
    proxy
        .client
        .get(proxy.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
}

fn require(binary: &str) {
    let found = Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{binary}` is needed (Debian package `prometheus`; .ci/run installs it)"
    );
}

/// Token sums by model, from the records.
fn tokens_by_model(records: &[Value]) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for r in records.iter().filter(|r| r["usage_source"] != "missing") {
        let model = r["model"]
            .as_str()
            .or(r["response_model"].as_str())
            .unwrap_or("unknown")
            .to_owned();
        let u = &r["usage"];
        let n: u64 = [
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "cache_creation_tokens",
        ]
        .iter()
        .map(|k| u[k].as_u64().unwrap())
        .sum();
        *sums.entry(model).or_insert(0) += n;
    }
    sums
}

#[tokio::test]
async fn the_exposition_of_a_busy_process_passes_promtool() {
    require("promtool");
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    busy(&proxy).await;
    let records = proxy.settled_records().await;
    assert_eq!(records.len(), 11);
    let text = proxy.metrics_text().await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {report}");
    assert!(report.trim().is_empty(), "promtool lint findings: {report}");
    for name in [
        "tokentap_requests_total",
        "tokentap_tokens_total",
        "tokentap_active_requests",
        "tokentap_request_duration_seconds_bucket",
        "tokentap_time_to_first_token_seconds_bucket",
        "tokentap_usage_missing_total",
        "tokentap_usage_estimated_total",
        "gen_ai_client_token_usage_bucket",
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_client_operation_time_to_first_chunk_seconds_bucket",
        "gen_ai_client_operation_time_per_output_chunk_seconds_bucket",
        "tokentap_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    assert!(
        text.contains("le=\"1310.72\""),
        "duration buckets reach past 900 s"
    );
    assert!(text.contains("tokentap_requests_total{endpoint=\"chat\",model=\"gpt-4o\",outcome=\"client_error\",provider=\"default\",stream=\"false\"} 1"));
    assert!(text.contains("tokentap_active_requests{provider=\"default\"} 0"));
    // The exposition's token counters equal the records.
    let mut from_metrics: BTreeMap<String, u64> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("tokentap_tokens_total{"))
    {
        let model = line
            .split("model=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        let value: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *from_metrics.entry(model).or_insert(0) += value;
    }
    from_metrics.retain(|_, v| *v > 0);
    assert_eq!(from_metrics, tokens_by_model(&records));
}

#[tokio::test]
async fn metrics_can_have_their_own_token() {
    let (proxy, _demo) =
        Proxy::with_demo(&["--metrics-token", "m-secret", "--admin-token", "a-secret"]).await;
    let get = |token: Option<&str>| {
        let mut req = proxy.client.get(proxy.admin_url("/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(get(Some("m-secret")).await.unwrap().status(), 200);
    assert_eq!(get(Some("a-secret")).await.unwrap().status(), 200);
    let api = proxy
        .client
        .get(proxy.admin_url("/api/active"))
        .bearer_auth("m-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401, "the metrics token opens /metrics only");
}

/// A Prometheus server process and its data directory, both gone on drop.
struct Server(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address a starting Prometheus says it listens on (`msg="Listening on"
/// address=127.0.0.1:PORT`), read from its log; the rest of the log is drained on a thread so
/// that it never blocks on a full pipe.
fn listening_address(log: impl std::io::Read + Send + 'static) -> String {
    use std::io::BufRead;
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            if line.contains("msg=\"Listening on\"") {
                if let Some(at) = line.split("address=").nth(1) {
                    let _ = found.send(at.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        }
    });
    address
        .recv_timeout(Duration::from_secs(60))
        .expect("Prometheus said where it listens")
}

async fn query(client: &reqwest::Client, base: &str, promql: &str) -> Value {
    client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// PromQL expressions of the shipped dashboard and alert rules.
fn shipped_expressions() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dashboard: Value =
        serde_json::from_slice(&std::fs::read(root.join("grafana/tokentap.json")).unwrap())
            .unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(e)) = o.get("expr") {
                    out.push(e.clone());
                }
                o.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    let rules = std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap();
    let script = "import sys, yaml, json\nd = yaml.safe_load(open(sys.argv[1]))\nprint(json.dumps([r['expr'] for g in d['groups'] for r in g['rules']]))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(root.join("prometheus/alerts.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "alerts.yml: {}{rules}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alert_exprs: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!alert_exprs.is_empty());
    exprs.extend(alert_exprs);
    exprs
}

#[tokio::test]
async fn a_real_prometheus_scrapes_exactly_the_recorded_counts() {
    require("prometheus");
    let (proxy, _demo) = Proxy::with_demo(&[]).await;
    busy(&proxy).await;
    let records = proxy.settled_records().await;
    let want = tokens_by_model(&records);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tokentap\n    static_configs:\n      - targets: ['{}']\n",
            proxy.admin
        ),
    )
    .unwrap();
    // Port 0, and the address read back: a port picked free beforehand can be taken by another
    // test's connection before Prometheus binds it.
    let mut child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = child.stderr.take().unwrap();
    let _server = Server(child, dir);
    let base = format!("http://{}", listening_address(log));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never returned the counts"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(response) = proxy
            .client
            .get(format!("{base}/api/v1/query"))
            .query(&[("query", "sum by (model) (tokentap_tokens_total)")])
            .send()
            .await
        else {
            continue;
        };
        let Ok(answer) = response.json::<Value>().await else {
            continue;
        };
        let result = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if result.is_empty() {
            continue;
        }
        let got: BTreeMap<String, u64> = result
            .iter()
            .map(|r| {
                (
                    r["metric"]["model"].as_str().unwrap().to_owned(),
                    r["value"][1].as_str().unwrap().parse::<f64>().unwrap() as u64,
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect();
        break got;
    };
    assert_eq!(got, want);
    let requests = query(&proxy.client, &base, "sum(tokentap_requests_total)").await;
    assert_eq!(
        requests["data"]["result"][0]["value"][1],
        json!(records.len().to_string())
    );

    // Every expression operators are shipped evaluates without error on this server.
    for expr in shipped_expressions() {
        let answer = query(&proxy.client, &base, &expr).await;
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
    }
}

#[test]
fn shipped_prometheus_config_and_rules_pass_promtool() {
    require("promtool");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    for args in [["check", "config"], ["check", "rules"]] {
        let file = if args[1] == "config" {
            "prometheus.yml"
        } else {
            "alerts.yml"
        };
        let out = Command::new("promtool")
            .args(args)
            .arg(root.join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?} {file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn shipped_compose_and_kubernetes_yaml_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut files = vec![root.join("compose.yaml")];
    for entry in std::fs::read_dir(root.join("k8s")).unwrap() {
        files.push(entry.unwrap().path());
    }
    assert!(
        files.len() >= 5,
        "compose plus the k8s manifests: {files:?}"
    );
    for file in files {
        let out = Command::new("python3")
            .args(["-c", "import sys, yaml\ndocs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]\nassert docs, 'empty'"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn keys_and_users_become_labels_only_when_opted_in_and_stay_bounded() {
    let (plain, _demo) = Proxy::with_demo(&[]).await;
    busy(&plain).await;
    plain.settled_records().await;
    let text = plain.metrics_text().await;
    assert!(
        !text.contains("key_id=") && !text.contains("user="),
        "never labels unless opted in"
    );

    let (proxy, _demo2) =
        Proxy::with_demo(&["--metrics-label", "key_id,user", "--max-label-values", "2"]).await;
    for (key, user) in [
        ("sk-a", "ann"),
        ("sk-b", "bob"),
        ("sk-c", "cy"),
        ("sk-d", "dee"),
    ] {
        proxy
            .post_chat()
            .bearer_auth(key)
            .header("x-tokentap-user", user)
            .body(json!({"model": "gpt-4o", "max_tokens": 2, "messages": []}).to_string())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    proxy.settled_records().await;
    let text = proxy.metrics_text().await;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tokentap_requests_total{"))
        .collect();
    assert_eq!(lines.len(), 3, "two values each, then `other`: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("user=\"ann\"")
        && l.contains(&format!(
            "key_id=\"{}\"",
            tokentap::proxy::fingerprint("sk-a")
        ))));
    assert!(lines.iter().any(|l| l.contains("user=\"other\"")
        && l.contains("key_id=\"other\"")
        && l.ends_with(" 2")));
    assert!(
        !text.contains("sk-a\""),
        "a key is labelled by its fingerprint, never itself"
    );
}
