//! `/api/export`: records as CSV (a header row, RFC 4180 quoting) or JSON lines, written to the
//! response one record at a time as the client reads, never built whole in memory.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;

use super::AdminBody;
use super::query::{BadParam, Params};
use crate::app::App;
use crate::record::Record;

/// CSV columns, in the contract's field order; `usage` is spread into its six counts.
const COLUMNS: &[&str] = &[
    "id",
    "started_at",
    "finished_at",
    "provider",
    "model",
    "response_model",
    "endpoint",
    "stream",
    "outcome",
    "status_code",
    "error",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cache_creation_tokens",
    "raw_usage",
    "usage_source",
    "cost_usd",
    "upstream_request_id",
    "duration_ms",
    "ttft_ms",
    "decode_ms",
    "chunks",
    "request_bytes",
    "response_bytes",
    "tool_calls",
    "key_id",
    "user",
    "conversation_id",
    "tags",
];

pub fn export(app: &App, query: &str) -> Result<Response<AdminBody>, BadParam> {
    let p = Params::parse(
        query,
        &["format", "since", "until", "provider", "model", "outcome"],
    )?;
    let csv = p.format.as_deref() != Some("jsonl");
    let mut records: Vec<Arc<Record>> = app
        .tracker()
        .recent()
        .into_iter()
        .filter(|r| p.keeps(r))
        .collect();
    records.reverse();
    let header_row = csv.then(|| Bytes::from(COLUMNS.join(",") + "\r\n"));
    let lines = records
        .into_iter()
        .map(move |r| Bytes::from(if csv { csv_row(&r) } else { jsonl_row(&r) }));
    let frames = header_row
        .into_iter()
        .chain(lines)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let (content_type, disposition) = if csv {
        (
            "text/csv; charset=utf-8",
            "attachment; filename=\"tokentap-requests.csv\"",
        )
    } else {
        (
            "application/x-ndjson",
            "attachment; filename=\"tokentap-requests.jsonl\"",
        )
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static(disposition),
    );
    Ok(response)
}

fn jsonl_row(r: &Record) -> String {
    let mut line = serde_json::to_string(r).unwrap_or_default();
    line.push('\n');
    line
}

fn csv_row(r: &Record) -> String {
    let value = serde_json::to_value(r).unwrap_or(Value::Null);
    let cells: Vec<String> = COLUMNS
        .iter()
        .map(|c| {
            let cell = value
                .get(c)
                .or_else(|| value.get("usage").and_then(|u| u.get(c)));
            csv_cell(cell.unwrap_or(&Value::Null))
        })
        .collect();
    cells.join(",") + "\r\n"
}

/// One cell: text as is, JSON for objects; quoted when it holds a comma, quote or line break.
fn csv_cell(v: &Value) -> String {
    let text = match v {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        Value::Object(o) if o.is_empty() => return String::new(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_when_needed() {
        assert_eq!(csv_cell(&Value::from("plain")), "plain");
        assert_eq!(csv_cell(&Value::from("a,b")), "\"a,b\"");
        assert_eq!(
            csv_cell(&Value::from("say \"hi\"\nbye")),
            "\"say \"\"hi\"\"\nbye\""
        );
        assert_eq!(
            csv_cell(&serde_json::json!({"a": 1, "b": 2})),
            "\"{\"\"a\"\":1,\"\"b\"\":2}\""
        );
        assert_eq!(csv_cell(&Value::Null), "");
        assert_eq!(csv_cell(&Value::from(12)), "12");
    }
}
