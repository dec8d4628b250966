//! Whole exchanges: a client writes raw bytes into one end of a socket pair, the connection
//! serves the other end with handlers written here, and the client reads what came back.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

type Answer = Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>;
type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

impl crate::server::WriterHints for TestBody {}

fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of `pieces`, of unknown length, that fails at its end when `fail`.
fn streamed(pieces: &[&'static str], fail: bool) -> TestBody {
    let mut frames: Vec<Result<http_body::Frame<Bytes>, BodyError>> = pieces
        .iter()
        .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p.as_bytes()))))
        .collect();
    if fail {
        frames.push(Err(BodyError::Closed));
    }
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

/// Echoes the method, the target, the body's size hint and the body.
fn echo(req: Request<RequestBody>) -> Answer {
    Box::pin(async move {
        let hint = req.body().size_hint().exact();
        let line = format!("{} {} {hint:?} ", req.method(), req.uri());
        match req.into_body().collect().await {
            Ok(body) => {
                let mut text = line.into_bytes();
                text.extend_from_slice(&body.to_bytes());
                Response::new(full(text))
            }
            Err(err) => {
                let mut response = Response::new(full(err.to_string()));
                *response.status_mut() = StatusCode::BAD_REQUEST;
                response
            }
        }
    })
}

/// Serves one side of a socket pair with `service`; the other side is the client's.
fn serve<S>(
    service: S,
) -> (
    DuplexStream,
    tokio::task::JoinHandle<Result<(), ConnectionError>>,
)
where
    S: FnMut(Request<RequestBody>) -> Answer + Send + Unpin + 'static,
{
    let (client, server) = tokio::io::duplex(64 * 1024);
    let conn = Connection::new(server, BytesMut::new(), service, 8192);
    (client, tokio::spawn(conn))
}

/// Reads until the connection ends.
async fn read_to_end(client: &mut DuplexStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut all))
        .await
        .expect("the connection ends")
        .unwrap();
    String::from_utf8(all).unwrap()
}

/// Reads until `text` has arrived, and returns all read.
async fn read_until(client: &mut DuplexStream, text: &str) -> String {
    let mut all = Vec::new();
    let mut piece = [0u8; 4096];
    while !String::from_utf8_lossy(&all).contains(text) {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut piece))
            .await
            .expect("more comes")
            .unwrap();
        assert!(
            n > 0,
            "ended before {text:?}: {}",
            String::from_utf8_lossy(&all)
        );
        all.extend_from_slice(&piece[..n]);
    }
    String::from_utf8(all).unwrap()
}

/// The answers in `text`, each without its `date` line.
fn without_dates(text: &str) -> String {
    text.split("\r\n")
        .filter(|line| !line.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (mut client, conn) = serve(echo);
    client
        .write_all(b"GET /a HTTP/1.1\r\nhost: t\r\n\r\nPOST /b HTTP/1.1\r\ncontent-length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_end(&mut client).await;
    assert_eq!(
        without_dates(&all),
        "HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\nGET /a Some(0) \
         HTTP/1.1 200 OK\r\ncontent-length: 21\r\n\r\nPOST /b Some(5) hello\
         HTTP/1.1 200 OK\r\ncontent-length: 15\r\nconnection: close\r\n\r\nGET /c Some(0) "
    );
    assert_eq!(all.matches("\r\ndate: ").count(), 3);
    assert!(conn.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_body_that_comes_later_is_fed_after_a_continue() {
    let (mut client, conn) = serve(echo);
    client
        .write_all(b"POST /v1/x HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 11\r\n\r\n")
        .await
        .unwrap();
    let interim = read_until(&mut client, "\r\n\r\n").await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    client.write_all(b"hello").await.unwrap();
    tokio::task::yield_now().await;
    client.write_all(b" world").await.unwrap();
    let answer = read_until(&mut client, "world").await;
    assert!(
        answer.ends_with("\r\n\r\nPOST /v1/x Some(11) hello world"),
        "{answer}"
    );
    // The connection takes the next request.
    client
        .write_all(b"POST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await
        .unwrap();
    let last = read_to_end(&mut client).await;
    assert!(last.ends_with("\r\n\r\nPOST /c None abc"), "{last}");
    assert!(conn.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_stream_is_chunked_for_http11_and_closed_for_http10() {
    let stream = |_| -> Answer {
        Box::pin(async { Response::new(streamed(&["data: 1\n\n", "", "data: [DONE]\n\n"], false)) })
    };
    let (mut client, _conn) = serve(stream);
    client.write_all(b"POST /s HTTP/1.1\r\n\r\n").await.unwrap();
    let answer = read_until(&mut client, "0\r\n\r\n").await;
    assert_eq!(
        without_dates(&answer),
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
    );
    let (mut client, conn) = serve(stream);
    client
        .write_all(b"POST /s HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_end(&mut client).await;
    assert_eq!(
        without_dates(&answer),
        "HTTP/1.0 200 OK\r\nconnection: close\r\n\r\ndata: 1\n\ndata: [DONE]\n\n"
    );
    assert!(conn.await.unwrap().is_ok());
}

#[tokio::test]
async fn answers_without_a_body_send_none() {
    let answer = |req: Request<RequestBody>| -> Answer {
        Box::pin(async move {
            let mut response = Response::new(full("twelve bytes"));
            if req.uri().path() == "/204" {
                *response.status_mut() = StatusCode::NO_CONTENT;
                *response.body_mut() = full("");
            }
            response
        })
    };
    let (mut client, conn) = serve(answer);
    client
        .write_all(b"HEAD /h HTTP/1.1\r\n\r\nGET /204 HTTP/1.1\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        without_dates(&read_to_end(&mut client).await),
        "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nHTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
    );
    assert!(conn.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_broken_or_oversized_head_is_answered_and_the_connection_closed() {
    for (raw, status, code) in [
        (
            &b"GET / HTTP/1.1\r\nbad header\r\n\r\n"[..],
            "400 Bad Request",
            "bad_request",
        ),
        (
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
            "400 Bad Request",
            "bad_request",
        ),
        (
            &[b"GET / HTTP/1.1\r\nx: ".as_slice(), &[b'a'; 9000]].concat(),
            "431 Request Header Fields Too Large",
            "request_headers_too_large",
        ),
        (
            b"GET / HTTP/2.0\r\n\r\n",
            "505 HTTP Version Not Supported",
            "http_version_not_supported",
        ),
    ] {
        let (mut client, conn) = serve(echo);
        client.write_all(raw).await.unwrap();
        let answer = read_to_end(&mut client).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{answer}"
        );
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{answer}");
        assert_eq!(error["error"]["code"], code, "{answer}");
        assert!(error["error"]["message"].is_string(), "{answer}");
        assert!(conn.await.unwrap().is_ok());
    }
}

#[tokio::test]
async fn a_client_that_leaves_drops_its_request() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let hang = move |_| -> Answer {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Flag(flag.clone());
        Box::pin(async move {
            let _flag = flag;
            std::future::pending().await
        })
    };
    let (mut client, conn) = serve(hang);
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    tokio::task::yield_now().await;
    drop(client);
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(ended, Err(ConnectionError::ClientGone)),
        "{ended:?}"
    );
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_body_that_fails_or_overruns_cuts_the_answer_short() {
    let failing = |_| -> Answer { Box::pin(async { Response::new(streamed(&["part"], true)) }) };
    let (mut client, conn) = serve(failing);
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let answer = read_to_end(&mut client).await;
    assert!(
        answer.ends_with("\r\n\r\n4\r\npart\r\n"),
        "no end chunk: {answer}"
    );
    assert!(matches!(conn.await.unwrap(), Err(ConnectionError::Body)));

    let overrun = |_| -> Answer {
        Box::pin(async {
            let mut response = Response::new(streamed(&["abc", "def"], false));
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, http::HeaderValue::from_static("4"));
            response
        })
    };
    let (mut client, conn) = serve(overrun);
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let answer = read_to_end(&mut client).await;
    assert!(answer.ends_with("\r\n\r\nabcd"), "{answer}");
    assert!(matches!(conn.await.unwrap(), Err(ConnectionError::Body)));
}

#[tokio::test]
async fn a_body_left_unread_closes_the_connection_after_the_answer() {
    let unread = |_| -> Answer { Box::pin(async { Response::new(full("early")) }) };
    let (mut client, conn) = serve(unread);
    client
        .write_all(b"POST / HTTP/1.1\r\ncontent-length: 100\r\n\r\npart of it")
        .await
        .unwrap();
    let answer = read_to_end(&mut client).await;
    assert!(
        answer.contains("\r\nconnection: close\r\n") && answer.ends_with("early"),
        "{answer}"
    );
    assert!(conn.await.unwrap().is_ok());
}

#[tokio::test]
async fn finishing_closes_an_idle_connection_and_the_next_answer_says_close() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let mut conn = pin!(Connection::new(server, BytesMut::new(), echo, 8192));
    // Idle: closed at once.
    conn.as_mut().finish();
    assert!(matches!(conn.as_mut().now_or_never(), Some(Ok(()))));
    drop(client);

    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let slow = |_| -> Answer {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Response::new(full("done"))
        })
    };
    let mut conn = pin!(Connection::new(server, BytesMut::new(), slow, 8192));
    client
        .write_all(b"GET / HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert!(
        conn.as_mut().now_or_never().is_none(),
        "the request is in flight"
    );
    conn.as_mut().finish();
    let (ended, answer) = tokio::join!(conn, read_to_end(&mut client));
    assert!(ended.is_ok());
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 1, "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
}

#[tokio::test]
async fn an_answers_own_length_lines_frame_it_unless_they_disagree() {
    let answer = |req: Request<RequestBody>| -> Answer {
        Box::pin(async move {
            let lines: &[&'static str] = match req.uri().path() {
                "/same" => &["4", "4"],
                _ => &["4", "5"],
            };
            let mut response = Response::new(streamed(&["body"], false));
            for line in lines {
                response
                    .headers_mut()
                    .append(CONTENT_LENGTH, http::HeaderValue::from_static(line));
            }
            response
        })
    };
    let (mut client, conn) = serve(answer);
    client
        .write_all(b"GET /same HTTP/1.1\r\n\r\nGET /differ HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        without_dates(&read_to_end(&mut client).await),
        "HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 4\r\n\r\nbody\
         HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 5\r\nconnection: close\r\n\r\nbody"
    );
    assert!(conn.await.unwrap().is_ok());
}

/// A body that carries its answer's header lines, as an answer passed through does.
struct WithLines {
    lines: Option<crate::wire::lines::HeadLines>,
    body: Full<Bytes>,
}

impl Body for WithLines {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl crate::server::WriterHints for WithLines {
    fn head_lines(&mut self) -> Option<crate::wire::lines::HeadLines> {
        self.lines.take()
    }
}

/// Serves every request with `head`'s lines and `body`, until the client closes.
async fn answer_with_lines(head: &'static [u8], body: &'static str, requests: &[u8]) -> String {
    let service = move |_: Request<RequestBody>| {
        std::future::ready(Response::new(WithLines {
            lines: Some(crate::wire::lines::parsed(head)),
            body: Full::new(Bytes::from_static(body.as_bytes())),
        }))
    };
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let conn = tokio::spawn(Connection::new(server, BytesMut::new(), service, 8192));
    client.write_all(requests).await.unwrap();
    let answer = read_to_end(&mut client).await;
    assert!(conn.await.unwrap().is_ok());
    answer
}

#[tokio::test]
async fn an_answers_own_lines_are_written_as_they_came_with_their_framing_read() {
    // Its length and date are its own; a `Transfer-Encoding` line frames no body here.
    let answer = answer_with_lines(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\nDate: then\r\nX-A: 1\r\n\r\n",
        "hello",
        b"GET /a HTTP/1.1\r\nhost: t\r\n\r\nGET /b HTTP/1.1\r\nconnection: close\r\n\r\n",
    )
    .await;
    let one = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\
               Date: then\r\nX-A: 1\r\n";
    assert_eq!(
        answer,
        format!("{one}\r\nhello{one}connection: close\r\n\r\nhello")
    );
    // Without a length of its own, the body's is written; its `Connection: close` closes.
    let answer = answer_with_lines(
        b"HTTP/1.1 200 OK\r\nCONNECTION: close\r\ndate: then\r\n\r\n",
        "bye",
        b"GET /a HTTP/1.1\r\nhost: t\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
    )
    .await;
    assert_eq!(
        answer,
        "HTTP/1.1 200 OK\r\nCONNECTION: close\r\ndate: then\r\ncontent-length: 3\r\n\r\nbye"
    );
}
