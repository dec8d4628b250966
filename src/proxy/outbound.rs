//! The response the client gets: the upstream's status and end-to-end headers, and its body
//! wrapped in the meter.

use http::{Response, header};
use http_body_util::Either;
use tokio::time::Instant;

use super::ProxyBody;
use super::headers::strip_hop_by_hop;
use crate::app::App;
use crate::metering::{Dialect, Meter, MeteredBody};
use crate::tracker::InFlight;
use crate::upstream::UpstreamResponse;
use crate::wire::lines::visible_text as text;

/// What a response header is to the meter and the record: a provider's own request id (with
/// its rank, most common first), the media type or the content coding. Told by its name, in
/// any case: an answer's lines keep the provider's spelling.
#[derive(Clone, Copy)]
enum Kind {
    RequestId(u8),
    ContentType,
    ContentEncoding,
}

fn kind(name: &[u8]) -> Option<Kind> {
    // Told apart by length first: most names are none of these.
    let is = |lower: &[u8]| name.eq_ignore_ascii_case(lower);
    Some(match name.len() {
        12 if is(b"content-type") => Kind::ContentType,
        16 if is(b"content-encoding") => Kind::ContentEncoding,
        12 if is(b"x-request-id") => Kind::RequestId(0),
        10 if is(b"request-id") => Kind::RequestId(1),
        15 if is(b"apim-request-id") => Kind::RequestId(2),
        16 if is(b"x-amzn-requestid") => Kind::RequestId(3),
        6 if is(b"cf-ray") => Kind::RequestId(4),
        _ => return None,
    })
}

/// The first value of each response header the meter and the record read, found in one pass
/// (seven lookups hashed each name again: about 1k instructions of a short request).
#[derive(Default)]
struct Read<'a> {
    request_id: Option<(u8, &'a [u8])>,
    content_type: Option<&'a [u8]>,
    content_encoding: Option<&'a [u8]>,
}

impl<'a> Read<'a> {
    fn from<'h>(headers: impl Iterator<Item = (&'h [u8], &'a [u8])>) -> Read<'a> {
        let mut read = Read::default();
        for (name, value) in headers {
            match kind(name) {
                Some(Kind::ContentType) => _ = read.content_type.get_or_insert(value),
                Some(Kind::ContentEncoding) => _ = read.content_encoding.get_or_insert(value),
                Some(Kind::RequestId(rank))
                    if read.request_id.is_none_or(|(best, _)| rank < best) =>
                {
                    read.request_id = Some((rank, value));
                }
                _ => {}
            }
        }
        read
    }
}

/// `text/event-stream`, in any case, with or without parameters.
fn is_event_stream(content_type: &[u8]) -> bool {
    let kind = b"text/event-stream";
    let value = content_type.trim_ascii_start();
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
    let (mut parts, mut body) = response.into_parts();
    // An HTTP/1.1 answer's headers are its lines as they came, its map empty; an HTTP/2
    // answer's are in its map.
    let read = match body.head_lines_mut() {
        Some(lines) => {
            lines.strip_hop_by_hop();
            Read::from(lines.iter())
        }
        None => {
            strip_hop_by_hop(&mut parts.headers);
            Read::from(
                parts
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
            )
        }
    };
    let request_id = read
        .request_id
        .and_then(|(_, v)| text(v))
        .map(str::to_owned);
    in_flight.response_headers(status.as_u16(), request_id);
    let sse = read.content_type.is_some_and(is_event_stream);
    let meter = dialect.map(|dialect| {
        let encoding = read.content_encoding.and_then(text);
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
        if let Some(lines) = body.head_lines_mut() {
            lines.remove(b"content-length");
        }
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
        let read = Read::from(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        let owned = |v: Option<&[u8]>| v.map(|v| text(v).expect("text").to_owned());
        (
            owned(read.request_id.map(|(_, v)| v)),
            owned(read.content_type),
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
    fn names_are_read_in_any_case() {
        assert_eq!(
            read(&[
                ("X-Request-ID", "openai-1"),
                ("Content-Type", "application/json")
            ]),
            (Some("openai-1".into()), Some("application/json".into()))
        );
        assert_eq!(read(&[("CF-RAY", "ray-1")]).0, Some("ray-1".into()));
    }

    #[test]
    fn only_visible_ascii_is_text() {
        assert_eq!(text(b"req_1\t2"), Some("req_1\t2"));
        assert_eq!(text(b""), Some(""));
        for bad in [&b"caf\xc3\xa9"[..], b"a\x7fb", b"a\x01"] {
            assert_eq!(text(bad), None, "{bad:?}");
        }
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
            assert_eq!(is_event_stream(value.as_bytes()), sse, "{value}");
        }
    }
}
