//! A head's header lines as they came off the wire: the head's bytes, and where each line's
//! name and value lie in them. Read, left out and written out again without a header map.
//!
//! An answer passes through the proxy nearly as it came: read for a handful of names, less
//! its hop-by-hop lines, and written to the client. Put in `http`'s `HeaderMap` on the way, an
//! OpenAI answer's 25 lines cost about 15k instructions of a request's 76k (callgrind): a
//! hashed insert for each, each name made a `HeaderName`, each value checked again byte by
//! byte (the parser has checked them), and each line written back piece by piece. Here a line
//! is four offsets, and lines that lie together in the head go out in one copy.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use super::names::header_name;

/// Header lines, in the order they came, less those left out.
#[derive(Clone, Default)]
pub struct HeadLines {
    head: Bytes,
    /// Each kept line's `[name start, name end, value start, value end]` in `head`.
    lines: Vec<[usize; 4]>,
    /// Some line may be hop-by-hop (see `is_hop_by_hop`): noted as the head is parsed, so
    /// that the proxy's strip passes over the lines only when one is (seldom: the lines that
    /// nearly every head has, which frame only its hop, are left out as it is parsed).
    hop_by_hop: bool,
}

/// Only how many: the lines may hold credentials and cookies, and debug output is no place
/// for them.
impl std::fmt::Debug for HeadLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadLines")
            .field("lines", &self.lines.len())
            .finish_non_exhaustive()
    }
}

/// Hop-by-hop names (RFC 9110, section 7.6.1, and the `Proxy-*` and `Keep-Alive` names of
/// older practice), in any case.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    let is = |lower: &[u8]| name.eq_ignore_ascii_case(lower);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        18 => is(b"proxy-authenticate"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// A value as text, if it is visible ASCII (as `HeaderValue::to_str` reads it).
pub fn visible_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Whether `name` is `lower` (a lowercase name) in any case.
#[inline]
pub fn is_named(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

impl HeadLines {
    /// Lines of `head`, at places noted while it was parsed (see [`Spans`]); `hop_by_hop`
    /// when a line's name is one of [`is_hop_by_hop`].
    pub fn new(head: Bytes, lines: Vec<[usize; 4]>, hop_by_hop: bool) -> HeadLines {
        debug_assert!(
            lines
                .iter()
                .all(|l| l[0] <= l[1] && l[2] <= l[3] && l[3] <= head.len())
        );
        HeadLines {
            head,
            lines,
            hop_by_hop,
        }
    }

    /// Leaves out the hop-by-hop lines, and any line a `Connection` line names
    /// (RFC 9110, section 7.6.1).
    pub fn strip_hop_by_hop(&mut self) {
        if !self.hop_by_hop {
            return;
        }
        self.hop_by_hop = false;
        // The `Connection` lines are read from a copy while the lines change: a copy only of
        // the line places (the head's bytes are shared), for the rare head that has one.
        let before = self.clone();
        let named = |name: &[u8]| {
            before.iter().any(|(n, value)| {
                is_named(n, b"connection")
                    && value
                        .split(|&b| b == b',')
                        .any(|token| token.trim_ascii().eq_ignore_ascii_case(name))
            })
        };
        self.retain(|name, _| !is_hop_by_hop(name) && !named(name));
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    fn line(&self, at: &[usize; 4]) -> (&[u8], &[u8]) {
        let [name_start, name_end, value_start, value_end] = *at;
        (
            self.head.get(name_start..name_end).unwrap_or_default(),
            self.head.get(value_start..value_end).unwrap_or_default(),
        )
    }

    /// Each line's name, as spelled, and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines.iter().map(|at| self.line(at))
    }

    /// The value of the first line named `name` (lowercase), in any case.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        // Lengths compared before any name is sliced: most lines are not the one.
        let at = self.lines.iter().find(|&&[name_start, name_end, _, _]| {
            name_end.saturating_sub(name_start) == name.len()
                && self.head[name_start..name_end].eq_ignore_ascii_case(name)
        })?;
        Some(self.line(at).1)
    }

    /// Leaves out the lines for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &[u8]) -> bool) {
        let head = &self.head;
        self.lines
            .retain(|&[name_start, name_end, value_start, value_end]| {
                keep(
                    head.get(name_start..name_end).unwrap_or_default(),
                    head.get(value_start..value_end).unwrap_or_default(),
                )
            });
    }

    /// Leaves out every line named `name` (lowercase), in any case.
    pub fn remove(&mut self, name: &[u8]) {
        self.retain(|n, _| !is_named(n, name));
    }

    /// The lines as a header map (names lowercased, as HTTP/2 needs them). A line whose name
    /// or value `http` refuses is left out: the parsers that made the lines have checked both
    /// by the same rules, so none is.
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.lines.len());
        self.append_to(&mut map);
        map
    }

    /// Appends the lines to `map`, as `to_map` makes them.
    pub fn append_to(&self, map: &mut HeaderMap) {
        for &[name_start, name_end, value_start, value_end] in &self.lines {
            let name = header_name(self.head.get(name_start..name_end).unwrap_or_default());
            let value = HeaderValue::from_maybe_shared(self.head.slice(value_start..value_end));
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
    }

    /// Writes the lines for which `keep` holds, each ended by CRLF, through `put`. Lines that
    /// lay next to each other in the head, each ended by CRLF there, go in one piece.
    pub fn write(&self, mut keep: impl FnMut(&[u8], &[u8]) -> bool, mut put: impl FnMut(&[u8])) {
        // The run of kept lines being gathered: its start, and its end so far.
        let mut run: Option<(usize, usize)> = None;
        for at in &self.lines {
            let (name, value) = self.line(at);
            if !keep(name, value) {
                if let Some((start, end)) = run.take() {
                    put(&self.head[start..end]);
                    put(b"\r\n");
                }
                continue;
            }
            let [name_start, _, _, value_end] = *at;
            run = match run {
                // The last line's CRLF, and this line right after it.
                Some((start, end))
                    if name_start == end + 2 && self.head.get(end..end + 2) == Some(b"\r\n") =>
                {
                    Some((start, value_end))
                }
                Some((start, end)) => {
                    put(&self.head[start..end]);
                    put(b"\r\n");
                    Some((name_start, value_end))
                }
                None => Some((name_start, value_end)),
            };
        }
        if let Some((start, end)) = run {
            put(&self.head[start..end]);
            put(b"\r\n");
        }
    }
}

/// Where a parser's lines lie in the buffer it read them from, noted while its slices still
/// borrow the buffer, so that the head can then be split off and the lines made from it.
pub struct Spans {
    base: usize,
    len: usize,
}

impl Spans {
    pub fn of(buf: &[u8]) -> Spans {
        Spans {
            base: buf.as_ptr() as usize,
            len: buf.len(),
        }
    }

    /// `[name start, name end, value start, value end]` of a line the parser read out of the
    /// buffer. An empty value need not point into the buffer: it is placed after the colon,
    /// which follows the name at once (RFC 9112, section 5.1).
    pub fn line(&self, name: &[u8], value: &[u8]) -> [usize; 4] {
        let (name_start, name_end) = self.span(name).unwrap_or((0, 0));
        let after_colon = (name_end + 1).min(self.len);
        let (value_start, value_end) = self.span(value).unwrap_or((after_colon, after_colon));
        [name_start, name_end, value_start, value_end]
    }

    fn span(&self, part: &[u8]) -> Option<(usize, usize)> {
        let start = (part.as_ptr() as usize).checked_sub(self.base)?;
        let end = start.checked_add(part.len())?;
        (end <= self.len).then_some((start, end))
    }
}

/// The lines of an answer's head, parsed as the upstream parser parses it (all lines kept).
#[cfg(test)]
pub(crate) fn parsed(head: &'static [u8]) -> HeadLines {
    let mut lines = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut lines);
    let status = response.parse(head).expect("parses");
    assert!(status.is_complete());
    let spans = Spans::of(head);
    let places = response
        .headers
        .iter()
        .map(|line| spans.line(line.name.as_bytes(), line.value))
        .collect();
    let hop_by_hop = response
        .headers
        .iter()
        .any(|line| is_hop_by_hop(line.name.as_bytes()));
    HeadLines::new(Bytes::from_static(head), places, hop_by_hop)
}

/// The lines as text pairs, name and value, in order: what tests compare.
#[cfg(test)]
pub(crate) fn pairs(lines: &HeadLines) -> Vec<(&str, &str)> {
    let text = |bytes| std::str::from_utf8(bytes).expect("text");
    lines
        .iter()
        .map(|(name, value)| (text(name), text(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(lines: &HeadLines, keep: impl FnMut(&[u8], &[u8]) -> bool) -> (String, usize) {
        let (mut text, mut pieces) = (Vec::new(), 0);
        lines.write(keep, |piece| {
            text.extend_from_slice(piece);
            pieces += 1;
        });
        (String::from_utf8(text).expect("text"), pieces)
    }

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
        x-request-id: req_1\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nDate: now\r\n\r\n";

    #[test]
    fn lines_are_read_by_name_in_any_case() {
        let lines = parsed(HEAD);
        assert_eq!(lines.len(), 5);
        assert_eq!(lines.get(b"content-type"), Some(&b"application/json"[..]));
        assert_eq!(lines.get(b"set-cookie"), Some(&b"a=1"[..]));
        assert_eq!(lines.get(b"x-request"), None);
        let names: Vec<&[u8]> = lines.iter().map(|(name, _)| name).collect();
        assert_eq!(names[0], b"Content-Type", "names keep their spelling");
    }

    #[test]
    fn lines_that_lie_together_are_written_in_one_piece() {
        let lines = parsed(HEAD);
        let (text, pieces) = written(&lines, |_, _| true);
        assert_eq!(
            text,
            "Content-Type: application/json\r\nx-request-id: req_1\r\nSet-Cookie: a=1\r\n\
             set-cookie: b=2\r\nDate: now\r\n"
        );
        assert_eq!(pieces, 2, "the lines, and the last line's CRLF");
    }

    #[test]
    fn lines_left_out_are_not_written_and_split_the_runs() {
        let mut lines = parsed(HEAD);
        lines.remove(b"set-cookie");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines.get(b"set-cookie"), None);
        let (text, _) = written(&lines, |_, _| true);
        assert_eq!(
            text,
            "Content-Type: application/json\r\nx-request-id: req_1\r\nDate: now\r\n"
        );
        // Left out as written: the same text.
        let lines = parsed(HEAD);
        let (text, pieces) = written(&lines, |name, _| !is_named(name, b"set-cookie"));
        assert_eq!(
            text,
            "Content-Type: application/json\r\nx-request-id: req_1\r\nDate: now\r\n"
        );
        assert_eq!(pieces, 4);
    }

    #[test]
    fn odd_spacing_and_bare_line_feeds_are_written_with_crlf() {
        let lines = parsed(b"HTTP/1.1 200 OK\nA:1\nB:   two  \r\nC:\r\nD: 4\n\n");
        let values: Vec<&[u8]> = lines.iter().map(|(_, value)| value).collect();
        assert_eq!(values, [&b"1"[..], b"two", b"", b"4"]);
        let (text, _) = written(&lines, |_, _| true);
        assert_eq!(text, "A:1\r\nB:   two\r\nC:\r\nD: 4\r\n");
    }

    #[test]
    fn the_map_has_every_line_with_lowercase_names() {
        let map = parsed(HEAD).to_map();
        assert_eq!(map.len(), 5);
        assert_eq!(map["content-type"], "application/json");
        assert_eq!(map.get_all("set-cookie").iter().count(), 2);
        assert!(
            map.keys()
                .all(|name| name.as_str() == name.as_str().to_lowercase())
        );
    }

    #[test]
    fn debug_output_shows_no_line() {
        let lines = parsed(b"HTTP/1.1 200 OK\r\nSet-Cookie: session=secret\r\n\r\n");
        let shown = format!("{lines:?}");
        assert!(!shown.contains("secret") && shown.contains('1'), "{shown}");
    }

    #[test]
    fn an_empty_head_writes_nothing() {
        let lines = parsed(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert!(lines.is_empty());
        assert_eq!(written(&lines, |_, _| true), (String::new(), 0));
        assert!(lines.to_map().is_empty());
    }
}
