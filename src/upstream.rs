//! The upstream side: a provider, its pooled HTTP client (HTTP/1.1, and HTTP/2 where TLS
//! negotiates it), and the URI a client's request goes to.
//!
//! hyper-util's pooled client (rustls for https), used directly: reqwest wraps the same
//! client in a URL re-parse, a retry and a redirect layer and a timer per request, which cost
//! about 9% of the proxy's CPU per short request while tokentap needs none of them (redirects
//! are answered to the client, and timeouts are tokentap's own).

use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::ProviderConfig;

/// A request body as sent upstream: a metered request's JSON, read whole, or any other body
/// streamed through, bounded by `--max-body`.
pub type OutboundBody = Either<Full<Bytes>, Limited<Incoming>>;

pub type ResponseFuture = hyper_util::client::legacy::ResponseFuture;
pub type ClientError = hyper_util::client::legacy::Error;

/// How long an unused pooled connection stays open.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// A provider's pooled connections: plain TCP for an `http://` base URL, rustls for `https://`.
/// Two client types, not one connector for both: a pooled connection's task holds its stream
/// type inline, and the TLS stream is the larger, about 1 KiB per connection (RSS at 3,000
/// streams) that a plain-HTTP upstream (a local model server, a sidecar) would carry unused.
enum Pool {
    Plain(Client<HttpConnector, OutboundBody>),
    Tls(Client<HttpsConnector<HttpConnector>, OutboundBody>),
}

/// A provider and its connection pool.
pub struct Upstream {
    pub config: ProviderConfig,
    pool: Pool,
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without its trailing `/` ("" for none): request paths go after it.
    base_path: String,
    /// The `Host` header of a plain-HTTP pool, made once. hyper-util sets `Host` from the URI
    /// on every HTTP/1.1 request it sends without one: a URI clone, a port parse and a
    /// `format!`, about 1.5k instructions. A TLS pool may speak HTTP/2, where the authority
    /// goes in `:authority` instead, so it is left to hyper-util there.
    host: Option<HeaderValue>,
}

impl Upstream {
    pub fn new(config: ProviderConfig, connect_timeout: Duration) -> Result<Upstream, String> {
        let base: Uri = config.base_url.parse().map_err(|_| "is not a URL")?;
        let (Some(scheme), Some(authority)) = (base.scheme().cloned(), base.authority().cloned())
        else {
            return Err("needs a scheme and a host".into());
        };
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let mut client = Client::builder(TokioExecutor::new());
        client
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let pool = if scheme == Scheme::HTTPS {
            // https is allowed: the TLS connector wrapping this one handles it.
            http.enforce_http(false);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_only()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http);
            Pool::Tls(client.build(https))
        } else {
            Pool::Plain(client.build(http))
        };
        let host = match (&pool, authority.port_u16()) {
            (Pool::Tls(_), _) => None,
            (Pool::Plain(_), Some(port)) if port != 80 => {
                HeaderValue::try_from(format!("{}:{port}", authority.host())).ok()
            }
            (Pool::Plain(_), _) => HeaderValue::try_from(authority.host()).ok(),
        };
        Ok(Upstream {
            base_path: base.path().trim_end_matches('/').to_owned(),
            host,
            config,
            pool,
            scheme,
            authority,
        })
    }

    /// The upstream URI for a client's request URI: only its path and query are kept, so a
    /// client never chooses the host.
    pub fn uri(&self, client_uri: &Uri) -> Result<Uri, http::Error> {
        let path_and_query = match client_uri.path_and_query() {
            Some(pq) if self.base_path.is_empty() => pq.clone(),
            Some(pq) => PathAndQuery::try_from(format!("{}{pq}", self.base_path))?,
            None if self.base_path.is_empty() => PathAndQuery::from_static("/"),
            None => PathAndQuery::try_from(self.base_path.as_str())?,
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }

    /// The `Host` header to send, when tokentap sets it rather than hyper-util.
    pub fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    pub fn send(&self, request: Request<OutboundBody>) -> ResponseFuture {
        match &self.pool {
            Pool::Plain(client) => client.request(request),
            Pool::Tls(client) => client.request(request),
        }
    }
}

/// The upstream's answer, as the client gets it through the meter.
pub type UpstreamResponse = Response<Incoming>;

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
                "http://127.0.0.1:9/v1/chat/completions?x=1",
            ),
            (
                "https://gw.example/openai",
                "/v1/models",
                "https://gw.example/openai/v1/models",
            ),
            (
                "https://gw.example/openai/",
                "/v1/models?a=b",
                "https://gw.example/openai/v1/models?a=b",
            ),
            // An absolute-form request line names a host: it is ignored.
            (
                "http://127.0.0.1:9",
                "http://evil.example/v1/models",
                "http://127.0.0.1:9/v1/models",
            ),
        ];
        for (base, request, expected) in cases {
            let uri = upstream(base).uri(&request.parse().unwrap()).unwrap();
            assert_eq!(uri.to_string(), expected, "{base} + {request}");
        }
    }

    #[tokio::test]
    async fn only_an_https_base_url_gets_the_tls_pool() {
        assert!(matches!(
            upstream("http://127.0.0.1:9").pool,
            Pool::Plain(_)
        ));
        assert!(matches!(
            upstream("https://gw.example/v1").pool,
            Pool::Tls(_)
        ));
    }

    #[tokio::test]
    async fn a_plain_http_upstream_gets_the_host_header_hyper_util_would_make() {
        let host = |base: &str| {
            upstream(base)
                .host()
                .map(|h| h.to_str().unwrap().to_owned())
        };
        assert_eq!(
            host("http://127.0.0.1:8080/v1").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            host("http://models.internal/v1").as_deref(),
            Some("models.internal")
        );
        assert_eq!(
            host("http://models.internal:80").as_deref(),
            Some("models.internal")
        );
        assert_eq!(host("http://[::1]:9000").as_deref(), Some("[::1]:9000"));
        assert_eq!(host("https://api.openai.com/v1"), None);
    }
}
