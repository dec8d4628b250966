//! The response the client gets: the upstream's status and end-to-end headers, and its body
//! wrapped in the meter.

use http::{HeaderName, Response, header};
use http_body_util::Either;
use tokio::time::Instant;

use super::ProxyBody;
use super::headers::strip_hop_by_hop;
use crate::app::App;
use crate::metering::{Dialect, Meter, MeteredBody};
use crate::tracker::InFlight;
use crate::upstream::UpstreamResponse;

/// Headers a provider uses for its own request id, most common first.
static REQUEST_ID_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("request-id"),
    HeaderName::from_static("apim-request-id"),
    HeaderName::from_static("x-amzn-requestid"),
    HeaderName::from_static("cf-ray"),
];

pub fn respond(
    app: &App,
    response: UpstreamResponse,
    dialect: Option<Dialect>,
    strip_usage_chunks: bool,
    in_flight: InFlight,
    deadline: Instant,
) -> Response<ProxyBody> {
    let status = response.status();
    let request_id = REQUEST_ID_HEADERS
        .iter()
        .find_map(|h| response.headers().get(h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    in_flight.response_headers(status.as_u16(), request_id);
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let meter = dialect.map(|dialect| {
        let sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        let encoding = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        Meter::new(
            dialect,
            sse,
            encoding,
            strip_usage_chunks && status.is_success(),
        )
    });
    if meter.as_ref().is_some_and(Meter::strips) {
        // Cutting a chunk changes the length.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let mut body = MeteredBody::new(
        body,
        meter,
        in_flight,
        app.settings().timeouts.idle,
        deadline,
    );
    if let Some(drainer) = app.drainer() {
        body = body.drain_on_disconnect(drainer.clone());
    }
    Response::from_parts(parts, Either::Left(body))
}
