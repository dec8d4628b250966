//! The request tokentap sends upstream: the client's method, path and query on the provider's
//! base URL, and the client's end-to-end headers. The provider's key and configured headers
//! are the upstream's to add (`Upstream::send`).

use http::{HeaderMap, Method, Request, Uri};

use super::headers::{ClientHeaders, Peer, upstream_request_headers, upstream_request_lines};
use crate::upstream::{OutboundBody, RequestLines, Upstream};

/// The client's request `method`, `uri` and `headers` (taken: the client's copy is not needed
/// once the request goes upstream) as a request to `upstream`. A client's header lines go as
/// they came, less what the proxy strips or replaces, beside the request, whose map is then
/// empty.
pub fn request(
    upstream: &Upstream,
    method: &Method,
    uri: &Uri,
    headers: ClientHeaders,
    peer: &Peer,
    body: OutboundBody,
    body_rewritten: bool,
) -> Result<(Request<OutboundBody>, RequestLines), http::Error> {
    let (headers, lines) = match headers {
        ClientHeaders::Map(map) => {
            let (map, forwarded_for) = upstream_request_headers(map, peer, body_rewritten);
            let lines = RequestLines {
                client: None,
                forwarded_for,
            };
            (map, lines)
        }
        ClientHeaders::Lines(lines) => (
            HeaderMap::new(),
            upstream_request_lines(lines, peer, body_rewritten),
        ),
    };
    // Set in place: the builder moved its parts, and the request out of a `Result`, about
    // 250 instructions of copies a request (callgrind).
    let uri = upstream.uri(uri)?;
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok((request, lines))
}
