//! `builtin/echo`: the body goes host → device → host and comes back byte for byte, with the
//! request's `Content-Type`, and its `Content-Length` when the request had one.
//!
//! Nothing is buffered whole: the response body pulls the request body, and each pull takes one
//! data frame plus whatever further frames have already arrived (up to [`MAX_CHUNK`]), runs them
//! through the backend's `echo` kernel in one call (on the blocking pool) and sends the result on.
//! Small HTTP/2 frames therefore share one device round trip, yet nothing waits for data that has
//! not arrived, and at most one chunk is in the worker at a time whatever the body's size; flow
//! control on both sides of the stream applies back-pressure. A stream reset drops the body, which
//! drops the pull; a kernel call already running finishes and its result is discarded. The first
//! chunk is echoed before the response head is handed to the server, so that the two leave
//! together.

use super::{Body, BoxError, Ctx, Exec, Invocation, RuntimeError};
use crate::metrics::VersionMetrics;
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt, stream};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use std::sync::Arc;
use std::time::Instant;

/// Most bytes one echo call takes: frames already received are gathered up to this size, so a
/// body that arrives as many small frames costs one device round trip per chunk, not per frame.
const MAX_CHUNK: usize = 1 << 20;

/// The pull state of one echo stream.
struct Pump {
    body: Incoming,
    exec: Exec,
    metrics: Arc<VersionMetrics>,
    /// The request body ended (or failed) while a chunk was being gathered.
    ended: bool,
    /// A body error seen while gathering; reported after the chunk before it.
    failed: Option<BoxError>,
}

/// What one non-waiting look at the request body found.
enum Ready {
    Data(Bytes),
    Nothing,
    End,
}

impl Pump {
    /// The next frame of the request body, waiting for it: data, or `None` at the end.
    async fn next_data(&mut self) -> Option<Result<Bytes, BoxError>> {
        loop {
            let frame = match self.body.frame().await? {
                Ok(frame) => frame,
                Err(e) => return Some(Err(Box::new(e))),
            };
            // Trailers are not echoed: the response carries its own framing.
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                return Some(Ok(data));
            }
        }
    }

    /// A frame that has already arrived, without waiting.
    fn ready_data(&mut self) -> Ready {
        loop {
            match self.body.frame().now_or_never() {
                None => return Ready::Nothing,
                Some(None) => return Ready::End,
                Some(Some(Err(e))) => {
                    self.failed = Some(Box::new(e));
                    return Ready::End;
                }
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Ready::Data(data);
                    }
                }
            }
        }
    }

    /// The next echoed chunk; `None` at the end of the request body or after an error.
    async fn next(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        if self.ended {
            return None;
        }
        let first = match self.next_data().await? {
            Ok(data) => data,
            Err(e) => {
                self.ended = true;
                return Some(Err(e));
            }
        };
        let arrived = Instant::now();
        let mut chunk: Option<BytesMut> = None;
        while chunk.as_ref().map_or(first.len(), BytesMut::len) < MAX_CHUNK {
            match self.ready_data() {
                Ready::Nothing => break,
                Ready::End => {
                    self.ended = true;
                    break;
                }
                Ready::Data(more) => chunk
                    .get_or_insert_with(|| {
                        let mut buf = BytesMut::with_capacity(MAX_CHUNK.min(first.len() * 8));
                        buf.extend_from_slice(&first);
                        buf
                    })
                    .extend_from_slice(&more),
            }
        }
        let data = chunk.map_or(first, BytesMut::freeze);
        let echoed = self
            .exec
            .run(&self.metrics, "echo", Some(arrived), move |b| b.echo(&data))
            .await;
        Some(match echoed {
            Ok(out) => Ok(Frame::data(Bytes::from(out))),
            Err(e) => {
                // The head is already sent: the only way left to fail is to reset the stream.
                self.ended = true;
                self.failed = None;
                Err(Box::new(e))
            }
        })
    }
}

/// Answers the request body echoed through the device. The answer is returned with its first
/// chunk already echoed, so that the server writes the head and that chunk together: a small
/// echo leaves in one write, not in a head the server flushes while the kernel call is on the
/// blocking pool and a body after it (two segments, two reads and wake-ups for whoever reads
/// them).
pub async fn serve(
    ctx: &Ctx,
    inv: &Invocation,
    req: Request<Incoming>,
) -> Result<Response<Body>, RuntimeError> {
    let (parts, body) = req.into_parts();
    // The echo is as long as the request: a known length goes on the response, which then needs
    // no chunked framing (and its end is known with its last byte).
    let length = http_body::Body::size_hint(&body).exact();
    let mut pump = Pump {
        body,
        exec: ctx.exec.clone(),
        metrics: Arc::clone(&inv.metrics),
        ended: false,
        failed: None,
    };
    let first = pump.next().await;
    let rest = stream::unfold(pump, |mut pump| async move {
        let item = pump.next().await?;
        Some((item, pump))
    });
    let frames = stream::iter(first).chain(rest);
    let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
    *resp.status_mut() = StatusCode::OK;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    if let Some(n) = length {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(resp)
}
