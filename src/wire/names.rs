//! Header names read off the wire, shared from a small table per thread.
//!
//! `http`'s `HeaderName::from_bytes` copies every name it does not know into an allocation of
//! its own. Real traffic is full of such names, the same ones on every request: the OpenAI
//! Python SDK sends nine (`x-stainless-*`) and OpenAI's answers carry about fifteen
//! (`openai-*`, `x-ratelimit-*`, `cf-ray`). Kept here, each is made once per thread and then
//! shared, a reference count away.

use std::cell::RefCell;

use http::HeaderName;
use http::header::InvalidHeaderName;

/// Names kept per thread: room for the distinct names of a provider's answers and an SDK's
/// requests several times over, so that they seldom push each other out.
const SLOTS: usize = 128;
/// Slots a name may take, from the one its hash picks on: with one each, about a fifth of a
/// request's forty names pushed each other out on every request (callgrind).
const WAYS: usize = 4;
/// Longer names are made anew each time, never kept: a request's names are the client's to
/// choose, and the bytes of names a thread keeps stay under 16 KiB (each name twice, as
/// spelled and as `http` holds it).
const MAX_LEN: usize = 64;

struct Table {
    slots: [Option<Kept>; SLOTS],
}

/// A name as it was spelled on the wire, and the name. Looked up by its spelling as it is:
/// folding the case of every byte of every name cost more than the rest of the lookup, and a
/// name spelled two ways (`Content-Type`, `content-type`) only takes two slots.
struct Kept {
    spelling: Box<[u8]>,
    name: HeaderName,
}

thread_local! {
    static TABLE: RefCell<Table> = const {
        RefCell::new(Table {
            slots: [const { None }; SLOTS],
        })
    };
}

/// `HeaderName::from_bytes(bytes)`, shared with the requests and answers before it that
/// spelled the same name the same way.
pub fn header_name(bytes: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    if bytes.is_empty() || bytes.len() > MAX_LEN {
        return HeaderName::from_bytes(bytes);
    }
    // A thread's table is gone only while the thread ends: its names are then made anew.
    TABLE
        .try_with(|table| table.borrow_mut().share(bytes))
        .unwrap_or_else(|_| HeaderName::from_bytes(bytes))
}

impl Table {
    fn share(&mut self, bytes: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
        let first = slot_of(bytes);
        let mut free = None;
        for way in 0..WAYS {
            let at = (first + way) % SLOTS;
            match &self.slots[at] {
                Some(kept) if *kept.spelling == *bytes => return Ok(kept.name.clone()),
                Some(_) => {}
                None => {
                    free = Some(at);
                    break;
                }
            }
        }
        let name = HeaderName::from_bytes(bytes)?;
        // A full run of slots gives up its first: the names a thread sees seldom change.
        self.slots[free.unwrap_or(first)] = Some(Kept {
            spelling: bytes.into(),
            name: name.clone(),
        });
        Ok(name)
    }
}

/// The first slot for a name of 1 to `MAX_LEN` bytes: a hash of its length and three of its
/// bytes (hashing every byte cost more than the table saves). The bytes sampled tell apart
/// names that share a long prefix (`x-ratelimit-limit-requests`, `x-ratelimit-reset-requests`).
fn slot_of(bytes: &[u8]) -> usize {
    let len = bytes.len();
    let byte = |i: usize| bytes.get(i).map_or(0, |&b| u32::from(b));
    let hash = (len as u32)
        ^ (byte(len.saturating_sub(1)) << 8)
        ^ (byte(len / 2) << 16)
        ^ (byte(len * 3 / 4) << 24);
    (hash.wrapping_mul(0x9E37_79B1) >> (32 - SLOTS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept `Bytes` of a name `http` does not know, by address.
    fn address(name: &HeaderName) -> *const u8 {
        name.as_str().as_ptr()
    }

    #[test]
    fn a_name_seen_before_is_shared() {
        let first = header_name(b"x-stainless-retry-count").expect("valid");
        let again = header_name(b"x-stainless-retry-count").expect("valid");
        assert_eq!(again, first);
        assert_eq!(address(&again), address(&first));
        // Spelled another way, it is the same name, kept apart.
        let upper = header_name(b"X-Stainless-Retry-Count").expect("valid");
        assert_eq!(upper, first);
        assert_eq!(upper.as_str(), "x-stainless-retry-count");
        let upper_again = header_name(b"X-Stainless-Retry-Count").expect("valid");
        assert_eq!(address(&upper_again), address(&upper));
        // A standard name comes out as `http` makes it.
        assert_eq!(
            header_name(b"Content-Type").expect("valid"),
            http::header::CONTENT_TYPE
        );
    }

    #[test]
    fn invalid_long_and_empty_names_are_told_as_from_bytes_tells_them() {
        for bytes in [
            &b""[..],
            b"bad name",
            b"x-\xff",
            b"colon:",
            b"x-nul\0",
            b"x\rapi-key",
        ] {
            assert!(header_name(bytes).is_err(), "{bytes:?}");
            assert!(HeaderName::from_bytes(bytes).is_err(), "{bytes:?}");
        }
        let long = "x-".repeat(MAX_LEN);
        let made = header_name(long.as_bytes()).expect("valid");
        assert_eq!(made.as_str(), long);
        assert_ne!(
            address(&made),
            address(&header_name(long.as_bytes()).expect("valid"))
        );
    }

    #[test]
    fn names_that_share_a_slot_take_turns_and_stay_right() {
        let names: Vec<String> = (0..4 * SLOTS).map(|i| format!("x-custom-{i}")).collect();
        for _ in 0..2 {
            for name in &names {
                assert_eq!(
                    header_name(name.as_bytes()).expect("valid").as_str(),
                    name.as_str()
                );
            }
        }
    }

    #[test]
    fn a_providers_usual_names_all_stay_kept() {
        let names = [
            "x-stainless-lang",
            "x-stainless-package-version",
            "x-stainless-os",
            "x-stainless-arch",
            "x-stainless-runtime",
            "x-stainless-runtime-version",
            "x-stainless-async",
            "x-stainless-retry-count",
            "x-stainless-read-timeout",
            "openai-organization",
            "openai-processing-ms",
            "openai-project",
            "openai-version",
            "x-envoy-upstream-service-time",
            "x-ratelimit-limit-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-requests",
            "x-ratelimit-reset-tokens",
            "x-request-id",
            "cf-cache-status",
            "cf-ray",
            "alt-svc",
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-organization-id",
            "request-id",
            "content-type",
            "content-length",
            "date",
            "server",
            "set-cookie",
            "strict-transport-security",
            "access-control-expose-headers",
            "x-content-type-options",
            "connection",
            "transfer-encoding",
            "user-agent",
            "accept",
            "accept-encoding",
            "authorization",
            "host",
        ];
        let mut table = Table {
            slots: [const { None }; SLOTS],
        };
        let made: Vec<HeaderName> = names
            .iter()
            .map(|n| table.share(n.as_bytes()).expect("valid"))
            .collect();
        for (name, made) in names.iter().zip(&made) {
            let again = table.share(name.as_bytes()).expect("valid");
            assert_eq!(again, made);
            assert_eq!(address(&again), address(made), "{name} was pushed out");
        }
    }
}
