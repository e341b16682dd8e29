//! The two directions of one HTTP/1.1 worker exchange: the [`Pump`] that writes the request head
//! and body (queued wire pieces, one vectored write for the head and the first body frame), and
//! the [`ResponseBody`] that reads the response body off the connection as the client's side
//! polls it, keeps the pump going, and puts the connection back in the pool at the end.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::codec::{self, ChunkedDecoder, Decoded, RequestFraming, ResponseFraming};
use super::{Conn, WorkerPool};
use crate::body::{Body, BoxError};
use crate::fields::{Fielded, WireFields};
use crate::io::ReadSize;

/// Request bytes queued for the socket before the body is no longer polled (backpressure).
const HIGH_WATER: usize = 64 * 1024;
/// Read buffer room asked for before each read of a worker's answer: 16 KiB, doubled up to
/// 64 KiB while reads fill it.
pub(super) const READ_SIZE: ReadSize = ReadSize::new(16 * 1024, 64 * 1024);
/// The most pieces handed to one vectored write.
const MAX_IOVECS: usize = 16;
/// The most pieces queued for the socket at once.
const MAX_PIECES: usize = 256;

/// What a read from the worker gave.
pub(super) enum ReadOutcome {
    Data,
    Eof,
}

impl Conn {
    /// Reads what the socket has into the read buffer.
    /// Through `AsyncRead`, whose short reads clear the socket's readiness: the next read waits
    /// for the reactor instead of costing a `recv` that answers `EAGAIN`.
    pub(super) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<ReadOutcome>> {
        let room = self.read_size.prepare(&mut self.read_buf);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read_buf
        ))?;
        self.read_size.read(n, room);
        Poll::Ready(Ok(if n == 0 {
            ReadOutcome::Eof
        } else {
            ReadOutcome::Data
        }))
    }
}

/// Writes the request: the head, then the body as the client sends it, framed by length or
/// chunked.
pub(super) struct Pump {
    /// `None` once the body has ended.
    body: Option<Body>,
    framing: RequestFraming,
    /// Body bytes still owed under `RequestFraming::Length`.
    owed: u64,
    out: VecDeque<Bytes>,
    queued: usize,
    /// Everything queued so far, while it fits in [`HIGH_WATER`]: on a reused connection that
    /// turns out to be closed, an idempotent request that ended within it is sent again on a new
    /// one.
    replay: Option<Vec<Bytes>>,
    /// Bytes in `replay` (pieces are bounded too: a body of many tiny frames is not kept).
    replay_bytes: usize,
}

impl Pump {
    /// `replayable`: keep what is sent for [`Pump::take_replay`].
    pub(super) fn new(head: Bytes, body: Body, framing: RequestFraming, replayable: bool) -> Self {
        let mut pump = Self {
            body: (framing != RequestFraming::Empty).then_some(body),
            framing,
            owed: match framing {
                RequestFraming::Length(n) => n,
                _ => 0,
            },
            out: VecDeque::with_capacity(4),
            queued: 0,
            replay: replayable.then(Vec::new),
            replay_bytes: 0,
        };
        pump.queue(head);
        pump
    }

    /// A pump that sends `pieces` again (a whole request, body ended).
    pub(super) fn replaying(pieces: Vec<Bytes>) -> Self {
        let queued = pieces.iter().map(Bytes::len).sum();
        Self {
            body: None,
            framing: RequestFraming::Empty,
            owed: 0,
            out: pieces.into(),
            queued,
            replay: None,
            replay_bytes: 0,
        }
    }

    /// The whole request as sent, when it ended within the replay bound.
    pub(super) fn take_replay(&mut self) -> Option<Vec<Bytes>> {
        if self.body.is_some() {
            return None;
        }
        self.replay.take()
    }

    /// Whether the whole request is on the wire.
    pub(super) fn is_done(&self) -> bool {
        self.body.is_none() && self.out.is_empty()
    }

    fn queue(&mut self, bytes: Bytes) {
        self.queued += bytes.len();
        if let Some(replay) = &mut self.replay {
            self.replay_bytes += bytes.len();
            if self.replay_bytes <= HIGH_WATER && replay.len() < MAX_PIECES {
                replay.push(bytes.clone());
            } else {
                self.replay = None;
            }
        }
        self.out.push_back(bytes);
    }

    /// Moves the request forward: `Ready(Ok)` once it is all written, `Pending` while waiting on
    /// the body or the socket (the task is woken by either).
    pub(super) fn poll_send(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), BoxError>> {
        loop {
            self.fill(cx)?;
            if self.out.is_empty() {
                return if self.body.is_none() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for (slot, piece) in slices.iter_mut().zip(self.out.iter()) {
                *slot = IoSlice::new(piece);
                n += 1;
            }
            let written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(Box::new(io::Error::from(io::ErrorKind::WriteZero))));
            }
            self.advance(written);
        }
    }

    /// Queues body frames that are ready, up to [`HIGH_WATER`] bytes or [`MAX_PIECES`] pieces
    /// (a body of many tiny frames must not queue one entry per byte).
    fn fill(&mut self, cx: &mut Context<'_>) -> Result<(), BoxError> {
        while self.queued < HIGH_WATER && self.out.len() < MAX_PIECES {
            let Some(body) = self.body.as_mut() else {
                return Ok(());
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Some(Err(e))) => return Err(e),
                Poll::Ready(Some(Ok(frame))) => {
                    // Request trailers have no HTTP/1.1 form the gateway forwards; dropped.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    match self.framing {
                        RequestFraming::Length(_) => {
                            self.owed = self
                                .owed
                                .checked_sub(data.len() as u64)
                                .ok_or("the request body is longer than its content-length")?;
                            self.queue(data);
                        }
                        RequestFraming::Chunked => {
                            self.queue(codec::chunk_header(data.len()));
                            self.queue(data);
                            self.queue(Bytes::from_static(b"\r\n"));
                        }
                        RequestFraming::Empty => {}
                    }
                }
                Poll::Ready(None) => {
                    self.body = None;
                    match self.framing {
                        RequestFraming::Length(_) if self.owed != 0 => {
                            return Err("the request body ended before its content-length".into());
                        }
                        RequestFraming::Chunked => self.queue(Bytes::from_static(b"0\r\n\r\n")),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn advance(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            let Some(front) = self.out.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.out.pop_front();
        }
    }
}

/// How the rest of the response body is read.
#[derive(Debug)]
enum Decode {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A worker's response body, read from the connection that carried the request.
pub(crate) struct ResponseBody {
    /// `None` once the body ended (the connection went back to the pool or was closed).
    conn: Option<Conn>,
    pump: Pump,
    decode: Decode,
    keep_alive: bool,
    pool: Arc<WorkerPool>,
    /// The response head's fields, until the body is wrapped for the client.
    fields: Option<Box<WireFields>>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("decode", &self.decode)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// Boxed as the HTTP/1.1 half of [`crate::invoke::dispatch::WorkerBody`].
impl Fielded for Box<ResponseBody> {
    fn fields(&self) -> Option<&WireFields> {
        self.fields.as_deref()
    }

    fn fields_mut(&mut self) -> Option<&mut WireFields> {
        self.fields.as_deref_mut()
    }

    fn take_fields(&mut self) -> Option<Box<WireFields>> {
        self.fields.take()
    }
}

impl ResponseBody {
    pub(super) fn new(
        conn: Conn,
        pump: Pump,
        framing: ResponseFraming,
        keep_alive: bool,
        pool: Arc<WorkerPool>,
        fields: Box<WireFields>,
    ) -> Self {
        let decode = match framing {
            ResponseFraming::None | ResponseFraming::Length(0) => Decode::Done,
            ResponseFraming::Length(n) => Decode::Length(n),
            ResponseFraming::Chunked => Decode::Chunked(ChunkedDecoder::default()),
            ResponseFraming::UntilClose => Decode::UntilClose,
        };
        let mut body = Self {
            conn: Some(conn),
            pump,
            decode,
            keep_alive,
            pool,
            fields: Some(fields),
        };
        if matches!(body.decode, Decode::Done) {
            body.finish();
        }
        body
    }

    /// The response is complete: the connection goes back to the pool when the request was
    /// wholly sent, the worker allows reuse and sent nothing more; otherwise it is closed.
    fn finish(&mut self) {
        self.decode = Decode::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && self.pump.is_done()
            && conn.read_buf.is_empty()
        {
            self.pool.checkin(conn);
        }
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.decode = Decode::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // The worker may still be reading the request while it answers (echo streams).
            if !this.pump.is_done()
                && let Poll::Ready(Err(e)) = this.pump.poll_send(&mut conn.io, cx)
            {
                return this.fail(e);
            }
            match &mut this.decode {
                Decode::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decode::Length(left) => {
                    if !conn.read_buf.is_empty() {
                        let take = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.read_buf.len());
                        let data = conn.read_buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            // Given back as the last bytes go out: the next call may use it now.
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Decode::Chunked(decoder) => match decoder.decode(&mut conn.read_buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Done(trailers)) => {
                        this.finish();
                        return Poll::Ready(trailers.map(|t: HeaderMap| Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(e),
                },
                Decode::UntilClose => {
                    if !conn.read_buf.is_empty() {
                        let data = conn.read_buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match conn.poll_read(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(ReadOutcome::Data)) => {}
                Poll::Ready(Ok(ReadOutcome::Eof)) => {
                    if matches!(this.decode, Decode::UntilClose) {
                        this.decode = Decode::Done;
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    return this.fail("the worker closed the connection before the response ended");
                }
                Poll::Ready(Err(e)) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decode, Decode::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(n) => SizeHint::with_exact(n),
            Decode::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
