//! The open connections of one listener, and how they are told to finish: gracefully when the
//! server drains (a connection finishes its request in flight, then closes), or at once when
//! the drain timeout cuts them.
//!
//! A connection polls its own drain state with one atomic load. hyper-util's graceful watcher
//! and a cancellation token, polled with the connection, cost about 2.5k instructions of a
//! short request (callgrind: three polls of a `watch` receiver, a `Notify` each behind a mutex
//! that all connections share, and `select!`'s random order). Here a connection's waker is
//! registered once, under a lock taken when the connection opens and closes, never per poll.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::Notify;

const SERVING: u8 = 0;
const FINISHING: u8 = 1;
const CUT: u8 = 2;

/// Cheap to clone: every clone is the same set of connections.
#[derive(Clone, Default)]
pub struct Drain(Arc<Shared>);

#[derive(Default)]
struct Shared {
    state: AtomicU8,
    next_id: AtomicU64,
    /// The waker of every open connection, by id: the connection's task, woken to see a new
    /// state. Also the count of open connections.
    open: Mutex<HashMap<u64, Waker>>,
    all_closed: Notify,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, Waker>> {
        // A panic elsewhere while holding the map leaves it whole: keep using it.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection that can be told to finish its request in flight and then close.
pub trait Finish: Future<Output = Result<(), Self::Error>> {
    type Error;
    fn finish(self: Pin<&mut Self>);
}

impl<C: GracefulConnection> Finish for C {
    type Error = <C as GracefulConnection>::Error;

    fn finish(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// How a watched connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended<E> {
    /// It closed (`Ok`), or failed, by itself or after finishing gracefully.
    Closed(Result<(), E>),
    /// The drain timeout cut it.
    Cut,
}

impl Drain {
    /// `conn` as a future that also finishes it gracefully, or drops it, when told to.
    pub fn watch<C: Finish>(&self, conn: C) -> Watched<C> {
        Watched {
            conn,
            drain: self.clone(),
            id: self.0.next_id.fetch_add(1, Ordering::Relaxed),
            registered: None,
            seen: SERVING,
        }
    }

    /// Every open connection finishes its request in flight, then closes; idle ones close now.
    pub fn finish(&self) {
        self.set(FINISHING);
    }

    /// Every open connection is dropped where it stands.
    pub fn cut(&self) {
        self.set(CUT);
    }

    fn set(&self, state: u8) {
        self.0.state.fetch_max(state, Ordering::AcqRel);
        // Stored before the wakers are taken: a connection that registers after this sweep
        // takes the lock after it, and so reads the new state before its next poll.
        let wakers: Vec<Waker> = self.0.open().values().cloned().collect();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Resolves once no watched connection is open.
    pub async fn closed(&self) {
        loop {
            let notified = self.0.all_closed.notified();
            if self.0.open().is_empty() {
                return;
            }
            notified.await;
        }
    }

    #[cfg(test)]
    fn open_count(&self) -> usize {
        self.0.open().len()
    }
}

pin_project_lite::pin_project! {
    /// A connection under a [`Drain`].
    pub struct Watched<C> {
        #[pin]
        conn: C,
        drain: Drain,
        id: u64,
        // The waker this connection registered, kept to tell when its task's waker changes.
        registered: Option<Waker>,
        // The drain state this connection has acted on.
        seen: u8,
    }

    impl<C> PinnedDrop for Watched<C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.registered.is_some() {
                let shared = &this.drain.0;
                let mut open = shared.open();
                open.remove(this.id);
                if open.is_empty() {
                    shared.all_closed.notify_waiters();
                }
            }
        }
    }
}

impl<C: Finish> Future for Watched<C> {
    type Output = Ended<C::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            // The first poll (or a task whose waker changed): under the lock, then read the
            // state, so that no drain can come between unseen.
            let waker = cx.waker().clone();
            this.drain.0.open().insert(*this.id, waker.clone());
            *this.registered = Some(waker);
        }
        let state = this.drain.0.state.load(Ordering::Acquire);
        if state != *this.seen {
            *this.seen = state;
            match state {
                CUT => return Poll::Ready(Ended::Cut),
                _ => this.conn.as_mut().finish(),
            }
        }
        this.conn.poll(cx).map(Ended::Closed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A connection that stays open until finished, counting how often it was told to.
    #[derive(Default)]
    struct Conn {
        told: Arc<AtomicUsize>,
    }

    impl Future for Conn {
        type Output = Result<(), std::io::Error>;

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            if self.told.load(Ordering::SeqCst) > 0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    impl Finish for Conn {
        type Error = std::io::Error;

        fn finish(self: Pin<&mut Self>) {
            self.told.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn finishing_tells_every_open_connection_once_and_waits_for_them() {
        let drain = Drain::default();
        let told = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let conn = drain.watch(Conn { told: told.clone() });
                tokio::spawn(conn)
            })
            .collect();
        tokio::task::yield_now().await;
        while drain.open_count() < 3 {
            tokio::task::yield_now().await;
        }
        let closed = drain.closed();
        drain.finish();
        closed.await;
        for task in tasks {
            assert!(matches!(task.await.expect("task"), Ended::Closed(Ok(()))));
        }
        // Three connections, each told once.
        assert_eq!(told.load(Ordering::SeqCst), 3);
        assert_eq!(drain.open_count(), 0);
    }

    #[tokio::test]
    async fn a_connection_opened_after_the_drain_is_finished_at_its_first_poll() {
        let drain = Drain::default();
        drain.finish();
        let told = Arc::new(AtomicUsize::new(0));
        let ended = drain.watch(Conn { told: told.clone() }).await;
        assert!(matches!(ended, Ended::Closed(Ok(()))));
        assert_eq!(told.load(Ordering::SeqCst), 1);
        drain.closed().await;
    }

    #[tokio::test]
    async fn cutting_drops_connections_that_ignore_the_finish() {
        /// Never closes, whatever it is told.
        struct Stubborn;
        impl Future for Stubborn {
            type Output = Result<(), std::io::Error>;
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
                Poll::Pending
            }
        }
        impl Finish for Stubborn {
            type Error = std::io::Error;
            fn finish(self: Pin<&mut Self>) {}
        }
        let drain = Drain::default();
        let task = tokio::spawn(drain.watch(Stubborn));
        while drain.open_count() < 1 {
            tokio::task::yield_now().await;
        }
        drain.finish();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), drain.closed());
        assert!(waited.await.is_err(), "closed while a connection is open");
        drain.cut();
        assert!(matches!(task.await.expect("task"), Ended::Cut));
        drain.closed().await;
    }
}
