//! A request's head, read off the start of the connection's read buffer: the request line and
//! headers as an `http::Request` (less the lines that frame only this hop, which are read
//! here: see `wire::only_this_hop`), how its body is framed, and whether the connection may
//! carry another request after it.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version};

use crate::wire::lines::{HeadLines, is_hop_by_hop, is_named};
use crate::wire::names::header_name;
use crate::wire::{
    LinePlaces, add_length, connection_only_this_hop, has_token, last_coding_is_chunked,
    only_this_hop,
};

/// Most header lines a request may have (hyper's limit too).
const MAX_HEADERS: usize = 100;

/// How a request's body is framed (RFC 9112, section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    Known(u64),
    Chunked,
}

/// A request head, read and taken from the buffer.
#[derive(Debug)]
pub struct Head {
    /// With its header lines kept as they came, its header map is empty.
    pub request: Request<()>,
    pub lines: Option<HeadLines>,
    pub body: BodyLength,
    /// The client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a `100 Continue` before it sends the body.
    pub expects_continue: bool,
}

/// A request that cannot be served: answered with its status, and the connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Rejected {
    fn bad(reason: &'static str) -> Rejected {
        Rejected {
            status: StatusCode::BAD_REQUEST,
            reason,
        }
    }

    fn too_large() -> Rejected {
        Rejected {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            reason: "the request head is too large",
        }
    }
}

/// Parses the request head at the start of `buf`, taking it from `buf` when whole (`None`
/// until it is). A head not whole within `max_head` bytes is rejected. Its header lines are
/// kept as they came with `keep_lines` (see `wire::lines`), else put in the request's map.
pub fn parse(
    buf: &mut BytesMut,
    max_head: usize,
    keep_lines: bool,
) -> Result<Option<Head>, Rejected> {
    // Uninitialised: zeroing room for a hundred lines costs more than parsing the usual ten.
    let mut lines = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut lines,
    ) {
        Ok(httparse::Status::Complete(length)) if length > max_head => {
            return Err(Rejected::too_large());
        }
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > max_head => {
            return Err(Rejected::too_large());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Rejected::too_large()),
        Err(httparse::Error::Version) => {
            return Err(Rejected {
                status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                reason: "only HTTP/1.0 and HTTP/1.1 are served here",
            });
        }
        Err(_) => return Err(Rejected::bad("the request head does not parse")),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| Rejected::bad("the request method is invalid"))?;
    let version = if parsed.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    // The target, names and values are read from the head once it is split off: the target
    // and the values are slices of it, not copies.
    let path = parsed.path.unwrap_or_default().as_bytes();
    let target_start = path.as_ptr() as usize - buf.as_ptr() as usize;
    let target = (target_start, target_start + path.len());
    let places = LinePlaces::of(buf, parsed.headers);
    let head = buf.split_to(length).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1))
        .map_err(|_| Rejected::bad("the request target is invalid"))?;
    let mut lines = FramingLines::default();
    // The lines as they came (httparse has checked their names and values), or as a map.
    let mut kept = keep_lines.then(|| Vec::with_capacity(places.len()));
    let mut hop_by_hop = false;
    for at in places.iter() {
        let [name_start, name_end, value_start, value_end] = at;
        let name = &head[name_start..name_end];
        let this_hop_only = lines.note(name, &head[value_start..value_end])?;
        if let Some(kept) = &mut kept {
            if !this_hop_only {
                hop_by_hop |= is_hop_by_hop(name);
                kept.push(at);
            }
        }
    }
    // A map only for a request whose lines are not kept: an empty map put in place of the
    // request's own was one more to drop (about 60 instructions).
    let (headers, kept) = match kept {
        Some(kept) => (None, Some(HeadLines::new(head.clone(), kept, hop_by_hop))),
        None => {
            let mut headers = HeaderMap::with_capacity(places.len());
            for [name_start, name_end, value_start, value_end] in places.iter() {
                let name = header_name(&head[name_start..name_end])
                    .map_err(|_| Rejected::bad("a header name is invalid"))?;
                let value = value_of(&head, value_start, value_end)?;
                if !only_this_hop(&name, &value) {
                    headers.append(name, value);
                }
            }
            (Some(headers), None)
        }
    };
    let body = lines.body_length(version)?;
    let keep_alive = match version {
        Version::HTTP_11 => !lines.closes,
        _ => lines.keeps_alive && !lines.closes,
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    if let Some(headers) = headers {
        *request.headers_mut() = headers;
    }
    Ok(Some(Head {
        request,
        lines: kept,
        body,
        keep_alive,
        expects_continue: version == Version::HTTP_11 && lines.expects_continue,
    }))
}

fn value_of(head: &Bytes, start: usize, end: usize) -> Result<HeaderValue, Rejected> {
    HeaderValue::from_maybe_shared(head.slice(start..end))
        .map_err(|_| Rejected::bad("a header value is invalid"))
}

/// What the head's framing lines say, noted line by line as the head is read.
#[derive(Default)]
struct FramingLines {
    /// Whether the last `Transfer-Encoding` line's last coding, the one that frames the body,
    /// is `chunked`; `None` without such a line.
    chunked: Option<bool>,
    /// Whether any `Content-Length` line came, and the length they say together.
    has_length: bool,
    length: Option<u64>,
    /// A `Connection` line lists `close`, or `keep-alive`.
    closes: bool,
    keeps_alive: bool,
    expects_continue: bool,
}

impl FramingLines {
    /// Notes a line; whether it frames only this hop (see `wire::only_this_hop`).
    fn note(&mut self, name: &[u8], value: &[u8]) -> Result<bool, Rejected> {
        // Told apart by length first: most lines are none of these.
        Ok(match name.len() {
            17 if is_named(name, b"transfer-encoding") => {
                self.chunked = Some(last_coding_is_chunked(value));
                true
            }
            14 if is_named(name, b"content-length") => {
                self.has_length = true;
                self.length = add_length(self.length, value).map_err(|_| {
                    Rejected::bad("the request's Content-Length lines are invalid or disagree")
                })?;
                false
            }
            10 if is_named(name, b"connection") => {
                self.closes |= has_token(value, b"close");
                self.keeps_alive |= has_token(value, b"keep-alive");
                connection_only_this_hop(value)
            }
            10 if is_named(name, b"keep-alive") => true,
            6 if is_named(name, b"expect") => {
                self.expects_continue |= value.eq_ignore_ascii_case(b"100-continue");
                false
            }
            _ => false,
        })
    }

    /// The body's framing. A request framed both ways, or by a coding other than chunked, is
    /// refused: someone on the way may have read it the other way (request smuggling).
    fn body_length(&self, version: Version) -> Result<BodyLength, Rejected> {
        let Some(chunked_last) = self.chunked else {
            return Ok(BodyLength::Known(self.length.unwrap_or(0)));
        };
        if self.has_length {
            return Err(Rejected::bad(
                "the request has both Transfer-Encoding and Content-Length",
            ));
        }
        if version != Version::HTTP_11 {
            return Err(Rejected::bad("Transfer-Encoding needs HTTP/1.1"));
        }
        if !chunked_last {
            return Err(Rejected::bad(
                "the request's Transfer-Encoding does not end in chunked",
            ));
        }
        Ok(BodyLength::Chunked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::INLINE_LINES;

    fn whole(raw: &[u8]) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(raw);
        match parse(&mut buf, 8192, false) {
            Ok(Some(head)) => (head, buf),
            other => panic!("{other:?} for {}", String::from_utf8_lossy(raw)),
        }
    }

    fn rejected(raw: &[u8]) -> StatusCode {
        match parse(&mut BytesMut::from(raw), 200, false) {
            Err(rejected) => rejected.status,
            other => panic!("{other:?} for {}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn a_head_gives_method_target_headers_and_leaves_the_body() {
        let (head, rest) = whole(
            b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: tt\r\nAuthorization: Bearer sk\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 4\r\n\r\nbody",
        );
        let request = &head.request;
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri().path(), "/v1/chat/completions");
        assert_eq!(request.uri().query(), Some("x=1"));
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["authorization"], "Bearer sk");
        assert_eq!(request.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(head.body, BodyLength::Known(4));
        assert!(head.keep_alive && !head.expects_continue);
        assert_eq!(&rest[..], b"body");
    }

    #[test]
    fn lines_that_frame_only_this_hop_are_read_and_left_out_of_the_map() {
        let (head, _) = whole(
            b"POST / HTTP/1.1\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nx-a: 1\r\n\r\n",
        );
        let names: Vec<&str> = head.request.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-a"]);
        assert_eq!(head.body, BodyLength::Chunked);
        assert!(head.keep_alive);
        let (head, _) = whole(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(head.request.headers().is_empty() && !head.keep_alive);
        // A `Connection` line that names other headers stays, for the proxy to strip them.
        let (head, _) =
            whole(b"GET / HTTP/1.1\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\n\r\n");
        assert_eq!(head.request.headers()["connection"], "keep-alive, x-hop");
        assert_eq!(head.request.headers().len(), 2);
    }

    #[test]
    fn kept_as_lines_the_head_leaves_its_map_empty_and_frames_alike() {
        let mut buf = BytesMut::from(
            &b"POST /v1 HTTP/1.1\r\nConnection: Keep-Alive\r\nX-A: 1\r\n\
               Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nx-a: 2\r\n\r\n5\r\n"[..],
        );
        let head = parse(&mut buf, 8192, true).expect("parses").expect("whole");
        assert!(head.request.headers().is_empty());
        let lines = head.lines.expect("lines");
        assert_eq!(
            crate::wire::lines::pairs(&lines),
            [("X-A", "1"), ("Expect", "100-continue"), ("x-a", "2")]
        );
        assert_eq!(head.body, BodyLength::Chunked);
        assert!(head.keep_alive && head.expects_continue);
        assert_eq!(head.request.uri(), "/v1");
        assert_eq!(&buf[..], b"5\r\n");
        // The same rules refuse the same heads.
        let mut both = BytesMut::from(
            &b"POST / HTTP/1.1\r\ncontent-length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        );
        assert!(parse(&mut both, 8192, true).is_err());
        // Without, the map has them and there are no lines.
        let (head, _) = whole(b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n");
        assert!(head.lines.is_none() && head.request.headers()["x-a"] == "1");
    }

    #[test]
    fn a_head_of_more_lines_than_are_noted_on_the_stack_keeps_them_all_in_order() {
        let lines = INLINE_LINES + 5;
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..lines {
            raw.extend_from_slice(format!("x-line-{i}: value {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"x-line-0: again\r\ncontent-length: 2\r\n\r\nok");
        let (head, rest) = whole(&raw);
        let headers = head.request.headers();
        assert_eq!(headers.len(), lines + 2);
        for i in 0..lines {
            let first = headers
                .get(format!("x-line-{i}"))
                .map(|v| v.as_bytes().to_vec());
            assert_eq!(first, Some(format!("value {i}").into_bytes()));
        }
        let repeated: Vec<_> = headers.get_all("x-line-0").iter().collect();
        assert_eq!(repeated, ["value 0", "again"]);
        // The framing line past the stack's share still frames the body.
        assert_eq!(head.body, BodyLength::Known(2));
        assert_eq!(&rest[..], b"ok");
    }

    #[test]
    fn framing_and_reuse_follow_the_version_and_the_lines() {
        let cases: [(&[u8], BodyLength, bool, bool); 8] = [
            (b"GET / HTTP/1.1\r\n\r\n", BodyLength::Known(0), true, false),
            (b"GET / HTTP/1.0\r\n\r\n", BodyLength::Known(0), false, false),
            (
                b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                BodyLength::Known(0),
                true,
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n",
                BodyLength::Known(0),
                false,
                false,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                BodyLength::Chunked,
                true,
                false,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\nExpect: 100-Continue\r\n\r\n",
                BodyLength::Known(7),
                true,
                true,
            ),
            // Only HTTP/1.1 clients wait for a `100 Continue`.
            (
                b"POST / HTTP/1.0\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n",
                BodyLength::Known(7),
                false,
                false,
            ),
            (
                b"OPTIONS * HTTP/1.1\r\n\r\n",
                BodyLength::Known(0),
                true,
                false,
            ),
        ];
        for (raw, body, keep_alive, expects_continue) in cases {
            let (head, _) = whole(raw);
            assert_eq!(
                (head.body, head.keep_alive, head.expects_continue),
                (body, keep_alive, expects_continue),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn a_partial_head_waits_until_it_is_too_large() {
        let mut buf = BytesMut::from(&b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"[..]);
        assert!(matches!(parse(&mut buf, 8192, false), Ok(None)));
        assert_eq!(buf.len(), 45, "nothing is taken from a partial head");
        let long = [&b"GET / HTTP/1.1\r\nx-long: "[..], &[b'a'; 300]].concat();
        assert_eq!(rejected(&long), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let whole_but_long = [&long[..], b"\r\n\r\n"].concat();
        assert_eq!(
            rejected(&whole_but_long),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let many: Vec<u8> = [&b"GET / HTTP/1.1\r\n"[..]]
            .into_iter()
            .chain(std::iter::repeat_n(&b"a: 1\r\n"[..], MAX_HEADERS + 1))
            .chain([&b"\r\n"[..]])
            .flatten()
            .copied()
            .collect();
        assert!(matches!(
            parse(&mut BytesMut::from(&many[..]), 64 * 1024, false),
            Err(Rejected {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                ..
            })
        ));
    }

    #[test]
    fn ambiguous_or_broken_heads_are_rejected() {
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad name: 1\r\n\r\n",
            b"\x00GET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                rejected(raw),
                StatusCode::BAD_REQUEST,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(
            rejected(b"GET / HTTP/2.0\r\n\r\n"),
            StatusCode::HTTP_VERSION_NOT_SUPPORTED
        );
    }
}
