//! A byte-level fake upstream on raw TCP: each request picks its behaviour by the
//! `x-fake` header naming a scenario the test registered. It can send any bytes with delays,
//! reset the connection (SO_LINGER 0), close without a terminator, stall, or answer garbage,
//! and it remembers every request it received.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub enum Step {
    /// Bytes to write as they are.
    Send(Vec<u8>),
    Sleep(Duration),
    /// Reset the connection (RST, via SO_LINGER 0).
    Reset,
    /// Close cleanly (FIN) wherever the response is.
    Close,
    /// Never send anything more (until the peer goes).
    Stall,
}

#[derive(Clone, Debug, Default)]
pub struct Scenario {
    pub steps: Vec<Step>,
}

impl Scenario {
    pub fn new() -> Scenario {
        Scenario::default()
    }

    pub fn send(mut self, bytes: impl AsRef<[u8]>) -> Scenario {
        self.steps.push(Step::Send(bytes.as_ref().to_vec()));
        self
    }

    pub fn sleep_ms(mut self, ms: u64) -> Scenario {
        self.steps.push(Step::Sleep(Duration::from_millis(ms)));
        self
    }

    pub fn then(mut self, step: Step) -> Scenario {
        self.steps.push(step);
        self
    }

    /// A complete HTTP/1.1 response with `Content-Length`.
    pub fn response(status: u16, content_type: &str, body: impl AsRef<[u8]>) -> Scenario {
        let body = body.as_ref();
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-request-id: fake-{status}\r\n\r\n",
            body.len()
        );
        Scenario::new().send(head).send(body)
    }

    /// A chunked SSE response head; follow with `chunk`s and `end_chunks`.
    pub fn sse_head() -> Scenario {
        Scenario::new().send("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    }

    pub fn chunk(self, bytes: impl AsRef<[u8]>) -> Scenario {
        let bytes = bytes.as_ref();
        let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
        framed.extend_from_slice(bytes);
        framed.extend_from_slice(b"\r\n");
        self.send(framed)
    }

    pub fn end_chunks(self) -> Scenario {
        self.send("0\r\n\r\n")
    }
}

/// What the fake upstream received.
#[derive(Clone, Debug)]
pub struct Received {
    pub head: String,
    pub body: Vec<u8>,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    scenarios: Arc<Mutex<HashMap<String, Scenario>>>,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub connections: Arc<AtomicUsize>,
    pub open: Arc<AtomicUsize>,
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scenarios: Arc<Mutex<HashMap<String, Scenario>>> = Arc::default();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (s, r, c, o) = (
            scenarios.clone(),
            received.clone(),
            connections.clone(),
            open.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (s, r, o) = (s.clone(), r.clone(), o.clone());
                tokio::spawn(async move {
                    serve(stream, s, r).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FakeUpstream {
            addr,
            scenarios,
            received,
            connections,
            open,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn script(&self, name: &str, scenario: Scenario) {
        self.scenarios.lock().insert(name.to_owned(), scenario);
    }
}

async fn serve(
    mut stream: TcpStream,
    scenarios: Arc<Mutex<HashMap<String, Scenario>>>,
    received: Arc<Mutex<Vec<Received>>>,
) {
    loop {
        let Some((head, body)) = read_request(&mut stream).await else {
            return;
        };
        let name = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-fake:")
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_default();
        received.lock().push(Received {
            head: head.clone(),
            body,
        });
        let scenario = scenarios
            .lock()
            .get(&name)
            .cloned()
            .unwrap_or_else(|| Scenario::response(404, "text/plain", "no scenario"));
        for step in scenario.steps {
            match step {
                Step::Send(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                    let _ = stream.flush().await;
                }
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Reset => {
                    // A zero linger makes close send RST at once; it is the blocking of a
                    // non-zero linger that the deprecation warns about.
                    #[expect(deprecated, reason = "SO_LINGER 0 is how a reset is sent")]
                    let _ = stream.set_linger(Some(Duration::ZERO));
                    return;
                }
                Step::Close => {
                    let _ = stream.shutdown().await;
                    return;
                }
                Step::Stall => {
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                    return;
                }
            }
        }
    }
}

/// Reads one request head and its Content-Length body (chunked bodies are read to the end).
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end..].to_vec();
    let lower = head.to_ascii_lowercase();
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while body.len() < len {
            let n = stream.read(&mut byte).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&byte[..n]);
        }
    } else if lower.contains("transfer-encoding: chunked") {
        while !body.ends_with(b"0\r\n\r\n") {
            let n = stream.read(&mut byte).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&byte[..n]);
        }
    }
    Some((head, body))
}
