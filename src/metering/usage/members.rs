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
struct Member(Option<Value>);

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Member, D::Error> {
        Value::deserialize(d).map(|v| Member(Some(v)))
    }
}

/// The top-level members `normalize` reads; any other member is skipped unread. A repeated
/// member is an error here (a map would keep the last one): the caller then reads a map.
#[derive(Default, Deserialize)]
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
struct Details(Option<DetailMembers>);

#[derive(Default, Deserialize)]
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
