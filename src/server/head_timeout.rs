//! The client header timeout of an HTTP/1.1 connection (`--client-header-timeout`, the
//! slowloris guard): a connection with no request in flight that begins none for that long is
//! closed, whether it idles between requests or is slow to send a request's head.
//!
//! hyper's own `header_read_timeout` does the same with a timer made, registered in tokio's
//! timer wheel and taken out of it again for every request: 1.4k instructions of a short
//! request (callgrind, 49.6k against 51.0k). Here a connection has one timer that ticks at an
//! eighth of the timeout, and a request costs two counter increments. A tick that finds no
//! request in flight counts; a tick that finds requests begun since the one before counts as
//! the first; the ninth tick in a row closes the connection. So the connection is closed
//! between the timeout and 1⅛ of it after it fell idle. While a request is in flight (a long
//! stream) the timer is left unarmed, and the connection is not woken for it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::coalesced::WriteNow;
use super::drain::Finish;

/// Consecutive idle ticks that close a connection; a tick is an eighth of the timeout.
const TICKS: u8 = 9;

/// The requests a connection has begun and answered. Relaxed: the timer only compares the two
/// counts on a tick, and no other memory is read on the strength of them. (On h2c each stream
/// counts from its own task; only HTTP/1.1 connections have a head timeout to read them.)
#[derive(Default)]
pub struct Requests {
    begun: AtomicU32,
    answered: AtomicU32,
}

impl Requests {
    pub fn begin(&self) {
        self.begun.fetch_add(1, Ordering::Relaxed);
    }

    pub fn answer(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// The count begun, and whether every one is answered.
    fn read(&self) -> (u32, bool) {
        let answered = self.answered.load(Ordering::Relaxed);
        let begun = self.begun.load(Ordering::Relaxed);
        (begun, begun == answered)
    }
}

/// Why a connection under a [`HeadTimeout`] ended with an error.
#[derive(Debug)]
pub enum Closed<E> {
    Connection(E),
    /// No request began within the header timeout.
    HeadTimeout,
}

impl<E: fmt::Display> fmt::Display for Closed<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Closed::Connection(err) => err.fmt(f),
            Closed::HeadTimeout => f.write_str("no request head within the client header timeout"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Made, not yet polled: not in the timer wheel.
    Unarmed,
    Ticking,
    /// A request was in flight at the last tick; armed again once it is answered.
    Resting,
}

pin_project_lite::pin_project! {
    /// An HTTP/1.1 connection closed when it begins no request within the header timeout.
    pub struct HeadTimeout<C> {
        #[pin]
        conn: C,
        #[pin]
        tick: Sleep,
        period: Duration,
        write_now: WriteNow,
        timer: Timer,
        idle_ticks: u8,
        // `begun` at the last tick.
        last_begun: u32,
    }
}

impl<C> HeadTimeout<C> {
    /// `conn`, whose requests are counted through `write_now` (see [`WriteNow::begin`]).
    pub fn new(conn: C, timeout: Duration, write_now: WriteNow) -> HeadTimeout<C> {
        let period = (timeout / 8).max(Duration::from_millis(1));
        HeadTimeout {
            conn,
            tick: tokio::time::sleep(period),
            period,
            write_now,
            timer: Timer::Unarmed,
            idle_ticks: 0,
            last_begun: 0,
        }
    }
}

impl<C: Finish> Future for HeadTimeout<C> {
    type Output = Result<(), Closed<C::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The connection first: its poll is where requests begin and end.
        if let Poll::Ready(ended) = this.conn.poll(cx) {
            return Poll::Ready(ended.map_err(Closed::Connection));
        }
        match *this.timer {
            // A request begun in the connection's first poll (its head came with the
            // connection, as it nearly always does) needs no timer until it is answered: armed
            // then, as from `Resting`. A connection that carries one request and closes never
            // registers one. Registering it woke the runtime's driver through its eventfd: one
            // `write(2)` more per connection (strace), for a timer that never went off.
            Timer::Unarmed if !this.write_now.requests().read().1 => {
                *this.timer = Timer::Resting;
                return Poll::Pending;
            }
            Timer::Unarmed => {}
            Timer::Ticking if this.tick.is_elapsed() => {
                let (begun, all_answered) = this.write_now.requests().read();
                if !all_answered {
                    *this.idle_ticks = 0;
                    *this.timer = Timer::Resting;
                    return Poll::Pending;
                }
                *this.idle_ticks = if begun == *this.last_begun {
                    this.idle_ticks.saturating_add(1)
                } else {
                    1
                };
                *this.last_begun = begun;
                if *this.idle_ticks >= TICKS {
                    return Poll::Ready(Err(Closed::HeadTimeout));
                }
            }
            Timer::Ticking => return Poll::Pending,
            Timer::Resting => {
                let (begun, all_answered) = this.write_now.requests().read();
                if !all_answered {
                    return Poll::Pending;
                }
                // Idle from about now: the first tick a period on counts as one.
                *this.last_begun = begun;
            }
        }
        *this.timer = Timer::Ticking;
        let next = Instant::now() + *this.period;
        this.tick.as_mut().reset(next);
        // Registers the timer's waker; the deadline is ahead, so this is pending.
        let _ = this.tick.as_mut().poll(cx);
        Poll::Pending
    }
}

impl<C: Finish> Finish for HeadTimeout<C> {
    type Error = Closed<C::Error>;

    fn finish(self: Pin<&mut Self>) {
        self.project().conn.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::pin::pin;

    use super::*;

    /// A connection that never ends by itself, or (`Open(false)`) ends at once.
    struct Open(bool);

    impl Future for Open {
        type Output = Result<(), &'static str>;

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            if self.0 {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }
    }

    impl Finish for Open {
        type Error = &'static str;

        fn finish(self: Pin<&mut Self>) {}
    }

    const TIMEOUT: Duration = Duration::from_secs(8);

    /// The connection is closed for its head timeout between the timeout and 1⅛ of it after
    /// `from`.
    async fn closes_in_time(conn: Pin<&mut HeadTimeout<Open>>, from: Instant) {
        let ended = conn.await;
        assert!(matches!(ended, Err(Closed::HeadTimeout)), "{ended:?}");
        let after = from.elapsed();
        assert!(after >= TIMEOUT && after <= TIMEOUT * 9 / 8, "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_between_the_timeout_and_an_eighth_more() {
        let opened = Instant::now();
        let conn = pin!(HeadTimeout::new(Open(true), TIMEOUT, WriteNow::default()));
        closes_in_time(conn, opened).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_holds_the_connection_open_and_its_answer_starts_the_clock() {
        let write_now = WriteNow::default();
        let mut conn = pin!(HeadTimeout::new(Open(true), TIMEOUT, write_now.clone()));
        let serving = write_now.begin();
        // A stream ten timeouts long: the connection stays.
        let waited = tokio::time::timeout(TIMEOUT * 10, conn.as_mut()).await;
        assert!(waited.is_err(), "closed with a request in flight");
        // The connection is polled as the answer ends (hyper writes it).
        drop(serving);
        let answered = Instant::now();
        poll_fn(|cx| {
            let _ = conn.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        closes_in_time(conn, answered).await;
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_keep_coming_keep_the_connection_and_each_restarts_the_clock() {
        let write_now = WriteNow::default();
        let mut conn = pin!(HeadTimeout::new(Open(true), TIMEOUT, write_now.clone()));
        // A short request every 0.9 timeout, each begun and answered between two ticks.
        for _ in 0..20 {
            let waited = tokio::time::timeout(TIMEOUT * 9 / 10, conn.as_mut()).await;
            assert!(waited.is_err(), "closed while requests kept coming");
            drop(write_now.begin());
        }
        let last = Instant::now();
        closes_in_time(conn, last).await;
    }

    /// The state the timer is in after one poll.
    async fn after_one_poll(conn: &mut Pin<&mut HeadTimeout<Open>>) -> Timer {
        poll_fn(|cx| {
            let _ = conn.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        *conn.as_mut().project().timer
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_came_with_the_connection_arms_no_timer_until_it_is_answered() {
        let write_now = WriteNow::default();
        let mut conn = pin!(HeadTimeout::new(Open(true), TIMEOUT, write_now.clone()));
        let serving = write_now.begin();
        assert!(after_one_poll(&mut conn).await == Timer::Resting);
        drop(serving);
        assert!(after_one_poll(&mut conn).await == Timer::Ticking);
        // A connection that sent nothing is timed from its first poll.
        let mut idle = pin!(HeadTimeout::new(Open(true), TIMEOUT, WriteNow::default()));
        assert!(after_one_poll(&mut idle).await == Timer::Ticking);
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_ends_by_itself_first() {
        let ended = HeadTimeout::new(Open(false), TIMEOUT, WriteNow::default());
        assert!(matches!(ended.await, Ok(())));
    }
}
