//! The request record of the contract: what every request becomes when it ends, and what the
//! live views show while it runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

pub use crate::metering::usage::{RawUsage, Usage};

/// The metered API a request path belongs to, by suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Messages,
    Other,
}

impl Endpoint {
    pub fn of_path(path: &str) -> Endpoint {
        let path = path.trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Endpoint::Chat
        } else if path.ends_with("/completions") {
            Endpoint::Completions
        } else if path.ends_with("/embeddings") {
            Endpoint::Embeddings
        } else if path.ends_with("/responses") {
            Endpoint::Responses
        } else if path.ends_with("/messages") {
            Endpoint::Messages
        } else {
            Endpoint::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Messages => "messages",
            Endpoint::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    ClientError,
    UpstreamError,
    Cancelled,
    Timeout,
    ProxyError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Cancelled => "cancelled",
            Outcome::Timeout => "timeout",
            Outcome::ProxyError => "proxy_error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageSource {
    /// Every count from the provider.
    Upstream,
    /// Some counts from the provider, the rest estimated.
    Partial,
    /// All counted locally with a tokenizer.
    Estimated,
    /// Nothing could be counted.
    Missing,
}

/// One request, as the contract names its fields.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub id: Arc<str>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub provider: Arc<str>,
    /// Shared with the request's other copies of it (a clone is a count, not an allocation).
    pub model: Option<Arc<str>>,
    pub response_model: Option<String>,
    pub endpoint: Endpoint,
    pub stream: bool,
    /// `None` while the request is still running.
    pub outcome: Option<Outcome>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub usage: Usage,
    /// The provider's usage object as it sent it (whitespace between tokens removed).
    pub raw_usage: Option<RawUsage>,
    pub usage_source: UsageSource,
    pub cost_usd: Option<f64>,
    pub upstream_request_id: Option<String>,
    pub duration_ms: u64,
    pub ttft_ms: Option<u64>,
    pub decode_ms: Option<u64>,
    pub chunks: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub tool_calls: u64,
    pub key_id: Option<Arc<str>>,
    pub user: Option<String>,
    pub conversation_id: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_by_suffix() {
        assert_eq!(Endpoint::of_path("/v1/chat/completions"), Endpoint::Chat);
        assert_eq!(
            Endpoint::of_path("/openai/deployments/x/chat/completions"),
            Endpoint::Chat
        );
        assert_eq!(Endpoint::of_path("/v1/completions"), Endpoint::Completions);
        assert_eq!(Endpoint::of_path("/v1/embeddings/"), Endpoint::Embeddings);
        assert_eq!(Endpoint::of_path("/v1/responses"), Endpoint::Responses);
        assert_eq!(Endpoint::of_path("/v1/messages"), Endpoint::Messages);
        assert_eq!(Endpoint::of_path("/v1/models"), Endpoint::Other);
        assert_eq!(Endpoint::of_path("/v1/responses/resp_1"), Endpoint::Other);
    }
}
