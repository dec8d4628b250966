//! `/api/active/stream`: the live feed as server-sent events. A `snapshot` on connect, then
//! `started`, `progress` and `finished` as they happen, and `: ping` heartbeats. A subscriber
//! that falls behind skips ahead with a `lagged` event; subscribers are capped.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::broadcast::error::RecvError;

use super::query::BadParam;
use super::{AdminBody, error};
use crate::app::App;
use crate::tracker::feed::{Subscription, frame};

struct State {
    subscription: Subscription,
    heartbeat: tokio::time::Interval,
    first: Option<Bytes>,
    closed: bool,
}

pub fn stream(app: &App) -> Result<Response<AdminBody>, BadParam> {
    let Some(subscription) = app.tracker().feed().subscribe() else {
        return Ok(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live-feed subscribers",
        ));
    };
    // Subscribe first, then snapshot: nothing that starts in between is missed.
    let snapshot = serde_json::json!({ "active": app.tracker().active() });
    let first = frame(
        "snapshot",
        &serde_json::to_vec(&snapshot).unwrap_or_default(),
    );
    let period = app.settings().sse_heartbeat;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = State {
        subscription,
        heartbeat,
        first: Some(first),
        closed: false,
    };
    let events = futures_util::stream::unfold(state, |mut state| async move {
        if let Some(first) = state.first.take() {
            return Some((Ok::<_, Infallible>(Frame::data(first)), state));
        }
        if state.closed {
            return None;
        }
        let bytes = tokio::select! {
            received = state.subscription.receiver.recv() => match received {
                Ok(message) => Bytes::clone(&message),
                Err(RecvError::Lagged(skipped)) => frame("lagged", format!("{{\"skipped\":{skipped}}}").as_bytes()),
                Err(RecvError::Closed) => {
                    state.closed = true;
                    Bytes::from_static(b": closed\n\n")
                }
            },
            _ = state.heartbeat.tick() => Bytes::from_static(b": ping\n\n"),
        };
        Some((Ok(Frame::data(bytes)), state))
    });
    let mut response = Response::new(StreamBody::new(events).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
