//! Normalises the many shapes of a provider's usage object into the record's `Usage`, in
//! OpenAI's convention: `prompt_tokens` includes cache reads and writes, `completion_tokens`
//! includes reasoning, `total_tokens` is the provider's own total.

mod members;

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub use members::Members;
use members::{Detail, Details, Top, UsageMembers};

/// Token counts as the record carries them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub cache_creation_tokens: u64,
}

/// A provider's usage object as its JSON text, checked once where it was read: held and handed
/// to the recorder as text, with no second parse on the answer's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawUsage(Box<str>);

impl RawUsage {
    /// `text` is one JSON value that the caller has checked (the meter's strict reader did).
    pub(crate) fn checked(text: &str) -> RawUsage {
        RawUsage(text.into())
    }

    pub fn get(&self) -> &str {
        &self.0
    }
}

impl From<Box<RawValue>> for RawUsage {
    fn from(raw: Box<RawValue>) -> RawUsage {
        RawUsage(raw.into())
    }
}

/// Written into a record as the JSON it is, not as a string.
impl Serialize for RawUsage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Only a record that is read (export, live feed, API) pays for this parse.
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// The usage a provider stated, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub usage: Usage,
    /// The provider's parts did not add up to its total.
    pub inconsistent: bool,
    /// The provider gave input counts but no output count (Anthropic's `message_start` alone).
    pub prompt_only: bool,
}

/// Why a usage object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("usage field `{0}` is negative")]
    Negative(&'static str),
    #[error("usage field `{0}` is not a whole number")]
    NotANumber(&'static str),
    #[error("usage field `{0}` is implausibly large")]
    TooLarge(&'static str),
    #[error("usage object states no token count")]
    Empty,
    #[error("usage is not a JSON object")]
    NotAnObject,
}

/// No single request has ever used a trillion tokens: a count above this is corrupt.
const MAX_COUNT: u64 = 1_000_000_000_000;

/// Which family the usage object belongs to, where field names alone are ambiguous
/// (`input_tokens` includes cache reads in OpenAI's Responses API, but not in Anthropic's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageFamily {
    OpenAi,
    Anthropic,
}

/// Normalises one usage object.
pub fn normalize(raw: &Map<String, Value>, family: UsageFamily) -> Result<Normalized, UsageError> {
    normalize_members(raw, family)
}

/// Normalises one usage object from its JSON text. The members it reads are taken straight
/// from the text when their counts are plain; any other text goes through the tree, so the
/// result is `normalize`'s.
pub fn normalize_text(raw: &RawUsage, family: UsageFamily) -> Result<Normalized, UsageError> {
    let raw = raw.get();
    // A struct would also read a JSON array, by position: only an object is a usage object.
    if !raw.starts_with('{') {
        return Err(UsageError::NotAnObject);
    }
    if let Some(members) = Members::scan(raw) {
        return normalize_members(&members, family);
    }
    match serde_json::from_str::<Map<String, Value>>(raw) {
        Ok(map) => normalize(&map, family),
        Err(_) => Err(UsageError::NotAnObject),
    }
}

/// Normalises the counts of a usage object, read from its text as it passed (`Members::read`):
/// `normalize_text`'s answer for that text.
pub fn normalize_counts(counts: &Members, family: UsageFamily) -> Result<Normalized, UsageError> {
    normalize_members(counts, family)
}

fn normalize_members(
    raw: &impl UsageMembers,
    family: UsageFamily,
) -> Result<Normalized, UsageError> {
    let top = |key| raw.top(key);
    let nested = |outer, key| raw.nested(outer, key);

    let cache_read_anthropic = top(Top::CacheReadInput)?;
    let cache_write_anthropic = top(Top::CacheCreationInput)?;
    let anthropic = family == UsageFamily::Anthropic
        || cache_read_anthropic.is_some()
        || cache_write_anthropic.is_some();

    let prompt_stated = first([top(Top::Prompt)?, top(Top::Input)?]);
    let completion_stated = first([top(Top::Completion)?, top(Top::Output)?]);
    let total_stated = top(Top::Total)?;
    if prompt_stated.is_none() && completion_stated.is_none() && total_stated.is_none() {
        return Err(UsageError::Empty);
    }

    let cached = first([
        nested(Details::Prompt, Detail::Cached)?,
        nested(Details::Input, Detail::Cached)?,
        top(Top::PromptCacheHit)?,
        top(Top::Cached)?,
        cache_read_anthropic,
    ])
    .unwrap_or(0);
    let cache_creation = first([
        nested(Details::Prompt, Detail::CacheWrite)?,
        nested(Details::Input, Detail::CacheWrite)?,
        nested(Details::Prompt, Detail::CacheCreation)?,
        cache_write_anthropic,
    ])
    .unwrap_or(0);
    let reasoning_stated = first([
        nested(Details::Completion, Detail::Reasoning)?,
        nested(Details::Output, Detail::Reasoning)?,
        top(Top::Reasoning)?,
    ]);

    let mut prompt = prompt_stated.unwrap_or(0);
    if anthropic && raw.has_top(Top::Input) && !raw.has_top(Top::Prompt) {
        // Anthropic counts cache reads and writes apart from `input_tokens`.
        prompt = prompt
            .saturating_add(cache_read_anthropic.unwrap_or(0))
            .saturating_add(cache_write_anthropic.unwrap_or(0));
    }
    let mut completion = completion_stated.unwrap_or(0);
    let mut reasoning = reasoning_stated.unwrap_or(0);
    let parts = prompt.saturating_add(completion);
    let total = total_stated.unwrap_or(parts);
    let inconsistent = total != parts;
    if total > parts && reasoning_stated.is_none() {
        // Hidden thinking tokens (some Gemini endpoints): count them as reasoning output.
        reasoning = total - parts;
        completion += reasoning;
    }
    Ok(Normalized {
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total,
            cached_tokens: cached,
            reasoning_tokens: reasoning,
            cache_creation_tokens: cache_creation,
        },
        inconsistent,
        prompt_only: completion_stated.is_none() && total_stated.is_none(),
    })
}

fn first<const N: usize>(values: [Option<u64>; N]) -> Option<u64> {
    values.into_iter().flatten().next()
}

/// The provider's usage text as a record keeps it: without the whitespace between tokens (a
/// pretty-printed body's indentation), strings and member order untouched.
pub fn compact(raw: RawUsage) -> RawUsage {
    let text = raw.get();
    let bytes = text.as_bytes();
    if memchr::memchr3(b' ', b'\n', b'\r', bytes).is_none()
        && memchr::memchr(b'\t', bytes).is_none()
    {
        return raw;
    }
    // Copied in runs between the bytes that matter: a char at a time took about 4k
    // instructions on the recorder's thread for OpenAI's pretty-printed usage of a short chat.
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(rest) = bytes.get(at..).filter(|rest| !rest.is_empty()) {
        let run = rest
            .iter()
            .position(|&b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'"'))
            .unwrap_or(rest.len());
        out.extend_from_slice(&rest[..run]);
        at += run;
        match bytes.get(at) {
            Some(b'"') => {
                let end = string_end(bytes, at + 1);
                out.extend_from_slice(&bytes[at..end]);
                at = end;
            }
            // Whitespace between tokens, dropped.
            Some(_) => at += 1,
            None => {}
        }
    }
    // Only ASCII whitespace was taken out, between tokens: still UTF-8, and still JSON.
    match String::from_utf8(out) {
        Ok(text) => RawUsage(text.into()),
        Err(_) => raw,
    }
}

/// Where the string whose text starts at `at` ends: just past its closing quote.
fn string_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(i) = bytes
        .get(at..)
        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
    {
        if bytes[at + i] == b'"' {
            return at + i + 1;
        }
        // An escape: the byte after the backslash is never the string's end.
        at += i + 2;
    }
    bytes.len()
}

/// Folds `later` into `earlier` field by field (Anthropic's `message_delta` carries cumulative
/// output counts and sometimes repeats the input counts of `message_start`).
pub fn merge_into(earlier: &mut Map<String, Value>, later: &Map<String, Value>) {
    for (key, value) in later {
        if !value.is_null() {
            earlier.insert(key.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests;
