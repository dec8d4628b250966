//! Who a request is for: key fingerprint, user, conversation and tags. API keys are never
//! kept: only a short SHA-256 fingerprint of them.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use super::headers::{
    X_API_KEY, X_CONVERSATION_ID, X_SESSION_ID, X_TOKENTAP_TAGS, X_TOKENTAP_USER,
};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub key_id: Option<String>,
    pub user: Option<String>,
    pub conversation_id: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// Longest user, conversation id or tag kept: these come from clients.
const MAX_LEN: usize = 256;
const MAX_TAGS: usize = 32;

/// Names of known keys by their SHA-256 (`[[keys]]`).
pub type KeyNames = std::collections::HashMap<[u8; 32], String>;

pub fn attribute(headers: &HeaderMap, body_user: Option<&str>, names: &KeyNames) -> Attribution {
    let text = |name: &HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(clip)
    };
    let key = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .strip_prefix("Bearer ")
                .or_else(|| v.trim().strip_prefix("bearer "))
                .unwrap_or(v.trim())
        })
        .or_else(|| {
            headers
                .get(&X_API_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty());
    Attribution {
        key_id: key.map(|k| key_id(k, names)),
        user: body_user
            .filter(|u| !u.is_empty())
            .map(clip)
            .or_else(|| text(&X_TOKENTAP_USER)),
        conversation_id: text(&X_CONVERSATION_ID).or_else(|| text(&X_SESSION_ID)),
        tags: text(&X_TOKENTAP_TAGS)
            .map(|t| parse_tags(&t))
            .unwrap_or_default(),
    }
}

/// The key's configured name, else its fingerprint.
fn key_id(key: &str, names: &KeyNames) -> String {
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    match names.get(&digest) {
        Some(name) => name.clone(),
        None => fingerprint_of(&digest),
    }
}

/// `key_` and the first 12 hex digits of the key's SHA-256.
pub fn fingerprint(key: &str) -> String {
    fingerprint_of(&Sha256::digest(key.as_bytes()).into())
}

fn fingerprint_of(digest: &[u8; 32]) -> String {
    let mut out = String::from("key_");
    for byte in &digest[..6] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn parse_tags(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (clip(k.trim()), clip(v.trim())))
        .filter(|(k, _)| !k.is_empty())
        .take(MAX_TAGS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_source_and_never_keeps_the_key() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-canary-123".parse().expect("v"));
        h.insert("x-session-id", "s1".parse().expect("v"));
        h.insert(
            "x-tokentap-tags",
            "team=search, env=prod,bad".parse().expect("v"),
        );
        h.insert("x-tokentap-user", "header-user".parse().expect("v"));
        let a = attribute(&h, Some("body-user"), &KeyNames::new());
        let key_id = a.key_id.clone().expect("key id");
        assert!(key_id.starts_with("key_") && key_id.len() == 16 && !key_id.contains("canary"));
        assert_eq!(
            a.key_id,
            attribute(&h, None, &KeyNames::new()).key_id,
            "stable"
        );
        assert_eq!(a.user.as_deref(), Some("body-user"));
        assert_eq!(
            attribute(&h, None, &KeyNames::new()).user.as_deref(),
            Some("header-user")
        );
        assert_eq!(a.conversation_id.as_deref(), Some("s1"));
        assert_eq!(a.tags.get("team").map(String::as_str), Some("search"));
        assert_eq!(a.tags.len(), 2);
        let mut h2 = HeaderMap::new();
        h2.insert("x-api-key", "sk-ant".parse().expect("v"));
        assert_eq!(
            attribute(&h2, None, &KeyNames::new()).key_id,
            Some(fingerprint("sk-ant"))
        );
        let names = KeyNames::from([(
            Sha256::digest(b"sk-ant").into(),
            "anthropic-batch".to_owned(),
        )]);
        assert_eq!(
            attribute(&h2, None, &names).key_id.as_deref(),
            Some("anthropic-batch")
        );
    }
}
