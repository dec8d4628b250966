//! The request tokentap sends upstream: the client's method, path and query on the provider's
//! base URL, the client's end-to-end headers, and the provider's key and extra headers.

use http::{HeaderMap, Method, Request, Uri, header};

use super::headers::{Peer, X_API_KEY, upstream_request_headers};
use crate::config::AuthHeader;
use crate::upstream::{OutboundBody, Upstream};

/// The client's request `method`, `uri` and `headers` (taken: the client's copy is not needed
/// once the request goes upstream) as a request to `upstream`.
pub fn request(
    upstream: &Upstream,
    method: &Method,
    uri: &Uri,
    headers: HeaderMap,
    peer: &Peer,
    body: OutboundBody,
    body_rewritten: bool,
) -> Result<Request<OutboundBody>, http::Error> {
    let mut headers = upstream_request_headers(headers, peer, body_rewritten);
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
    if let Some(host) = upstream.host() {
        // A `Host` among the provider's configured headers stays, as it did with hyper-util.
        headers.entry(header::HOST).or_insert_with(|| host.clone());
    }
    let mut request = Request::builder()
        .method(method.clone())
        .uri(upstream.uri(uri)?)
        .body(body)?;
    *request.headers_mut() = headers;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;
    use http_body_util::{Either, Full};

    use super::*;
    use crate::config::ProviderConfig;

    fn request_to(headers: Vec<(header::HeaderName, HeaderValue)>) -> Request<OutboundBody> {
        let config = ProviderConfig {
            name: "local".into(),
            base_url: "http://127.0.0.1:8080/v1".into(),
            models: Vec::new(),
            model_globs: globset::GlobSet::empty(),
            credential: None,
            headers,
            include_usage: true,
        };
        let upstream = Upstream::new(config, Duration::from_secs(1)).unwrap();
        let peer = Peer::new("10.1.2.3:4000".parse().unwrap());
        let mut client = HeaderMap::new();
        client.insert(header::HOST, HeaderValue::from_static("tokentap:8787"));
        let uri: Uri = "/v1/chat/completions".parse().unwrap();
        let body = Either::Left(Full::default());
        request(&upstream, &Method::POST, &uri, client, &peer, body, false).unwrap()
    }

    #[tokio::test]
    async fn host_is_the_providers_unless_its_config_sets_one() {
        assert_eq!(request_to(Vec::new()).headers()["host"], "127.0.0.1:8080");
        let configured = vec![(header::HOST, HeaderValue::from_static("gateway.internal"))];
        assert_eq!(request_to(configured).headers()["host"], "gateway.internal");
    }
}
