//! The response the client gets: the upstream's status and end-to-end headers, and its body
//! wrapped in the meter.

use http::{HeaderMap, HeaderValue, Response, header};
use http_body_util::Either;
use tokio::time::Instant;

use super::ProxyBody;
use super::headers::strip_hop_by_hop;
use crate::app::App;
use crate::metering::{Dialect, Meter, MeteredBody};
use crate::tracker::InFlight;
use crate::upstream::UpstreamResponse;

/// Where a provider's own request id header ranks, most common first.
fn request_id_rank(name: &str) -> Option<u8> {
    Some(match name {
        "x-request-id" => 0,
        "request-id" => 1,
        "apim-request-id" => 2,
        "x-amzn-requestid" => 3,
        "cf-ray" => 4,
        _ => return None,
    })
}

/// The first value of each response header the meter and the record read, found in one pass
/// (seven lookups hashed each name again: about 1k instructions of a short request).
#[derive(Default)]
struct Read<'a> {
    request_id: Option<(u8, &'a HeaderValue)>,
    content_type: Option<&'a HeaderValue>,
    content_encoding: Option<&'a HeaderValue>,
}

impl<'a> Read<'a> {
    fn from(headers: &'a HeaderMap) -> Read<'a> {
        let mut read = Read::default();
        for (name, value) in headers {
            match name.as_str() {
                "content-type" => _ = read.content_type.get_or_insert(value),
                "content-encoding" => _ = read.content_encoding.get_or_insert(value),
                name => {
                    if let Some(rank) = request_id_rank(name) {
                        if read.request_id.is_none_or(|(best, _)| rank < best) {
                            read.request_id = Some((rank, value));
                        }
                    }
                }
            }
        }
        read
    }
}

/// `text/event-stream`, in any case, with or without parameters.
fn is_event_stream(content_type: &HeaderValue) -> bool {
    let kind = b"text/event-stream";
    let value = content_type.as_bytes().trim_ascii_start();
    value
        .get(..kind.len())
        .is_some_and(|v| v.eq_ignore_ascii_case(kind))
}

pub fn respond(
    app: &App,
    response: UpstreamResponse,
    dialect: Option<Dialect>,
    strip_usage_chunks: bool,
    in_flight: InFlight,
    deadline: Instant,
) -> Response<ProxyBody> {
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let read = Read::from(&parts.headers);
    let request_id = read
        .request_id
        .and_then(|(_, v)| v.to_str().ok())
        .map(str::to_owned);
    in_flight.response_headers(status.as_u16(), request_id);
    let sse = read.content_type.is_some_and(is_event_stream);
    let meter = dialect.map(|dialect| {
        let encoding = read.content_encoding.and_then(|v| v.to_str().ok());
        let mut meter = Meter::new(
            dialect,
            sse,
            encoding,
            strip_usage_chunks && status.is_success(),
        );
        meter.share_request_model(in_flight.model().cloned());
        meter
    });
    if meter.as_ref().is_some_and(Meter::strips) {
        // Cutting a chunk changes the length.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let mut body = Box::new(MeteredBody::new(
        body,
        meter,
        in_flight,
        app.settings().timeouts.idle,
        deadline,
    ));
    if let Some(drainer) = app.drainer() {
        body.drain_on_disconnect(drainer.clone());
    }
    body.finish_after_write();
    Response::from_parts(parts, Either::Left(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(headers: &[(&'static str, &'static str)]) -> (Option<String>, Option<String>) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        let read = Read::from(&map);
        let text = |v: Option<&HeaderValue>| v.map(|v| v.to_str().expect("text").to_owned());
        (
            text(read.request_id.map(|(_, v)| v)),
            text(read.content_type),
        )
    }

    #[test]
    fn the_most_common_request_id_header_wins_whatever_its_place() {
        assert_eq!(
            read(&[
                ("cf-ray", "ray-1"),
                ("request-id", "anthropic-1"),
                ("x-request-id", "openai-1"),
                ("x-request-id", "openai-2"),
                ("content-type", "text/event-stream"),
                ("content-type", "application/json"),
            ]),
            (Some("openai-1".into()), Some("text/event-stream".into()))
        );
        assert_eq!(
            read(&[("apim-request-id", "azure-1"), ("cf-ray", "ray-1")]).0,
            Some("azure-1".into())
        );
        assert_eq!(
            read(&[("x-amzn-requestid", "aws-1")]).0,
            Some("aws-1".into())
        );
        assert_eq!(read(&[("x-req-id", "other")]), (None, None));
    }

    #[test]
    fn an_event_stream_is_told_by_its_media_type_in_any_case() {
        for (value, sse) in [
            ("text/event-stream", true),
            ("Text/Event-Stream; charset=utf-8", true),
            (" text/event-stream", true),
            ("text/event-strea", false),
            ("application/json", false),
            ("", false),
        ] {
            assert_eq!(
                is_event_stream(&HeaderValue::from_static(value)),
                sse,
                "{value}"
            );
        }
    }
}
