//! Telling HTTP/1.1 from h2c on a new connection: its first bytes are read, compared with the
//! HTTP/2 preface, and handed back to the connection (tokentap's HTTP/1.1, or hyper's h2c)
//! ahead of the rest of the stream.
//!
//! Read, not peeked: a socket with unread bytes stays readable, so waiting on a peek for the
//! rest of a preface that arrived in part would spin (or poll on a timer).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::woken::WakeGate;
use crate::tcp_send::poll_send;

/// What an h2c client sends first (RFC 9113 section 3.4). An HTTP/1.1 request line differs
/// from it within its first four bytes.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection whose first bytes were read to choose the protocol; reads return those bytes
/// first, then the socket's.
pub struct Sniffed {
    stream: TcpStream,
    prefix: [u8; H2_PREFACE.len()],
    /// `prefix[start..end]` is read from the socket but not yet by the connection.
    start: usize,
    end: usize,
    /// A connection reads the socket in every turn of its task, also while it only writes a
    /// stream's chunks (to see the client leave): once a read has found nothing, the next ones
    /// ask the socket only after it has woken the task. Each ask registers the task's waker
    /// with the socket, under a lock (about 150 instructions; 21 turns of a paced stream).
    gate: WakeGate,
}

impl Sniffed {
    /// Reads until the first bytes either differ from the h2c preface or are all of it, and
    /// says which (`true` for h2c). A connection that ends first counts as HTTP/1.1: that
    /// server then sees the end itself.
    pub async fn read(mut stream: TcpStream) -> io::Result<(Sniffed, bool)> {
        let mut prefix = [0u8; H2_PREFACE.len()];
        let mut end = 0;
        let h2c = loop {
            let n = stream.read(&mut prefix[end..]).await?;
            end += n;
            if n == 0 || prefix[..end] != H2_PREFACE[..end] {
                break false;
            }
            if end == H2_PREFACE.len() {
                break true;
            }
        };
        let sniffed = Sniffed {
            stream,
            prefix,
            start: 0,
            end,
            gate: WakeGate::default(),
        };
        Ok((sniffed, h2c))
    }
}

impl AsyncRead for Sniffed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start < this.end {
            let n = buf.remaining().min(this.end - this.start);
            buf.put_slice(&this.prefix[this.start..this.start + n]);
            this.start += n;
            if this.start == this.end && buf.remaining() > 0 {
                // The rest of what the client sent, in the same read: given the prefix alone, a
                // server finds the head incomplete and reads again, into a buffer grown for it
                // (hyper's: 16 KiB per connection, 4 KiB more RSS per stream). Pending or an
                // error here just ends this read at the prefix; the next one asks again.
                let _ = Pin::new(&mut this.stream).poll_read(cx, buf);
            }
            return Poll::Ready(Ok(()));
        }
        let stream = &mut this.stream;
        this.gate.poll(cx, |cx| Pin::new(stream).poll_read(cx, buf))
    }
}

impl AsyncWrite for Sniffed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_send(&self.stream, cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_send(&self.stream, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A connected pair: the client side (`None` once closed, after sending `pieces`), and the
    /// server side as `Sniffed::read` leaves it.
    async fn sniff(
        pieces: &[&[u8]],
        close: bool,
    ) -> (Option<TcpStream>, io::Result<(Sniffed, bool)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let sniffing = tokio::spawn(Sniffed::read(server));
        for piece in pieces {
            client.write_all(piece).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let client = (!close).then_some(client);
        (client, sniffing.await.unwrap())
    }

    async fn rest(sniffed: &mut Sniffed, client: Option<TcpStream>) -> Vec<u8> {
        drop(client);
        let mut all = Vec::new();
        sniffed.read_to_end(&mut all).await.unwrap();
        all
    }

    #[tokio::test]
    async fn an_http1_request_is_told_apart_and_read_back_whole() {
        // "P" alone could still open the preface; "PO" cannot.
        let (client, sniffed) = sniff(&[b"P", b"OST / HTTP/1.1\r\n\r\n"], false).await;
        let (mut sniffed, h2c) = sniffed.unwrap();
        assert!(!h2c);
        assert_eq!(rest(&mut sniffed, client).await, b"POST / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn the_first_read_brings_the_prefix_and_what_followed_it() {
        let request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n";
        let (_client, sniffed) = sniff(&[request], false).await;
        let (mut sniffed, _) = sniffed.unwrap();
        let mut buf = [0u8; 8192];
        let n = sniffed.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], request);
    }

    #[tokio::test]
    async fn the_h2c_preface_is_recognised_across_reads_and_read_back() {
        let (client, sniffed) =
            sniff(&[&H2_PREFACE[..5], &H2_PREFACE[5..], b"frames"], false).await;
        let (mut sniffed, h2c) = sniffed.unwrap();
        assert!(h2c);
        let mut expected = H2_PREFACE.to_vec();
        expected.extend_from_slice(b"frames");
        assert_eq!(rest(&mut sniffed, client).await, expected);
    }

    #[tokio::test]
    async fn a_connection_closed_early_is_handed_to_http1_with_what_it_sent() {
        let (client, sniffed) = sniff(&[b"PRI * HT"], true).await;
        let (mut sniffed, h2c) = sniffed.unwrap();
        assert!(!h2c);
        assert_eq!(rest(&mut sniffed, client).await, b"PRI * HT");
    }
}
