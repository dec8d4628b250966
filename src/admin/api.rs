//! The JSON routes over the tracker: records (filtered, paged, newest first), one record,
//! running totals, a conversation's turns, and time buckets.

use std::collections::BTreeMap;

use http::{Response, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::query::{BadParam, Params, wildcard};
use super::{AdminBody, error, json};
use crate::app::App;
use crate::tracker::{Totals, TotalsTree};

const FILTERS: &[&str] = &[
    "provider",
    "model",
    "outcome",
    "key_id",
    "user",
    "conversation_id",
    "since",
    "until",
];

pub fn requests(app: &App, query: &str) -> Result<Response<AdminBody>, BadParam> {
    let allowed: Vec<&str> = FILTERS.iter().copied().chain(["limit", "offset"]).collect();
    let p = Params::parse(query, &allowed)?;
    let (limit, offset) = (p.limit.unwrap_or(100), p.offset.unwrap_or(0));
    let matching: Vec<_> = app
        .tracker()
        .recent()
        .into_iter()
        .filter(|r| p.keeps(r))
        .collect();
    let total = matching.len();
    let page: Vec<_> = matching.into_iter().skip(offset).take(limit).collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "requests": page, "total": total, "limit": limit, "offset": offset }),
    ))
}

pub fn request(app: &App, id: &str) -> Response<AdminBody> {
    match app.tracker().get(id) {
        Some(record) => json(StatusCode::OK, &*record),
        None => match app.tracker().active().into_iter().find(|r| &*r.id == id) {
            Some(active) => json(StatusCode::OK, &active),
            None => error(StatusCode::NOT_FOUND, &format!("no request with id `{id}`")),
        },
    }
}

pub fn totals(app: &App, query: &str) -> Result<Response<AdminBody>, BadParam> {
    let p = Params::parse(query, &["provider", "model", "include_active"])?;
    let tree = app.tracker().totals(p.include_active);
    let tree = match (&p.provider, &p.model) {
        (None, None) => tree,
        (provider, model) => tree.filtered(
            |name| provider.as_deref().is_none_or(|pat| wildcard(pat, name)),
            |name| model.as_deref().is_none_or(|pat| wildcard(pat, name)),
        ),
    };
    Ok(json(
        StatusCode::OK,
        &totals_body(&tree, app.tracker().since(), p.include_active),
    ))
}

fn totals_body(tree: &TotalsTree, since: OffsetDateTime, include_active: bool) -> Value {
    json!({
        "since": since.format(&Rfc3339).unwrap_or_default(),
        "include_active": include_active,
        "total": tree.total,
        "providers": tree.providers,
    })
}

pub fn conversation(app: &App, id: &str) -> Result<Response<AdminBody>, BadParam> {
    let mut turns: Vec<_> = app
        .tracker()
        .recent()
        .into_iter()
        .filter(|r| r.conversation_id.as_deref() == Some(id))
        .collect();
    if turns.is_empty() {
        return Ok(error(
            StatusCode::NOT_FOUND,
            &format!("no requests in conversation `{id}`"),
        ));
    }
    turns.reverse();
    let mut total = Totals::default();
    for turn in &turns {
        total.add(turn);
    }
    Ok(json(
        StatusCode::OK,
        &json!({ "conversation_id": id, "total": total, "requests": turns }),
    ))
}

pub fn timeseries(app: &App, query: &str) -> Result<Response<AdminBody>, BadParam> {
    let p = Params::parse(query, &["bucket", "since", "until", "provider", "model"])?;
    let bucket = p.bucket.clone().unwrap_or_else(|| "hour".to_owned());
    let width: i64 = match bucket.as_str() {
        "minute" => 60,
        "hour" => 3600,
        _ => 86_400,
    };
    let mut points: BTreeMap<i64, Totals> = BTreeMap::new();
    for record in app.tracker().recent().iter().filter(|r| p.keeps(r)) {
        let t = record.started_at.unix_timestamp();
        points
            .entry(t - t.rem_euclid(width))
            .or_default()
            .add(record);
    }
    let points: Vec<Value> = points
        .into_iter()
        .map(|(start, totals)| {
            let mut point = serde_json::to_value(&totals).unwrap_or(Value::Null);
            let start = OffsetDateTime::from_unix_timestamp(start).map_or_else(
                |_| String::new(),
                |t| t.format(&Rfc3339).unwrap_or_default(),
            );
            if let Value::Object(map) = &mut point {
                map.insert("start".into(), Value::String(start));
            }
            point
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "bucket": bucket, "points": points }),
    ))
}
