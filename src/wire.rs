//! HTTP/1.1 framing that both ends of the proxy read and write: the chunked transfer coding
//! (RFC 9112, section 7.1), `Content-Length` lines, comma-separated tokens and decimal digits.

pub mod lines;
pub mod names;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue};

/// Longest chunk-size or trailer line.
pub const MAX_LINE: usize = 4 * 1024;

/// A chunked body that breaks the coding: a size line that is no size, or too long, or a
/// chunk's data not followed by its line break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an invalid chunk")]
pub struct BadChunk;

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, with this many bytes of it left.
    Data(u64),
    /// At the line break that ends a chunk's data.
    DataEnd,
    /// After the last chunk, at a trailer line or the blank line that ends the body.
    Trailers,
}

/// Header lines whose places in a head are noted on the stack; the rest go in a list.
pub const INLINE_LINES: usize = 16;

/// Where a parsed head's header lines lie in its buffer: each line's name and value as
/// `[name start, name end, value start, value end]`. Noted while the parser's slices still
/// borrow the buffer, so that names and values can be taken from the head once it is split
/// off. The usual head's lines are noted on the stack: a list per head was an allocation, and
/// a zeroed array for the most lines a head may have cost more than that.
pub struct LinePlaces {
    count: usize,
    first: [[usize; 4]; INLINE_LINES],
    more: Vec<[usize; 4]>,
}

impl LinePlaces {
    /// The places of `lines`, which the parser read out of `buf`.
    pub fn of(buf: &[u8], lines: &[httparse::Header<'_>]) -> LinePlaces {
        let base = buf.as_ptr() as usize;
        let span = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            (start, start + s.len())
        };
        let mut places = LinePlaces {
            count: lines.len(),
            first: [[0; 4]; INLINE_LINES],
            // Sized once: grown line by line, a provider's answer of 25 lines made three lists.
            more: Vec::with_capacity(lines.len().saturating_sub(INLINE_LINES)),
        };
        for (i, line) in lines.iter().enumerate() {
            let (name_start, name_end) = span(line.name.as_bytes());
            let (value_start, value_end) = span(line.value);
            let at = [name_start, name_end, value_start, value_end];
            match places.first.get_mut(i) {
                Some(slot) => *slot = at,
                None => places.more.push(at),
            }
        }
        places
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = [usize; 4]> + '_ {
        self.first[..self.count.min(INLINE_LINES)]
            .iter()
            .chain(&self.more)
            .copied()
    }
}

/// Whether a header line only frames the message on this hop, so that the head's parser,
/// which has read it, leaves it out of the message's header map: `Transfer-Encoding`,
/// `Keep-Alive`, and a `Connection` line that lists only `keep-alive` and `close`. Forwarded,
/// they would be stripped again (RFC 9110, section 7.6.1), and nearly every message has one:
/// httpx (the OpenAI SDK's client) sends `Connection: keep-alive`, and so do providers'
/// answers. A `Connection` line that names other headers stays, for the proxy to strip them.
pub fn only_this_hop(name: &HeaderName, value: &HeaderValue) -> bool {
    // Compared as names, not as text: a standard name's text is looked up in a table.
    static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    if *name == CONNECTION {
        return connection_only_this_hop(value.as_bytes());
    }
    *name == TRANSFER_ENCODING || *name == KEEP_ALIVE
}

/// Whether a `Transfer-Encoding` value's last coding, the one that frames the body, is
/// `chunked`.
pub fn last_coding_is_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// Whether a `Connection` line lists only `keep-alive` and `close`, and so frames only this
/// hop (see [`only_this_hop`]).
pub fn connection_only_this_hop(value: &[u8]) -> bool {
    value.split(|&b| b == b',').all(|token| {
        let token = token.trim_ascii();
        token.is_empty()
            || token.eq_ignore_ascii_case(b"keep-alive")
            || token.eq_ignore_ascii_case(b"close")
    })
}

/// Decodes what `buf` holds of a chunked body. The data of every chunk there is moved together
/// at the front of `buf` and split off as one piece; an incomplete line is left in `buf` for the
/// next read. Returns that data, if any, and whether the body has ended.
pub fn decode_chunked(
    state: &mut Chunked,
    buf: &mut BytesMut,
) -> Result<(Option<Bytes>, bool), BadChunk> {
    // Data moved so far, at buf[..out]; raw bytes before `at` are taken.
    let mut out = 0;
    let mut at = 0;
    let ended = loop {
        match *state {
            Chunked::Size => {
                let Some(line) = take_line(buf, &mut at)? else {
                    break false;
                };
                let size = chunk_size(line).ok_or(BadChunk)?;
                *state = if size == 0 {
                    Chunked::Trailers
                } else {
                    Chunked::Data(size)
                };
            }
            Chunked::Data(left) => {
                let here = (buf.len() - at) as u64;
                if here == 0 {
                    break false;
                }
                let n = left.min(here) as usize;
                if at != out {
                    buf.copy_within(at..at + n, out);
                }
                out += n;
                at += n;
                *state = if n as u64 == left {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left - n as u64)
                };
            }
            Chunked::DataEnd => {
                let rest = &buf[at..];
                if rest.starts_with(b"\r\n") {
                    at += 2;
                } else if rest.starts_with(b"\n") {
                    at += 1;
                } else if rest.is_empty() || rest == b"\r" {
                    break false;
                } else {
                    return Err(BadChunk);
                }
                *state = Chunked::Size;
            }
            Chunked::Trailers => {
                let Some(line) = take_line(buf, &mut at)? else {
                    break false;
                };
                // Trailers are dropped; a blank line ends the body.
                if line.is_empty() {
                    break true;
                }
            }
        }
    };
    let data = (out > 0).then(|| buf.split_to(out).freeze());
    buf.advance(at - out);
    Ok((data, ended))
}

/// The line at `at` without its line break, moving `at` past it; `None` while incomplete.
fn take_line<'b>(buf: &'b [u8], at: &mut usize) -> Result<Option<&'b [u8]>, BadChunk> {
    let rest = &buf[*at..];
    let Some(end) = memchr::memchr(b'\n', rest) else {
        return if rest.len() > MAX_LINE {
            Err(BadChunk)
        } else {
            Ok(None)
        };
    };
    *at += end + 1;
    let line = &rest[..end];
    Ok(Some(line.strip_suffix(b"\r").unwrap_or(line)))
}

/// A chunk-size line's size: hex digits, then nothing or chunk extensions (ignored). Read digit
/// by digit: through `str` and `from_str_radix` it took a UTF-8 check and a second pass, about
/// 90 instructions a chunk of a paced stream (callgrind).
pub fn chunk_size(line: &[u8]) -> Option<u64> {
    let mut size: u64 = 0;
    let mut digits = 0;
    for &byte in line {
        let value = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => break,
        };
        // 16 hex digits fill a u64: a longer size is not one any body could have.
        if digits == 16 {
            return None;
        }
        size = size << 4 | u64::from(value);
        digits += 1;
    }
    if digits == 0 {
        return None;
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return None;
    }
    Some(size)
}

/// The length so far and one more `Content-Length` line; each of its comma-separated parts
/// must be digits, and all the same.
pub fn add_length(mut length: Option<u64>, value: &[u8]) -> Result<Option<u64>, &'static str> {
    for part in value.split(|&b| b == b',') {
        let parsed = decimal(part.trim_ascii()).ok_or("its Content-Length is invalid")?;
        if length.is_some_and(|known| known != parsed) {
            return Err("it has two different Content-Lengths");
        }
        length = Some(parsed);
    }
    Ok(length)
}

/// Digits, and only digits, read as a number that fits a `u64`. Read digit by digit: through
/// `str` and `parse` it took a UTF-8 check and a second pass, about 220 instructions a line
/// (callgrind), read three times for every answer.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token))
}

pub fn itoa(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[at..];
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn only_framing_lines_of_this_hop_are_told_as_such() {
        let line = |name: &'static str, value: &'static str| {
            only_this_hop(
                &HeaderName::from_static(name),
                &HeaderValue::from_static(value),
            )
        };
        assert!(line("transfer-encoding", "gzip, chunked"));
        assert!(line("keep-alive", "timeout=5"));
        for listed in ["keep-alive", "Close", " keep-alive , close ", "", ","] {
            assert!(line("connection", listed), "{listed:?}");
        }
        for listed in ["upgrade", "keep-alive, x-hop", "keep-alive-ish"] {
            assert!(!line("connection", listed), "{listed:?}");
        }
        assert!(!line("te", "trailers"));
        assert!(!line("content-length", "5"));
    }

    #[test]
    fn line_places_past_the_stack_share_are_kept_in_order() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        let count = INLINE_LINES + 3;
        for i in 0..count {
            raw.extend_from_slice(format!("x-{i}: v{i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let mut lines = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut lines);
        assert!(parsed.parse(&raw).unwrap().is_complete());
        let places = LinePlaces::of(&raw, parsed.headers);
        assert_eq!(places.len(), count);
        let read: Vec<(&[u8], &[u8])> = places
            .iter()
            .map(|[a, b, c, d]| (&raw[a..b], &raw[c..d]))
            .collect();
        let lines: Vec<(String, String)> = (0..count)
            .map(|i| (format!("x-{i}"), format!("v{i}")))
            .collect();
        let expected: Vec<(&[u8], &[u8])> = lines
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn only_a_last_coding_of_chunked_frames_the_body_chunked() {
        for (value, chunked) in [
            ("chunked", true),
            ("gzip, Chunked ", true),
            ("chunked, gzip", false),
            ("gzip", false),
            ("", false),
        ] {
            assert_eq!(
                last_coding_is_chunked(value.as_bytes()),
                chunked,
                "{value:?}"
            );
        }
    }

    #[test]
    fn lengths_are_plain_digits_that_fit_and_agree() {
        let line = |text: &'static str| text.as_bytes();
        assert_eq!(add_length(None, line("0")), Ok(Some(0)));
        assert_eq!(add_length(None, line(" 42 , 42")), Ok(Some(42)));
        assert_eq!(add_length(Some(7), line("7")), Ok(Some(7)));
        assert_eq!(
            add_length(None, line("18446744073709551615")),
            Ok(Some(u64::MAX))
        );
        for bad in [
            "",
            "+1",
            "-1",
            "1x",
            "0x10",
            "1 2",
            "18446744073709551616",
            "1,,1",
        ] {
            assert!(add_length(None, line(bad)).is_err(), "{bad:?}");
        }
        assert!(add_length(Some(7), line("8")).is_err());
        assert!(add_length(None, line("7, 8")).is_err());
    }

    /// Feeds `raw` to the chunked decoder in pieces ending at `cuts`, as reads would bring it.
    pub(crate) fn decode_in_pieces(
        raw: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<u8>, bool, usize), BadChunk> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut frames = 0;
        let mut from = 0;
        for &to in cuts.iter().chain([&raw.len()]) {
            buf.extend_from_slice(&raw[from..to]);
            from = to;
            let (piece, ended) = decode_chunked(&mut state, &mut buf)?;
            if let Some(piece) = piece {
                data.extend_from_slice(&piece);
                frames += 1;
            }
            if ended {
                assert!(buf.is_empty(), "nothing follows the body in these cases");
                return Ok((data, true, frames));
            }
        }
        Ok((data, false, frames))
    }

    const CHUNKED: &[u8] = b"5\r\nhello\r\n1;name=value\r\n \r\n10\r\n0123456789abcdef\r\n3\n\xc3\xa9!\n0\r\nx-trailer: 1\r\n\r\n";
    const DECODED: &[u8] = b"hello 0123456789abcdef\xc3\xa9!";

    #[test]
    fn a_chunked_body_decodes_the_same_whatever_the_reads() {
        // Whole: every chunk's data leaves as one piece.
        assert_eq!(
            decode_in_pieces(CHUNKED, &[]).unwrap(),
            (DECODED.to_vec(), true, 1)
        );
        // Cut once anywhere, and cut at every byte.
        for cut in 0..=CHUNKED.len() {
            let (data, ended, _) = decode_in_pieces(CHUNKED, &[cut]).unwrap();
            assert_eq!((data.as_slice(), ended), (DECODED, true), "cut at {cut}");
        }
        let every: Vec<usize> = (1..CHUNKED.len()).collect();
        let (data, ended, _) = decode_in_pieces(CHUNKED, &every).unwrap();
        assert_eq!((data.as_slice(), ended), (DECODED, true));
    }

    #[test]
    fn a_chunked_body_without_its_last_chunk_has_not_ended() {
        let raw = b"5\r\nhello\r\n";
        assert_eq!(
            decode_in_pieces(raw, &[]).unwrap(),
            (b"hello".to_vec(), false, 1)
        );
    }

    #[test]
    fn invalid_chunks_are_errors() {
        for raw in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5 x\r\nhello\r\n",
            b"5\r\nhelloXY",
            b"11111111111111111\r\n",
            b"-1\r\n",
        ] {
            assert!(
                matches!(decode_in_pieces(raw, &[]), Err(BadChunk)),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // A size line that never ends.
        let long = vec![b'1'; MAX_LINE + 1];
        assert!(matches!(decode_in_pieces(&long, &[]), Err(BadChunk)));
    }

    #[test]
    fn chunk_sizes_are_hex_with_optional_extensions() {
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b"fF"), Some(255));
        assert_eq!(chunk_size(b"10;a=b"), Some(16));
        assert_eq!(chunk_size(b"10 ; a"), Some(16));
        assert_eq!(chunk_size(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b";a"), None);
        assert_eq!(chunk_size(b"1g"), None);
        assert_eq!(chunk_size(b"1A2b\t"), Some(0x1a2b));
        assert_eq!(chunk_size(b"10000000000000000"), None);
        assert_eq!(chunk_size(b" 1"), None);
        assert_eq!(chunk_size(b"-1"), None);
    }
}
