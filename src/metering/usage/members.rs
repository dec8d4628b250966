//! The members of a usage object that `normalize` reads, parsed straight from its text into a
//! fixed struct: no map of owned keys, no tree of nested objects. A member keeps its JSON value
//! (a number allocates nothing) and whether it was present at all, as a map lookup would.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// What `normalize` asks of a usage object: a top-level member, or a member of an object
/// nested one level down. `Some(&Value::Null)` for a member present as `null`.
pub trait UsageMembers {
    fn top(&self, key: &'static str) -> Option<&Value>;
    fn nested(&self, outer: &'static str, key: &'static str) -> Option<&Value>;
}

impl UsageMembers for Map<String, Value> {
    fn top(&self, key: &'static str) -> Option<&Value> {
        self.get(key)
    }

    fn nested(&self, outer: &'static str, key: &'static str) -> Option<&Value> {
        self.get(outer).and_then(|o| o.get(key))
    }
}

/// A member as read: `None` when absent, the value (maybe `null`) when present.
#[derive(Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Member(Option<Value>);

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Member, D::Error> {
        Value::deserialize(d).map(|v| Member(Some(v)))
    }
}

/// The top-level members `normalize` reads; any other member is skipped unread. A repeated
/// member is an error here (a map would keep the last one): the caller then reads a map.
#[derive(Default, Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(default)]
pub struct Members {
    prompt_tokens: Member,
    input_tokens: Member,
    completion_tokens: Member,
    output_tokens: Member,
    total_tokens: Member,
    cache_read_input_tokens: Member,
    cache_creation_input_tokens: Member,
    prompt_cache_hit_tokens: Member,
    cached_tokens: Member,
    reasoning_tokens: Member,
    prompt_tokens_details: Details,
    input_tokens_details: Details,
    completion_tokens_details: Details,
    output_tokens_details: Details,
}

/// A `*_details` member: its members when it is an object; nothing when it is absent or any
/// other value (a lookup into a non-object finds nothing either).
#[derive(Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Details(Option<DetailMembers>);

#[derive(Default, Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(default)]
struct DetailMembers {
    cached_tokens: Member,
    cache_write_tokens: Member,
    cache_creation_tokens: Member,
    reasoning_tokens: Member,
}

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Details, D::Error> {
        struct AnyValue;
        impl<'de> Visitor<'de> for AnyValue {
            type Value = Details;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Details, A::Error> {
                DetailMembers::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|m| Details(Some(m)))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Details, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Details(None))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Details, E> {
                Ok(Details(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Details, E> {
                Ok(Details(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Details, E> {
                Ok(Details(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Details, E> {
                Ok(Details(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Details, E> {
                Ok(Details(None))
            }
            fn visit_unit<E>(self) -> Result<Details, E> {
                Ok(Details(None))
            }
        }
        d.deserialize_any(AnyValue)
    }
}

impl UsageMembers for Members {
    fn top(&self, key: &'static str) -> Option<&Value> {
        let member = match key {
            "prompt_tokens" => &self.prompt_tokens,
            "input_tokens" => &self.input_tokens,
            "completion_tokens" => &self.completion_tokens,
            "output_tokens" => &self.output_tokens,
            "total_tokens" => &self.total_tokens,
            "cache_read_input_tokens" => &self.cache_read_input_tokens,
            "cache_creation_input_tokens" => &self.cache_creation_input_tokens,
            "prompt_cache_hit_tokens" => &self.prompt_cache_hit_tokens,
            "cached_tokens" => &self.cached_tokens,
            "reasoning_tokens" => &self.reasoning_tokens,
            _ => unreachable!("normalize reads no top-level member `{key}`"),
        };
        member.0.as_ref()
    }

    fn nested(&self, outer: &'static str, key: &'static str) -> Option<&Value> {
        let details = match outer {
            "prompt_tokens_details" => &self.prompt_tokens_details,
            "input_tokens_details" => &self.input_tokens_details,
            "completion_tokens_details" => &self.completion_tokens_details,
            "output_tokens_details" => &self.output_tokens_details,
            _ => unreachable!("normalize reads no member `{outer}`"),
        };
        let inner = details.0.as_ref()?;
        let member = match key {
            "cached_tokens" => &inner.cached_tokens,
            "cache_write_tokens" => &inner.cache_write_tokens,
            "cache_creation_tokens" => &inner.cache_creation_tokens,
            "reasoning_tokens" => &inner.reasoning_tokens,
            _ => unreachable!("normalize reads no member `{outer}.{key}`"),
        };
        member.0.as_ref()
    }
}

impl Members {
    /// Reads a usage object whose counts are plain: whole non-negative numbers or `null`, and
    /// `*_details` members that are objects of them. Hand-read, at a few instructions a byte,
    /// where serde's reading took about 19 (4.9k instructions for OpenAI's chat usage, on
    /// the recorder thread). `None` for anything else it reads (a string or fractional count,
    /// a repeated member, an escaped key): the caller then reads it with serde, which decides.
    /// `text` is one JSON value (a `RawUsage`'s, checked when made), so what is skipped needs no
    /// validating.
    #[cfg(test)]
    pub fn scan(text: &str) -> Option<Members> {
        let mut members = Members::default();
        members.read(text)?;
        Some(members)
    }

    /// `scan` into `self`, which must be `Members::default()`; on `None` what it holds is
    /// partly read and not to be used.
    pub fn read(&mut self, text: &str) -> Option<()> {
        let mut cursor = Cursor {
            bytes: text.as_bytes(),
            at: 0,
        };
        let members = self;
        let mut seen = 0u32;
        cursor.object(|key, cursor| {
            let (slot, bit) = match key {
                b"prompt_tokens" => (&mut members.prompt_tokens, 0),
                b"input_tokens" => (&mut members.input_tokens, 1),
                b"completion_tokens" => (&mut members.completion_tokens, 2),
                b"output_tokens" => (&mut members.output_tokens, 3),
                b"total_tokens" => (&mut members.total_tokens, 4),
                b"cache_read_input_tokens" => (&mut members.cache_read_input_tokens, 5),
                b"cache_creation_input_tokens" => (&mut members.cache_creation_input_tokens, 6),
                b"prompt_cache_hit_tokens" => (&mut members.prompt_cache_hit_tokens, 7),
                b"cached_tokens" => (&mut members.cached_tokens, 8),
                b"reasoning_tokens" => (&mut members.reasoning_tokens, 9),
                _ => {
                    let (details, bit) = match key {
                        b"prompt_tokens_details" => (&mut members.prompt_tokens_details, 10),
                        b"input_tokens_details" => (&mut members.input_tokens_details, 11),
                        b"completion_tokens_details" => {
                            (&mut members.completion_tokens_details, 12)
                        }
                        b"output_tokens_details" => (&mut members.output_tokens_details, 13),
                        _ => return cursor.skip_value(),
                    };
                    first_time(&mut seen, bit)?;
                    *details = Details(Some(DetailMembers::scan(cursor)?));
                    return Some(());
                }
            };
            first_time(&mut seen, bit)?;
            *slot = Member(Some(cursor.count()?));
            Some(())
        })?;
        cursor.skip_blank();
        (cursor.at == cursor.bytes.len()).then_some(())
    }
}

impl DetailMembers {
    fn scan(cursor: &mut Cursor<'_>) -> Option<DetailMembers> {
        let mut members = DetailMembers::default();
        let mut seen = 0u32;
        cursor.object(|key, cursor| {
            let (slot, bit) = match key {
                b"cached_tokens" => (&mut members.cached_tokens, 0),
                b"cache_write_tokens" => (&mut members.cache_write_tokens, 1),
                b"cache_creation_tokens" => (&mut members.cache_creation_tokens, 2),
                b"reasoning_tokens" => (&mut members.reasoning_tokens, 3),
                _ => return cursor.skip_value(),
            };
            first_time(&mut seen, bit)?;
            *slot = Member(Some(cursor.count()?));
            Some(())
        })?;
        Some(members)
    }
}

/// serde refuses a repeated member of a struct; so does the scan, leaving it to serde.
fn first_time(seen: &mut u32, bit: u32) -> Option<()> {
    let first = *seen & (1 << bit) == 0;
    *seen |= 1 << bit;
    first.then_some(())
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

    /// A count as serde's `Value` holds it: a whole number up to `u64::MAX`, or `null`.
    fn count(&mut self) -> Option<Value> {
        let rest = &self.bytes[self.at..];
        if rest.starts_with(b"null") {
            self.at += 4;
            return Some(Value::Null);
        }
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let after = rest.get(digits).copied();
        // No sign, no leading zero, no fraction or exponent: those go to serde.
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
        Some(Value::from(n))
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
