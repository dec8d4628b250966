//! The upstream side: a provider, its connections (HTTP/1.1 of tokentap's own, and hyper's
//! HTTP/2 where TLS negotiates it; see `pool`), and the path a client's request goes to.

mod connect;
mod http1;
mod pool;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::server::ClientBody;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header};
use http_body_util::{Either, Full, Limited};

use crate::config::{AuthHeader, ProviderConfig};
use crate::wire::lines::HeadLines;
use pool::Pool;
pub use pool::{ClientError, ResponseBody};

/// A request body as sent upstream: a metered request's JSON, read whole, or any other body
/// streamed through, bounded by `--max-body`.
pub type OutboundBody = Either<Full<Bytes>, Limited<ClientBody>>;

/// The upstream's answer, as the client gets it through the meter.
pub type UpstreamResponse = Response<ResponseBody>;

/// Boxed: the request's future waits inside the client connection's task for as long as the
/// connection lives, and a connection's memory is what bounds concurrent streams.
pub type ResponseFuture<'a> =
    Pin<Box<dyn Future<Output = Result<UpstreamResponse, ClientError>> + Send + 'a>>;

/// Header lines that go upstream beside a request's header map: on HTTP/1.1 written as they
/// are, after the map's headers; on HTTP/2 put in the map. Most requests then need nothing in
/// the map, where its first header cost two allocations and a hashed insert.
#[derive(Default)]
pub struct RequestLines {
    /// A client's own lines (see `wire::lines`), less those the proxy strips or replaces.
    pub client: Option<HeadLines>,
    /// `x-forwarded-for`: what the client said, if anything, and its address after it.
    pub forwarded_for: Option<HeaderValue>,
}

/// `x-api-key`, the header of Anthropic's keys.
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// `x-forwarded-for`, which the proxy grows by the client's address (`RequestLines`).
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// How long an unused pooled connection stays open.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// A provider and its connections.
pub struct Upstream {
    pub config: ProviderConfig,
    /// The provider's name as records hold it: shared by every record, not copied into each.
    pub name: std::sync::Arc<str>,
    pool: Pool,
    /// Header names a request's own headers lose: those of the provider's own headers (see
    /// `Pool`), and any credential when the provider has a key.
    replaced: Vec<HeaderName>,
    /// The base URL's path without its trailing `/` ("" for none): request paths go after it.
    base_path: String,
}

impl Upstream {
    pub fn new(config: ProviderConfig, connect_timeout: Duration) -> Result<Upstream, String> {
        let base: Uri = config.base_url.parse().map_err(|_| "is not a URL")?;
        let (Some(scheme), Some(authority)) = (base.scheme().cloned(), base.authority().cloned())
        else {
            return Err("needs a scheme and a host".into());
        };
        // What the provider gets on every request: its key, then its configured headers (a
        // configured header of the key's name wins).
        let mut own = HeaderMap::new();
        if let Some(credential) = &config.credential {
            let name = match credential.header {
                AuthHeader::Authorization => header::AUTHORIZATION,
                AuthHeader::XApiKey => X_API_KEY.clone(),
            };
            own.insert(name, credential.value.clone());
        }
        for (name, value) in &config.headers {
            own.insert(name.clone(), value.clone());
        }
        let mut replaced: Vec<HeaderName> = own.keys().cloned().collect();
        if config.credential.is_some() {
            // A provider with a key replaces whatever credential the client sent.
            for name in [&header::AUTHORIZATION, &X_API_KEY] {
                if !replaced.contains(name) {
                    replaced.push(name.clone());
                }
            }
        }
        Ok(Upstream {
            replaced,
            pool: Pool::new(scheme, authority, own, connect_timeout, POOL_IDLE)?,
            base_path: base.path().trim_end_matches('/').to_owned(),
            name: config.name.as_str().into(),
            config,
        })
    }

    /// The upstream request's URI (origin form: path and query) for a client's request URI:
    /// only its path and query are kept, so a client never chooses the host.
    pub fn uri(&self, client_uri: &Uri) -> Result<Uri, http::Error> {
        let path_and_query = match client_uri.path_and_query() {
            Some(pq) if self.base_path.is_empty() => pq.clone(),
            Some(pq) => PathAndQuery::try_from(format!("{}{pq}", self.base_path))?,
            None if self.base_path.is_empty() => PathAndQuery::from_static("/"),
            None => PathAndQuery::try_from(self.base_path.as_str())?,
        };
        Ok(Uri::from(path_and_query))
    }

    /// Sends `request` with `lines` beside its header map, and the provider's own headers
    /// (its key and configured headers) in place of any of their names the request has.
    pub fn send(
        &self,
        mut request: Request<OutboundBody>,
        mut lines: RequestLines,
    ) -> ResponseFuture<'_> {
        for name in &self.replaced {
            request.headers_mut().remove(name);
            if let Some(client) = &mut lines.client {
                client.remove(name.as_str().as_bytes());
            }
            if name == X_FORWARDED_FOR {
                lines.forwarded_for = None;
            }
        }
        self.pool.send(request, lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(base_url: &str) -> Upstream {
        let config = ProviderConfig {
            name: "test".into(),
            base_url: base_url.to_owned(),
            models: Vec::new(),
            model_globs: globset::GlobSet::empty(),
            credential: None,
            headers: Vec::new(),
            include_usage: true,
        };
        Upstream::new(config, Duration::from_secs(1)).unwrap()
    }

    #[tokio::test]
    async fn the_request_path_and_query_go_after_the_base_path() {
        let cases = [
            (
                "http://127.0.0.1:9",
                "/v1/chat/completions?x=1",
                "/v1/chat/completions?x=1",
            ),
            (
                "https://gw.example/openai",
                "/v1/models",
                "/openai/v1/models",
            ),
            (
                "https://gw.example/openai/",
                "/v1/models?a=b",
                "/openai/v1/models?a=b",
            ),
            // An absolute-form request line names a host: it is ignored.
            (
                "http://127.0.0.1:9",
                "http://evil.example/v1/models",
                "/v1/models",
            ),
        ];
        for (base, request, expected) in cases {
            let uri = upstream(base).uri(&request.parse().unwrap()).unwrap();
            assert_eq!(uri.to_string(), expected, "{base} + {request}");
        }
    }

    #[tokio::test]
    async fn only_an_https_base_url_connects_over_tls() {
        assert!(!upstream("http://127.0.0.1:9").pool.is_tls());
        assert!(upstream("https://gw.example/v1").pool.is_tls());
    }
}
