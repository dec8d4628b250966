//! The time a log line is stamped with, as tracing-subscriber writes it: UTC to the
//! microsecond, `2026-11-26T10:39:53.431906Z`. The date and time of day are made once a second
//! per thread and kept: formatting all of it for every line took 2.3k instructions of a
//! request's log line.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

pub struct Timestamp;

impl FormatTime for Timestamp {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let mut stamp = String::with_capacity(27);
        push(&mut stamp, SystemTime::now());
        writer.write_str(&stamp)
    }
}

thread_local! {
    /// The last second stamped on this thread, and its text up to the seconds.
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// Appends `at` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn push(out: &mut String, at: SystemTime) {
    let (second, micros) = match at.duration_since(UNIX_EPOCH) {
        Ok(since) => (since.as_secs() as i64, since.subsec_micros()),
        // Before 1970: no one's clock, but written correctly all the same.
        Err(before) => {
            let before = before.duration();
            let micros = before.subsec_micros();
            let whole = before.as_secs() as i64 + i64::from(micros > 0);
            (-whole, if micros > 0 { 1_000_000 - micros } else { 0 })
        }
    };
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            text.clear();
            match OffsetDateTime::from_unix_timestamp(second) {
                Ok(at) => {
                    let _ = write!(
                        text,
                        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                        at.year(),
                        u8::from(at.month()),
                        at.day(),
                        at.hour(),
                        at.minute(),
                        at.second()
                    );
                }
                Err(_) => text.push_str("0000-00-00T00:00:00"),
            }
            *cached = second;
        }
        out.push_str(text);
    });
    out.push('.');
    let digits = [100_000, 10_000, 1_000, 100, 10, 1].map(|unit| b'0' + (micros / unit % 10) as u8);
    out.push_str(std::str::from_utf8(&digits).unwrap_or("000000"));
    out.push('Z');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stamp(at: SystemTime) -> String {
        let mut out = String::new();
        push(&mut out, at);
        out
    }

    #[test]
    fn writes_utc_to_the_microsecond() {
        let at =
            |secs: u64, micros: u64| UNIX_EPOCH + Duration::from_micros(secs * 1_000_000 + micros);
        assert_eq!(
            stamp(at(1_795_689_593, 431_906)),
            "2026-11-26T10:39:53.431906Z"
        );
        assert_eq!(stamp(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(at(951_782_400, 7)), "2000-02-29T00:00:00.000007Z");
        // The same second again, from the cache, then the next one.
        assert_eq!(
            stamp(at(1_795_689_593, 999_999)),
            "2026-11-26T10:39:53.999999Z"
        );
        assert_eq!(stamp(at(1_795_689_594, 0)), "2026-11-26T10:39:54.000000Z");
        assert_eq!(
            stamp(UNIX_EPOCH - Duration::from_micros(1)),
            "1969-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn agrees_with_the_time_crate_over_many_instants() {
        let mut secs: u64 = 0;
        while secs < 4_102_444_800 {
            let at = UNIX_EPOCH + Duration::from_micros(secs * 1_000_000 + secs % 1_000_000);
            let expected = OffsetDateTime::from(at);
            let text = stamp(at);
            assert_eq!(text.len(), 27, "{text}");
            assert_eq!(&text[..4], format!("{:04}", expected.year()), "{text}");
            assert_eq!(
                &text[5..7],
                format!("{:02}", u8::from(expected.month())),
                "{text}"
            );
            assert_eq!(&text[8..10], format!("{:02}", expected.day()), "{text}");
            assert_eq!(&text[11..13], format!("{:02}", expected.hour()), "{text}");
            assert_eq!(&text[14..16], format!("{:02}", expected.minute()), "{text}");
            assert_eq!(&text[17..19], format!("{:02}", expected.second()), "{text}");
            assert_eq!(
                &text[20..26],
                format!("{:06}", expected.microsecond()),
                "{text}"
            );
            secs += 86_399 * 7 + 3_601;
        }
    }
}
