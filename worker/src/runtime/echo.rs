//! `builtin/echo`: the body goes host → device → host and comes back byte for byte, with the
//! request's `Content-Type`.
//!
//! Nothing is buffered whole: each received data frame runs through the backend's `echo` kernel
//! (on the blocking pool) and is sent on as it comes back. The response body pulls the request body,
//! so at most one frame is in the worker at a time whatever the body's size, and flow control on
//! both sides of the stream applies back-pressure. A stream reset drops the body, which drops the
//! pull; a kernel call already running finishes and its result is discarded.

use super::{Body, BoxError, Ctx, Exec, Invocation, RuntimeError};
use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use std::time::Instant;

/// The pull state of one echo stream.
struct Pump {
    body: Incoming,
    exec: Exec,
    label: String,
    done: bool,
}

impl Pump {
    /// The next echoed frame; `None` at the end of the request body or after an error.
    async fn next(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        if self.done {
            return None;
        }
        loop {
            let frame = match self.body.frame().await {
                None => return None,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(Box::new(e)));
                }
                Some(Ok(frame)) => frame,
            };
            // Trailers are not echoed: the response carries its own framing.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let arrived = Instant::now();
            let echoed = self
                .exec
                .run(&self.label, "echo", Some(arrived), move |b| b.echo(&data))
                .await;
            return Some(match echoed {
                Ok(out) => Ok(Frame::data(Bytes::from(out))),
                Err(e) => {
                    // The head is already sent: the only way left to fail is to reset the stream.
                    self.done = true;
                    Err(Box::new(e))
                }
            });
        }
    }
}

/// Answers the request body echoed through the device.
pub fn serve(
    ctx: &Ctx,
    inv: &Invocation,
    req: Request<Incoming>,
) -> Result<Response<Body>, RuntimeError> {
    let (parts, body) = req.into_parts();
    let pump = Pump {
        body,
        exec: ctx.exec.clone(),
        label: inv.label.clone(),
        done: false,
    };
    let frames = stream::unfold(pump, |mut pump| async move {
        let item = pump.next().await?;
        Some((item, pump))
    });
    let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
    *resp.status_mut() = StatusCode::OK;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    Ok(resp)
}
