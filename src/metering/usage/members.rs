//! The members of a usage object that `normalize` reads, by name: a top-level count, or a
//! count inside one of the `*_details` objects. Read from a tree (`Map`), or straight from the
//! text into a fixed table of counts (`Members`), which is what nearly every record takes.

use serde_json::{Map, Value};

use super::{MAX_COUNT, UsageError};
use crate::metering::json_reader::Reader;

/// A top-level count `normalize` reads, named without its `_tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Top {
    Prompt,
    Input,
    Completion,
    Output,
    Total,
    CacheReadInput,
    CacheCreationInput,
    PromptCacheHit,
    Cached,
    Reasoning,
}

/// A `*_details` member whose counts `normalize` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Details {
    Prompt,
    Input,
    Completion,
    Output,
}

/// A count inside a `*_details` member, named without its `_tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    Cached,
    CacheWrite,
    CacheCreation,
    Reasoning,
}

impl Top {
    pub const ALL: [Top; 10] = [
        Top::Prompt,
        Top::Input,
        Top::Completion,
        Top::Output,
        Top::Total,
        Top::CacheReadInput,
        Top::CacheCreationInput,
        Top::PromptCacheHit,
        Top::Cached,
        Top::Reasoning,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Top::Prompt => "prompt_tokens",
            Top::Input => "input_tokens",
            Top::Completion => "completion_tokens",
            Top::Output => "output_tokens",
            Top::Total => "total_tokens",
            Top::CacheReadInput => "cache_read_input_tokens",
            Top::CacheCreationInput => "cache_creation_input_tokens",
            Top::PromptCacheHit => "prompt_cache_hit_tokens",
            Top::Cached => "cached_tokens",
            Top::Reasoning => "reasoning_tokens",
        }
    }

    /// `name`'s inverse, as a `match` on the bytes: the compiler sorts the names by length
    /// and compares once, where a search through `ALL` compared each (tested against `name`).
    fn named(key: &[u8]) -> Option<Top> {
        Some(match key {
            b"prompt_tokens" => Top::Prompt,
            b"input_tokens" => Top::Input,
            b"completion_tokens" => Top::Completion,
            b"output_tokens" => Top::Output,
            b"total_tokens" => Top::Total,
            b"cache_read_input_tokens" => Top::CacheReadInput,
            b"cache_creation_input_tokens" => Top::CacheCreationInput,
            b"prompt_cache_hit_tokens" => Top::PromptCacheHit,
            b"cached_tokens" => Top::Cached,
            b"reasoning_tokens" => Top::Reasoning,
            _ => return None,
        })
    }
}

impl Details {
    pub const ALL: [Details; 4] = [
        Details::Prompt,
        Details::Input,
        Details::Completion,
        Details::Output,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Details::Prompt => "prompt_tokens_details",
            Details::Input => "input_tokens_details",
            Details::Completion => "completion_tokens_details",
            Details::Output => "output_tokens_details",
        }
    }

    fn named(key: &[u8]) -> Option<Details> {
        Some(match key {
            b"prompt_tokens_details" => Details::Prompt,
            b"input_tokens_details" => Details::Input,
            b"completion_tokens_details" => Details::Completion,
            b"output_tokens_details" => Details::Output,
            _ => return None,
        })
    }
}

impl Detail {
    pub const ALL: [Detail; 4] = [
        Detail::Cached,
        Detail::CacheWrite,
        Detail::CacheCreation,
        Detail::Reasoning,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Detail::Cached => "cached_tokens",
            Detail::CacheWrite => "cache_write_tokens",
            Detail::CacheCreation => "cache_creation_tokens",
            Detail::Reasoning => "reasoning_tokens",
        }
    }

    fn named(key: &[u8]) -> Option<Detail> {
        Some(match key {
            b"cached_tokens" => Detail::Cached,
            b"cache_write_tokens" => Detail::CacheWrite,
            b"cache_creation_tokens" => Detail::CacheCreation,
            b"reasoning_tokens" => Detail::Reasoning,
            _ => return None,
        })
    }
}

/// What `normalize` asks of a usage object. A count is `None` when the member is absent or
/// `null`, and an error when it is there but no count (named by its own key).
pub trait UsageMembers {
    fn top(&self, key: Top) -> Result<Option<u64>, UsageError>;
    fn nested(&self, outer: Details, key: Detail) -> Result<Option<u64>, UsageError>;
    /// The member is there, maybe as `null`.
    fn has_top(&self, key: Top) -> bool;
}

impl UsageMembers for Map<String, Value> {
    fn top(&self, key: Top) -> Result<Option<u64>, UsageError> {
        count(self.get(key.name()), key.name())
    }

    fn nested(&self, outer: Details, key: Detail) -> Result<Option<u64>, UsageError> {
        let value = self.get(outer.name()).and_then(|o| o.get(key.name()));
        count(value, key.name())
    }

    fn has_top(&self, key: Top) -> bool {
        self.contains_key(key.name())
    }
}

/// Reads one count from a tree: absent or null is `None`; numbers and numeric strings are
/// accepted; negatives, fractions, other types and absurd sizes are refused.
fn count(value: Option<&Value>, key: &'static str) -> Result<Option<u64>, UsageError> {
    let n = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => {
            if let Some(n) = n.as_u64() {
                n
            } else if n.as_i64().is_some_and(|n| n < 0) {
                return Err(UsageError::Negative(key));
            } else {
                match n.as_f64() {
                    Some(f) if f < 0.0 => return Err(UsageError::Negative(key)),
                    Some(f) if f.fract() == 0.0 && f <= MAX_COUNT as f64 => f as u64,
                    Some(f) if f.fract() == 0.0 => return Err(UsageError::TooLarge(key)),
                    _ => return Err(UsageError::NotANumber(key)),
                }
            }
        }
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.starts_with('-') {
                return Err(UsageError::Negative(key));
            }
            s.parse::<u64>().map_err(|_| UsageError::NotANumber(key))?
        }
        Some(_) => return Err(UsageError::NotANumber(key)),
    };
    checked(n, key)
}

fn checked(n: u64, key: &'static str) -> Result<Option<u64>, UsageError> {
    if n > MAX_COUNT {
        return Err(UsageError::TooLarge(key));
    }
    Ok(Some(n))
}

/// Slots of the table: the top-level counts, then four per `*_details` member.
const TOP_SLOTS: usize = Top::ALL.len();
const SLOTS: usize = TOP_SLOTS + Details::ALL.len() * Detail::ALL.len();

fn nested_slot(outer: Details, key: Detail) -> usize {
    TOP_SLOTS + outer as usize * Detail::ALL.len() + key as usize
}

/// The counts of a usage object whose counts are plain (whole non-negative numbers or `null`)
/// and whose `*_details` members are objects of them, as one table: 224 bytes, no allocation,
/// no `Value`. The struct of `serde_json::Value`s this replaced was 832 bytes and was looked up by
/// key names compared at run time (about 3.5k instructions a record on the recorder thread,
/// callgrind).
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Members {
    counts: [u64; SLOTS],
    /// A bit per slot: the member was there.
    present: u32,
    /// A bit per slot: it was there as `null`.
    null: u32,
    /// A bit per `*_details` member read, to refuse a repeated one.
    details: u8,
}

impl UsageMembers for Members {
    fn top(&self, key: Top) -> Result<Option<u64>, UsageError> {
        self.slot(key as usize, key.name())
    }

    fn nested(&self, outer: Details, key: Detail) -> Result<Option<u64>, UsageError> {
        self.slot(nested_slot(outer, key), key.name())
    }

    fn has_top(&self, key: Top) -> bool {
        self.present & (1 << key as usize) != 0
    }
}

impl Members {
    fn slot(&self, slot: usize, key: &'static str) -> Result<Option<u64>, UsageError> {
        if (self.present & !self.null) & (1 << slot) == 0 {
            return Ok(None);
        }
        checked(self.counts[slot], key)
    }

    /// Reads a usage object whose counts are plain, at a few instructions a byte. `None` for
    /// anything else it meets (a string or fractional count, a details member that is no
    /// object, a repeated member, an escaped key): the caller then reads the tree, which
    /// decides. `text` is one JSON value (a `RawUsage`'s, checked when made), so what is
    /// skipped needs no validating.
    pub fn scan(text: &str) -> Option<Members> {
        let mut cursor = Cursor {
            bytes: text.as_bytes(),
            at: 0,
        };
        let mut members = Members::default();
        cursor.object(|key, cursor| {
            if let Some(top) = Top::named(key) {
                return members.count(top as usize, cursor);
            }
            let Some(outer) = Details::named(key) else {
                return cursor.skip_value();
            };
            let bit = 1 << outer as usize;
            if members.details & bit != 0 {
                return None;
            }
            members.details |= bit;
            cursor.object(|key, cursor| match Detail::named(key) {
                Some(inner) => members.count(nested_slot(outer, inner), cursor),
                None => cursor.skip_value(),
            })
        })?;
        cursor.skip_blank();
        (cursor.at == cursor.bytes.len()).then_some(members)
    }

    /// Reads the usage value at `r` into this (empty) table, checking it as
    /// `Reader::raw_value` does: its text, and whether its counts were read as `scan` reads
    /// them from that text (false where `scan` declines; the table is then partly filled). The
    /// meter reads them as it passes over the answer, so the recorder need not read the text
    /// again; in place, because the table is 224 bytes.
    pub fn read<'a>(&mut self, r: &mut Reader<'a>) -> Option<(&'a str, bool)> {
        if r.peek()? != b'{' {
            return Some((r.raw_value()?, false));
        }
        let mut plain = true;
        let (text, ()) = r.raw_value_with(|r| {
            r.object_any_keys(|r, key, escaped| {
                if !plain || escaped {
                    plain = false;
                    return r.skip_value();
                }
                if let Some(top) = Top::named(key) {
                    plain = self.take(top as usize, r)?;
                    return Some(());
                }
                let Some(outer) = Details::named(key) else {
                    return r.skip_value();
                };
                let bit = 1 << outer as usize;
                if self.details & bit != 0 || r.peek()? != b'{' {
                    plain = false;
                    return r.skip_value();
                }
                self.details |= bit;
                r.object_any_keys(|r, key, escaped| {
                    match Detail::named(key) {
                        Some(inner) if plain && !escaped => {
                            plain = self.take(nested_slot(outer, inner), r)?;
                            return Some(());
                        }
                        // An escaped key could name a count: `scan` declines it.
                        _ if escaped => plain = false,
                        _ => {}
                    }
                    r.skip_value()
                })
            })
        })?;
        Some((text, plain))
    }

    /// The value at `r` into `slot`, as `count` takes it: false where `scan` declines (a
    /// repeated member, or a value that is no plain count, which is then checked and passed).
    fn take(&mut self, slot: usize, r: &mut Reader<'_>) -> Option<bool> {
        let bit = 1 << slot;
        if self.present & bit != 0 {
            r.skip_value()?;
            return Some(false);
        }
        self.present |= bit;
        if r.null() {
            self.null |= bit;
            return Some(true);
        }
        match r.whole_number() {
            Some(n) => {
                self.counts[slot] = n;
                Some(true)
            }
            None => {
                r.skip_value()?;
                Some(false)
            }
        }
    }

    /// The count at the cursor into `slot`, which must not have been read before: a tree keeps
    /// a repeated member's last value, and this reading leaves that to the tree.
    fn count(&mut self, slot: usize, cursor: &mut Cursor<'_>) -> Option<()> {
        let bit = 1 << slot;
        if self.present & bit != 0 {
            return None;
        }
        self.present |= bit;
        match cursor.count()? {
            Some(n) => self.counts[slot] = n,
            None => self.null |= bit,
        }
        Some(())
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_blank(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_blank();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// An object, each member's key handed to `member` with the cursor at its value.
    fn object(&mut self, mut member: impl FnMut(&[u8], &mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.skip_blank();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            let rest = &self.bytes[self.at..];
            let end = memchr::memchr2(b'"', b'\\', rest)?;
            if rest[end] != b'"' {
                return None;
            }
            let key = &rest[..end];
            self.at += end + 1;
            self.eat(b':')?;
            self.skip_blank();
            member(key, self)?;
            self.skip_blank();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A plain count: `Some(n)` for a whole number up to `u64::MAX`, `None` for `null`. Not
    /// taken (outer `None`): a sign, a leading zero, a fraction or exponent, anything else.
    fn count(&mut self) -> Option<Option<u64>> {
        let rest = &self.bytes[self.at..];
        if rest.starts_with(b"null") {
            self.at += 4;
            return Some(None);
        }
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let after = rest.get(digits).copied();
        if digits == 0
            || (digits > 1 && rest[0] == b'0')
            || matches!(after, Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        let mut n = 0u64;
        for &d in &rest[..digits] {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.at += digits;
        Some(Some(n))
    }

    /// Steps over one value of any kind.
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    loop {
                        let rest = &self.bytes[self.at..];
                        let end = memchr::memchr2(b'"', b'\\', rest)?;
                        self.at += end + 1;
                        if rest[end] == b'"' {
                            break;
                        }
                        // An escape: the escaped byte is never the closing quote.
                        self.at += 1;
                    }
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.at += 1;
                }
                b'}' | b']' => {
                    if depth == 0 {
                        // The end of the enclosing object: this value was a scalar.
                        return Some(());
                    }
                    depth -= 1;
                    self.at += 1;
                }
                b',' if depth == 0 => return Some(()),
                _ => self.at += 1,
            }
            if depth == 0 && matches!(self.bytes.get(self.at - 1), Some(b'"' | b'}' | b']')) {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_back() {
        for key in Top::ALL {
            assert_eq!(Top::named(key.name().as_bytes()), Some(key));
        }
        for key in Details::ALL {
            assert_eq!(Details::named(key.name().as_bytes()), Some(key));
        }
        for key in Detail::ALL {
            assert_eq!(Detail::named(key.name().as_bytes()), Some(key));
        }
        assert_eq!(Top::named(b"prompt_tokens_details"), None);
        assert_eq!(Details::named(b"prompt_tokens"), None);
    }
}
