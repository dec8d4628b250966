//! Meter: arbitrary response bytes, fed in two pieces, must never panic, and the measurement
//! must not depend on where the body was split.
//!
//! Input byte 0: dialect (`% 5`), bit 3 = SSE framing (else one JSON body), bit 4 = strip
//! usage-only chunks. Bytes 1-2: split index. The rest is the body. Also checked: every cut
//! range lies inside the bytes fed, in order, and `settled_offset` (SSE) never exceeds them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokentap::metering::{Dialect, Measurement, Meter};
use tokio::time::Instant;

const DIALECTS: [Dialect; 5] = [
    Dialect::Chat,
    Dialect::Completions,
    Dialect::Embeddings,
    Dialect::Responses,
    Dialect::Messages,
];

fn run(
    dialect: Dialect,
    sse: bool,
    strip: bool,
    chunks: &[&[u8]],
    now: Instant,
) -> (Measurement, Vec<std::ops::Range<u64>>) {
    let mut meter = Meter::new(dialect, sse, None, strip);
    let mut fed = 0u64;
    let mut cuts = Vec::new();
    for chunk in chunks {
        meter.feed(chunk, now);
        fed += chunk.len() as u64;
        if sse {
            assert!(
                meter.settled_offset() <= fed,
                "settled_offset beyond bytes fed"
            );
        }
        for cut in meter.take_cuts() {
            assert!(
                cut.start <= cut.end && cut.end <= fed,
                "cut {cut:?} outside the {fed} bytes fed"
            );
            if let Some(prev) = cuts.last() {
                let prev: &std::ops::Range<u64> = prev;
                assert!(
                    prev.end <= cut.start,
                    "cuts out of order: {prev:?} then {cut:?}"
                );
            }
            cuts.push(cut);
        }
    }
    (meter.finish(now), cuts)
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let dialect = DIALECTS[usize::from(input[0]) % DIALECTS.len()];
    let sse = input[0] & 0x08 != 0;
    let strip = input[0] & 0x10 != 0;
    let body = &input[3..];
    let split = usize::from(u16::from_le_bytes([input[1], input[2]])) % (body.len() + 1);
    let (a, b) = body.split_at(split);
    let now = Instant::now();

    let (m2, cuts2) = run(dialect, sse, strip, &[a, b], now);
    let (m1, cuts1) = run(dialect, sse, strip, &[body], now);
    // The measurement must not depend on where the body was split.
    let usage = |m: &tokentap::metering::measurement::Measurement| {
        m.usage.as_ref().map(|u| u.get().to_owned())
    };
    assert_eq!(usage(&m1), usage(&m2), "usage differs with split at {split}");
    assert_eq!(
        m1.response_model, m2.response_model,
        "model differs with split at {split}"
    );
    assert_eq!(m1.text, m2.text, "text differs with split at {split}");
    assert_eq!(m1.chunks, m2.chunks, "chunks differ with split at {split}");
    assert_eq!(
        m1.tool_calls, m2.tool_calls,
        "tool_calls differ with split at {split}"
    );
    assert_eq!(
        m1.terminal, m2.terminal,
        "terminal differs with split at {split}"
    );
    assert_eq!(m1.error, m2.error, "error differs with split at {split}");
    assert_eq!(
        m1.parse_errors, m2.parse_errors,
        "parse_errors differ with split at {split}"
    );
    assert_eq!(cuts1, cuts2, "cuts differ with split at {split}");
});
