//! Query parameters of the admin API, checked strictly: an unknown or malformed parameter is a
//! 400 that names it. Times are RFC 3339 or relative to now (`90s`, `1h`, `24h`, `7d`).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::record::{Outcome, Record};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter `{name}`: {message}")]
pub struct BadParam {
    pub name: String,
    pub message: String,
}

fn bad(name: &str, message: impl Into<String>) -> BadParam {
    BadParam {
        name: name.to_owned(),
        message: message.into(),
    }
}

/// Every parameter any admin route understands, parsed.
#[derive(Debug, Default)]
pub struct Params {
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub outcome: Option<Outcome>,
    pub key_id: Option<String>,
    pub user: Option<String>,
    pub conversation_id: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub include_active: bool,
    pub bucket: Option<String>,
    pub format: Option<String>,
}

impl Params {
    /// Parses `query`, accepting only the parameters in `allowed` (and `token`).
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Params, BadParam> {
        let mut p = Params::default();
        let now = OffsetDateTime::now_utc();
        for (name, value) in pairs(query) {
            if name == "token" {
                continue;
            }
            if !allowed.contains(&name.as_str()) {
                return Err(bad(
                    &name,
                    format!("unknown here (known: {})", allowed.join(", ")),
                ));
            }
            let n = name.as_str();
            match n {
                "limit" => p.limit = Some(number(n, &value).and_then(|v| in_range(n, v, 1, 10_000))?),
                "offset" => p.offset = Some(number(n, &value)?),
                "provider" => p.provider = Some(value),
                "model" => p.model = Some(value),
                "outcome" => p.outcome = Some(outcome(&value).ok_or_else(|| {
                    bad(n, "must be ok, client_error, upstream_error, cancelled, timeout or proxy_error")
                })?),
                "key_id" => p.key_id = Some(value),
                "user" => p.user = Some(value),
                "conversation_id" => p.conversation_id = Some(value),
                "since" => p.since = Some(instant(n, &value, now)?),
                "until" => p.until = Some(instant(n, &value, now)?),
                "include_active" => {
                    p.include_active = match value.as_str() {
                        "" | "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad(n, "must be true or false")),
                    }
                }
                "bucket" => match value.as_str() {
                    "minute" | "hour" | "day" => p.bucket = Some(value),
                    _ => return Err(bad(n, "must be minute, hour or day")),
                },
                "format" => match value.as_str() {
                    "csv" | "jsonl" => p.format = Some(value),
                    _ => return Err(bad(n, "must be csv or jsonl")),
                },
                _ => return Err(bad(n, "not supported")),
            }
        }
        if let (Some(since), Some(until)) = (p.since, p.until) {
            if since > until {
                return Err(bad("since", "is after `until`"));
            }
        }
        Ok(p)
    }

    /// Whether a record passes every filter given.
    pub fn keeps(&self, r: &Record) -> bool {
        let text = |filter: &Option<String>, value: Option<&str>| {
            filter
                .as_deref()
                .is_none_or(|f| value.is_some_and(|v| wildcard(f, v)))
        };
        text(&self.provider, Some(&r.provider))
            && (text(&self.model, r.model.as_deref())
                || self.model.is_some() && text(&self.model, r.response_model.as_deref()))
            && self.outcome.is_none_or(|o| r.outcome == Some(o))
            && text(&self.key_id, r.key_id.as_deref())
            && text(&self.user, r.user.as_deref())
            && text(&self.conversation_id, r.conversation_id.as_deref())
            && self.since.is_none_or(|s| r.started_at >= s)
            && self.until.is_none_or(|u| r.started_at < u)
    }
}

/// `a=1&b=x%20y` as decoded pairs.
pub fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn number(name: &str, value: &str) -> Result<usize, BadParam> {
    value
        .parse()
        .map_err(|_| bad(name, format!("`{value}` is not a whole number")))
}

fn in_range(name: &str, v: usize, lo: usize, hi: usize) -> Result<usize, BadParam> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(bad(name, format!("must be from {lo} to {hi}")))
    }
}

fn outcome(value: &str) -> Option<Outcome> {
    Some(match value {
        "ok" => Outcome::Ok,
        "client_error" => Outcome::ClientError,
        "upstream_error" => Outcome::UpstreamError,
        "cancelled" => Outcome::Cancelled,
        "timeout" => Outcome::Timeout,
        "proxy_error" => Outcome::ProxyError,
        _ => return None,
    })
}

/// RFC 3339, or a duration back from `now` (`1h`, `7d`).
fn instant(name: &str, value: &str, now: OffsetDateTime) -> Result<OffsetDateTime, BadParam> {
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(t);
    }
    let ago = humantime::parse_duration(value).map_err(|_| {
        bad(
            name,
            format!("`{value}` is neither RFC 3339 nor a duration like 1h or 7d"),
        )
    })?;
    let ago = time::Duration::try_from(ago).map_err(|_| bad(name, "is too far back"))?;
    now.checked_sub(ago)
        .ok_or_else(|| bad(name, "is too far back"))
}

/// Matches `text` against `pattern`, where `*` stands for any run of characters.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("gpt-*", "gpt-4o"));
        assert!(wildcard("*", "anything"));
        assert!(wildcard("*mini*", "gpt-4o-mini-2024"));
        assert!(wildcard("gpt-4o", "gpt-4o"));
        assert!(!wildcard("gpt-4o", "gpt-4o-mini"));
        assert!(!wildcard("a*b*c", "acb"));
        assert!(wildcard("a*b*c", "aXbYc"));
        assert!(!wildcard("ab*ba", "aba"));
    }

    #[test]
    fn parses_and_names_bad_parameters() {
        let all = [
            "limit",
            "offset",
            "since",
            "until",
            "outcome",
            "bucket",
            "include_active",
        ];
        let p = Params::parse(
            "limit=5&offset=10&since=1h&outcome=ok&include_active&token=x",
            &all,
        )
        .expect("valid");
        assert_eq!(
            (p.limit, p.offset, p.outcome, p.include_active),
            (Some(5), Some(10), Some(Outcome::Ok), true)
        );
        assert!(p.since.is_some_and(|s| s < OffsetDateTime::now_utc()));
        let p = Params::parse("since=2026-01-01T00%3A00%3A00Z", &all).expect("valid");
        assert_eq!(p.since.map(|s| s.year()), Some(2026));
        let err = |q: &str| Params::parse(q, &all).expect_err("bad").name;
        assert_eq!(err("limit=0"), "limit");
        assert_eq!(err("limit=abc"), "limit");
        assert_eq!(err("offset=-1"), "offset");
        assert_eq!(err("since=yesterday"), "since");
        assert_eq!(err("outcome=great"), "outcome");
        assert_eq!(err("bucket=week"), "bucket");
        assert_eq!(err("include_active=maybe"), "include_active");
        assert_eq!(err("colour=blue"), "colour");
        assert_eq!(
            err("since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z"),
            "since"
        );
        assert_eq!(
            pairs("a=1&b=x%20y+z&c"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), String::new())
            ]
        );
    }
}
