//! The request tokentap sends upstream: the client's method, path and query on the provider's
//! base URL, the client's end-to-end headers, and the provider's key and extra headers.

use std::net::IpAddr;

use http::{Request, header};

use super::headers::{X_API_KEY, upstream_request_headers};
use crate::config::AuthHeader;
use crate::upstream::{OutboundBody, Upstream};

pub fn request(
    upstream: &Upstream,
    parts: &http::request::Parts,
    client_ip: IpAddr,
    body: OutboundBody,
    body_rewritten: bool,
) -> Result<Request<OutboundBody>, http::Error> {
    let mut headers = upstream_request_headers(&parts.headers, client_ip, body_rewritten);
    if let Some(credential) = &upstream.config.credential {
        // A provider with a key replaces whatever credential the client sent.
        headers.remove(header::AUTHORIZATION);
        headers.remove(&X_API_KEY);
        let name = match credential.header {
            AuthHeader::Authorization => header::AUTHORIZATION,
            AuthHeader::XApiKey => X_API_KEY.clone(),
        };
        headers.insert(name, credential.value.clone());
    }
    for (name, value) in &upstream.config.headers {
        headers.insert(name.clone(), value.clone());
    }
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(upstream.uri(&parts.uri)?)
        .body(body)?;
    *request.headers_mut() = headers;
    Ok(request)
}
