//! `MeteredBody`: the response body the client reads. It forwards each upstream frame as soon
//! as it arrives, shows the same bytes to the meter (constant work per frame, no waiting), and
//! fires its completion exactly once: at the end, on an upstream error or idle timeout, or
//! when dropped because the client went away.

use std::collections::VecDeque;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::drain::Drainer;
use super::meter::Meter;
use crate::server::{AfterWork, WriterHints};
use crate::tracker::{BodyEnd, InFlight};
use crate::wire::lines::HeadLines;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream body as tokentap reads it.
pub type UpstreamBody = crate::upstream::ResponseBody;

pub struct MeteredBody {
    inner: Option<UpstreamBody>,
    /// Inline: the proxy boxes the whole body (`proxy::ProxyBody`), meter and all, in one
    /// allocation.
    meter: Option<Meter>,
    in_flight: Option<InFlight>,
    idle: Duration,
    /// When the whole request must be over (`--request-timeout`).
    deadline: Instant,
    /// Fires at the earlier of the idle limit and the deadline; moved on lazily. Made when the
    /// upstream first keeps the body waiting: a short answer often comes whole with its head.
    timer: Option<Timer>,
    last_frame: Instant,
    response_bytes: u64,
    /// Upstream bytes held back until their event is complete (stripping only).
    held: VecDeque<Bytes>,
    held_start: u64,
    /// Frames ready for the client (stripping only).
    ready: VecDeque<Bytes>,
    done: bool,
    /// Set under `--on-client-disconnect drain`.
    drainer: Option<Drainer>,
    /// Leave the body's end to the connection's writer (see
    /// [`MeteredBody::finish_after_write`]).
    finish_after_write: bool,
    /// That end, once the body has ended, until the writer runs the body as its work
    /// ([`MeteredBody::end_for_writer`]).
    end_after_write: Option<(BodyEnd, Instant)>,
}

impl MeteredBody {
    pub fn new(
        inner: UpstreamBody,
        meter: Option<Meter>,
        in_flight: InFlight,
        idle: Duration,
        deadline: Instant,
    ) -> MeteredBody {
        let now = Instant::now();
        MeteredBody {
            inner: Some(inner),
            meter,
            in_flight: Some(in_flight),
            idle,
            deadline,
            timer: None,
            last_frame: now,
            response_bytes: 0,
            held: VecDeque::new(),
            held_start: 0,
            ready: VecDeque::new(),
            done: false,
            drainer: None,
            finish_after_write: false,
            end_after_write: None,
        }
    }

    /// Keep reading the upstream, bounded, if the client leaves early.
    pub fn drain_on_disconnect(&mut self, drainer: Drainer) {
        self.drainer = Some(drainer);
    }

    /// Leave the body's end to the client connection's writer, which runs it right after
    /// writing the answer's last frame: in the body's own poll it would hold that write back.
    /// The end is the meter's (for a whole JSON answer, the one parse of the body) and the
    /// hand-off of the record to the recorder thread, which wakes that thread when it sleeps:
    /// on a busy core the woken thread ran before the last chunk was written. Taken through
    /// [`MeteredBody::end_for_writer`]; a body dropped first finishes on the spot.
    pub fn finish_after_write(&mut self) {
        self.finish_after_write = true;
    }

    fn strips(&self) -> bool {
        self.meter.as_ref().is_some_and(Meter::strips)
    }

    fn finish(&mut self, end: BodyEnd) {
        self.finish_at(end, Instant::now());
    }

    /// `finish`, with the time already read for the body's last frame.
    fn finish_at(&mut self, end: BodyEnd, now: Instant) {
        self.done = true;
        self.inner = None;
        if self.finish_after_write && self.in_flight.is_some() {
            self.end_after_write = Some((end, now));
        } else {
            self.end(end, now);
        }
    }

    /// The meter's end and the record's hand-off.
    fn end(&mut self, end: BodyEnd, now: Instant) {
        let (meter, bytes) = (self.meter.take(), self.response_bytes);
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.finish(end, meter.map(|m| m.finish(now)), bytes, now);
        }
    }

    /// The body has given its last frame and left its end for the writer: what is left of it
    /// is that work ([`AfterWork`]), which the writer takes with the body's own allocation.
    pub fn end_for_writer(&self) -> bool {
        self.end_after_write.is_some() && self.ready.is_empty()
    }

    /// Moves every held byte the meter has settled on to `ready`, leaving out the cut ranges.
    fn release(&mut self, settled: u64, cuts: &[Range<u64>]) {
        while let Some(piece) = self.held.pop_front() {
            let start = self.held_start;
            let end = start + piece.len() as u64;
            let release_end = end.min(settled);
            if release_end <= start {
                self.held.push_front(piece);
                return;
            }
            let mut cursor = start;
            for cut in cuts
                .iter()
                .filter(|c| c.start < release_end && c.end > start)
            {
                if cut.start > cursor {
                    self.push_ready(piece.slice(offset(cursor, start)..offset(cut.start, start)));
                }
                cursor = cursor.max(cut.end.min(release_end));
            }
            if release_end > cursor {
                self.push_ready(piece.slice(offset(cursor, start)..offset(release_end, start)));
            }
            self.held_start = release_end;
            if release_end < end {
                self.held
                    .push_front(piece.slice(offset(release_end, start)..));
                return;
            }
        }
    }

    fn push_ready(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.ready.push_back(bytes);
        }
    }

    fn release_all(&mut self, cuts: &[Range<u64>]) {
        self.release(u64::MAX, cuts);
    }
}

/// The body's idle and deadline timer. A stream's body waits on its upstream once a chunk, and
/// each wait used to poll the timer, which registers the task's waker with it again (about 150
/// instructions, callgrind, two or three times a chunk of a paced stream). Registered once, the
/// timer wakes the same task when it fires; until the task's waker changes, a wait only asks
/// whether it has.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    /// The waker the timer holds, once polled and pending.
    registered: Option<Waker>,
}

impl Timer {
    fn new(at: Instant) -> Timer {
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            registered: None,
        }
    }

    /// Whether the timer has gone off; if not, it wakes this task when it does.
    fn elapsed(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(waker) = &self.registered
            && waker.will_wake(cx.waker())
        {
            return self.sleep.is_elapsed();
        }
        let elapsed = self.sleep.as_mut().poll(cx).is_ready();
        self.registered = (!elapsed).then(|| cx.waker().clone());
        elapsed
    }

    fn reset(&mut self, at: Instant) {
        self.sleep.as_mut().reset(at);
        self.registered = None;
    }
}

fn offset(at: u64, piece_start: u64) -> usize {
    usize::try_from(at - piece_start).unwrap_or(usize::MAX)
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(bytes) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                    };
                    // With a Content-Length the last frame may come without a final `None`:
                    // the body is complete now, whatever the client does next.
                    let ended = this.inner.as_ref().is_some_and(Body::is_end_stream);
                    let now = Instant::now();
                    this.last_frame = now;
                    this.response_bytes += data.len() as u64;
                    if let Some(in_flight) = &this.in_flight {
                        in_flight.progress(data.len() as u64);
                    }
                    let direct = match this.meter.as_mut() {
                        None => Some(data),
                        Some(meter) => {
                            meter.feed_bytes(&data, now);
                            if let (Some(in_flight), Some(at)) =
                                (&this.in_flight, meter.measurement().first_content_at)
                            {
                                in_flight.first_content(at);
                            }
                            if !meter.strips() {
                                Some(data)
                            } else if this.held.is_empty()
                                && !meter.has_cuts()
                                && meter.settled_offset() == this.held_start + data.len() as u64
                            {
                                // The usual case: the chunk is whole events and none is cut.
                                this.held_start += data.len() as u64;
                                Some(data)
                            } else {
                                let settled = meter.settled_offset();
                                let cuts = meter.take_cuts();
                                this.held.push_back(data);
                                this.release(settled, &cuts);
                                None
                            }
                        }
                    };
                    if ended {
                        this.release_all(&[]);
                        this.finish_at(BodyEnd::Complete, now);
                    }
                    if let Some(data) = direct {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    let timed_out = err.is_timeout();
                    let message = error_chain(&err);
                    this.release_all(&[]);
                    if timed_out {
                        // After the headers a timeout ends the stream cleanly.
                        this.finish(BodyEnd::Timeout(message));
                        continue;
                    }
                    this.finish(BodyEnd::UpstreamFailed(message));
                    if let Some(bytes) = this.ready.pop_front() {
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                    return Poll::Ready(Some(Err(Box::new(err))));
                }
                Poll::Ready(None) => {
                    this.release_all(&[]);
                    this.finish(BodyEnd::Complete);
                }
                Poll::Pending => {
                    let (idle, deadline, last_frame) = (this.idle, this.deadline, this.last_frame);
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Timer::new((last_frame + idle).min(deadline)));
                    if timer.elapsed(cx) {
                        let idle_until = this.last_frame + this.idle;
                        let next = idle_until.min(this.deadline);
                        if next > Instant::now() {
                            timer.reset(next);
                            continue;
                        }
                        let reason = if this.deadline <= idle_until {
                            "the request did not finish within --request-timeout".to_owned()
                        } else {
                            format!("no data from the provider for {} ms", this.idle.as_millis())
                        };
                        this.release_all(&[]);
                        this.finish(BodyEnd::Timeout(reason));
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.ready.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.inner, self.strips()) {
            (Some(inner), false) => inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

impl WriterHints for MeteredBody {
    fn idle_when_pending(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(UpstreamBody::reads_own_socket)
    }

    fn head_lines(&mut self) -> Option<HeadLines> {
        self.inner.as_mut()?.take_head_lines()
    }
}

impl AfterWork for MeteredBody {
    fn run(mut self: Box<Self>) {
        if let Some((end, now)) = self.end_after_write.take() {
            self.end(end, now);
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if let Some((end, now)) = self.end_after_write.take() {
            // Not run by a writer (or while unwinding, when the request's handle records it as
            // it is dropped).
            if !std::thread::panicking() {
                self.end(end, now);
            }
            return;
        }
        if self.in_flight.is_none() {
            return;
        }
        // No writer is left to take the end: it is made here.
        self.finish_after_write = false;
        if std::thread::panicking() {
            // Do not touch the meter while unwinding: it may be what panicked.
            self.meter = None;
            self.finish(BodyEnd::Panicked);
            return;
        }
        // The client went away before the end.
        let terminal = self
            .meter
            .as_ref()
            .is_some_and(|m| m.measurement().terminal);
        let end = if terminal {
            BodyEnd::Complete
        } else {
            BodyEnd::ClientGone
        };
        if !terminal {
            if let Some(permit) = self.drainer.as_ref().and_then(Drainer::try_permit) {
                if let (Some(drainer), Some(inner), Some(in_flight)) = (
                    self.drainer.take(),
                    self.inner.take(),
                    self.in_flight.take(),
                ) {
                    drainer.spawn(
                        permit,
                        inner,
                        self.meter.take(),
                        in_flight,
                        self.response_bytes,
                    );
                    return;
                }
            }
        }
        self.finish(end);
    }
}

/// The error with its sources, e.g. "error decoding response body: connection reset".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use super::*;

    /// Polls the timer once from the current task.
    async fn elapsed(timer: &mut Timer) -> bool {
        poll_fn(|cx| Poll::Ready(timer.elapsed(cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_goes_off_once_registered_and_again_after_a_reset() {
        let start = Instant::now();
        let mut timer = Timer::new(start + Duration::from_secs(1));
        assert!(!elapsed(&mut timer).await);
        assert!(timer.registered.is_some(), "pending: it holds the waker");
        // Asked again by the same task: no new registration needed, and not yet gone off.
        assert!(!elapsed(&mut timer).await);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(elapsed(&mut timer).await, "it went off while only asked");

        timer.reset(start + Duration::from_secs(3));
        assert!(timer.registered.is_none());
        assert!(!elapsed(&mut timer).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!elapsed(&mut timer).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(elapsed(&mut timer).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_timer_wakes_the_task_that_asked() {
        let mut timer = Timer::new(Instant::now() + Duration::from_secs(1));
        // Asked twice a poll, as a body waiting on its upstream may be: the second time is
        // only a question. Nothing else wakes this task.
        let wait = poll_fn(|cx| {
            if timer.elapsed(cx) || timer.elapsed(cx) {
                return Poll::Ready(());
            }
            Poll::Pending
        });
        let woken = tokio::time::timeout(Duration::from_secs(5), wait).await;
        assert!(woken.is_ok(), "the timer went off without waking the task");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_polled_by_another_task_registers_that_task() {
        let mut timer = Timer::new(Instant::now() + Duration::from_secs(1));
        assert!(!elapsed(&mut timer).await);
        let mut timer = tokio::spawn(async move {
            assert!(!elapsed(&mut timer).await);
            timer
        })
        .await
        .unwrap();
        // The other task's waker replaced this one's; polling here registers it again.
        assert!(!elapsed(&mut timer).await);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(elapsed(&mut timer).await);
    }
}
