//! Errors tokentap itself answers to a client. Each knows its status, a low-cardinality kind and
//! its OpenAI-shaped body; the conversion to a response happens in exactly one place.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

/// A request tokentap could not forward or complete, before any upstream response byte was sent.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("request headers are larger than the limit of {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("the request body did not arrive within {after_ms} ms")]
    BodyTimeout { after_ms: u128 },
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("the request carries more than one `{header}` header")]
    RepeatedCredential { header: &'static str },
    #[error("unknown provider `{0}` in x-tokentap-provider")]
    UnknownProvider(String),
    #[error("provider `{provider}` is unreachable: {detail}")]
    UpstreamUnreachable { provider: String, detail: String },
    #[error("provider `{provider}` did not answer within {after_ms} ms")]
    UpstreamTimeout { provider: String, after_ms: u128 },
    #[error("provider `{provider}` failed: {detail}")]
    UpstreamFailed { provider: String, detail: String },
    #[error("tokentap is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ProxyError::RepeatedCredential { .. } => StatusCode::BAD_REQUEST,
            ProxyError::UnknownProvider(_) => StatusCode::BAD_REQUEST,
            ProxyError::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short stable name, used as the error's `code` and as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::BodyTooLarge { .. } => "request_too_large",
            ProxyError::HeadersTooLarge { .. } => "request_headers_too_large",
            ProxyError::BodyTimeout { .. } => "request_body_timeout",
            ProxyError::BodyRead(_) => "request_body_unreadable",
            ProxyError::RepeatedCredential { .. } => "repeated_credential",
            ProxyError::UnknownProvider(_) => "unknown_provider",
            ProxyError::UpstreamUnreachable { .. } => "upstream_unreachable",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::UpstreamFailed { .. } => "upstream_failed",
            ProxyError::ShuttingDown => "shutting_down",
            ProxyError::Internal(_) => "internal_error",
        }
    }

    /// OpenAI's error `type`: the client's fault or ours.
    fn error_type(&self) -> &'static str {
        match self {
            ProxyError::BodyTooLarge { .. }
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::BodyRead(_)
            | ProxyError::BodyTimeout { .. }
            | ProxyError::RepeatedCredential { .. }
            | ProxyError::UnknownProvider(_) => "invalid_request_error",
            ProxyError::UpstreamUnreachable { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::ShuttingDown
            | ProxyError::Internal(_) => "proxy_error",
        }
    }

    /// The body in OpenAI's error shape: `{"error":{"message","type","code"}}`.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": self.error_type(),
                "code": self.kind(),
            }
        });
        Bytes::from(body.to_string())
    }

    pub fn into_response<B: From<Bytes>>(self) -> http::Response<B> {
        let mut response = http::Response::new(B::from(self.body()));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_error_shape() {
        let err = ProxyError::UpstreamUnreachable {
            provider: "openai".into(),
            detail: "connection refused".into(),
        };
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        let body: serde_json::Value = serde_json::from_slice(&err.body()).expect("json");
        assert_eq!(body["error"]["type"], "proxy_error");
        assert_eq!(body["error"]["code"], "upstream_unreachable");
        assert_eq!(
            body["error"]["message"],
            "provider `openai` is unreachable: connection refused"
        );
    }
}
