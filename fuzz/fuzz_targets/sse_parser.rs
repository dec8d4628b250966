//! SSE parser: the events must not depend on how the stream is split into chunks.
//!
//! Input: two bytes choosing a split index, then the stream. The stream is parsed three ways
//! (whole, in two pieces at the split, one byte at a time) and each run checks:
//! - every event's `start <= end <= bytes fed so far`, and events come in stream order
//!   without overlapping;
//! - `settled_offset()` never decreases and never exceeds the bytes fed;
//! - after `finish`, `settled_offset()` equals the stream length.
//!
//! Then the three runs must have produced the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokentap::metering::sse::{SseEvent, SseParser};

#[derive(Debug, PartialEq, Eq)]
struct Owned {
    event: Vec<u8>,
    data: Vec<u8>,
    start: u64,
    end: u64,
}

fn run(stream: &[u8], chunks: &[&[u8]]) -> Vec<Owned> {
    let total = stream.len() as u64;
    let mut parser = SseParser::new();
    let mut events: Vec<Owned> = Vec::new();
    let mut fed = 0u64;
    let mut settled = 0u64;
    let check = |e: SseEvent<'_>, fed: u64, events: &mut Vec<Owned>| {
        assert!(e.start <= e.end, "event start {} > end {}", e.start, e.end);
        assert!(e.end <= fed, "event end {} beyond bytes fed {}", e.end, fed);
        assert!(
            e.end <= total,
            "event end {} beyond stream length {}",
            e.end,
            total
        );
        if let Some(prev) = events.last() {
            assert!(
                prev.end <= e.start,
                "events overlap: {}..{} then {}..{}",
                prev.start,
                prev.end,
                e.start,
                e.end
            );
        }
        events.push(Owned {
            event: e.event.to_vec(),
            data: e.data.to_vec(),
            start: e.start,
            end: e.end,
        });
    };
    for chunk in chunks {
        fed += chunk.len() as u64;
        parser.feed(chunk, &mut |e: SseEvent<'_>| check(e, fed, &mut events));
        let now = parser.settled_offset();
        assert!(now <= fed, "settled_offset {now} beyond bytes fed {fed}");
        assert!(
            now >= settled,
            "settled_offset went back from {settled} to {now}"
        );
        settled = now;
    }
    assert_eq!(fed, total);
    parser.finish(&mut |e: SseEvent<'_>| check(e, fed, &mut events));
    assert_eq!(
        parser.settled_offset(),
        total,
        "settled_offset after finish"
    );
    events
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 2 {
        return;
    }
    let (head, stream) = input.split_at(2);
    let split = usize::from(u16::from_le_bytes([head[0], head[1]])) % (stream.len() + 1);
    let (a, b) = stream.split_at(split);

    let whole = run(stream, &[stream]);
    let halves = run(stream, &[a, b]);
    assert_eq!(
        whole, halves,
        "events differ when the stream is split at {split}"
    );
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let single = run(stream, &bytes);
    assert_eq!(
        whole, single,
        "events differ when the stream is fed byte by byte"
    );
});
