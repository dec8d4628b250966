//! Header rules at the proxy's two edges: hop-by-hop headers stop here (RFC 9110 §7.6.1),
//! `Host` follows the upstream, `x-forwarded-for` grows by the client's address, and tokentap's
//! own `x-tokentap-*` headers are not forwarded.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::upstream::{RequestLines, X_FORWARDED_FOR};
use crate::wire::lines::{HeadLines, is_named, visible_text};

// Header names tokentap reads or writes, parsed once: a lookup by `&str` parses the name on
// every call.

/// The client end of a connection, with its address already in the text `x-forwarded-for`
/// takes: made once per connection, where formatting the address on every request cost about
/// 1.3k instructions of a short request's 85k (callgrind). Behind an `Arc`: the connection's
/// service holds it for as long as a stream lasts, and the 40 bytes of the text inline there
/// took 0.5 KiB more RSS per stream (a size class of the connection's task, at 3,000 streams).
#[derive(Clone)]
pub struct Peer {
    forwarded_for: Option<Arc<HeaderValue>>,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        Peer {
            forwarded_for: HeaderValue::try_from(addr.ip().to_string())
                .ok()
                .map(Arc::new),
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "keep-alive"
            | "proxy-connection"
    )
}

/// Removes hop-by-hop headers, including any the `Connection` header names. Nearly every
/// provider's answer has some (`Connection: keep-alive`, `Transfer-Encoding: chunked`), so this
/// allocates nothing: the lists of names it collected were two allocations an answer.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests have none: find out in one pass.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Each `Connection` value is cloned (a reference count on the head's bytes), so that the
    // map can change while its names are read. `Connection` itself goes below, with the rest.
    let mut at = 0;
    while let Some(value) = headers.get_all(header::CONNECTION).iter().nth(at).cloned() {
        at += 1;
        for name in value.to_str().unwrap_or_default().split(',') {
            let name = name.trim();
            if !name.eq_ignore_ascii_case("connection") {
                // A name that is no header name finds nothing.
                headers.remove(name);
            }
        }
    }
    while let Some(name) = headers.keys().find(|name| is_hop_by_hop(name)).cloned() {
        headers.remove(name);
    }
}

/// The headers sent upstream for a client's request headers, and the `x-forwarded-for` that
/// goes beside them (`RequestLines`).
pub fn upstream_request_headers(
    mut headers: HeaderMap,
    peer: &Peer,
    body_rewritten: bool,
) -> (HeaderMap, Option<HeaderValue>) {
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    if body_rewritten {
        headers.remove(header::CONTENT_LENGTH);
    }
    let mut ours = false;
    for (name, value) in headers.iter_mut() {
        match name.as_str() {
            // Credentials stay out of any debug output of the HTTP stack.
            "authorization" | "x-api-key" | "api-key" | "cookie" => value.set_sensitive(true),
            name => ours |= name.starts_with("x-tokentap-"),
        }
    }
    if ours {
        let ours: Vec<HeaderName> = headers
            .keys()
            .filter(|n| n.as_str().starts_with("x-tokentap-"))
            .cloned()
            .collect();
        for name in ours {
            headers.remove(name);
        }
    }
    let forwarded_for = forwarded_for(peer, headers.get(&X_FORWARDED_FOR).map(|v| v.as_bytes()));
    if forwarded_for.is_some() {
        headers.remove(&X_FORWARDED_FOR);
    }
    (headers, forwarded_for)
}

/// `x-forwarded-for` as it goes upstream: the client's address after what the client said
/// (`prior`). None only for a peer without an address, whose `prior` then goes as it came.
fn forwarded_for(peer: &Peer, prior: Option<&[u8]>) -> Option<HeaderValue> {
    let client = peer.forwarded_for.as_ref()?;
    let prior = prior
        .and_then(visible_text)
        .map(str::trim)
        .filter(|prior| !prior.is_empty());
    match prior {
        Some(prior) => {
            let client = client.to_str().unwrap_or_default();
            HeaderValue::try_from(format!("{prior}, {client}")).ok()
        }
        None => Some(HeaderValue::clone(client)),
    }
}

/// Total size of the request headers as they came (names, values and separators).
pub fn header_bytes(headers: &ClientHeaders) -> usize {
    let mut bytes = 0;
    headers.for_each(|name, value| bytes += name.len() + value.len() + 4);
    bytes
}

/// A client request's headers: an HTTP/1.1 request's lines as they came (see `wire::lines`),
/// or a map (an h2c request's, or one the proxy made).
pub enum ClientHeaders {
    Lines(HeadLines),
    Map(HeaderMap),
}

impl ClientHeaders {
    /// The first value of the header `name` (lowercase), its name in any case.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match self {
            ClientHeaders::Lines(lines) => lines.get(name.as_bytes()),
            ClientHeaders::Map(map) => map.get(name).map(HeaderValue::as_bytes),
        }
    }

    /// Each header's name and value, in order (a map's names lowercase).
    pub fn for_each<'a>(&'a self, mut f: impl FnMut(&'a [u8], &'a [u8])) {
        match self {
            ClientHeaders::Lines(lines) => lines.iter().for_each(|(name, value)| f(name, value)),
            ClientHeaders::Map(map) => map
                .iter()
                .for_each(|(name, value)| f(name.as_str().as_bytes(), value.as_bytes())),
        }
    }
}

/// Whether a name is one of tokentap's own, `x-tokentap-*`, in any case.
fn is_ours(name: &[u8]) -> bool {
    name.get(..11)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"x-tokentap-"))
}

/// `upstream_request_headers` for a request's lines as they came: the lines kept go upstream
/// as they are, `x-forwarded-for` beside them.
pub fn upstream_request_lines(
    mut lines: HeadLines,
    peer: &Peer,
    body_rewritten: bool,
) -> RequestLines {
    lines.strip_hop_by_hop();
    let forwarded_for = forwarded_for(peer, lines.get(b"x-forwarded-for"));
    let replaces_forwarded = forwarded_for.is_some();
    lines.retain(|name, _| {
        !(is_named(name, b"host")
            || is_ours(name)
            || (replaces_forwarded && is_named(name, b"x-forwarded-for"))
            || (body_rewritten && is_named(name, b"content-length")))
    });
    RequestLines {
        client: Some(lines),
        forwarded_for,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_line_names_headers_to_strip() {
        let mut answer = HeaderMap::new();
        for listed in [
            "keep-alive, x-hop-one",
            " , Connection,bad name",
            "X-Hop-Two",
        ] {
            answer.append(header::CONNECTION, HeaderValue::from_static(listed));
        }
        for name in [
            "x-hop-one",
            "x-hop-two",
            "keep-alive",
            "proxy-connection",
            "te",
        ] {
            answer.append(name, HeaderValue::from_static("1"));
        }
        answer.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        answer.append("x-request-id", HeaderValue::from_static("req_1"));
        answer.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        answer.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        strip_hop_by_hop(&mut answer);
        // Removing moves lines of other names about; a name's own lines keep their order.
        let mut left: Vec<(&str, &str)> = answer
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().expect("text")))
            .collect();
        left.sort_by_key(|&(name, _)| name);
        assert_eq!(
            left,
            [
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-request-id", "req_1")
            ]
        );
    }

    #[test]
    fn hop_by_hop_lines_and_those_connection_names_are_left_out() {
        let mut answer = crate::wire::lines::parsed(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop-One\r\n\
              connection: , Connection,bad name\r\nCONNECTION: x-hop-two\r\n\
              x-hop-one: 1\r\nX-HOP-TWO: 1\r\nKeep-Alive: 1\r\nProxy-Connection: 1\r\n\
              TE: 1\r\nTrailer: 1\r\nUpgrade: 1\r\nProxy-Authenticate: 1\r\n\
              x-request-id: req_1\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\r\n",
        );
        answer.strip_hop_by_hop();
        assert_eq!(
            crate::wire::lines::pairs(&answer),
            [
                ("x-request-id", "req_1"),
                ("Set-Cookie", "a=1"),
                ("set-cookie", "b=2")
            ]
        );
        // None there: nothing changes.
        let mut plain = crate::wire::lines::parsed(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nx-te: 1\r\n\r\n",
        );
        plain.strip_hop_by_hop();
        assert_eq!(plain.len(), 2);
    }

    #[test]
    fn a_requests_lines_go_upstream_less_hop_by_hop_host_and_own_lines() {
        let client = crate::wire::lines::parsed(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret-Hop\r\n\
              Keep-Alive: timeout=5\r\nx-secret-hop: 1\r\nTE: trailers\r\n\
              Host: 127.0.0.1:8787\r\nX-Tokentap-Provider: openai\r\n\
              X-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.9\r\n\
              Content-Length: 10\r\nOpenAI-Beta: assistants=v2\r\nx-tokentap-user: u1\r\n\
              Authorization: Bearer sk-1\r\nCookie: a=1\r\ncookie: b=2\r\n\r\n",
        );
        let peer = Peer::new("127.0.0.2:50000".parse().expect("address"));
        let up = upstream_request_lines(client.clone(), &peer, true);
        let lines = up.client.expect("lines");
        assert_eq!(
            crate::wire::lines::pairs(&lines),
            [
                ("OpenAI-Beta", "assistants=v2"),
                ("Authorization", "Bearer sk-1"),
                ("Cookie", "a=1"),
                ("cookie", "b=2"),
            ]
        );
        // The first value, as a map's `get` reads it, grown by the client's address.
        assert_eq!(
            up.forwarded_for.expect("x-forwarded-for"),
            "10.0.0.1, 127.0.0.2"
        );
        // A body not rewritten keeps its length.
        let lines = upstream_request_lines(client, &peer, false).client;
        assert_eq!(
            lines.expect("lines").get(b"content-length"),
            Some(&b"10"[..])
        );
        // Without a prior `x-forwarded-for`, the client's address alone.
        let plain = crate::wire::lines::parsed(b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n");
        let up = upstream_request_lines(plain, &peer, false);
        assert_eq!(up.forwarded_for.expect("x-forwarded-for"), "127.0.0.2");
        assert_eq!(up.client.expect("lines").len(), 1);
    }

    #[test]
    fn client_headers_are_read_alike_as_lines_and_as_a_map() {
        let lines = ClientHeaders::Lines(crate::wire::lines::parsed(
            b"HTTP/1.1 200 OK\r\nX-Tokentap-Provider: groq\r\nContent-Length: 12\r\n\r\n",
        ));
        let mut map = HeaderMap::new();
        map.insert("x-tokentap-provider", HeaderValue::from_static("groq"));
        map.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        let map = ClientHeaders::Map(map);
        for headers in [&lines, &map] {
            assert_eq!(headers.get("x-tokentap-provider"), Some(&b"groq"[..]));
            assert_eq!(headers.get("content-length"), Some(&b"12"[..]));
            assert_eq!(headers.get("host"), None);
            // Names, values and ": " with CRLF, as the lines came.
            assert_eq!(header_bytes(headers), 19 + 4 + 4 + 14 + 2 + 4);
        }
    }

    #[test]
    fn hop_by_hop_and_own_headers_stop_here() {
        let mut client = HeaderMap::new();
        client.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        client.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        client.insert("x-secret-hop", HeaderValue::from_static("1"));
        client.insert(header::TE, HeaderValue::from_static("trailers"));
        client.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8787"));
        client.insert("x-tokentap-provider", HeaderValue::from_static("openai"));
        client.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        client.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        client.insert("openai-beta", HeaderValue::from_static("assistants=v2"));
        client.insert("x-tokentap-user", HeaderValue::from_static("u1"));
        client.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-1"),
        );
        client.append(header::COOKIE, HeaderValue::from_static("a=1"));
        client.append(header::COOKIE, HeaderValue::from_static("b=2"));
        client.insert("api-key", HeaderValue::from_static("azure-key"));
        let peer = Peer::new("127.0.0.2:50000".parse().expect("address"));
        let (up, forwarded_for) = upstream_request_headers(client, &peer, true);
        for gone in [
            "connection",
            "keep-alive",
            "x-secret-hop",
            "te",
            "host",
            "x-tokentap-provider",
            "x-tokentap-user",
            "content-length",
            // Goes beside the map, grown.
            "x-forwarded-for",
        ] {
            assert!(!up.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(
            forwarded_for.expect("x-forwarded-for"),
            "10.0.0.1, 127.0.0.2"
        );
        assert_eq!(up["openai-beta"], "assistants=v2");
        // Credentials go on, kept out of the HTTP stack's debug output.
        for name in ["authorization", "cookie", "api-key"] {
            assert!(
                up.get_all(name).iter().all(HeaderValue::is_sensitive),
                "{name}"
            );
        }
        assert_eq!(up.get_all("cookie").iter().count(), 2);
        assert!(!up["openai-beta"].is_sensitive());
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_left_as_it_is() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert("x-keep-alive-ish", HeaderValue::from_static("1"));
        let before = headers.clone();
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers, before);
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers, before);
    }

    #[test]
    fn x_forwarded_for_is_the_client_address_when_the_client_sent_none() {
        let peer = Peer::new("[2001:db8::7]:443".parse().expect("address"));
        let (_, forwarded_for) = upstream_request_headers(HeaderMap::new(), &peer, false);
        assert_eq!(forwarded_for.expect("x-forwarded-for"), "2001:db8::7");
        let mut blank = HeaderMap::new();
        blank.insert("x-forwarded-for", HeaderValue::from_static("  "));
        let (up, forwarded_for) = upstream_request_headers(blank, &peer, false);
        assert_eq!(forwarded_for.expect("x-forwarded-for"), "2001:db8::7");
        assert!(up.is_empty());
    }
}
