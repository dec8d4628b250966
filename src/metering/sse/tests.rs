use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    event: String,
    data: String,
    start: u64,
    end: u64,
}

fn parse_chunks(chunks: &[&[u8]]) -> (Vec<Owned>, u64) {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    let mut sink = |e: SseEvent<'_>| {
        out.push(Owned {
            event: String::from_utf8_lossy(e.event).into_owned(),
            data: String::from_utf8_lossy(e.data).into_owned(),
            start: e.start,
            end: e.end,
        })
    };
    for chunk in chunks {
        parser.feed(chunk, &mut sink);
    }
    let settled = parser.settled_offset();
    parser.finish(&mut sink);
    (out, settled)
}

fn parse(input: &[u8]) -> Vec<Owned> {
    parse_chunks(&[input]).0
}

#[test]
fn parses_openai_framing() {
    let events = parse(b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].data, "{\"a\":1}");
    assert_eq!((events[0].start, events[0].end), (0, 15));
    assert_eq!(events[1].data, "[DONE]");
    assert_eq!((events[1].start, events[1].end), (15, 29));
}

#[test]
fn handles_every_line_ending_comment_and_field() {
    let input = b": OPENROUTER PROCESSING\r\n\r\nevent: message_start\r\ndata: a\r\ndata:b\r\rid: 7\nretry: 10\ndata\n\n";
    let events = parse(input);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event, "message_start");
    assert_eq!(events[0].data, "a\nb");
    assert_eq!(events[1].event, "");
    assert_eq!(events[1].data, "");
}

#[test]
fn strips_a_leading_byte_order_mark_only() {
    let events = parse(b"\xEF\xBB\xBFdata: x\n\n\xEF\xBB\xBFdata: y\n\n");
    assert_eq!(
        events.len(),
        1,
        "a BOM after the first line makes an unknown field"
    );
    assert_eq!(events[0].data, "x");
}

#[test]
fn dispatches_a_final_event_without_blank_line() {
    let events = parse(b"data: {\"usage\":{}}");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data, "{\"usage\":{}}");
}

#[test]
fn settled_offset_stops_before_an_unfinished_event() {
    let (events, settled) = parse_chunks(&[b"data: a\n\ndata: b\n", b"data: c"]);
    assert_eq!(settled, 9);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].data, "b\nc");
}

#[test]
fn every_split_point_gives_the_same_events() {
    let input: &[u8] = b"\xEF\xBB\xBF: hi\r\n\r\nevent: e\r\ndata: {\"x\":\"\xC3\xA9\"}\r\n\r\ndata: 2\rdata: 3\r\r\ndata: [DONE]\n\n";
    let whole = parse(input);
    for i in 0..=input.len() {
        for j in i..=input.len() {
            let (got, _) = parse_chunks(&[&input[..i], &input[i..j], &input[j..]]);
            assert_eq!(got, whole, "split at {i},{j}");
        }
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(parse_chunks(&bytes).0, whole);
}

/// The events eventsource-stream (the reference parser) finds in `input`, as (event, data).
fn reference(input: &[u8], split: usize) -> Vec<(String, String)> {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    let chunks = vec![
        Ok::<_, std::convert::Infallible>(bytes::Bytes::copy_from_slice(&input[..split])),
        Ok(bytes::Bytes::copy_from_slice(&input[split..])),
    ];
    futures::executor::block_on(async {
        futures::stream::iter(chunks)
            .eventsource()
            .filter_map(|e| async move { e.ok() })
            .filter(|e| futures::future::ready(!e.data.trim().is_empty()))
            .map(|e| {
                let event = if e.event == "message" {
                    String::new()
                } else {
                    e.event
                };
                (event, e.data)
            })
            .collect()
            .await
    })
}

fn line_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z{}\":, ]{0,12}".prop_map(|v| format!("data: {v}")),
        "[a-z{}\":]{0,8}".prop_map(|v| format!("data:{v}")),
        "[a-z_.]{1,10}".prop_map(|v| format!("event: {v}")),
        "[a-z ]{0,10}".prop_map(|v| format!(": {v}")),
        Just("id: 1".to_owned()),
        Just("retry: 5".to_owned()),
        Just(String::new()),
    ]
}

fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(line_strategy(), 0..20),
        prop::sample::select(vec!["\n", "\r\n", "\r"]),
    )
        .prop_map(|(lines, eol)| {
            let mut text = lines.join(eol);
            text.push_str(eol);
            text.push_str(eol);
            // A final `\r` is ambiguous until the next byte; close the stream unambiguously.
            text.push_str(": end\n");
            text.into_bytes()
        })
}

proptest! {
    #[test]
    fn agrees_with_eventsource_stream(input in stream_strategy(), split in 0usize..400) {
        let split = split.min(input.len());
        let ours: Vec<(String, String)> = parse_chunks(&[&input[..split], &input[split..]])
            .0
            .into_iter()
            // eventsource-stream drops events whose data is blank; the spec (and we) do not.
            .filter(|e| !e.data.trim().is_empty())
            .map(|e| (e.event, e.data))
            .collect();
        prop_assert_eq!(ours, reference(&input, split));
    }

    #[test]
    fn any_chunking_gives_the_same_events(input in stream_strategy(), cuts in prop::collection::vec(0usize..400, 0..8)) {
        let whole = parse(&input);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for c in cuts {
            pieces.push(&input[last..c]);
            last = c;
        }
        pieces.push(&input[last..]);
        prop_assert_eq!(parse_chunks(&pieces).0, whole);
    }

    /// Fed a byte at a time, no event is ever whole in one chunk: every event takes the copying
    /// path, which must give what the in-place path gives, offsets included.
    #[test]
    fn byte_at_a_time_matches_whole_chunks(input in stream_strategy()) {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(parse_chunks(&bytes).0, parse(&input));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(input in prop::collection::vec(any::<u8>(), 0..300), split in 0usize..300) {
        let split = split.min(input.len());
        let _ = parse_chunks(&[&input[..split], &input[split..]]);
    }
}

#[test]
fn whole_one_line_events_from_the_first_on_are_handed_over_without_a_copy() {
    let mut parser = SseParser::new();
    let mut seen = Vec::new();
    parser.feed(
        b"data: {\"a\":1}\n\ndata: [DONE]\n\n",
        &mut |e: SseEvent<'_>| {
            seen.push((e.data.to_vec(), e.start, e.end));
        },
    );
    assert_eq!(
        seen,
        [(b"{\"a\":1}".to_vec(), 0, 15), (b"[DONE]".to_vec(), 15, 29)]
    );
    // No byte went through the copy buffers: a stream holds none of them while it lasts.
    assert_eq!(parser.data.capacity() + parser.partial_line.capacity(), 0);
    // The first line is behind: a byte order mark now is an ordinary (unknown) field byte.
    parser.feed(b"\xEF\xBB\xBFdata: x\n\n", &mut |e: SseEvent<'_>| {
        seen.push((e.data.to_vec(), 0, 0))
    });
    assert_eq!(seen.len(), 2);
}

/// Takes every block that is exactly one `data: take` line, as the meter's template takes
/// content chunks, and collects the rest.
#[derive(Default)]
struct Taker {
    taken: usize,
    events: Vec<Owned>,
}

impl EventSink for Taker {
    fn event(&mut self, e: SseEvent<'_>) {
        self.events.push(Owned {
            event: String::from_utf8_lossy(e.event).into_owned(),
            data: String::from_utf8_lossy(e.data).into_owned(),
            start: e.start,
            end: e.end,
        });
    }

    fn take_block(&mut self, rest: &[u8]) -> Option<usize> {
        let block = b"data: take\n\n";
        rest.starts_with(block).then(|| {
            self.taken += 1;
            block.len()
        })
    }
}

#[test]
fn blocks_a_sink_takes_are_skipped_and_the_others_keep_their_offsets() {
    // Offered only where a block may begin with nothing pending: never on the stream's first
    // line (a byte order mark may open it), after `event:`, or inside a multi-line `data`.
    let input: &[u8] = b"data: take\n\n: c\n\ndata: take\n\nevent: e\ndata: take\n\ndata: a\n\ndata: b\ndata: take\n\ndata: take\n\ndata: take\n\n";
    let mut parser = SseParser::new();
    let mut sink = Taker::default();
    parser.feed(input, &mut sink);
    assert_eq!(parser.settled_offset(), input.len() as u64);
    parser.finish(&mut sink);
    assert_eq!(sink.taken, 3);
    let plain = parse(input);
    let kept: Vec<Owned> = plain
        .iter()
        .enumerate()
        .filter(|(i, e)| !(e.event.is_empty() && e.data == "take" && *i > 0))
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(plain.len(), kept.len() + 3);
    assert_eq!(sink.events, kept);
}
