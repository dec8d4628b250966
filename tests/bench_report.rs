//! The load bench's report: the Targets section of `bench/RESULTS.md`, which says for each
//! target of the performance issue which rows of a run meet it. `bench/harness.py` writes it;
//! `tests/python/bench_targets_check.py` checks it on results made up for the purpose.

#![allow(clippy::expect_used)]

#[test]
fn the_targets_section_counts_each_target_s_rows_and_names_the_others() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/bench_targets_check.py"
    );
    let output = std::process::Command::new("python3")
        .arg(script)
        .output()
        .expect("python3 must be installed");
    assert!(
        output.status.success(),
        "{script} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
