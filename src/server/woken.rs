//! A gate in front of something polled again and again (a response body, a read of the
//! client's socket) that answers `Pending` for it when nothing has woken it since it last
//! answered `Pending`.
//!
//! hyper 1.12's HTTP/1 write loop polls a response body a second time in every turn in which
//! the body had nothing and the flush went through (`Dispatcher::poll_loop`: "re-check whether
//! a second write poll can make progress"), and reads the client's socket in every turn, also
//! while it only writes a stream's chunks. A streamed answer has nothing most turns: a paced
//! stream's body was asked twice for each chunk in vain, and each ask went all the way down to
//! its upstream socket's readiness, under that socket's lock (about 18 of 21 turns of a
//! 20-chunk stream, callgrind); the client's socket was asked in all 21.
//!
//! Once what the gate guards has been pending, it is polled with a waker of the gate's own,
//! which notes the wake and passes it on to the task's. Until that waker is woken, the answer
//! can only be `Pending` again. What never waits (a whole answer) never arms the gate, and
//! allocates nothing for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

#[derive(Default)]
pub struct WakeGate {
    armed: Option<Armed>,
    /// The body's last answer was `Pending`.
    pending: bool,
}

struct Armed {
    shared: Arc<Shared>,
    /// Wakes `shared`: what the body registers wherever it waits.
    waker: Waker,
}

struct Shared {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Noted before the task is woken, so its poll sees it.
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl WakeGate {
    /// `poll`, unless its last answer was `Pending` and nothing it waits on has woken it since.
    pub fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let answer = match &self.armed {
            None => poll(cx),
            Some(armed) => {
                // The task polling now is the one to wake, whichever it is.
                armed.shared.task.register(cx.waker());
                let woken = armed.shared.woken.swap(false, Ordering::AcqRel);
                if self.pending && !woken {
                    return Poll::Pending;
                }
                poll(&mut Context::from_waker(&armed.waker))
            }
        };
        self.pending = answer.is_pending();
        if self.pending && self.armed.is_none() {
            // What the body waits on holds the task's own waker: the next poll must reach the
            // body, so that it waits with the gate's instead.
            let shared = Arc::new(Shared {
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            });
            let waker = Waker::from(Arc::clone(&shared));
            self.armed = Some(Armed { shared, waker });
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    /// A body stand-in: counts its polls, answers `Pending` until told it is ready, and keeps
    /// the waker it was last polled with, as a socket's registration would.
    #[derive(Default)]
    struct Source {
        polls: usize,
        ready: bool,
        registered: Option<Waker>,
    }

    impl Source {
        fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            if self.ready {
                return Poll::Ready(());
            }
            self.registered = Some(cx.waker().clone());
            Poll::Pending
        }

        /// Ready, and wakes whoever registered.
        fn fire(&mut self) {
            self.ready = true;
            if let Some(waker) = self.registered.take() {
                waker.wake();
            }
        }
    }

    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn task() -> (Arc<Task>, Waker) {
        let task = Arc::new(Task::default());
        let waker = Waker::from(Arc::clone(&task));
        (task, waker)
    }

    #[test]
    fn a_body_that_answers_at_once_arms_nothing() {
        let (_, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let mut gate = WakeGate::default();
        let mut source = Source {
            ready: true,
            ..Source::default()
        };
        for _ in 0..3 {
            assert!(gate.poll(&mut cx, |cx| source.poll(cx)).is_ready());
        }
        assert_eq!(source.polls, 3);
        assert!(gate.armed.is_none());
    }

    #[test]
    fn a_pending_body_is_asked_again_only_once_woken() {
        let (task, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let mut gate = WakeGate::default();
        let mut source = Source::default();
        assert!(gate.poll(&mut cx, |cx| source.poll(cx)).is_pending());
        // The second ask reaches the body, which now waits with the gate's waker.
        assert!(gate.poll(&mut cx, |cx| source.poll(cx)).is_pending());
        assert_eq!(source.polls, 2);
        for _ in 0..5 {
            assert!(gate.poll(&mut cx, |cx| source.poll(cx)).is_pending());
        }
        assert_eq!(source.polls, 2, "nothing woke it: not asked");
        source.fire();
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "the wake reached the task"
        );
        assert!(gate.poll(&mut cx, |cx| source.poll(cx)).is_ready());
        assert_eq!(source.polls, 3);
        // Ready answers are never held back.
        assert!(gate.poll(&mut cx, |cx| source.poll(cx)).is_ready());
        assert_eq!(source.polls, 4);
    }

    #[test]
    fn the_task_that_polled_last_is_the_one_woken() {
        let (first, first_waker) = task();
        let (second, second_waker) = task();
        let mut gate = WakeGate::default();
        let mut source = Source::default();
        for _ in 0..2 {
            let mut cx = Context::from_waker(&first_waker);
            assert!(gate.poll(&mut cx, |cx| source.poll(cx)).is_pending());
        }
        let mut cx = Context::from_waker(&second_waker);
        assert!(gate.poll(&mut cx, |cx| source.poll(cx)).is_pending());
        source.fire();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_wake_during_the_poll_is_not_lost() {
        let mut gate = WakeGate::default();
        let mut polls = 0;
        // The body wakes itself as it answers `Pending`, as a timer already due would; only a
        // wake that reaches the task gets it polled again.
        let answer = poll_fn(|cx| {
            gate.poll(cx, |cx| {
                polls += 1;
                if polls < 4 {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(polls)
            })
        });
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), answer).await;
        assert_eq!(answer.ok(), Some(4));
    }
}
