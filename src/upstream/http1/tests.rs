//! The decoder and head parser on their own, then whole exchanges against a scripted provider on
//! loopback that writes its answers in the pieces each test gives.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Either, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::wire::tests::decode_in_pieces;
use http::HeaderValue;

fn head(raw: &[u8]) -> Result<Parsed, Http1Error> {
    let mut buf = BytesMut::from(raw);
    parse_head(&mut buf)
}

/// A whole final head, its lines put in the response's map (which the parser leaves empty).
fn whole(raw: &[u8]) -> (Response<()>, Framing, bool) {
    match head(raw) {
        Ok(Parsed::Final(mut head)) => {
            assert!(head.response.headers().is_empty());
            *head.response.headers_mut() = head.lines.to_map();
            (head.response, head.framing, head.keep_alive)
        }
        _ => panic!("not a whole final head: {}", String::from_utf8_lossy(raw)),
    }
}

/// An exchange's answer's header lines, as a map.
fn lines_of(response: &mut Response<Http1Body>) -> HeaderMap {
    assert!(response.headers().is_empty());
    response
        .body_mut()
        .head_lines_mut()
        .expect("an answer's lines")
        .to_map()
}

#[test]
fn an_answers_lines_that_frame_only_this_hop_are_read_and_left_out_of_the_map() {
    let (response, framing, keep_alive) = whole(
        b"HTTP/1.1 200 OK\r\nDate: now\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\nx-request-id: req_1\r\n\r\n",
    );
    let names: Vec<&str> = response.headers().keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["date", "x-request-id"]);
    assert_eq!(
        (framing, keep_alive),
        (Framing::Chunked(Chunked::Size), true)
    );
    let (response, _, keep_alive) =
        whole(b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n");
    assert!(!keep_alive);
    assert!(!response.headers().contains_key("connection"));
    let (response, _, _) =
        whole(b"HTTP/1.1 200 OK\r\nConnection: x-hop\r\nx-hop: 1\r\ncontent-length: 0\r\n\r\n");
    assert_eq!(response.headers()["connection"], "x-hop");
}

#[test]
fn an_answer_head_gives_status_headers_framing_and_reuse() {
    let (response, framing, keep_alive) = whole(
        b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nx-request-id: req_1\r\nset-cookie: a\r\nset-cookie: b\r\ncontent-length: 12\r\n\r\n",
    );
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.headers()["x-request-id"], "req_1");
    assert_eq!(response.headers().get_all("set-cookie").iter().count(), 2);
    assert_eq!((framing, keep_alive), (Framing::Length(12), true));

    let cases: [(&[u8], Framing, bool); 13] = [
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            Framing::Chunked(Chunked::Size),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n",
            Framing::Chunked(Chunked::Size),
            true,
        ),
        // Not chunked last: the body runs to the connection's end.
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            Framing::UntilClose,
            false,
        ),
        // Framed both ways: chunked wins, and the connection is not reused.
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            Framing::Chunked(Chunked::Size),
            false,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n",
            Framing::Length(7),
            true,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", Framing::Ended, true),
        (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n",
            Framing::Ended,
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n",
            Framing::Length(2),
            false,
        ),
        // The last Transfer-Encoding line frames the body, whatever came before it.
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n\r\n",
            Framing::UntilClose,
            false,
        ),
        // With Transfer-Encoding, a broken Content-Length is never read, but ends the reuse.
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            Framing::Chunked(Chunked::Size),
            false,
        ),
        // No body in a 204, whatever its Content-Length lines say.
        (
            b"HTTP/1.1 204 No Content\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            Framing::Ended,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 4\r\nConnection: upgrade, close\r\n\r\n",
            Framing::Length(4),
            false,
        ),
    ];
    for (raw, framing, keep_alive) in cases {
        let (_, got, reuse) = whole(raw);
        assert_eq!(
            (got, reuse),
            (framing, keep_alive),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn a_head_is_taken_whole_or_not_at_all() {
    let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
    let mut buf = BytesMut::from(&raw[..20]);
    assert!(matches!(parse_head(&mut buf), Ok(Parsed::Partial)));
    assert_eq!(buf.len(), 20, "nothing taken");
    let mut buf = BytesMut::from(&raw[..]);
    assert!(matches!(parse_head(&mut buf), Ok(Parsed::Final(_))));
    assert_eq!(&buf[..], b"hello", "the body stays");
    // An interim answer is taken and skipped.
    let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"[..]);
    assert!(matches!(parse_head(&mut buf), Ok(Parsed::Interim)));
    assert_eq!(&buf[..], b"HTTP/1.1 200 OK\r\n");
}

#[test]
fn broken_heads_are_errors() {
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    for raw in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5, 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: \r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        &many,
    ] {
        assert!(
            matches!(head(raw), Err(Http1Error::Head(_))),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn the_request_head_carries_the_bodys_own_framing() {
    let mut headers = HeaderMap::new();
    headers.insert("content-length", HeaderValue::from_static("999"));
    headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    let uri: http::Uri = "/v1/chat/completions?x=1".parse().unwrap();
    let text = |method: &Method, length| {
        let mut head = BytesMut::new();
        write_head(
            &mut head,
            method,
            uri.path_and_query().unwrap().as_str(),
            b"host: api.example\r\n",
            &headers,
            &RequestLines::default(),
            length,
        );
        String::from_utf8(head.to_vec()).unwrap()
    };
    assert_eq!(
        text(&Method::POST, Some(42)),
        "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: api.example\r\ncontent-length: 42\r\n\r\n"
    );
    assert_eq!(
        text(&Method::POST, None),
        "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(
        text(&Method::POST, Some(0)),
        "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: api.example\r\ncontent-length: 0\r\n\r\n"
    );
    assert_eq!(
        text(&Method::GET, Some(0)),
        "GET /v1/chat/completions?x=1 HTTP/1.1\r\nhost: api.example\r\n\r\n"
    );
    // A client's lines go after the request's own, less their framing lines, and
    // `x-forwarded-for` after them.
    let client = crate::wire::lines::parsed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\nX-Stainless-Lang: python\r\n\
          Transfer-Encoding: chunked\r\nAuthorization: Bearer sk\r\n\r\n",
    );
    let lines = RequestLines {
        client: Some(client),
        forwarded_for: Some(HeaderValue::from_static("10.0.0.1, 127.0.0.2")),
    };
    headers.insert("openai-beta", HeaderValue::from_static("assistants=v2"));
    let mut head = BytesMut::new();
    write_head(
        &mut head,
        &Method::POST,
        "/v1",
        b"host: api.example\r\n",
        &headers,
        &lines,
        Some(7),
    );
    assert_eq!(
        String::from_utf8(head.to_vec()).unwrap(),
        "POST /v1 HTTP/1.1\r\nhost: api.example\r\nopenai-beta: assistants=v2\r\n\
         X-Stainless-Lang: python\r\nAuthorization: Bearer sk\r\n\
         x-forwarded-for: 10.0.0.1, 127.0.0.2\r\ncontent-length: 7\r\n\r\n"
    );
    assert_eq!(itoa(0, &mut [0; 20]), b"0");
    assert_eq!(itoa(u64::MAX, &mut [0; 20]), b"18446744073709551615");
}

/// A provider on loopback that takes one connection and, for each request on it, reads the
/// request whole (its bytes are sent back on `requests`) and writes the next answer in its
/// pieces, flushing and pausing between them. Closes after the last answer.
async fn provider(
    answers: Vec<Vec<&'static [u8]>>,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (requests, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        for answer in answers {
            let request = loop {
                if let Some(whole) = request_length(&buf) {
                    break buf.drain(..whole).collect::<Vec<u8>>();
                }
                let mut piece = [0u8; 4096];
                match socket.read(&mut piece).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&piece[..n]),
                }
            };
            let _ = requests.send(request);
            for piece in answer {
                socket.write_all(piece).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    });
    (addr, received)
}

/// The length of the whole request at the start of `buf`, once it is there: the head, then a
/// body by `content-length` or chunked up to its last chunk (the tests send no trailers).
fn request_length(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    if text.contains("transfer-encoding: chunked") {
        let end = buf[head..].windows(5).position(|w| w == b"0\r\n\r\n")?;
        return Some(head + end + 5);
    }
    let length = text
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    (buf.len() >= head + length).then_some(head + length)
}

async fn connect(addr: SocketAddr) -> Connection {
    Connection::new(Io::Plain(TcpStream::connect(addr).await.unwrap()))
}

#[tokio::test]
async fn a_request_head_is_written_in_the_read_buffers_memory_and_it_is_read_into_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut conn = connect(listener.local_addr().unwrap()).await;
    let uri: http::Uri = "/v1/embeddings".parse().unwrap();
    let none = RequestLines::default();
    let head = conn.encode_head(&Method::POST, &uri, b"", &HeaderMap::new(), &none, Some(2));
    let memory = head.as_ptr();
    assert_eq!(
        &head[..],
        b"POST /v1/embeddings HTTP/1.1\r\ncontent-length: 2\r\n\r\n"
    );
    // Let go once written: the next read, and the next request's head, use the same memory.
    drop(head);
    let head = conn.encode_head(&Method::GET, &uri, b"", &HeaderMap::new(), &none, Some(0));
    assert_eq!(head.as_ptr(), memory);
    assert_eq!(&head[..], b"GET /v1/embeddings HTTP/1.1\r\n\r\n");
    drop(head);
    let (mut accepted, _) = listener.accept().await.unwrap();
    accepted
        .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        .await
        .unwrap();
    poll_fn(|cx| conn.poll_fill(cx)).await.unwrap();
    assert_eq!(conn.buf.as_ptr(), memory);
}

fn post(body: &'static str) -> Request<OutboundBody> {
    Request::post("/v1/chat/completions")
        .header("host", "provider.test")
        .body(Either::Left(Full::new(Bytes::from_static(body.as_bytes()))))
        .unwrap()
}

fn get(path: &str) -> Request<OutboundBody> {
    Request::get(path)
        .body(Either::Left(Full::new(Bytes::new())))
        .unwrap()
}

async fn read_all(body: Http1Body) -> Result<Vec<u8>, Http1Error> {
    Ok(body.collect().await?.to_bytes().to_vec())
}

#[tokio::test]
async fn answers_read_in_pieces_and_the_connection_goes_back_for_the_next() {
    let (addr, mut requests) = provider(vec![
        // The head and a chunked body, cut at awkward places.
        vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-",
            b"encoding: chunked\r\n\r\n7\r\ndata: a\r",
            b"\na\r\n\n\ndata: b\n\r\n0\r",
            b"\n\r\n",
        ],
        vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nd",
            b"one",
        ],
    ])
    .await;
    let home = Arc::new(IdleList::default());
    let mut response = connect(addr)
        .await
        .send(post("{}"), b"", RequestLines::default(), &home)
        .await
        .unwrap();
    assert_eq!(lines_of(&mut response)["content-type"], "text/event-stream");
    assert_eq!(
        read_all(response.into_body()).await.unwrap(),
        b"data: a\n\ndata: b\n"
    );
    assert_eq!(
        requests.recv().await.unwrap(),
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: provider.test\r\ncontent-length: 2\r\n\r\n{}"
    );
    let conn = home
        .checkout(std::time::Duration::MAX)
        .expect("given back at the body's end");
    let response = conn
        .send(get("/v1/models"), b"", RequestLines::default(), &home)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body();
    assert_eq!(body.size_hint().exact(), Some(4));
    assert_eq!(read_all(body).await.unwrap(), b"done");
    assert_eq!(home.len(), 1);
}

#[tokio::test]
async fn a_body_until_close_is_read_to_the_end_and_the_connection_is_not_kept() {
    let (addr, _requests) = provider(vec![vec![b"HTTP/1.1 200 OK\r\n\r\nall of ", b"it"]]).await;
    let home = Arc::new(IdleList::default());
    let response = connect(addr)
        .await
        .send(get("/"), b"", RequestLines::default(), &home)
        .await
        .unwrap();
    assert_eq!(read_all(response.into_body()).await.unwrap(), b"all of it");
    assert!(home.is_empty());
}

#[tokio::test]
async fn a_provider_that_hangs_up_early_is_an_error_not_a_short_answer() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ] {
        let (addr, _requests) = provider(vec![vec![answer]]).await;
        let home = Arc::new(IdleList::default());
        let response = connect(addr)
            .await
            .send(get("/"), b"", RequestLines::default(), &home)
            .await
            .unwrap();
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"hello");
        assert!(matches!(
            body.frame().await,
            Some(Err(Http1Error::ClosedInBody))
        ));
        assert!(body.frame().await.is_none(), "the error ends the body");
        assert!(home.is_empty());
    }
    for (answer, closed_before) in [(&b""[..], true), (b"HTTP/1.1 200", false)] {
        let (addr, _requests) = provider(vec![vec![answer]]).await;
        let home = Arc::new(IdleList::default());
        let Err(err) = connect(addr)
            .await
            .send(get("/"), b"", RequestLines::default(), &home)
            .await
        else {
            panic!("an answer from {answer:?}");
        };
        assert_eq!(
            matches!(err, Http1Error::ClosedBeforeAnswer),
            closed_before,
            "{err}"
        );
    }
}

#[tokio::test]
async fn bytes_after_the_body_keep_the_connection_from_the_pool() {
    let (addr, _requests) = provider(vec![vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
    ]])
    .await;
    let home = Arc::new(IdleList::default());
    let response = connect(addr)
        .await
        .send(get("/"), b"", RequestLines::default(), &home)
        .await
        .unwrap();
    assert_eq!(read_all(response.into_body()).await.unwrap(), b"ok");
    assert!(home.is_empty());
}

#[tokio::test]
async fn a_head_request_has_no_body_whatever_its_length_says() {
    let (addr, _requests) = provider(vec![vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n",
    ]])
    .await;
    let home = Arc::new(IdleList::default());
    let request = Request::head("/")
        .body(Either::Left(Full::new(Bytes::new())))
        .unwrap();
    let mut response = connect(addr)
        .await
        .send(request, b"", RequestLines::default(), &home)
        .await
        .unwrap();
    assert_eq!(lines_of(&mut response)["content-length"], "5000");
    assert!(response.body().is_end_stream());
    assert_eq!(home.len(), 1, "back at once: there is no body to read");
}

#[tokio::test]
async fn a_body_of_unknown_length_goes_chunked_and_a_failing_one_is_an_error() {
    let (addr, mut requests) =
        provider(vec![vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]]).await;
    // A client's body of unknown length, as hyper gives a chunked request.
    let frames = futures_util::stream::iter([
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"hello "))),
        Ok(Frame::data(Bytes::new())),
        Ok(Frame::data(Bytes::from_static(b"world"))),
    ]);
    let mut conn = connect(addr).await;
    let head = BytesMut::from(&b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"[..]);
    conn.write_request(head, StreamBody::new(frames), true)
        .await
        .unwrap();
    assert_eq!(
        requests.recv().await.unwrap(),
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
    );

    let failing = futures_util::stream::iter([
        Ok(Frame::data(Bytes::from_static(b"part"))),
        Err(std::io::Error::other("client went away")),
    ]);
    let err = conn
        .write_request(
            BytesMut::from(&b"POST / HTTP/1.1\r\n\r\n"[..]),
            StreamBody::new(failing),
            true,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Http1Error::RequestBody(_)), "{err}");
}

#[tokio::test]
async fn a_paced_body_is_read_into_the_start_of_its_buffer_each_time() {
    let (addr, _requests) = provider(vec![vec![
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        b"6\r\nchunk \r\n",
        b"6\r\nchunk \r\n",
        b"6\r\nchunk \r\n",
        b"0\r\n\r\n",
    ]])
    .await;
    let home = Arc::new(IdleList::default());
    let response = connect(addr)
        .await
        .send(get("/"), b"", RequestLines::default(), &home)
        .await
        .unwrap();
    let mut body = response.into_body();
    // The head's lines hold the head's bytes: let go, as the client connection does once the
    // head is written.
    drop(body.take_head_lines());
    let mut starts = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        assert_eq!(&data[..], b"chunk ");
        starts.push(data.as_ptr());
        // Let go, as the client connection does once the chunk is written.
        drop(data);
    }
    assert_eq!(starts.len(), 3);
    assert!(starts.iter().all(|&start| start == starts[0]), "{starts:?}");
    assert_eq!(home.len(), 1);
}

/// A provider that takes one connection, reads a request's head, then hands the socket to
/// `then` and keeps it open.
async fn after_the_head<F, Fut>(then: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = TcpStream> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(socket.read_u8().await.unwrap());
        }
        let _open = then(socket).await;
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    });
    addr
}

/// Sends a 64 MiB request, far more than loopback's socket buffers take, with `expect` if
/// given; the answer, or a panic when there is none within a minute.
async fn send_large(
    addr: SocketAddr,
    expect: Option<&str>,
    home: &Arc<IdleList>,
    why: &str,
) -> Response<Http1Body> {
    let mut request = Request::post("/v1/files");
    if let Some(expect) = expect {
        request = request.header("expect", expect);
    }
    let request = request
        .body(Either::Left(Full::new(Bytes::from(vec![b'x'; LARGE]))))
        .unwrap();
    let exchange = connect(addr)
        .await
        .send(request, b"", RequestLines::default(), home);
    tokio::time::timeout(std::time::Duration::from_secs(60), exchange)
        .await
        .expect(why)
        .unwrap()
}

const LARGE: usize = 64 << 20;

#[tokio::test]
async fn an_answer_before_the_whole_request_went_out_is_the_answer() {
    // An early refusal, and no more reading while the client writes.
    let addr = after_the_head(|mut socket| async move {
        socket
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!")
            .await
            .unwrap();
        socket
    })
    .await;
    let home = Arc::new(IdleList::default());
    // Without looking for the answer while it writes, the client would wait for ever here.
    let why = "the early answer is seen while the request is still going out";
    let response = send_large(addr, None, &home, why).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(read_all(response.into_body()).await.unwrap(), b"too big!");
    assert!(home.is_empty(), "the rest of the request is still owed");
}

/// A chunked encoding of `data`: chunks of the given sizes (what is left goes in a last one),
/// each size line in hex of either case with or without an extension, and CRLF or bare LF line
/// ends.
fn encode_chunked(data: &[u8], sizes: &[usize], styles: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut rest = data;
    let mut style = styles.iter().copied().cycle();
    let mut sizes = sizes.iter().copied();
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, after) = rest.split_at(size);
        let s = style.next().unwrap_or(0);
        let eol: &[u8] = if s & 1 == 0 { b"\r\n" } else { b"\n" };
        let hex = if s & 2 == 0 {
            format!("{size:x}")
        } else {
            format!("{size:X}")
        };
        raw.extend_from_slice(hex.as_bytes());
        if s & 4 != 0 {
            raw.extend_from_slice(b";ext=\"a;b\"");
        }
        raw.extend_from_slice(eol);
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(eol);
        rest = after;
    }
    raw.extend_from_slice(b"0\r\n");
    if styles.first().is_some_and(|s| s & 8 != 0) {
        raw.extend_from_slice(b"x-checksum: 1\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    raw
}

proptest::proptest! {
    #[test]
    fn any_chunking_read_in_any_pieces_gives_the_data_back(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        sizes in proptest::collection::vec(1usize..80, 0..12),
        styles in proptest::collection::vec(0u8..16, 1..6),
        cuts in proptest::collection::vec(0usize..2000, 0..8),
    ) {
        let raw = encode_chunked(&data, &sizes, &styles);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (raw.len() + 1)).collect();
        cuts.sort_unstable();
        let (decoded, ended, _) = decode_in_pieces(&raw, &cuts).unwrap();
        proptest::prop_assert!(ended);
        proptest::prop_assert_eq!(decoded, data);
    }

    #[test]
    fn any_bytes_are_an_answer_an_error_or_a_wait_never_a_panic(
        raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        prefix in 0usize..3,
    ) {
        // Often a plausible start, so the parser gets past the status line.
        let starts: [&[u8]; 3] = [b"", b"HTTP/1.1 200 OK\r\n", b"5\r\nhello\r\n"];
        let mut input = starts[prefix].to_vec();
        input.extend_from_slice(&raw);
        let mut buf = BytesMut::from(&input[..]);
        let _ = parse_head(&mut buf);
        let mut state = Chunked::Size;
        let mut buf = BytesMut::from(&input[..]);
        let before = buf.len();
        if let Ok((data, _)) = decode_chunked(&mut state, &mut buf) {
            let taken = data.map_or(0, |d| d.len());
            proptest::prop_assert!(taken + buf.len() <= before);
        }
    }
}

#[tokio::test]
async fn a_continue_while_the_request_goes_out_does_not_stop_it() {
    // At once, as a server does for `Expect: 100-continue`; then the body, then the answer.
    let addr = after_the_head(|mut socket| async move {
        socket
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .unwrap();
        let mut body = vec![0u8; LARGE];
        socket.read_exact(&mut body).await.unwrap();
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        socket
    })
    .await;
    let home = Arc::new(IdleList::default());
    // Taken for the answer, the `100` would stop the body, and both sides would wait for ever.
    let response = send_large(
        addr,
        Some("100-continue"),
        &home,
        "the whole request goes out",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(read_all(response.into_body()).await.unwrap(), b"ok");
    assert_eq!(home.len(), 1);
}

#[test]
fn only_interim_answers_let_a_request_go_on_being_written() {
    let cases: [(&[u8], bool, &[u8]); 7] = [
        (b"HTTP/1.1 1", true, b"HTTP/1.1 1"),
        (b"HTTP/1.0", true, b"HTTP/1.0"),
        (
            b"HTTP/1.1 100 Continue\r\n",
            true,
            b"HTTP/1.1 100 Continue\r\n",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n", true, b""),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Payload Too Large\r\n",
            false,
            b"HTTP/1.1 413 Payload Too Large\r\n",
        ),
        (b"HTTP/1.1 2", false, b"HTTP/1.1 2"),
        (b"garbage", false, b"garbage"),
    ];
    for (raw, interim, left) in cases {
        let mut buf = BytesMut::from(raw);
        assert_eq!(
            (only_interim(&mut buf), &buf[..]),
            (interim, left),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn an_answers_hop_by_hop_lines_are_noted_and_stripped() {
    let cases: [(&[u8], usize); 4] = [
        // Framing only this hop: left out as the head is read; nothing for the strip.
        (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n",
            2,
        ),
        (
            b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n",
            2,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nx-hop: 1\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n",
            2,
        ),
        (
            b"HTTP/1.1 200 OK\r\nPROXY-AUTHENTICATE: Basic\r\nTE: trailers\r\ncontent-length: 0\r\n\r\n",
            1,
        ),
    ];
    for (raw, left) in cases {
        let Ok(Parsed::Final(mut head)) = head(raw) else {
            panic!("not a final head");
        };
        head.lines.strip_hop_by_hop();
        let names: Vec<&[u8]> = head.lines.iter().map(|(name, _)| name).collect();
        assert_eq!(names.len(), left, "{names:?}");
        assert!(
            names
                .iter()
                .all(|name| !crate::wire::lines::is_hop_by_hop(name))
        );
    }
}
