//! The client side of a connection: tells HTTP/2 (prior knowledge, or ALPN on TLS) from HTTP/1.x,
//! hands HTTP/2 to hyper's server, and serves HTTP/1.x itself, one exchange after another: read
//! and parse the head ([`head`]), run the request through [`crate::server::handle`] while the body
//! is read off the connection ([`request_body`]), write the response ([`response`]), and keep the
//! connection for the next request when the exchange allows it.
//!
//! A purpose-built HTTP/1.1 server rather than hyper's: a call that arrives whole (the common
//! case) gets its body as bytes with no channel, no extra task wake-ups and no second header map,
//! and answers with one write. hyper's server was ~30% of the gateway's instructions per call.

pub(crate) mod head;
mod request_body;
pub(crate) mod response;
mod rewind;
mod wait;

use std::convert::Infallible;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use crate::body::{Body, RequestBody};
use crate::drain::Watch;
use crate::fields::Fielded;
use crate::io::{Halves, ReadSize};
use crate::server::{State, handle};
pub(crate) use request_body::WireBody;
use request_body::{Feed, FeedEnd};
use response::{BodyPlan, Exchange};

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Read buffer room asked for before each read of a head (heads are small; a large one is the
/// exception `max-header-bytes` bounds).
const READ_CHUNK: usize = 8 * 1024;
const HEAD_READ: ReadSize = ReadSize::new(READ_CHUNK, READ_CHUNK);
/// Body data frames up to this size are copied behind the head (or the chunk header), so that a
/// small answer is one write; larger ones are written from where they are.
const COPY_MAX: usize = 8 * 1024;
/// Queued response bytes that are written out before more body is polled.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// What every connection is served with.
#[derive(Debug)]
pub(crate) struct Front {
    state: Arc<State>,
    /// Largest request head (HTTP/1.1) or header list (HTTP/2).
    max_head: usize,
    /// How long a request head may take from its first byte (from the accept for the first one).
    head_timeout: Duration,
    /// How long an HTTP/1.1 connection may wait for its next request.
    idle_timeout: Duration,
    /// `Alt-Svc` for the answers (the TLS listener's front, while the QUIC listener is on).
    alt_svc: Option<HeaderValue>,
    h2: http2::Builder<TokioExecutor>,
}

impl Front {
    pub(crate) fn new(
        state: Arc<State>,
        max_head: usize,
        head_timeout: Duration,
        idle_timeout: Duration,
        alt_svc: Option<HeaderValue>,
    ) -> Self {
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            // h2 answers an oversized header list with a 431 on that stream.
            .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX));
        Self {
            state,
            max_head,
            head_timeout,
            idle_timeout,
            alt_svc,
            h2,
        }
    }

    /// Serves a connection whose protocol is told by its first bytes (plain TCP, or TLS without
    /// ALPN `h2`) until it closes or `shutdown` fires and its exchange in progress ends.
    pub(crate) async fn serve<I>(&self, mut io: I, peer: SocketAddr, shutdown: Watch)
    where
        I: Halves + 'static,
    {
        let accepted = Instant::now();
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let detected = tokio::select! {
            detected = self.detect(&mut io, &mut buf, accepted, peer) => detected,
            // Not a request yet: nothing to finish.
            () = shutdown.fired() => return,
        };
        match detected {
            Some(Protocol::Http2) => {
                let io = rewind::Rewind::new(io, buf.freeze());
                self.serve_h2(io, peer, shutdown).await;
            }
            Some(Protocol::Http1) => self.serve_h1(io, buf, accepted, peer, shutdown).await,
            None => {}
        }
    }

    /// Reads into `buf` until its first bytes are the HTTP/2 preface or cannot be; `None` when
    /// the connection closes or stays silent past `header-read-timeout` first.
    async fn detect<I: AsyncRead + Unpin>(
        &self,
        io: &mut I,
        buf: &mut BytesMut,
        accepted: Instant,
        peer: SocketAddr,
    ) -> Option<Protocol> {
        loop {
            match buf.len().min(H2_PREFACE.len()) {
                n if buf[..n] != H2_PREFACE[..n] => return Some(Protocol::Http1),
                n if n == H2_PREFACE.len() => return Some(Protocol::Http2),
                _ => {}
            }
            let read = tokio::time::timeout_at(accepted + self.head_timeout, io.read_buf(buf));
            match read.await {
                Ok(Ok(0)) => return None,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "connection closed before its protocol was known");
                    return None;
                }
                Err(_) => {
                    debug!(%peer, "no request within the header read timeout");
                    return None;
                }
            }
        }
    }

    /// Serves HTTP/2 with hyper until the connection closes; `shutdown` sends GOAWAY and lets
    /// the open streams finish.
    pub(crate) async fn serve_h2<I>(&self, io: I, peer: SocketAddr, shutdown: Watch)
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let state = Arc::clone(&self.state);
        let alt_svc = self.alt_svc.clone();
        let service = service_fn(move |req: http::Request<Incoming>| {
            let (state, alt_svc) = (Arc::clone(&state), alt_svc.clone());
            async move {
                let req = Box::new(req.map(RequestBody::from));
                let mut response = handle(&state, peer, req, alt_svc.as_ref()).await;
                // hyper writes the map: the worker's fields go into it.
                crate::fields::materialize(&mut response);
                Ok::<_, Infallible>(response)
            }
        });
        let mut conn = pin!(self.h2.serve_connection(TokioIo::new(io), service));
        let ended = tokio::select! {
            ended = conn.as_mut() => ended,
            () = shutdown.fired() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            debug!(%peer, error = %e, "HTTP/2 connection ended with an error");
        }
    }

    /// Serves HTTP/1.x on `io`, whose first bytes are in `buf`. On `shutdown` an idle connection
    /// closes at once and a busy one after its response (which says `connection: close`).
    async fn serve_h1<I>(
        &self,
        io: I,
        buf: BytesMut,
        accepted: Instant,
        peer: SocketAddr,
        shutdown: Watch,
    ) where
        I: Halves,
    {
        let flags = Flags::default();
        let mut exchanges = pin!(self.exchanges(io, buf, accepted, peer, &flags));
        tokio::select! {
            biased;
            () = exchanges.as_mut() => return,
            () = shutdown.fired() => {}
        }
        flags.draining.store(true, Ordering::Relaxed);
        if !flags.idle.load(Ordering::Relaxed) {
            exchanges.await;
        }
    }

    /// The exchanges of one HTTP/1.x connection, until it cannot carry another.
    async fn exchanges<I>(
        &self,
        mut io: I,
        mut buf: BytesMut,
        accepted: Instant,
        peer: SocketAddr,
        flags: &Flags,
    ) where
        I: Halves,
    {
        let Ok((mut rd, mut wr)) = io.halves() else {
            return;
        };
        let mut wbuf = BytesMut::with_capacity(READ_CHUNK);
        let mut timer = pin!(tokio::time::sleep(self.head_timeout));
        // The first head's time runs from the accept.
        let mut head_started = Some(accepted);
        loop {
            let head = match self
                .read_head(&mut rd, &mut buf, &mut timer, &mut head_started, flags)
                .await
            {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(e) => {
                    let mut exchange =
                        Exchange::new(&http::Method::GET, http::Version::HTTP_11, false);
                    let response = e.into_response("");
                    let _ =
                        write_response(&mut wr, &mut wbuf, response, &mut exchange, false).await;
                    let _ = wr.shutdown().await;
                    return;
                }
            };
            head_started = None;
            let head::Head {
                mut request,
                framing,
                keep_alive,
                expect_continue,
                wants_trailers,
            } = head;
            let mut exchange = Exchange::new(
                request.method(),
                request.version(),
                keep_alive && !flags.draining.load(Ordering::Relaxed),
            );
            let whole = head::take_whole_body(&mut buf, framing);
            let (written, body_read) = match whole {
                Some(bytes) => {
                    request.body_mut().set_whole(bytes);
                    // Pinned where it is built: the call's future (kilobytes) is never moved.
                    let service = pin!(handle(&self.state, peer, request, self.alt_svc.as_ref()));
                    let Some(response) =
                        unless_client_leaves(service, &mut rd, &mut buf, self.max_head).await
                    else {
                        debug!(%peer, "the client left before its answer");
                        return;
                    };
                    if flags.draining.load(Ordering::Relaxed) {
                        exchange.keep_alive = false;
                    }
                    let written =
                        write_response(&mut wr, &mut wbuf, response, &mut exchange, wants_trailers)
                            .await;
                    (written, true)
                }
                None => {
                    let (body, feed) = request_body::channel(framing, expect_continue);
                    request.body_mut().set_wire(body);
                    let service = pin!(handle(&self.state, peer, request, self.alt_svc.as_ref()));
                    let streamed = Streamed {
                        feed,
                        rd: &mut rd,
                        buf: &mut buf,
                        wr: &mut wr,
                        wbuf: &mut wbuf,
                    };
                    // Boxed and awaited through its vtable: a request whose body is still to come
                    // is the rarer case, and inline its state (about 2 KiB) and its code would sit
                    // in every connection's future and poll.
                    streamed
                        .answer(service, &mut exchange, wants_trailers, flags)
                        .boxed()
                        .await
                }
            };
            match written {
                Ok(true) if exchange.keep_alive && body_read => {
                    if flags.draining.load(Ordering::Relaxed) {
                        return;
                    }
                }
                Ok(_) => {
                    let _ = wr.shutdown().await;
                    return;
                }
                Err(e) => {
                    debug!(%peer, error = %e, "writing the response failed");
                    return;
                }
            }
        }
    }
}

/// What a plain connection's first bytes say it speaks.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    Http1,
    Http2,
}

/// Where a connection stands, for shutdown.
#[derive(Debug, Default)]
struct Flags {
    /// Waiting for the first byte of a request: safe to close.
    idle: AtomicBool,
    /// Shutting down: no more requests on this connection.
    draining: AtomicBool,
}

/// Runs `service` for a request that arrived whole, watching the connection meanwhile: a client
/// that closes it (or breaks it) cancels the call, as hyper's server did, so its worker place
/// frees at once. Bytes that arrive meanwhile (a pipelined request) are kept in `buf`, up to
/// `limit`. `None` when the client left.
fn unless_client_leaves<'a, F, R>(
    mut service: Pin<&'a mut F>,
    rd: &'a mut R,
    buf: &'a mut BytesMut,
    limit: usize,
) -> impl Future<Output = Option<F::Output>> + 'a
where
    F: Future,
    R: AsyncRead + Unpin,
{
    poll_fn(move |cx| {
        if let Poll::Ready(response) = service.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        while buf.len() < limit {
            HEAD_READ.prepare(buf);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *rd), cx, buf) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
}

/// An exchange whose request body is still coming: the connection's halves and buffers while
/// the body is read alongside the handler and the response.
struct Streamed<'a, R, W> {
    feed: Feed,
    rd: &'a mut R,
    buf: &'a mut BytesMut,
    wr: &'a mut W,
    wbuf: &'a mut BytesMut,
}

impl<R, W> Streamed<'_, R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// Runs `service` and writes its response while the body is read; `100 Continue` is sent when
    /// the handler first asks for the body, never after the response has started. Returns how
    /// the write went and whether the body was read whole (else the connection cannot go on).
    async fn answer<F>(
        self,
        mut service: Pin<&mut F>,
        exchange: &mut Exchange,
        wants_trailers: bool,
        flags: &Flags,
    ) -> (io::Result<bool>, bool)
    where
        F: Future<Output = Response<Body>>,
    {
        let Self {
            mut feed,
            rd,
            buf,
            wr,
            wbuf,
        } = self;
        let mut want_continue = feed.take_wanted().map(Continue::new);
        let mut feed = pin!(Some(feed.run(rd, buf)));
        let mut fed = None;
        let response = poll_fn(|cx| {
            poll_alongside(feed.as_mut(), &mut fed, cx);
            if let Some(c) = &mut want_continue
                && c.poll(cx, wr).is_ready()
            {
                want_continue = None;
            }
            service.as_mut().poll(cx)
        })
        .await;
        if let Some(c) = want_continue.as_mut().filter(|c| c.writing()) {
            poll_fn(|cx| c.poll(cx, wr)).await;
        }
        drop(want_continue);

        if flags.draining.load(Ordering::Relaxed) {
            exchange.keep_alive = false;
        }
        let mut write = pin!(write_response(wr, wbuf, response, exchange, wants_trailers));
        let written = poll_fn(|cx| {
            poll_alongside(feed.as_mut(), &mut fed, cx);
            write.as_mut().poll(cx)
        })
        .await;
        (written, fed == Some(FeedEnd::Complete))
    }
}

/// Polls the body feed, if there is one still running, and keeps how it ended.
fn poll_alongside<F: Future<Output = FeedEnd>>(
    feed: Pin<&mut Option<F>>,
    fed: &mut Option<FeedEnd>,
    cx: &mut Context<'_>,
) {
    if fed.is_none()
        && let Some(feed) = feed.as_pin_mut()
        && let Poll::Ready(end) = feed.poll(cx)
    {
        *fed = Some(end);
    }
}

/// `100 Continue`, written once the handler first polls the body.
struct Continue {
    wanted: oneshot::Receiver<()>,
    /// Bytes of it written, once asked for.
    written: Option<usize>,
}

impl Continue {
    fn new(wanted: oneshot::Receiver<()>) -> Self {
        Self {
            wanted,
            written: None,
        }
    }

    fn writing(&self) -> bool {
        self.written.is_some()
    }

    /// Ready when written, or when the body was dropped without being polled.
    fn poll<W: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, wr: &mut W) -> Poll<()> {
        if self.written.is_none() {
            match ready!(Pin::new(&mut self.wanted).poll(cx)) {
                Ok(()) => self.written = Some(0),
                Err(_) => return Poll::Ready(()),
            }
        }
        while let Some(at) = self.written.filter(|&at| at < response::CONTINUE.len()) {
            match ready!(Pin::new(&mut *wr).poll_write(cx, &response::CONTINUE[at..])) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(n) => self.written = Some(at + n),
            }
        }
        Poll::Ready(())
    }
}

/// Writes `response`: its head, then its body as the plan frames it. `Ok(true)` when the body
/// was written whole and the connection can carry another exchange (as far as the response goes).
async fn write_response<W: AsyncWrite + Unpin>(
    wr: &mut W,
    wbuf: &mut BytesMut,
    response: Response<Body>,
    exchange: &mut Exchange,
    wants_trailers: bool,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let fields = body.take_fields();
    let plan = response::encode_head(
        wbuf,
        parts.status,
        &parts.headers,
        fields.as_deref(),
        &body.size_hint(),
        exchange,
    );
    drop((parts, fields));
    if plan == BodyPlan::None {
        drop(body);
        flush(wr, wbuf).await?;
        return Ok(true);
    }
    // A small body of known length is waited for with the head held back (as nginx buffers a
    // small upstream answer): a worker that writes its head and body apart then costs one write
    // to the client, not two, and the client can do nothing with the head alone.
    let hold = matches!(plan, BodyPlan::Length(n) if n <= COPY_MAX as u64);
    let mut sent: u64 = 0;
    let mut trailers: Option<HeaderMap> = None;
    let whole = loop {
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                // Nothing more yet: what is queued goes out before waiting for it.
                if !hold {
                    flush(wr, wbuf).await?;
                }
                body.frame().await
            }
        };
        let data = match frame {
            None => break true,
            Some(Err(e)) => {
                debug!(error = %e, "response body failed");
                break false;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    continue;
                }
            },
        };
        if data.is_empty() {
            continue;
        }
        let len = data.len() as u64;
        if let BodyPlan::Length(n) = plan
            && sent + len > n
        {
            debug!(
                declared = n,
                "response body is longer than its content-length"
            );
            break false;
        }
        sent += len;
        if plan == BodyPlan::Chunked {
            crate::invoke::h1::codec::put_chunk_header(wbuf, data.len());
        }
        if data.len() <= COPY_MAX {
            wbuf.extend_from_slice(&data);
        } else {
            let mut chained = (&mut *wbuf).chain(data);
            wr.write_all_buf(&mut chained).await?;
            wbuf.clear();
        }
        if plan == BodyPlan::Chunked {
            wbuf.extend_from_slice(b"\r\n");
        }
        if wbuf.len() >= WRITE_HIGH_WATER {
            flush(wr, wbuf).await?;
        }
    };
    let whole = whole
        && match plan {
            BodyPlan::Length(n) => sent == n,
            BodyPlan::Chunked => {
                let trailers = trailers.as_ref().filter(|_| wants_trailers);
                response::put_last_chunk(wbuf, trailers);
                true
            }
            BodyPlan::UntilClose | BodyPlan::None => true,
        };
    flush(wr, wbuf).await?;
    Ok(whole)
}

/// Writes out what `wbuf` holds.
async fn flush<W: AsyncWrite + Unpin>(wr: &mut W, wbuf: &mut BytesMut) -> io::Result<()> {
    if !wbuf.is_empty() {
        wr.write_all_buf(wbuf).await?;
        wbuf.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use http::{HeaderValue, Method, StatusCode, Version};
    use http_body::Frame;
    use http_body_util::StreamBody;

    /// Records what is written and in how many writes.
    #[derive(Default)]
    struct Recorder {
        data: Vec<u8>,
        writes: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.data.extend_from_slice(buf);
            this.writes += 1;
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A body whose frames each come after one pending poll, as a worker's do.
    fn late_frames(frames: Vec<Frame<Bytes>>) -> Body {
        let stream = futures_util::stream::iter(frames).then(|frame| async move {
            tokio::task::yield_now().await;
            Ok::<_, crate::body::BoxError>(frame)
        });
        crate::body::stream(StreamBody::new(stream))
    }

    async fn write(
        response: Response<Body>,
        method: Method,
        version: Version,
        wants_trailers: bool,
    ) -> (String, io::Result<bool>, usize, bool) {
        let mut out = Recorder::default();
        let mut wbuf = BytesMut::new();
        let mut exchange = Exchange::new(&method, version, true);
        let whole =
            write_response(&mut out, &mut wbuf, response, &mut exchange, wants_trailers).await;
        let text = String::from_utf8(out.data).expect("utf8");
        (text, whole, out.writes, exchange.keep_alive)
    }

    #[tokio::test]
    async fn a_small_answer_of_known_length_is_one_write_even_when_its_body_is_late() {
        let mut response =
            Response::new(late_frames(vec![Frame::data(Bytes::from_static(b"hello"))]));
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        let (text, whole, writes, keep) =
            write(response, Method::POST, Version::HTTP_11, false).await;
        assert!(whole.expect("written"));
        assert!(keep);
        assert_eq!(writes, 1, "{text}");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("content-length: 5\r\n\r\nhello"), "{text}");
    }

    #[tokio::test]
    async fn streamed_answers_are_chunked_with_trailers_only_when_asked_for() {
        let frames = || {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-sum", HeaderValue::from_static("9"));
            vec![
                Frame::data(Bytes::from_static(b"data: 1\n\n")),
                Frame::data(Bytes::from_static(b"data: 2\n\n")),
                Frame::trailers(trailers),
            ]
        };
        let (text, whole, writes, _) = write(
            Response::new(late_frames(frames())),
            Method::GET,
            Version::HTTP_11,
            true,
        )
        .await;
        assert!(whole.expect("written"));
        assert!(writes >= 3, "each frame goes out as it comes: {writes}");
        assert!(
            text.ends_with(
                "transfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\nx-sum: 9\r\n\r\n"
            ),
            "{text}"
        );
        let (text, _, _, _) = write(
            Response::new(late_frames(frames())),
            Method::GET,
            Version::HTTP_11,
            false,
        )
        .await;
        assert!(text.ends_with("\r\n0\r\n\r\n"), "{text}");
        // HTTP/1.0: no chunks, the close ends the body.
        let (text, whole, _, keep) = write(
            Response::new(late_frames(frames())),
            Method::GET,
            Version::HTTP_10,
            false,
        )
        .await;
        assert!(whole.expect("written"));
        assert!(!keep);
        assert!(
            text.ends_with("connection: close\r\n\r\ndata: 1\n\ndata: 2\n\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_body_that_breaks_its_length_ends_the_connection() {
        for (declared, body) in [("10", &b"short"[..]), ("2", b"longer")] {
            let mut response =
                Response::new(late_frames(vec![Frame::data(Bytes::from_static(body))]));
            response.headers_mut().insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from_str(declared).expect("value"),
            );
            let (_, whole, _, _) = write(response, Method::GET, Version::HTTP_11, false).await;
            assert!(!whole.expect("written"), "{declared} vs {body:?}");
        }
        let mut response = Response::new(crate::body::full(Bytes::from_static(b"gone")));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let (text, whole, _, _) = write(response, Method::GET, Version::HTTP_11, false).await;
        assert!(whole.expect("written"));
        assert!(
            text.ends_with("\r\n\r\n") && !text.contains("gone"),
            "{text}"
        );
    }
}
