//! The request tokentap sends upstream: the client's method, path and query on the provider's
//! base URL, the client's end-to-end headers, and the provider's key and extra headers.

use http::{Method, Request, Uri, header};

use super::headers::{
    ClientHeaders, Peer, X_API_KEY, upstream_request_headers, upstream_request_lines,
};
use crate::config::AuthHeader;
use crate::upstream::{OutboundBody, Upstream};
use crate::wire::lines::{HeadLines, is_named};

/// The client's request `method`, `uri` and `headers` (taken: the client's copy is not needed
/// once the request goes upstream) as a request to `upstream`. A client's header lines go as
/// they came, less what the proxy strips or replaces, beside the request; its map then holds
/// only what the proxy adds.
pub fn request(
    upstream: &Upstream,
    method: &Method,
    uri: &Uri,
    headers: ClientHeaders,
    peer: &Peer,
    body: OutboundBody,
    body_rewritten: bool,
) -> Result<(Request<OutboundBody>, Option<HeadLines>), http::Error> {
    let (mut headers, mut lines) = match headers {
        ClientHeaders::Map(map) => (upstream_request_headers(map, peer, body_rewritten), None),
        ClientHeaders::Lines(lines) => {
            let (added, lines) = upstream_request_lines(lines, peer, body_rewritten);
            (added, Some(lines))
        }
    };
    if let Some(credential) = &upstream.config.credential {
        // A provider with a key replaces whatever credential the client sent.
        headers.remove(header::AUTHORIZATION);
        headers.remove(&X_API_KEY);
        if let Some(lines) = &mut lines {
            lines.retain(|name, _| {
                !is_named(name, b"authorization") && !is_named(name, b"x-api-key")
            });
        }
        let name = match credential.header {
            AuthHeader::Authorization => header::AUTHORIZATION,
            AuthHeader::XApiKey => X_API_KEY.clone(),
        };
        headers.insert(name, credential.value.clone());
    }
    for (name, value) in &upstream.config.headers {
        if let Some(lines) = &mut lines {
            lines.remove(name.as_str().as_bytes());
        }
        headers.insert(name.clone(), value.clone());
    }
    let mut request = Request::builder()
        .method(method.clone())
        .uri(upstream.uri(uri)?)
        .body(body)?;
    *request.headers_mut() = headers;
    Ok((request, lines))
}
