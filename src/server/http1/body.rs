//! A request's body as the handler reads it, and the connection's side that feeds it.
//!
//! A short request's body usually comes in the same read as its head: then the body is that
//! piece of the read buffer, handed over whole, with no channel and no wake-up between the
//! connection and the handler. A body still on its way is fed through a one-slot channel by the
//! connection, which reads the socket while it polls the handler (hyper's way for every body).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::wire::lines::HeadLines;
use crate::wire::{BadChunk, Chunked, decode_chunked};

/// Why a request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client closed the connection before the request body's end")]
    Closed,
    #[error("the request body has an invalid chunk")]
    Chunk,
    #[error("cannot read the request body")]
    Read(#[source] io::Error),
}

impl From<BadChunk> for BodyError {
    fn from(_: BadChunk) -> BodyError {
        BodyError::Chunk
    }
}

type Piece = Result<Bytes, BodyError>;

/// A request's body on a client's HTTP/1.1 connection, and the request's header lines when the
/// connection keeps them as they came.
#[derive(Debug)]
pub struct RequestBody(Kind, Option<HeadLines>);

#[derive(Debug)]
enum Kind {
    /// All of it, until taken.
    Whole(Option<Bytes>),
    Fed {
        pieces: mpsc::Receiver<Piece>,
        /// Bytes still to come, when the length is known.
        left: Option<u64>,
        ended: bool,
    },
}

impl RequestBody {
    /// Carrying the request's header lines (see `Connection::with_head_lines`).
    pub fn with_head_lines(mut self, lines: Option<HeadLines>) -> RequestBody {
        self.1 = lines;
        self
    }

    /// The request's header lines, if its connection kept them: only the first call has them.
    pub fn take_head_lines(&mut self) -> Option<HeadLines> {
        self.1.take()
    }

    pub fn empty() -> RequestBody {
        RequestBody(Kind::Whole(None), None)
    }

    pub fn whole(bytes: Bytes) -> RequestBody {
        RequestBody(Kind::Whole((!bytes.is_empty()).then_some(bytes)), None)
    }

    /// A body the returned [`Feed`] fills as the connection reads it; `length` when known.
    pub fn fed(length: Option<u64>, framing: Framing) -> (RequestBody, Feed) {
        let (sender, pieces) = mpsc::channel(1);
        let body = RequestBody(
            Kind::Fed {
                pieces,
                left: length,
                ended: false,
            },
            None,
        );
        let feed = Feed {
            pieces: PollSender::new(sender),
            framing,
        };
        (body, feed)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().0 {
            Kind::Whole(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Kind::Fed { ended: true, .. } => Poll::Ready(None),
            Kind::Fed {
                pieces,
                left,
                ended,
            } => match ready!(pieces.poll_recv(cx)) {
                Some(Ok(bytes)) => {
                    if let Some(left) = left {
                        *left = left.saturating_sub(bytes.len() as u64);
                        *ended = *left == 0;
                    }
                    Poll::Ready(Some(Ok(Frame::data(bytes))))
                }
                Some(Err(err)) => {
                    *ended = true;
                    Poll::Ready(Some(Err(err)))
                }
                None => {
                    *ended = true;
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Whole(bytes) => bytes.is_none(),
            Kind::Fed { ended, left, .. } => *ended || *left == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Kind::Fed { left: Some(n), .. } => SizeHint::with_exact(*n),
            Kind::Fed { .. } => SizeHint::default(),
        }
    }
}

/// How much of a fed body is still to read off the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked(Chunked),
}

/// How a [`Feed`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// The body was read to its end: the connection may read the next request.
    Whole,
    /// The handler dropped the body before its end: the rest is unread, the connection closes
    /// after the answer.
    Abandoned,
    /// The client closed the connection, or sent a broken body: the handler has been told.
    Failed,
}

/// The connection's side of a fed body.
pub struct Feed {
    pieces: PollSender<Piece>,
    framing: Framing,
}

impl Feed {
    /// Moves the body from `buf`, and from `io` into `buf`, to the handler, a piece at a time
    /// as the handler takes them. `Pending` when waiting for either.
    pub fn poll<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut R,
        buf: &mut BytesMut,
        read_size: usize,
    ) -> Poll<Fed> {
        loop {
            if self.framing == Framing::Length(0) {
                return Poll::Ready(self.close());
            }
            if ready!(self.pieces.poll_reserve(cx)).is_err() {
                return Poll::Ready(Fed::Abandoned);
            }
            let piece = match &mut self.framing {
                Framing::Length(left) if !buf.is_empty() => {
                    let n = (*left).min(buf.len() as u64);
                    *left -= n;
                    Some(Ok(buf.split_to(n as usize).freeze()))
                }
                Framing::Length(_) => None,
                Framing::Chunked(state) => match decode_chunked(state, buf) {
                    Ok((data, ended)) => {
                        if ended {
                            self.framing = Framing::Length(0);
                        }
                        data.map(Ok)
                    }
                    Err(err) => Some(Err(err.into())),
                },
            };
            match piece {
                Some(Ok(data)) => {
                    // A send after a reserved slot only fails when the handler has dropped
                    // the body meanwhile; the next reserve says so.
                    let _ = self.pieces.send_item(Ok(data));
                    continue;
                }
                Some(Err(err)) => return Poll::Ready(self.fail(err)),
                None if self.framing == Framing::Length(0) => continue,
                None => {}
            }
            if buf.capacity() - buf.len() < read_size / 2 {
                buf.reserve(read_size);
            }
            match ready!(tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)) {
                Ok(0) => return Poll::Ready(self.fail(BodyError::Closed)),
                Ok(_) => {}
                Err(err) => return Poll::Ready(self.fail(BodyError::Read(err))),
            }
        }
    }

    fn close(&mut self) -> Fed {
        // A slot reserved and not used holds the channel open: the body would wait for more.
        self.pieces.abort_send();
        self.pieces.close();
        Fed::Whole
    }

    /// Hands the error to the handler, in the slot reserved for the next piece.
    fn fail(&mut self, err: BodyError) -> Fed {
        let _ = self.pieces.send_item(Err(err));
        self.pieces.close();
        Fed::Failed
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Feeds `raw` (and then `rest` through a socket) to a body, reading it on the same task.
    async fn feed(
        framing: Framing,
        length: Option<u64>,
        raw: &[u8],
        rest: &[u8],
        close: bool,
    ) -> (Result<Bytes, BodyError>, Fed, BytesMut) {
        let (mut client, mut server) = tokio::io::duplex(64);
        let (body, mut feed) = RequestBody::fed(length, framing);
        let mut buf = BytesMut::from(raw);
        let rest = rest.to_vec();
        let writer = tokio::spawn(async move {
            client.write_all(&rest).await.unwrap();
            if close {
                drop(client);
            } else {
                std::future::pending::<()>().await;
            }
        });
        let mut fed = None;
        let mut collect = std::pin::pin!(body.collect());
        let read = poll_fn(|cx| {
            if fed.is_none() {
                if let Poll::Ready(end) = feed.poll(cx, &mut server, &mut buf, 16) {
                    fed = Some(end);
                }
            }
            collect.as_mut().poll(cx)
        })
        .await;
        writer.abort();
        (read.map(|c| c.to_bytes()), fed.unwrap(), buf)
    }

    #[tokio::test]
    async fn a_body_of_known_length_is_fed_and_what_follows_stays_in_the_buffer() {
        let (read, fed, buf) = feed(
            Framing::Length(11),
            Some(11),
            b"hel",
            b"lo worldGET /",
            false,
        )
        .await;
        assert_eq!(read.unwrap(), "hello world");
        assert_eq!(fed, Fed::Whole);
        assert_eq!(&buf[..], b"GET /");
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_as_it_comes() {
        let (read, fed, buf) = feed(
            Framing::Chunked(Chunked::Size),
            None,
            b"5\r\nhel",
            b"lo\r\n6\r\n world\r\n0\r\n\r\nnext",
            false,
        )
        .await;
        assert_eq!(read.unwrap(), "hello world");
        assert_eq!(fed, Fed::Whole);
        assert_eq!(&buf[..], b"next");
    }

    #[tokio::test]
    async fn a_client_that_leaves_or_breaks_the_coding_fails_the_body() {
        let (read, fed, _) = feed(Framing::Length(11), Some(11), b"hel", b"lo", true).await;
        assert!(matches!(read, Err(BodyError::Closed)), "{read:?}");
        assert_eq!(fed, Fed::Failed);
        let (read, fed, _) = feed(
            Framing::Chunked(Chunked::Size),
            None,
            b"",
            b"5\r\nhelloXY",
            false,
        )
        .await;
        assert!(matches!(read, Err(BodyError::Chunk)), "{read:?}");
        assert_eq!(fed, Fed::Failed);
    }

    #[tokio::test]
    async fn a_dropped_body_abandons_the_feed() {
        let (body, mut feed) = RequestBody::fed(Some(5), Framing::Length(5));
        drop(body);
        let (_client, mut server) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let fed = poll_fn(|cx| feed.poll(cx, &mut server, &mut buf, 16)).await;
        assert_eq!(fed, Fed::Abandoned);
    }

    #[test]
    fn whole_bodies_say_their_size_and_end() {
        let body = RequestBody::whole(Bytes::from_static(b"abc"));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        let empty = RequestBody::empty();
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert!(empty.is_end_stream());
        assert!(RequestBody::whole(Bytes::new()).is_end_stream());
    }
}
