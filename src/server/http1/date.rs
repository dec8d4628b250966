//! The `Date` of answers that have none (RFC 9110, section 6.6.1), formatted once a second per
//! thread.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// An IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub type HttpDate = [u8; 29];

thread_local! {
    static CACHED: Cell<(u64, HttpDate)> = const { Cell::new((u64::MAX, [0; 29])) };
}

/// The current time as an HTTP date.
pub fn now() -> HttpDate {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with(|cached| {
        let (at, date) = cached.get();
        if at == seconds {
            return date;
        }
        let date = format(seconds);
        cached.set((seconds, date));
        date
    })
}

fn format(seconds: u64) -> HttpDate {
    const DAYS: [&[u8; 3]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let at = i64::try_from(seconds)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[usize::from(at.weekday().number_days_from_monday())]);
    two(&mut out[5..7], at.day());
    out[8..11].copy_from_slice(MONTHS[usize::from(u8::from(at.month())) - 1]);
    let year = u16::try_from(at.year()).unwrap_or(9999).min(9999);
    two(&mut out[12..14], (year / 100) as u8);
    two(&mut out[14..16], (year % 100) as u8);
    two(&mut out[17..19], at.hour());
    two(&mut out[20..22], at.minute());
    two(&mut out[23..25], at.second());
    out
}

fn two(out: &mut [u8], n: u8) {
    out[0] = b'0' + n / 10;
    out[1] = b'0' + n % 10;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(&format(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format(1_795_737_600), b"Fri, 27 Nov 2026 00:00:00 GMT");
        let now = now();
        assert!(now.ends_with(b" GMT") && now[3] == b',', "{now:?}");
    }
}
