//! A client connection whose writes wait one turn of the scheduler, so that what other tasks
//! already have ready for it goes out in the same write.
//!
//! hyper writes as soon as a response body has nothing more ready. An upstream usually sends a
//! short streamed answer whole: its last chunk and the end of its body arrive together. But the
//! end reaches the response body one task switch later, when the upstream connection's task
//! has decoded it. Written at once, the chunks go out in one write and the end in a second:
//! a second send through the kernel's loopback path and a second wake-up of the client, both
//! paid on the proxy's core. With one write, a 20-chunk stream costs 25.8 µs of CPU instead of
//! 30.4 (38.2k instead of 32.7k requests/s at 16 connections, proxy pinned to one core), a
//! 200-chunk one 46.5 instead of 58.2.
//!
//! The response body tells the writer when waiting is pointless, through [`WriteNow`]: when it
//! has ended (a whole non-streamed answer is written at once, without the extra turn), when it
//! has failed, and when it has nothing ready and reads its own socket (an answer on one of
//! tokentap's own HTTP/1.1 upstream connections, see [`WriterHints`]): then nothing comes
//! within a turn, as no other task feeds it, and a paced stream's chunk leaves at once. hyper drops a connection, with the bytes it still holds, as soon as a
//! body fails: the failure is held back one poll so those bytes go out first.
//!
//! A write that has waited its turn is made at once, also when hyper retries it after a
//! partial write or a full socket: only the first attempt of each write waits.
//!
//! A body may also leave work for after the write of the frame it just gave
//! ([`WriterHints::after_write`]): the meter's end of a whole JSON answer, whose parse would
//! otherwise sit between the upstream's last byte and the client's. The writer runs it once the
//! write is made (or found no room), and what no write took runs when the connection ends.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use parking_lot::Mutex;

use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::head_timeout::Requests;
use super::woken::WakeGate;
use crate::wire::lines::HeadLines;

/// Work a response body leaves for after its connection's next write. A trait object rather
/// than a closure: a body can hand over its own allocation as the work (`proxy::ProxyBody`
/// does), where a closure holding what the work needs was an allocation of its own.
pub type AfterWrite = Box<dyn AfterWork + Send>;

/// Work left for after a write, run once.
pub trait AfterWork {
    fn run(self: Box<Self>);
}

impl<F: FnOnce()> AfterWork for F {
    fn run(self: Box<Self>) {
        (*self)();
    }
}

/// What a response body tells its connection's writer.
pub trait WriterHints {
    /// Pending, the body has nothing more until new bytes reach a socket it reads itself: no
    /// other task is about to hand it anything, so the writer has nothing to wait a turn for.
    fn idle_when_pending(&self) -> bool {
        false
    }

    /// Work to run once the frame just polled has been written: bookkeeping that needs not
    /// hold the client's bytes back (the meter's end of a whole JSON answer, a parse of it).
    fn after_write(&mut self) -> Option<AfterWrite> {
        None
    }

    /// Header lines of the answer that its header map leaves out, as they came from upstream
    /// (an answer passed through: see `wire::lines`). The writer writes them after the map's.
    /// Only the first call has them.
    fn head_lines(&mut self) -> Option<HeadLines> {
        None
    }
}

/// Shared by a connection's writer and its response bodies: set when the bytes hyper holds
/// should be written without waiting for more, and holding the work left for after a write.
#[derive(Clone, Default)]
pub struct WriteNow(Arc<Signals>);

#[derive(Default)]
struct Signals {
    now: AtomicBool,
    /// Whether `after_write` holds anything, read without its lock on every write.
    pending: AtomicBool,
    after_write: Mutex<Vec<AfterWrite>>,
    /// Begun and answered, for the connection's head timeout.
    requests: Requests,
}

impl Drop for Signals {
    /// The connection ended before the write they waited for: the work still runs.
    fn drop(&mut self) {
        let work = std::mem::take(self.after_write.get_mut());
        if std::thread::panicking() {
            // Dropped unrun: what the work held records itself (an in-flight request's handle
            // writes its record when dropped), without running code that may have panicked.
            return;
        }
        work.into_iter().for_each(AfterWork::run);
    }
}

impl WriteNow {
    fn set(&self) {
        // Relaxed: only a hint. Missed or stale, it costs or saves one turn, never a byte.
        self.0.now.store(true, Ordering::Relaxed);
    }

    fn take(&self) -> bool {
        self.0.now.load(Ordering::Relaxed) && self.0.now.swap(false, Ordering::Relaxed)
    }

    fn defer(&self, work: AfterWrite) {
        self.0.after_write.lock().push(work);
        self.0.pending.store(true, Ordering::Release);
    }

    /// Runs the work left for after a write, in the order it was left.
    fn run_after_write(&self) {
        if !self.0.pending.load(Ordering::Acquire) {
            return;
        }
        self.0.pending.store(false, Ordering::Relaxed);
        let mut work = std::mem::take(&mut *self.0.after_write.lock());
        work.drain(..).for_each(AfterWork::run);
        // The list goes back, emptied, for the connection's next answer: one allocation a
        // connection instead of one a request. Work left meanwhile (by the work just run) keeps
        // its own list.
        let mut list = self.0.after_write.lock();
        if list.capacity() == 0 {
            *list = work;
        }
    }

    /// A request this connection has begun to serve: counted as answered when its response
    /// body is dropped (or the request is, unanswered).
    pub fn begin(&self) -> Serving {
        self.0.requests.begin();
        Serving(self.clone())
    }

    /// The requests this connection has begun and answered.
    pub fn requests(&self) -> &Requests {
        &self.0.requests
    }
}

/// A request in flight on a connection; see [`WriteNow::begin`].
pub struct Serving(WriteNow);

impl Serving {
    /// A response whose body tells this connection's writer when to write at once.
    pub fn response<B: hyper::body::Body + WriterHints>(
        self,
        response: hyper::Response<B>,
    ) -> hyper::Response<Body<B>> {
        if response.body().is_end_stream() {
            // hyper writes the head alone, without polling the body.
            self.0.set();
        }
        response.map(|body| Body {
            inner: body,
            gate: WakeGate::default(),
            serving: self,
            failure: None,
        })
    }
}

impl std::ops::Deref for Serving {
    type Target = WriteNow;

    fn deref(&self) -> &WriteNow {
        &self.0
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.0.requests.answer();
    }
}

pub struct Coalesced<T> {
    io: T,
    /// This write has waited its turn (or needs not): make it now.
    waited: bool,
    write_now: WriteNow,
}

impl<T> Coalesced<T> {
    pub fn new(io: T, write_now: WriteNow) -> Coalesced<T> {
        Coalesced {
            io,
            waited: false,
            write_now,
        }
    }

    /// `Pending` the first time a write is attempted, with the task woken again: it runs
    /// after the tasks already woken, which is when the upstream's end of body has arrived.
    fn wait_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Taken on every write, so that it never outlives the response that gave it.
        let write_now = self.write_now.take();
        if !self.waited && !write_now {
            self.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.waited = true;
        Poll::Ready(())
    }

    /// After a write: the next one waits its turn only if this one took all it was given.
    fn written(&mut self, result: io::Result<usize>, offered: usize) -> io::Result<usize> {
        if !matches!(result, Ok(n) if n < offered) {
            self.waited = false;
        }
        result
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.wait_turn(cx));
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.write_now.run_after_write();
        Poll::Ready(this.written(ready!(result), buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.wait_turn(cx));
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        // The bytes are with the kernel (or it had no room: they wait for the client, and the
        // work need not wait with them).
        this.write_now.run_after_write();
        let offered = bufs.iter().map(|buf| buf.len()).sum();
        Poll::Ready(this.written(ready!(result), offered))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A response body that sets its connection's [`WriteNow`] when it ends or fails.
pub struct Body<B: hyper::body::Body> {
    inner: B,
    gate: WakeGate,
    serving: Serving,
    /// A failure held back for one poll, while hyper writes what it holds.
    failure: Option<B::Error>,
}

/// What the body tells, it tells through its wrapper.
impl<B: hyper::body::Body + WriterHints> WriterHints for Body<B> {
    fn idle_when_pending(&self) -> bool {
        self.inner.idle_when_pending()
    }

    fn after_write(&mut self) -> Option<AfterWrite> {
        self.inner.after_write()
    }

    fn head_lines(&mut self) -> Option<HeadLines> {
        self.inner.head_lines()
    }
}

impl<B: hyper::body::Body + WriterHints + Unpin> hyper::body::Body for Body<B>
where
    B::Error: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        if let Some(failure) = this.failure.take() {
            return Poll::Ready(Some(Err(failure)));
        }
        let inner = &mut this.inner;
        let Poll::Ready(frame) = this.gate.poll(cx, |cx| Pin::new(inner).poll_frame(cx)) else {
            if this.inner.idle_when_pending() {
                this.serving.set();
            }
            return Poll::Pending;
        };
        if let Some(work) = this.inner.after_write() {
            this.serving.defer(work);
        }
        match frame {
            Some(Err(failure)) => {
                this.failure = Some(failure);
                this.serving.set();
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Ok(frame)) => {
                if this.inner.is_end_stream() {
                    this.serving.set();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                this.serving.set();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failure.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;

    /// A socket that takes at most `room` bytes per write, or none (`Pending`) when `room` is 0.
    #[derive(Default)]
    struct Socket {
        room: usize,
        writes: Vec<Vec<u8>>,
    }

    impl AsyncRead for Socket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.room == 0 {
                return Poll::Pending;
            }
            let n = buf.len().min(this.room);
            this.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write(io: &mut Coalesced<Socket>, waker: &Waker, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(io).poll_write(&mut Context::from_waker(waker), bytes)
    }

    /// A writer over a socket that takes up to `room` bytes per write.
    fn writer(room: usize, write_now: WriteNow) -> Coalesced<Socket> {
        Coalesced::new(
            Socket {
                room,
                ..Socket::default()
            },
            write_now,
        )
    }

    fn context() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        (wakes.clone(), Waker::from(wakes))
    }

    #[test]
    fn a_write_waits_one_turn_and_wakes_its_task_for_it() {
        let (wakes, waker) = context();
        let mut io = writer(100, WriteNow::default());
        assert!(write(&mut io, &waker, b"head and chunks").is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(io.io.writes.is_empty());
        assert!(matches!(
            write(&mut io, &waker, b"head and chunks"),
            Poll::Ready(Ok(15))
        ));
        assert_eq!(io.io.writes, [b"head and chunks".to_vec()]);
        // The next write waits its own turn.
        assert!(write(&mut io, &waker, b"more").is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_rest_of_a_partial_write_goes_out_without_waiting_again() {
        let (wakes, waker) = context();
        let mut io = writer(4, WriteNow::default());
        assert!(write(&mut io, &waker, b"abcdef").is_pending());
        assert!(matches!(
            write(&mut io, &waker, b"abcdef"),
            Poll::Ready(Ok(4))
        ));
        assert!(matches!(write(&mut io, &waker, b"ef"), Poll::Ready(Ok(2))));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(write(&mut io, &waker, b"next").is_pending());
    }

    #[test]
    fn a_write_the_socket_was_not_ready_for_is_retried_without_waiting_again() {
        let (wakes, waker) = context();
        let mut io = writer(0, WriteNow::default());
        assert!(write(&mut io, &waker, b"abc").is_pending());
        assert!(write(&mut io, &waker, b"abc").is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        io.io.room = 100;
        assert!(matches!(write(&mut io, &waker, b"abc"), Poll::Ready(Ok(3))));
    }

    #[test]
    fn vectored_writes_wait_their_turn_too() {
        let (wakes, waker) = context();
        let mut io = writer(100, WriteNow::default());
        let bufs = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")];
        let mut cx = Context::from_waker(&waker);
        assert!(
            Pin::new(&mut io)
                .poll_write_vectored(&mut cx, &bufs)
                .is_pending()
        );
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        // The default vectored write takes the first buffer: a partial write of the two.
        assert!(matches!(
            Pin::new(&mut io).poll_write_vectored(&mut cx, &bufs),
            Poll::Ready(Ok(2))
        ));
        let rest = [io::IoSlice::new(b"cd")];
        assert!(matches!(
            Pin::new(&mut io).poll_write_vectored(&mut cx, &rest),
            Poll::Ready(Ok(2))
        ));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }

    /// A body that gives `frames` one by one, then fails if `fails`, else ends; or, with
    /// `pending`, then has nothing more for ever, saying whether it reads its own socket. At
    /// its end it leaves `work` for after the write.
    #[derive(Default)]
    struct Scripted {
        frames: Vec<&'static [u8]>,
        fails: bool,
        pending: Option<bool>,
        work: Option<AfterWrite>,
    }

    impl hyper::body::Body for Scripted {
        type Data = bytes::Bytes;
        type Error = io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<bytes::Bytes>, io::Error>>> {
            let this = self.get_mut();
            if !this.frames.is_empty() {
                let data = bytes::Bytes::from_static(this.frames.remove(0));
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if std::mem::take(&mut this.fails) {
                return Poll::Ready(Some(Err(io::Error::other("upstream reset"))));
            }
            if this.pending.is_some() {
                return Poll::Pending;
            }
            Poll::Ready(None)
        }
    }

    impl WriterHints for Scripted {
        fn idle_when_pending(&self) -> bool {
            self.pending == Some(true)
        }

        fn after_write(&mut self) -> Option<AfterWrite> {
            if self.frames.is_empty() {
                self.work.take()
            } else {
                None
            }
        }
    }

    impl WriterHints for http_body_util::Full<bytes::Bytes> {}
    impl WriterHints for http_body_util::Empty<bytes::Bytes> {}

    #[test]
    fn a_body_waiting_on_its_own_socket_has_its_write_made_at_once() {
        use hyper::body::Body as _;
        let (_wakes, waker) = context();
        for idle in [true, false] {
            let write_now = WriteNow::default();
            let waiting = Scripted {
                pending: Some(idle),
                ..Scripted::default()
            };
            let mut body = write_now
                .begin()
                .response(hyper::Response::new(waiting))
                .into_body();
            let polled = Pin::new(&mut body).poll_frame(&mut Context::from_waker(&waker));
            assert!(polled.is_pending());
            let mut io = writer(100, write_now);
            // Fed by another task, it might have more within a turn: that write waits.
            assert_eq!(write(&mut io, &waker, b"chunk").is_ready(), idle, "{idle}");
        }
    }

    fn frame(
        body: &mut Body<Scripted>,
        waker: &Waker,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, io::Error>>> {
        use hyper::body::Body as _;
        Pin::new(body).poll_frame(&mut Context::from_waker(waker))
    }

    fn scripted(frames: Vec<&'static [u8]>, fails: bool) -> (WriteNow, Body<Scripted>) {
        let write_now = WriteNow::default();
        let body = Scripted {
            frames,
            fails,
            ..Scripted::default()
        };
        let response = write_now.begin().response(hyper::Response::new(body));
        (write_now, response.into_body())
    }

    #[test]
    fn a_failing_body_has_the_bytes_before_it_written_before_it_fails() {
        let (wakes, waker) = context();
        let (write_now, mut body) = scripted(vec![b"chunk"], true);
        assert!(matches!(frame(&mut body, &waker), Poll::Ready(Some(Ok(_)))));
        assert!(!write_now.take());
        // The failure is held back one poll, the task woken, and the writer told to write now.
        assert!(frame(&mut body, &waker).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        let mut io = writer(100, write_now.clone());
        assert!(matches!(
            write(&mut io, &waker, b"chunk"),
            Poll::Ready(Ok(5))
        ));
        assert!(matches!(
            frame(&mut body, &waker),
            Poll::Ready(Some(Err(_)))
        ));
    }

    #[test]
    fn an_ended_body_has_its_last_write_made_at_once() {
        let (_wakes, waker) = context();
        let (write_now, mut body) = scripted(vec![b"a", b"b"], false);
        assert!(matches!(frame(&mut body, &waker), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(frame(&mut body, &waker), Poll::Ready(Some(Ok(_)))));
        assert!(!write_now.take());
        assert!(matches!(frame(&mut body, &waker), Poll::Ready(None)));
        let mut io = writer(100, write_now);
        assert!(matches!(write(&mut io, &waker, b"ab"), Poll::Ready(Ok(2))));
        // The signal is spent: the next response's first write waits its turn again.
        assert!(write(&mut io, &waker, b"next").is_pending());
    }

    #[test]
    fn a_whole_body_and_an_empty_one_are_written_at_once() {
        use hyper::body::Body as _;
        let (_wakes, waker) = context();
        let write_now = WriteNow::default();
        let whole = http_body_util::Full::new(bytes::Bytes::from_static(b"{}"));
        let mut body = write_now
            .begin()
            .response(hyper::Response::new(whole))
            .into_body();
        assert!(!write_now.take());
        let polled = Pin::new(&mut body).poll_frame(&mut Context::from_waker(&waker));
        assert!(matches!(polled, Poll::Ready(Some(Ok(_)))));
        assert!(write_now.take(), "the last frame of a sized body ends it");
        let empty = http_body_util::Empty::<bytes::Bytes>::new();
        let _ = write_now.begin().response(hyper::Response::new(empty));
        assert!(
            write_now.take(),
            "hyper writes an empty body's head without polling it"
        );
    }

    #[test]
    fn the_signal_of_a_body_that_ended_while_its_write_waited_is_spent_by_that_write() {
        let (_wakes, waker) = context();
        let write_now = WriteNow::default();
        let mut io = writer(100, write_now.clone());
        assert!(write(&mut io, &waker, b"head, chunks").is_pending());
        write_now.set();
        assert!(matches!(
            write(&mut io, &waker, b"head, chunks, end"),
            Poll::Ready(Ok(17))
        ));
        // Left set, it would let the next response's first write go before its end arrives.
        assert!(write(&mut io, &waker, b"next head").is_pending());
    }

    /// One frame, then the end, leaving work for after the write that counts when it runs.
    fn leaving(ran: &Arc<AtomicUsize>) -> Scripted {
        let ran = ran.clone();
        Scripted {
            frames: vec![b"answer"],
            work: Some(Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            })),
            ..Scripted::default()
        }
    }

    #[test]
    fn work_a_body_leaves_runs_after_the_write_of_its_frame() {
        use hyper::body::Body as _;
        let (_wakes, waker) = context();
        let ran = Arc::new(AtomicUsize::new(0));
        let write_now = WriteNow::default();
        let mut body = write_now
            .begin()
            .response(hyper::Response::new(leaving(&ran)))
            .into_body();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "not before the write");
        let mut io = writer(100, write_now.clone());
        // The body ended: its write is made at once, and the work runs right after it.
        assert!(matches!(
            write(&mut io, &waker, b"answer"),
            Poll::Ready(Ok(6))
        ));
        assert_eq!(io.io.writes.len(), 1);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert!(write(&mut io, &waker, b"next").is_pending());
        assert_eq!(ran.load(Ordering::SeqCst), 1, "once");
    }

    #[test]
    fn work_left_for_a_write_that_never_comes_runs_when_the_connection_ends() {
        use hyper::body::Body as _;
        let (_wakes, waker) = context();
        let ran = Arc::new(AtomicUsize::new(0));
        let write_now = WriteNow::default();
        let io = writer(0, write_now.clone());
        let mut body = write_now
            .begin()
            .response(hyper::Response::new(leaving(&ran)))
            .into_body();
        let mut cx = Context::from_waker(&waker);
        while let Poll::Ready(Some(_)) = Pin::new(&mut body).poll_frame(&mut cx) {}
        drop((body, write_now));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the writer still holds it");
        drop(io);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
