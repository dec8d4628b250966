//! A small benchmark client for what load tools cannot measure: time to first byte, time to
//! first token, and the transit delay of every streamed chunk. Used by `bench/run.sh`.
//!
//! With `--serve-upstream ADDR` it first starts its own streaming upstream in this process: every
//! request is answered with an OpenAI `chat.completion.chunk` stream of `--chunks` content chunks
//! sent every `--pace-ms` ms (the first one at once), then a finish chunk, a usage chunk and
//! `data: [DONE]`. Each content chunk's `delta.content` is `ts:<ns>`: the nanoseconds since an
//! `Instant` taken at start-up, read just before the chunk is handed to the HTTP server. Sender
//! and receiver are the same process and read the same clock, so for every received chunk
//! `transit = receive time - embedded send time` is exact, whatever sits in between (nothing for
//! `--target` = this upstream, or a proxy pointed at it).
//!
//! With `--target URL` it then sends `--requests` requests (`--concurrency` at a time) to `URL`
//! and prints one JSON object on stdout:
//!
//! ```json
//! {"ok": 200, "errors": 0, "rps": 4.9, "ttfb_ms": {"p50": 0.2, "p99": 0.4, ...},
//!  "ttft_ms": {...}, "latency_ms": {...}, "transit_us": {...}, "peak_active": 1, ...}
//! ```
//!
//! - `ttfb_ms`: request sent to response headers received;
//! - `ttft_ms`: request sent to the first content chunk (`ts:` marker) received;
//! - `latency_ms`: request sent to the end of the body;
//! - `transit_us`: per content chunk, receive time minus embedded send time (only chunks that
//!   carry a `ts:` marker, so only when the answer comes from this process's own upstream);
//! - `peak_active`: most responses open at the same time (headers received, body not finished).
//!
//! With `--serve-upstream` and no `--target` it serves until SIGINT/SIGTERM. Without
//! `--serve-upstream` it is a plain streaming client (e.g. `--body` and `--header` for the demo
//! upstream's `x-demo-chunk-delay-ms`), and only the marker-free numbers are filled.
//!
//! ```sh
//! cargo run --release --example bench_client -- --serve-upstream 127.0.0.1:18941 \
//!     --target http://127.0.0.1:18941/v1/chat/completions --chunks 20 --pace-ms 10 --requests 50
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use futures::StreamExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The clock shared by the upstream (send times) and the client (receive times).
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_ns() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Streaming benchmark client with an optional in-process paced upstream.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench_client")]
struct Args {
    /// Start the in-process streaming upstream on this address.
    #[arg(long, value_name = "ADDR")]
    serve_upstream: Option<SocketAddr>,

    /// URL to send the requests to (e.g. http://127.0.0.1:18941/v1/chat/completions).
    #[arg(long, value_name = "URL")]
    target: Option<String>,

    /// Content chunks per streamed answer of the in-process upstream.
    #[arg(long, default_value_t = 20)]
    chunks: u32,

    /// Pause between two content chunks of the in-process upstream, in ms (0 = unpaced).
    #[arg(long, default_value_t = 10)]
    pace_ms: u64,

    /// Measured requests in total.
    #[arg(long, default_value_t = 100)]
    requests: usize,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,

    /// Unmeasured requests sent one by one before the measured ones (their errors are ignored:
    /// they also flush stale pooled connections of a proxy).
    #[arg(long, default_value_t = 5)]
    warmup: usize,

    /// Stop starting new measured requests after this many seconds (0 = only `--requests`
    /// limits the run). Requests already started finish and are counted.
    #[arg(long, default_value_t = 0.0)]
    duration_s: f64,

    /// Spread the start of the `--concurrency` workers over this many ms.
    #[arg(long, default_value_t = 0)]
    ramp_ms: u64,

    /// `model` of the default request body.
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,

    /// `max_tokens` of the default request body [default: --chunks].
    #[arg(long)]
    max_tokens: Option<u32>,

    /// Request body (JSON) instead of the default streamed chat request.
    #[arg(long, value_name = "JSON")]
    body: Option<String>,

    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,

    /// Per-request time limit, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,

    /// Talk HTTP/2 with prior knowledge (h2c) to the target instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = EPOCH.get_or_init(Instant::now);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(addr) = args.serve_upstream {
        // A deep accept queue: a burst of 256 connections overflowed the default of 128.
        let listener = tokentap::server::listen::bind(addr)?;
        let upstream = UpstreamConfig {
            chunks: args.chunks,
            pace: Duration::from_millis(args.pace_ms),
        };
        tokio::spawn(serve_upstream(listener, upstream));
        eprintln!("bench_client: upstream listening on http://{addr}");
    }
    let Some(target) = args.target.clone() else {
        if args.serve_upstream.is_none() {
            anyhow::bail!("nothing to do: give --target URL and/or --serve-upstream ADDR");
        }
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return Ok(());
    };
    let report = load(&args, &target).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

// --- the in-process upstream -------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct UpstreamConfig {
    chunks: u32,
    pace: Duration,
}

type UpBody = UnsyncBoxBody<Bytes, Infallible>;

async fn serve_upstream(listener: TcpListener, config: UpstreamConfig) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                eprintln!("bench_client: upstream accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request| async move {
                Ok::<_, Infallible>(answer(request, config).await)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn full(status: StatusCode, body: String, content_type: &str) -> Response<UpBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

static SERIAL: AtomicU64 = AtomicU64::new(1);

async fn answer(request: Request<Incoming>, config: UpstreamConfig) -> Response<UpBody> {
    if request.method() != http::Method::POST {
        return full(
            StatusCode::OK,
            r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":0,"owned_by":"bench"}]}"#.to_owned(),
            "application/json",
        );
    }
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return full(StatusCode::BAD_REQUEST, String::new(), "text/plain"),
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-4o-mini")
        .to_owned();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let id = format!("chatcmpl-bench-{serial}");
    let usage = json!({"prompt_tokens": 10, "completion_tokens": config.chunks,
                       "total_tokens": 10 + u64::from(config.chunks)});

    if !stream {
        tokio::time::sleep(config.pace * config.chunks.saturating_sub(1)).await;
        let answer = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                         "content": format!("ts:{}", now_ns())},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": usage,
        });
        return full(StatusCode::OK, answer.to_string(), "application/json");
    }

    let start = tokio::time::Instant::now();
    let frames = futures::stream::unfold(0u32, move |index| {
        let id = id.clone();
        let model = model.clone();
        let usage = usage.clone();
        async move {
            if index >= config.chunks {
                return None;
            }
            if index > 0 && !config.pace.is_zero() {
                tokio::time::sleep_until(start + config.pace * index).await;
            }
            let mut delta = json!({"content": format!("ts:{}", now_ns())});
            if index == 0 {
                delta["role"] = json!("assistant");
            }
            let chunk = json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": null,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}],
            });
            let mut text = format!("data: {chunk}\n\n");
            if index + 1 == config.chunks {
                let finish = json!({
                    "id": id, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": null,
                    "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}],
                });
                let usage_chunk = json!({
                    "id": id, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": null, "choices": [], "usage": usage,
                });
                text.push_str(&format!(
                    "data: {finish}\n\ndata: {usage_chunk}\n\ndata: [DONE]\n\n"
                ));
            }
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(text))),
                index + 1,
            ))
        }
    });
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}

// --- the client --------------------------------------------------------------------------------

/// What one worker measured.
#[derive(Default)]
struct Samples {
    ttfb_ns: Vec<u64>,
    ttft_ns: Vec<u64>,
    latency_ns: Vec<u64>,
    transit_ns: Vec<u64>,
    ok: usize,
    errors: usize,
    chunks: u64,
    bytes: u64,
    error_samples: Vec<String>,
}

struct Shared {
    next: AtomicUsize,
    active: AtomicUsize,
    peak_active: AtomicUsize,
}

struct Outcome {
    ttfb_ns: u64,
    ttft_ns: Option<u64>,
    latency_ns: u64,
    transit_ns: Vec<u64>,
    events: u64,
    bytes: u64,
}

fn build_request(
    client: &reqwest::Client,
    args: &Args,
    target: &str,
    body: &Bytes,
) -> reqwest::RequestBuilder {
    let mut request = client
        .post(target)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .timeout(Duration::from_secs(args.timeout_s))
        .body(body.clone());
    for header in &args.headers {
        if let Some((name, value)) = header.split_once(':') {
            request = request.header(name.trim(), value.trim());
        }
    }
    request
}

/// Finds `ts:<digits>` in an SSE data payload.
fn marker(data: &[u8]) -> Option<u64> {
    let at = data.windows(3).position(|window| window == b"ts:")?;
    let digits = &data[at + 3..];
    let end = digits
        .iter()
        .position(|byte| !byte.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

async fn one(
    client: &reqwest::Client,
    args: &Args,
    target: &str,
    body: &Bytes,
    shared: &Shared,
) -> Result<Outcome, String> {
    let sent = now_ns();
    let response = build_request(client, args, target, body)
        .send()
        .await
        .map_err(|error| format!("send: {error}"))?;
    let ttfb_ns = now_ns().saturating_sub(sent);
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        return Err(format!("HTTP {status}: {text}"));
    }
    let active = shared.active.fetch_add(1, Ordering::Relaxed) + 1;
    shared.peak_active.fetch_max(active, Ordering::Relaxed);
    let result = read_stream(response, sent).await;
    shared.active.fetch_sub(1, Ordering::Relaxed);
    let (ttft_ns, transit_ns, events, bytes) = result?;
    Ok(Outcome {
        ttfb_ns,
        ttft_ns,
        latency_ns: now_ns().saturating_sub(sent),
        transit_ns,
        events,
        bytes,
    })
}

type StreamRead = (Option<u64>, Vec<u64>, u64, u64);

async fn read_stream(response: reqwest::Response, sent: u64) -> Result<StreamRead, String> {
    let mut stream = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    let mut ttft = None;
    let mut transit = Vec::new();
    let mut events = 0u64;
    let mut bytes = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|error| format!("body: {error}"))?;
        let received = now_ns();
        bytes += piece.len() as u64;
        buffer.extend_from_slice(&piece);
        // Every complete event (up to a blank line) in the buffer.
        let mut consumed = 0;
        while let Some(end) = buffer[consumed..]
            .windows(2)
            .position(|window| window == b"\n\n")
        {
            let event = &buffer[consumed..consumed + end];
            consumed += end + 2;
            for line in event.split(|byte| *byte == b'\n') {
                let Some(data) = line.strip_prefix(b"data:") else {
                    continue;
                };
                events += 1;
                if let Some(sent_at) = marker(data) {
                    ttft.get_or_insert(received.saturating_sub(sent));
                    transit.push(received.saturating_sub(sent_at));
                }
            }
        }
        buffer.drain(..consumed);
    }
    // A non-streamed answer: one JSON document, maybe with a marker in it.
    if events == 0 && !buffer.is_empty() {
        if let Some(sent_at) = marker(&buffer) {
            let received = now_ns();
            ttft = Some(received.saturating_sub(sent));
            transit.push(received.saturating_sub(sent_at));
        }
    }
    Ok((ttft, transit, events, bytes))
}

async fn load(args: &Args, target: &str) -> anyhow::Result<Value> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90));
    builder = if args.http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    let client = builder.build()?;
    let body = match &args.body {
        Some(body) => Bytes::from(body.clone()),
        None => Bytes::from(
            json!({
                "model": args.model,
                "max_tokens": args.max_tokens.unwrap_or(args.chunks),
                "stream": true,
                "messages": [{"role": "user", "content": "Benchmark: stream some tokens"}],
            })
            .to_string(),
        ),
    };
    let shared = Arc::new(Shared {
        next: AtomicUsize::new(0),
        active: AtomicUsize::new(0),
        peak_active: AtomicUsize::new(0),
    });

    // Warm-up: connections, pools, and stale pooled connections of a proxy.
    let mut warmup_errors = 0usize;
    for _ in 0..args.warmup {
        if one(&client, args, target, &body, &shared).await.is_err() {
            warmup_errors += 1;
        }
    }
    shared.peak_active.store(0, Ordering::Relaxed);

    let concurrency = args.concurrency.clamp(1, args.requests.max(1));
    let all = Arc::new(Mutex::new(Samples::default()));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let client = client.clone();
        let args = args.clone();
        let target = target.to_owned();
        let body = body.clone();
        let shared = shared.clone();
        let all = all.clone();
        let delay = if args.ramp_ms > 0 {
            Duration::from_millis(args.ramp_ms) * u32::try_from(worker).unwrap_or(u32::MAX)
                / u32::try_from(concurrency).unwrap_or(u32::MAX)
        } else {
            Duration::ZERO
        };
        workers.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut mine = Samples::default();
            let deadline =
                (args.duration_s > 0.0).then(|| started + Duration::from_secs_f64(args.duration_s));
            while shared.next.fetch_add(1, Ordering::Relaxed) < args.requests
                && deadline.is_none_or(|deadline| Instant::now() < deadline)
            {
                match one(&client, &args, &target, &body, &shared).await {
                    Ok(outcome) => {
                        mine.ok += 1;
                        mine.ttfb_ns.push(outcome.ttfb_ns);
                        mine.ttft_ns.extend(outcome.ttft_ns);
                        mine.latency_ns.push(outcome.latency_ns);
                        mine.transit_ns.extend(outcome.transit_ns);
                        mine.chunks += outcome.events;
                        mine.bytes += outcome.bytes;
                    }
                    Err(error) => {
                        mine.errors += 1;
                        if mine.error_samples.len() < 3 {
                            mine.error_samples.push(error);
                        }
                    }
                }
            }
            if let Ok(mut all) = all.lock() {
                all.ttfb_ns.append(&mut mine.ttfb_ns);
                all.ttft_ns.append(&mut mine.ttft_ns);
                all.latency_ns.append(&mut mine.latency_ns);
                all.transit_ns.append(&mut mine.transit_ns);
                all.ok += mine.ok;
                all.errors += mine.errors;
                all.chunks += mine.chunks;
                all.bytes += mine.bytes;
                if all.error_samples.len() < 5 {
                    all.error_samples.append(&mut mine.error_samples);
                }
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let wall = started.elapsed().as_secs_f64();
    let mut all = std::mem::take(&mut *all.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    all.error_samples.truncate(5);
    Ok(json!({
        "target": target,
        "requests": args.requests,
        "duration_s": args.duration_s,
        "concurrency": concurrency,
        "warmup": args.warmup,
        "warmup_errors": warmup_errors,
        "upstream": args.serve_upstream.map(|addr| json!({
            "addr": addr.to_string(), "chunks": args.chunks, "pace_ms": args.pace_ms,
        })),
        "ok": all.ok,
        "errors": all.errors,
        "error_samples": all.error_samples,
        "wall_s": wall,
        "rps": if wall > 0.0 { all.ok as f64 / wall } else { 0.0 },
        "events_received": all.chunks,
        "bytes_received": all.bytes,
        "peak_active": shared.peak_active.load(Ordering::Relaxed),
        "ttfb_ms": summary(&mut all.ttfb_ns, 1e6),
        "ttft_ms": summary(&mut all.ttft_ns, 1e6),
        "latency_ms": summary(&mut all.latency_ns, 1e6),
        "transit_us": summary(&mut all.transit_ns, 1e3),
    }))
}

/// count, mean, p50, p90, p99, max of `values` (ns) in units of `scale` ns; null when empty.
fn summary(values: &mut [u64], scale: f64) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    values.sort_unstable();
    let pick = |q: f64| {
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1] as f64 / scale
    };
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64 / scale;
    json!({
        "count": values.len(),
        "mean": mean,
        "p50": pick(0.50),
        "p90": pick(0.90),
        "p99": pick(0.99),
        "max": pick(1.0),
    })
}
