//! Black-box checks of the built binary: help, a bad config's one-line message, and a graceful
//! exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

fn tokentap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tokentap"))
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
    let mut child = tokentap()
        .args([
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("tokentap serving") && log.contains("stopped"),
        "{log}"
    );
}
