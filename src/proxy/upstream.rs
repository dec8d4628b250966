//! The request tokentap sends upstream: the client's method, path and query on the provider's
//! base URL, the client's end-to-end headers, and the provider's key and extra headers.

use std::net::IpAddr;
use std::time::Duration;

use http::header;

use super::headers::upstream_request_headers;
use crate::app::Upstream;
use crate::config::AuthHeader;

pub fn request(
    upstream: &Upstream,
    parts: &http::request::Parts,
    client_ip: IpAddr,
    body: reqwest::Body,
    body_rewritten: bool,
    timeout: Duration,
) -> reqwest::RequestBuilder {
    let mut headers = upstream_request_headers(&parts.headers, client_ip, body_rewritten);
    if let Some(credential) = &upstream.config.credential {
        // A provider with a key replaces whatever credential the client sent.
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-api-key");
        let name = match credential.header {
            AuthHeader::Authorization => header::AUTHORIZATION,
            AuthHeader::XApiKey => http::HeaderName::from_static("x-api-key"),
        };
        headers.insert(name, credential.value.clone());
    }
    for (name, value) in &upstream.config.headers {
        headers.insert(name.clone(), value.clone());
    }
    // The request path goes after the base URL's own path, unchanged, with the query.
    let mut url = upstream.base.clone();
    let base_path = upstream.base.path().trim_end_matches('/');
    if base_path.is_empty() {
        url.set_path(parts.uri.path());
    } else {
        url.set_path(&format!("{base_path}{}", parts.uri.path()));
    }
    url.set_query(parts.uri.query());
    upstream
        .client
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body)
        .timeout(timeout)
}
