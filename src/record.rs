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

/// A request's id as tokentap makes it: `req_` and the 32 hex digits of a UUID v7. Held
/// inline: every request has one, and as an `Arc<str>` it was an allocation a request, freed
/// on the recorder's thread.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId {
    text: [u8; RequestId::MAX],
    len: u8,
}

impl RequestId {
    pub const MAX: usize = 36;

    /// The id `text`, cut to its first `MAX` bytes (at a character's start).
    pub fn new(text: &str) -> RequestId {
        let mut len = text.len().min(RequestId::MAX);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        let mut id = RequestId {
            text: [0; RequestId::MAX],
            len: len as u8,
        };
        id.text[..len].copy_from_slice(&text.as_bytes()[..len]);
        id
    }

    pub fn as_str(&self) -> &str {
        // Cut at a character's start when made, so this cannot fail.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl From<&str> for RequestId {
    fn from(text: &str) -> RequestId {
        RequestId::new(text)
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One request, as the contract names its fields.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub id: RequestId,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub provider: Arc<str>,
    /// Shared with the request's other copies of it (a clone is a count, not an allocation).
    pub model: Option<Arc<str>>,
    /// The request's own model when the answer names the same one.
    pub response_model: Option<Arc<str>>,
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
impl Record {
    /// A finished, streamed chat record for unit tests: provider `p`, model `m`, 3 prompt and 2
    /// completion tokens stated upstream, $0.50, 1.5 s.
    pub fn sample() -> Record {
        Record {
            id: "r".into(),
            started_at: OffsetDateTime::UNIX_EPOCH,
            finished_at: Some(OffsetDateTime::UNIX_EPOCH),
            provider: "p".into(),
            model: Some("m".into()),
            response_model: None,
            endpoint: Endpoint::Chat,
            stream: true,
            outcome: Some(Outcome::Ok),
            status_code: Some(200),
            error: None,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                total_tokens: 5,
                ..Usage::default()
            },
            raw_usage: None,
            usage_source: UsageSource::Upstream,
            cost_usd: Some(0.5),
            upstream_request_id: None,
            duration_ms: 1500,
            ttft_ms: Some(200),
            decode_ms: Some(900),
            chunks: 10,
            request_bytes: 1,
            response_bytes: 1,
            tool_calls: 0,
            key_id: None,
            user: None,
            conversation_id: None,
            tags: BTreeMap::new(),
        }
    }
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

    #[test]
    fn a_request_id_is_its_text_inline_and_serialises_as_a_string() {
        let text = "req_0192f0a1b2c3d4e5f60718293a4b5c6d";
        let id = RequestId::new(text);
        assert_eq!((id.as_str(), id.to_string()), (text, text.to_owned()));
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
        assert_eq!(format!("{id:?}"), format!("{text:?}"));
        assert_eq!(&*RequestId::from("r"), "r");
        // Longer text is cut at the last character that fits.
        assert_eq!(&*RequestId::new(&format!("{text}x")), text);
        let wide = format!("{}é", &text[..35]);
        assert_eq!(&*RequestId::new(&wide), &text[..35]);
    }
}
