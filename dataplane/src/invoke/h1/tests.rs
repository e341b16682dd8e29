//! Tests of the HTTP/1.1 worker client against scripted workers on real loopback sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::codec::{ChunkedDecoder, Decoded};
use super::*;
use crate::body::RequestBody;

/// One request as the scripted worker read it.
#[derive(Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// What the scripted worker does after reading a request.
enum Reply {
    /// Write these bytes and wait for the next request.
    Send(Vec<u8>),
    /// Write these bytes and close the connection.
    SendAndClose(Vec<u8>),
    /// Write these bytes, then wait until the client closes (the answer to "did it close?" goes
    /// to the channel).
    SendAndWatch(Vec<u8>, tokio::sync::oneshot::Sender<()>),
}

/// A worker that answers each request with `reply(seen)`; counts the connections it accepts.
async fn worker<F>(reply: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(Seen) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let reply = Arc::clone(&reply);
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                while let Some(seen) = read_request(&mut socket, &mut buf).await {
                    match reply(seen) {
                        Reply::Send(bytes) => {
                            socket.write_all(&bytes).await.expect("write");
                        }
                        Reply::SendAndClose(bytes) => {
                            socket.write_all(&bytes).await.expect("write");
                            return;
                        }
                        Reply::SendAndWatch(bytes, closed) => {
                            socket.write_all(&bytes).await.expect("write");
                            let mut rest = [0u8; 64];
                            while matches!(socket.read(&mut rest).await, Ok(n) if n > 0) {}
                            let _ = closed.send(());
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Reads one request (content-length or chunked body); `None` at EOF.
async fn read_request(socket: &mut TcpStream, buf: &mut BytesMut) -> Option<Seen> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if socket.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    };
    let head = String::from_utf8(buf.split_to(end).to_vec()).expect("utf-8 head");
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if lower.contains("transfer-encoding: chunked") {
        let mut decoder = ChunkedDecoder::default();
        loop {
            match decoder.decode(buf).expect("chunked request") {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Done(_) => break,
                Decoded::NeedMore => {
                    if socket.read_buf(buf).await.ok()? == 0 {
                        return None;
                    }
                }
            }
        }
    } else if let Some(at) = lower.find("content-length: ") {
        let n: usize = lower[at + 16..]
            .split("\r\n")
            .next()
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        while buf.len() < n {
            if socket.read_buf(buf).await.ok()? == 0 {
                return None;
            }
        }
        body = buf.split_to(n).to_vec();
    }
    Some(Seen { head, body })
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

/// A POST of `body`, whole in hand, as the invocation path hands it on.
fn post(addr: &str, body: &'static [u8]) -> ClientRequest {
    Box::new(
        Request::builder()
            .method(Method::POST)
            .uri(format!("{addr}/echo"))
            .body(RequestBody::full(Bytes::from_static(body)))
            .expect("request"),
    )
}

/// A request with a streamed body (of no stated length) as the invocation path hands it on.
fn streamed(req: Request<Body>) -> ClientRequest {
    Box::new(req.map(RequestBody::streamed))
}

async fn call(client: &Arc<Client>, req: ClientRequest) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = client.request(req, None).await.expect("response");
    let (mut parts, mut body) = response.into_parts();
    // The head's fields as an HTTP/2 client's answer gets them.
    if let Some(fields) = crate::fields::Fielded::take_fields(&mut body) {
        fields.append_to(&mut parts.headers);
    }
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, bytes)
}

fn pool_idle(client: &Client, addr: &str) -> usize {
    client.worker(addr.trim_start_matches("http://")).idle_len()
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let (addr, accepted) = worker(|seen| {
        assert!(
            seen.head.starts_with("POST /echo HTTP/1.1\r\n"),
            "{}",
            seen.head
        );
        assert!(seen.head.contains("content-length: 5\r\n"), "{}", seen.head);
        Reply::Send(ok(&seen.body))
    })
    .await;
    let client = Client::new(0);
    for _ in 0..3 {
        let (status, headers, body) = call(&client, post(&addr, b"hello")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-length"], "5");
        assert_eq!(&body[..], b"hello");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool_idle(&client, &addr), 1);
}

#[tokio::test]
async fn each_serving_thread_reuses_only_its_own_connections() {
    let (addr, accepted) = worker(|seen| Reply::Send(ok(&seen.body))).await;
    let client = Client::new(2);
    let mut threads = crate::serving::ServingThreads::start(2).expect("threads");
    // One call at a time, handed to thread 1, 2, 1, 2, …: each thread's second call finds its
    // own connection idle.
    for _ in 0..6 {
        let (client, addr) = (Arc::clone(&client), addr.clone());
        let (done, answered) = tokio::sync::oneshot::channel();
        threads.hand(Box::new(move || {
            Box::pin(async move {
                let (status, _, body) = call(&client, post(&addr, b"hello")).await;
                let _ = done.send((crate::serving::current(), status, body));
            })
        }));
        let (thread, status, body) = answered.await.expect("answered");
        assert!((1..=2).contains(&thread), "{thread}");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "one connection per thread"
    );
    let pool = client.worker(addr.trim_start_matches("http://"));
    let lists: Vec<usize> = pool
        .idle
        .iter()
        .map(|l| l.lock().expect("lock").len())
        .collect();
    assert_eq!(lists, [0, 1, 1]);
    // Not a serving thread: the first list, empty, so a connection of its own.
    call(&client, post(&addr, b"hello")).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    threads.stop().await;
}

#[tokio::test]
async fn chunked_and_close_delimited_responses_are_read_whole() {
    let (addr, _) = worker(|seen| {
        if seen.head.contains("x-mode: close") {
            Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nx-k: 1\r\n\r\nuntil the end".to_vec())
        } else {
            Reply::Send(
                b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n"
                    .to_vec(),
            )
        }
    })
    .await;
    let client = Client::new(0);
    let response = client
        .request(post(&addr, b"x"), None)
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers().get("transfer-encoding").is_none());
    let collected = response.into_body().collect().await.expect("body");
    assert_eq!(collected.trailers().expect("trailers")["x-t"], "1");
    assert_eq!(&collected.to_bytes()[..], b"abcde");
    assert_eq!(
        pool_idle(&client, &addr),
        1,
        "a chunked response leaves the connection reusable"
    );

    let mut req = post(&addr, b"x");
    req.headers_mut()
        .insert("x-mode", http::HeaderValue::from_static("close"));
    let (status, headers, body) = call(&client, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-k"], "1");
    assert_eq!(&body[..], b"until the end");
}

#[tokio::test]
async fn a_connection_the_worker_closed_while_idle_is_not_reused() {
    let (addr, accepted) = worker(|seen| Reply::SendAndClose(ok(&seen.body))).await;
    let client = Client::new(0);
    let (_, _, body) = call(&client, post(&addr, b"one")).await;
    assert_eq!(&body[..], b"one");
    assert_eq!(pool_idle(&client, &addr), 1);
    // Once the worker's FIN has reached the reactor, the idle connection is found closed.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _, body) = call(&client, post(&addr, b"two")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"two");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A worker whose first connection answers one request, then takes the next one and closes
/// without a word; later connections answer everything.
async fn closes_on_the_second_request() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let nth = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                let mut served = 0;
                loop {
                    if nth == 0 && served == 1 {
                        // The next request's first bytes arrive, and the connection closes
                        // unanswered: did the worker act on it? The client cannot know.
                        let _ = socket.read_buf(&mut buf).await;
                        return;
                    }
                    let Some(seen) = read_request(&mut socket, &mut buf).await else {
                        return;
                    };
                    served += 1;
                    socket.write_all(&ok(&seen.body)).await.expect("write");
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn an_idempotent_request_is_sent_again_when_a_reused_connection_fails() {
    let (addr, accepted) = closes_on_the_second_request().await;
    let client = Client::new(0);
    let put = |body: &'static [u8]| {
        let mut req = post(&addr, body);
        *req.method_mut() = Method::PUT;
        req
    };
    let (_, _, body) = call(&client, put(b"one")).await;
    assert_eq!(&body[..], b"one");
    let (status, _, body) = call(&client, put(b"two")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"two");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "one new connection");
}

#[tokio::test]
async fn a_post_is_never_sent_twice() {
    let (addr, accepted) = closes_on_the_second_request().await;
    let client = Client::new(0);
    let (_, _, body) = call(&client, post(&addr, b"one")).await;
    assert_eq!(&body[..], b"one");
    let e = client
        .request(post(&addr, b"two"), None)
        .await
        .expect_err("the worker may have acted on it");
    // A close with the request unread is a reset rather than an end of stream.
    let e = e.to_string();
    assert!(
        e.contains("closed the connection before answering") || e.contains("reset"),
        "{e}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_streamed_body_is_not_replayed() {
    let (addr, accepted) = closes_on_the_second_request().await;
    let client = Client::new(0);
    let _ = call(&client, post(&addr, b"one")).await;
    // A body still open when the connection fails cannot be sent again, even with PUT.
    let never_ends = StreamBody::new(
        futures_util::stream::iter([Ok::<_, BoxError>(http_body::Frame::data(
            Bytes::from_static(b"start"),
        ))])
        .chain(futures_util::stream::pending()),
    );
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("{addr}/echo"))
        .body(crate::body::stream(never_ends))
        .expect("request");
    let e = tokio::time::timeout(Duration::from_secs(5), client.request(streamed(req), None))
        .await
        .expect("fails, does not hang")
        .expect_err("not replayed");
    let e = e.to_string();
    assert!(
        e.contains("closed the connection") || e.contains("reset"),
        "{e}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bodies_of_unknown_length_go_chunked() {
    let (addr, _) = worker(|seen| {
        assert!(
            seen.head.contains("transfer-encoding: chunked\r\n"),
            "{}",
            seen.head
        );
        assert!(!seen.head.contains("content-length"), "{}", seen.head);
        Reply::Send(ok(&seen.body))
    })
    .await;
    let client = Client::new(0);
    let pieces: Vec<Result<http_body::Frame<Bytes>, BoxError>> = ["ab", "", "cdef", "g"]
        .into_iter()
        .map(|s| Ok(http_body::Frame::data(Bytes::from_static(s.as_bytes()))))
        .collect();
    let body = crate::body::stream(StreamBody::new(futures_util::stream::iter(pieces)));
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("{addr}/x?y=1"))
        .header("content-length", "999")
        .body(body)
        .expect("request");
    let (_, _, body) = call(&client, streamed(req)).await;
    assert_eq!(&body[..], b"abcdefg");
}

#[tokio::test]
async fn a_body_of_many_tiny_frames_arrives_whole() {
    let (addr, _) = worker(|seen| Reply::Send(ok(&seen.body))).await;
    let client = Client::new(0);
    let sent: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = sent
        .iter()
        .map(|b| Ok(http_body::Frame::data(Bytes::copy_from_slice(&[*b]))))
        .collect();
    let body = crate::body::stream(StreamBody::new(futures_util::stream::iter(frames)));
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("{addr}/tiny"))
        .body(body)
        .expect("request");
    let (status, _, body) = call(&client, streamed(req)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body[..] == sent[..], "the bytes changed on the way");
}

#[tokio::test]
async fn a_body_dropped_midway_closes_its_connection() {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let closed_tx = std::sync::Mutex::new(Some(closed_tx));
    let (addr, _) = worker(move |_| {
        let tx = closed_tx.lock().expect("lock").take().expect("one call");
        Reply::SendAndWatch(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf!".to_vec(),
            tx,
        )
    })
    .await;
    let client = Client::new(0);
    let response = client
        .request(post(&addr, b"x"), None)
        .await
        .expect("response");
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert_eq!(first.into_data().expect("data"), "half!");
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), closed_rx)
        .await
        .expect("the worker saw the connection close")
        .expect("sender kept");
    assert_eq!(pool_idle(&client, &addr), 0);
}

#[tokio::test]
async fn broken_workers_are_errors_not_hangs() {
    let (addr, _) = worker(|seen| {
        if seen.head.contains("x-mode: garbage") {
            Reply::SendAndClose(b"HTTP/1.1 ???\r\n\r\n".to_vec())
        } else if seen.head.contains("x-mode: short") {
            Reply::SendAndClose(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec())
        } else {
            Reply::SendAndClose(Vec::new())
        }
    })
    .await;
    let client = Client::new(0);
    let e = client
        .request(post(&addr, b"x"), None)
        .await
        .expect_err("no answer");
    assert!(
        e.to_string()
            .contains("closed the connection before answering"),
        "{e}"
    );
    let mut req = post(&addr, b"x");
    req.headers_mut()
        .insert("x-mode", http::HeaderValue::from_static("garbage"));
    let e = client.request(req, None).await.expect_err("garbage");
    assert!(e.to_string().contains("malformed response head"), "{e}");
    let mut req = post(&addr, b"x");
    req.headers_mut()
        .insert("x-mode", http::HeaderValue::from_static("short"));
    let response = client.request(req, None).await.expect("head arrives");
    let e = response
        .into_body()
        .collect()
        .await
        .expect_err("short body");
    assert!(e.to_string().contains("before the response ended"), "{e}");

    // Nothing listens there any more.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let e = client
        .request(post(&gone, b"x"), None)
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("connecting to"), "{e}");
}
