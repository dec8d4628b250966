//! Who a request is for: key fingerprint, user, conversation and tags. API keys are never
//! kept: only a short SHA-256 fingerprint of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::headers::ClientHeaders;
use crate::wire::lines::visible_text;
use sha2::{Digest, Sha256};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub key_id: Option<Arc<str>>,
    pub user: Option<String>,
    pub conversation_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// A credential header the request carries more than once (`authorization` or
    /// `x-api-key`). The key is then left unread: which of the values a provider bills is its
    /// own choice, so the proxy refuses such a request, as nginx does.
    pub repeated_credential: Option<&'static str>,
}

/// Longest user, conversation id or tag kept: these come from clients.
const MAX_LEN: usize = 256;
const MAX_TAGS: usize = 32;

/// Names of known keys by their SHA-256 (`[[keys]]`).
pub type KeyNames = std::collections::HashMap<[u8; 32], Arc<str>>;

/// The first value of each header attribution reads.
#[derive(Default)]
struct Read<'a> {
    authorization: Option<&'a [u8]>,
    x_api_key: Option<&'a [u8]>,
    user: Option<&'a [u8]>,
    conversation_id: Option<&'a [u8]>,
    session_id: Option<&'a [u8]>,
    tags: Option<&'a [u8]>,
    repeated_credential: Option<&'static str>,
}

impl<'a> Read<'a> {
    /// One pass over the headers: six lookups hashed each name again (about 1k instructions
    /// of a short request, callgrind). Names in any case: a request's lines keep the client's
    /// spelling.
    fn from(headers: &'a ClientHeaders) -> Read<'a> {
        let mut read = Read::default();
        headers.for_each(|name, value| {
            let is = |lower: &[u8]| name.eq_ignore_ascii_case(lower);
            // Told apart by length first: most names are none of these.
            let (slot, credential) = match name.len() {
                13 if is(b"authorization") => (&mut read.authorization, Some("authorization")),
                9 if is(b"x-api-key") => (&mut read.x_api_key, Some("x-api-key")),
                15 if is(b"x-tokentap-user") => (&mut read.user, None),
                17 if is(b"x-conversation-id") => (&mut read.conversation_id, None),
                12 if is(b"x-session-id") => (&mut read.session_id, None),
                15 if is(b"x-tokentap-tags") => (&mut read.tags, None),
                _ => return,
            };
            if slot.is_some() && credential.is_some() {
                read.repeated_credential = read.repeated_credential.or(credential);
            }
            slot.get_or_insert(value);
        });
        read
    }
}

pub fn attribute(
    headers: &ClientHeaders,
    body_user: Option<&str>,
    names: &KeyNames,
) -> Attribution {
    let read = Read::from(headers);
    let text = |value: Option<&[u8]>| {
        value
            .and_then(visible_text)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(clip)
    };
    let key = read
        .authorization
        .and_then(visible_text)
        .map(|v| {
            v.trim()
                .strip_prefix("Bearer ")
                .or_else(|| v.trim().strip_prefix("bearer "))
                .unwrap_or(v.trim())
        })
        .or_else(|| read.x_api_key.and_then(visible_text).map(str::trim))
        .filter(|k| !k.is_empty() && read.repeated_credential.is_none());
    Attribution {
        key_id: key.map(|k| key_id(k, names)),
        user: body_user
            .filter(|u| !u.is_empty())
            .map(clip)
            .or_else(|| text(read.user)),
        conversation_id: text(read.conversation_id).or_else(|| text(read.session_id)),
        tags: text(read.tags).map(|t| parse_tags(&t)).unwrap_or_default(),
        repeated_credential: read.repeated_credential,
    }
}

/// The key's configured name, else its fingerprint.
fn key_id(key: &str, names: &KeyNames) -> Arc<str> {
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    match names.get(&digest) {
        Some(name) => Arc::clone(name),
        None => crate::repeated::key_id(fingerprint_of(&digest).as_str()),
    }
}

/// `key_` and the first 12 hex digits of the key's SHA-256.
pub fn fingerprint(key: &str) -> String {
    fingerprint_of(&Sha256::digest(key.as_bytes()).into())
        .as_str()
        .to_owned()
}

/// A fingerprint's text, written on the stack: the record shares one copy of it.
struct Fingerprint([u8; 16]);

impl Fingerprint {
    fn as_str(&self) -> &str {
        // ASCII throughout.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn fingerprint_of(digest: &[u8; 32]) -> Fingerprint {
    // Hex digits written by hand: a `format!` per byte allocated six times a request (about
    // 2.6k instructions of a short keyed request, callgrind).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"key_000000000000";
    for (i, byte) in digest[..6].iter().enumerate() {
        out[4 + 2 * i] = HEX[usize::from(byte >> 4)];
        out[5 + 2 * i] = HEX[usize::from(byte & 0x0f)];
    }
    Fingerprint(out)
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
    use http::HeaderMap;

    fn attribute(h: &HeaderMap, user: Option<&str>, names: &KeyNames) -> Attribution {
        super::attribute(&ClientHeaders::Map(h.clone()), user, names)
    }

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
            attribute(&h2, None, &KeyNames::new()).key_id.as_deref(),
            Some(fingerprint("sk-ant").as_str())
        );
        let names = KeyNames::from([(Sha256::digest(b"sk-ant").into(), "anthropic-batch".into())]);
        assert_eq!(
            attribute(&h2, None, &names).key_id.as_deref(),
            Some("anthropic-batch")
        );
    }

    #[test]
    fn the_fingerprint_is_the_first_twelve_hex_digits_of_the_sha256() {
        // SHA-256("abc") is ba7816bf 8f01cfea ... (FIPS 180-2, appendix B.1).
        assert_eq!(fingerprint("abc"), "key_ba7816bf8f01");
        // Digits above 9 and below 0x10 in a byte: SHA-256("") is e3b0c442 98fc1c14 ...
        assert_eq!(fingerprint(""), "key_e3b0c44298fc");
    }

    #[test]
    fn lines_are_read_by_name_in_any_case() {
        let lines = crate::wire::lines::parsed(
            b"HTTP/1.1 200 OK\r\nAuthorization: Bearer sk-1\r\nX-Tokentap-User: u1\r\n\
              X-Conversation-ID: c1\r\nx-tokentap-tags: team=a\r\nx-tokentap-user: u2\r\n\r\n",
        );
        let a = super::attribute(&ClientHeaders::Lines(lines), None, &KeyNames::new());
        assert_eq!(a.key_id.as_deref(), Some(fingerprint("sk-1").as_str()));
        assert_eq!(a.user.as_deref(), Some("u1"));
        assert_eq!(a.conversation_id.as_deref(), Some("c1"));
        assert_eq!(a.tags.get("team").map(String::as_str), Some("a"));
    }

    #[test]
    fn a_credential_header_given_twice_is_named_and_no_key_is_read() {
        for name in ["authorization", "x-api-key"] {
            for second in ["Bearer sk-2", "sk-1"] {
                let mut h = HeaderMap::new();
                h.append("x-tokentap-user", "u1".parse().expect("v"));
                h.append(name, "sk-1".parse().expect("v"));
                h.append(name, second.parse().expect("v"));
                let a = attribute(&h, None, &KeyNames::new());
                assert_eq!(a.repeated_credential, Some(name));
                assert_eq!(a.key_id, None);
                assert_eq!(a.user.as_deref(), Some("u1"), "the rest is still read");
            }
        }
        let lines = crate::wire::lines::parsed(
            b"HTTP/1.1 200 OK\r\nX-API-Key: sk-1\r\nx-api-key: sk-2\r\n\r\n",
        );
        let a = super::attribute(&ClientHeaders::Lines(lines), None, &KeyNames::new());
        assert_eq!(a.repeated_credential, Some("x-api-key"));
        // One of each is two credentials, not a repeated one.
        let mut h = HeaderMap::new();
        h.append("authorization", "Bearer sk-1".parse().expect("v"));
        h.append("x-api-key", "sk-2".parse().expect("v"));
        let a = attribute(&h, None, &KeyNames::new());
        assert_eq!(a.repeated_credential, None);
        assert_eq!(a.key_id.as_deref(), Some(fingerprint("sk-1").as_str()));
    }

    #[test]
    fn reads_the_first_value_of_each_header() {
        let mut h = HeaderMap::new();
        h.append("x-conversation-id", "  ".parse().expect("v"));
        h.append("x-conversation-id", "c2".parse().expect("v"));
        h.append("x-session-id", "s1".parse().expect("v"));
        h.append("x-tokentap-user", "first".parse().expect("v"));
        h.append("x-tokentap-user", "second".parse().expect("v"));
        h.append("x-api-key", "sk-ant".parse().expect("v"));
        h.append("authorization", "bearer sk-1".parse().expect("v"));
        let a = attribute(&h, Some(""), &KeyNames::new());
        // A blank first value counts as absent: the session id stands in, as `get` did.
        assert_eq!(a.conversation_id.as_deref(), Some("s1"));
        assert_eq!(a.user.as_deref(), Some("first"));
        assert_eq!(a.key_id.as_deref(), Some(fingerprint("sk-1").as_str()));
        h.insert("x-conversation-id", "c3".parse().expect("v"));
        let a = attribute(&h, None, &KeyNames::new());
        assert_eq!(a.conversation_id.as_deref(), Some("c3"));
    }
}
