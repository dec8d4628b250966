//! Black-box checks of the built binary: help, a bad config's one-line message, a graceful
//! exit on SIGTERM, and serving when pinned to one CPU.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn tokentap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tokentap"))
}

/// The binary with `--demo`, on ports it picks (port 0) and logs.
fn demo_on_ports_of_its_own() -> Command {
    let mut command = tokentap();
    command.args([
        "--demo",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    command
}

#[test]
fn help_lists_every_option_with_its_default() {
    let out = tokentap().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--admin-listen",
        "--upstream",
        "--config",
        "--connect-timeout",
        "--first-byte-timeout",
        "--idle-timeout",
        "--request-timeout",
        "--drain-timeout",
        "--max-body",
        "--admin-token",
        "--insecure-admin",
        "--on-client-disconnect",
        "--demo",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("[default: 127.0.0.1:8787]") && help.contains("TOKENTAP_LISTEN"));
}

#[test]
fn a_bad_config_exits_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[providers]]\nname = \"x\"\nbase_url = \"ftp://nope\"\n",
    )
    .unwrap();
    let out = tokentap().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "tokentap: config error: providers[0].base_url: `ftp://nope` must start with http"
        ),
        "{err}"
    );
    let out = tokentap()
        .env("TOKENTAP_IDLE_TIMEOUT", "soon")
        .arg("--demo")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let out = tokentap().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("no provider configured")
    );
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut child = demo_on_ports_of_its_own()
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // SIGTERM as soon as it says it is serving (however slow the machine): from then on the
    // signal must start the drain, not kill the process.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("tokentap serving") {
        let read = std::io::BufRead::read_line(&mut stderr, &mut log).unwrap();
        assert!(read > 0, "exited before serving: {log}");
    }
    sigterm(child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "{log}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
    assert!(log.contains("stopped"), "{log}");
}

/// The binary, serving on ports of its own choosing (port 0), which it logs and the test reads
/// back: a port picked free beforehand can be taken by one of the other tests' loopback
/// connections before the binary binds it. Its JSON log is read on a thread and kept.
struct Running {
    child: std::process::Child,
    proxy: u16,
    admin: u16,
    log: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Running {
    fn start(mut command: Command) -> Running {
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (serving, addresses) = std::sync::mpsc::channel();
        let kept = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if event["message"] == "tokentap serving" {
                    let port = |key: &str| {
                        let addr: std::net::SocketAddr = event[key].as_str()?.parse().ok()?;
                        Some(addr.port())
                    };
                    let _ = serving.send(port("listen").zip(port("admin")));
                }
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        let Ok(Some((proxy, admin))) = addresses.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!("tokentap did not start: {}", log.lock().unwrap());
        };
        Running {
            child,
            proxy,
            admin,
            log,
            reader,
        }
    }

    /// Waits for the exit; its status and the whole log.
    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        self.reader.join().unwrap();
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

/// A fresh process holds little memory of its own: the record queue's room is made as records
/// wait in it, not all when it is made (std's bounded channel wrote its 65,536 slots at start,
/// 21 MB: this debug binary held 44 MB fresh then, 23 MB now).
#[test]
fn a_fresh_process_holds_under_32_mib() {
    let mut command = tokentap();
    command.args(["--upstream", "http://127.0.0.1:9"]);
    let mut running = Running::start(command);
    // Answered once the app (its tracker and record queue) is up and serving.
    assert!(admin_get(running.admin, "/api/counts").contains("\"started\""));
    let status = std::fs::read_to_string(format!("/proc/{}/status", running.child.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    running.child.kill().unwrap();
    running.wait();
    assert!(rss_kib < 32 << 10, "{rss_kib} KiB resident at start");
}

/// Starts a paced stream (20 chunks, 50 ms apart) and returns the socket and the bytes read.
fn open_stream(port: u16) -> std::net::TcpStream {
    use std::io::Write;
    let body = r#"{"model":"gpt-4o-mini","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-demo-chunk-delay-ms: 50\r\nx-demo-first-chunk-delay-ms: 0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
}

/// The binary with `--demo`, serving.
fn start_demo(drain_timeout: &str) -> Running {
    let mut command = tokentap();
    command.args(["--demo", "--drain-timeout", drain_timeout]);
    Running::start(command)
}

fn read_to_end(mut stream: std::net::TcpStream) -> String {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.ends_with(b"0\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends SIGTERM to the process.
fn sigterm(pid: u32) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// The whole raw answer of an admin GET.
fn admin_get(admin: u16, path: &str) -> String {
    let mut probe = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
    std::io::Write::write_all(
        &mut probe,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut probe, &mut answer).unwrap();
    answer
}

#[test]
fn sigterm_with_100_streams_in_flight_lets_them_finish_then_exits_zero() {
    let running = start_demo("20s");
    let (proxy, admin) = (running.proxy, running.admin);
    let streams: Vec<_> = (0..100).map(|_| open_stream(proxy)).collect();
    // Every request read and under way before the signal (not a fixed wait: a debug build on
    // a busy machine can take longer than that to read 100 requests, and a request that comes
    // in after the drain began is rightly refused).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !admin_get(admin, "/api/counts").contains("\"started\":100,") {
        assert!(
            std::time::Instant::now() < deadline,
            "the streams never all started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sigterm(running.child.id());
    std::thread::sleep(Duration::from_millis(100));
    // Draining: not ready, but still alive.
    let answer = admin_get(admin, "/readyz");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let handles: Vec<_> = streams
        .into_iter()
        .map(|s| std::thread::spawn(move || read_to_end(s)))
        .collect();
    for handle in handles {
        let body = handle.join().unwrap();
        assert!(
            body.contains("data: [DONE]"),
            "a stream in flight was cut: {}",
            &body[body.len().saturating_sub(200)..]
        );
    }
    let (status, _) = running.wait();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_second_sigterm_ends_the_drain_at_once() {
    let mut running = start_demo("10m");
    let proxy = running.proxy;
    // A stream long enough to hold the drain open for minutes.
    let body = r#"{"model":"gpt-4o-mini","stream":true,"max_tokens":100000,"messages":[]}"#;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-demo-chunk-delay-ms: 100\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = running.child.id();
    sigterm(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "the first SIGTERM drains"
    );
    sigterm(pid);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second SIGTERM did not end it"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    drop(stream);
}

/// On one CPU the binary runs its single-threaded runtime: streams, the admin API and the
/// recorder must all still make progress on it, and SIGTERM still drains.
#[test]
fn pinned_to_one_cpu_it_serves_streams_and_the_admin_api() {
    let mut command = Command::new("taskset");
    command.args(["-c", "0", env!("CARGO_BIN_EXE_tokentap"), "--demo"]);
    let running = Running::start(command);
    let (proxy, admin) = (running.proxy, running.admin);
    let streams: Vec<_> = (0..20).map(|_| open_stream(proxy)).collect();
    let handles: Vec<_> = streams
        .into_iter()
        .map(|s| std::thread::spawn(move || read_to_end(s)))
        .collect();
    for handle in handles {
        assert!(handle.join().unwrap().contains("data: [DONE]"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !admin_get(admin, "/api/counts").contains("\"recorded\":20") {
        assert!(
            std::time::Instant::now() < deadline,
            "records not written: {}",
            admin_get(admin, "/api/counts")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(running.child.id());
    let (status, log) = running.wait();
    assert_eq!(status.code(), Some(0));
    assert!(log.contains("\"workers\":1"), "{log}");
}

/// The plain-text log, written to a pipe: no colour codes, and a request's line in the
/// `name=value` form operators grep for.
#[test]
fn a_request_logs_one_plain_text_line_off_a_terminal() {
    use std::io::Write;
    let mut child = demo_on_ports_of_its_own()
        .args(["--log-format", "text", "--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, read) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let next_line_with = |needle: &str| loop {
        let line = read.recv_timeout(Duration::from_secs(20)).unwrap();
        if line.contains(needle) {
            break line;
        }
    };
    let serving = next_line_with("tokentap serving");
    let proxy = serving
        .split(' ')
        .find_map(|field| field.strip_prefix("listen=127.0.0.1:"))
        .and_then(|port| port.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no listen address in: {serving}"));

    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    assert!(read_to_end(stream).starts_with("HTTP/1.1 200"));

    let line = next_line_with(" request id=req_");
    assert!(!line.contains('\u{1b}'), "colour codes in: {line:?}");
    for field in [
        "INFO tokentap::tracker::recorder: request id=req_",
        " provider=default model=\"gpt-4o-mini\" endpoint=\"chat\" stream=false status=200 outcome=\"ok\" ",
        " completion_tokens=5 usage_source=Upstream",
    ] {
        assert!(line.contains(field), "{field:?} not in {line:?}");
    }
    sigterm(child.id());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
