//! `POST …/embeddings`: OpenAI embeddings. `input` is a string, an array of strings, a token
//! array or an array of token arrays; each input gets `dimensions` (default 1536, clamped to
//! `1..=16384`) deterministic floats derived from its content (unit length), as JSON numbers or,
//! with `encoding_format: "base64"`, as base64 of little-endian `f32`s. Usage is
//! `{prompt_tokens, total_tokens}`.

use std::fmt::Write as _;

use http::{Response, StatusCode};
use serde_json::Value;

use super::Call;
use super::body::{DemoBody, bytes_response, json_str};
use super::tokens::embedding_inputs;

const DEFAULT_DIMENSIONS: u64 = 1536;
const MAX_DIMENSIONS: u64 = 16_384;

/// Answers an embeddings request.
pub(super) fn respond(call: &Call<'_>) -> Response<DemoBody> {
    let dimensions = call
        .body
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_DIMENSIONS)
        .clamp(1, MAX_DIMENSIONS) as usize;
    let base64 = call.body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let inputs = embedding_inputs(call.body);

    let per_input = if base64 {
        dimensions * 6
    } else {
        dimensions * 12
    } + 64;
    let mut out = String::with_capacity(per_input * inputs.len() + 256);
    out.push_str(r#"{"object":"list","data":["#);
    let mut vector = Vec::with_capacity(dimensions);
    for (index, input) in inputs.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"object":"embedding","index":{index},"embedding":"#
        );
        fill_vector(&mut vector, seed(input), dimensions);
        if base64 {
            out.push('"');
            let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
            push_base64(&mut out, &bytes);
            out.push('"');
        } else {
            out.push('[');
            for (i, value) in vector.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{value}");
            }
            out.push(']');
        }
        out.push('}');
    }
    let _ = write!(
        out,
        r#"],"model":{},"usage":{{"prompt_tokens":{p},"total_tokens":{p}}}}}"#,
        json_str(&call.model),
        p = call.prompt_tokens,
    );
    bytes_response(StatusCode::OK, "application/json", out.into_bytes())
}

/// FNV-1a over the input's content.
fn seed(input: &Value) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(PRIME);
        }
    };
    match input {
        Value::String(text) => feed(text.as_bytes()),
        Value::Array(ids) => {
            for id in ids {
                feed(&id.as_u64().unwrap_or(u64::MAX).to_le_bytes());
            }
        }
        other => feed(other.to_string().as_bytes()),
    }
    hash
}

/// `dimensions` pseudo-random floats from `seed` (splitmix64), scaled to unit length.
fn fill_vector(vector: &mut Vec<f32>, mut seed: u64, dimensions: usize) {
    vector.clear();
    let mut norm = 0.0f64;
    for _ in 0..dimensions {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // 53 random bits to [-1, 1).
        let value = (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0;
        norm += value * value;
        vector.push(value as f32);
    }
    let norm = norm.sqrt();
    if norm > 0.0 {
        for value in vector.iter_mut() {
            *value = (f64::from(*value) / norm) as f32;
        }
    }
}

/// Appends standard base64 (with padding).
fn push_base64(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |n: u32, shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
    for group in bytes.chunks(3) {
        let b0 = u32::from(group[0]);
        let b1 = group.get(1).copied().map_or(0, u32::from);
        let b2 = group.get(2).copied().map_or(0, u32::from);
        let n = (b0 << 16) | (b1 << 8) | b2;
        out.push(sextet(n, 18));
        out.push(sextet(n, 12));
        out.push(if group.len() > 1 { sextet(n, 6) } else { '=' });
        out.push(if group.len() > 2 { sextet(n, 0) } else { '=' });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_reference() {
        let mut out = String::new();
        for (input, expected) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
        ] {
            out.clear();
            push_base64(&mut out, input);
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn vectors_are_deterministic_unit_vectors() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        fill_vector(&mut a, seed(&Value::from("hello")), 64);
        fill_vector(&mut b, seed(&Value::from("hello")), 64);
        assert_eq!(a, b);
        let norm: f32 = a.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-3);
        fill_vector(&mut b, seed(&Value::from("world")), 64);
        assert_ne!(a, b);
    }
}
