//! One HTTP/3 request stream: the request head and a streamed [`RequestBody`] from
//! `recv_data`, [`crate::server::handle`], then the response head via `send_response` and body
//! frames via `send_data` as they arrive (SSE and large bodies stream), and `finish`.
//!
//! Cancellation: a client that resets its stream makes the request body or the next `send_data`
//! fail, and a client whose connection closes ends the wait for the response head; either way the
//! handler and its response body are dropped, which cancels the worker call and frees its admission
//! slot. (h3-quinn does not expose STOP_SENDING, so a stream reset after the whole request body
//! arrived is only noticed when the response head or body is written.) A response body that fails (the
//! worker broke off) resets the client's stream with `H3_INTERNAL_ERROR`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::error::Code;
use h3::server::RequestStream;
use http::{Request, Response, Version};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use tracing::debug;

use crate::body::{BoxError, RequestBody};
use crate::server::State;

/// The request half of an h3 stream as a body.
struct H3Body {
    recv: RequestStream<h3_quinn::RecvStream, Bytes>,
    done: bool,
}

impl HttpBody for H3Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.recv.poll_recv_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(mut data))) => {
                let bytes = data.copy_to_bytes(data.remaining());
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            // Request trailers are not forwarded (no invocation form uses them).
            Poll::Ready(Ok(None)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                self.done = true;
                Poll::Ready(Some(Err(Box::new(e))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Serves one request stream to the end.
pub(super) async fn serve(
    state: &State,
    conn: &quinn::Connection,
    peer: SocketAddr,
    req: Request<()>,
    stream: RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
) {
    let (mut send, recv) = stream.split();
    let (mut parts, ()) = req.into_parts();
    parts.version = Version::HTTP_3;
    let body = RequestBody::streamed(H3Body { recv, done: false });
    let request = Box::new(Request::from_parts(parts, body));
    let response = tokio::select! {
        // No Alt-Svc on an HTTP/3 answer: the client is already there.
        response = crate::server::handle(state, peer, request, None) => response,
        // The client's connection is gone: drop the handler, which cancels the worker call.
        reason = conn.closed() => {
            debug!(%peer, %reason, "HTTP/3 connection closed before the response head");
            return;
        }
    };
    // The HTTP/3 head is written from the map: the worker's fields go into it.
    let mut response = response;
    crate::fields::materialize(&mut response);
    let (mut parts, mut body) = response.into_parts();
    // Connection-specific headers are malformed in HTTP/3 (RFC 9114 §4.2).
    crate::headers::remove_hop_by_hop(&mut parts.headers);
    if let Err(e) = send.send_response(Response::from_parts(parts, ())).await {
        debug!(%peer, error = %e, "HTTP/3 response head not sent; client gone");
        return;
    }
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                debug!(%peer, error = %e, "response body failed; resetting the HTTP/3 stream");
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        let sent = match frame.into_data() {
            Ok(data) if data.is_empty() => Ok(()),
            Ok(data) => send.send_data(data).await,
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => send.send_trailers(trailers).await,
                Err(_) => Ok(()),
            },
        };
        if let Err(e) = sent {
            // Dropping the body here cancels the worker call.
            debug!(%peer, error = %e, "HTTP/3 client went away mid-response");
            return;
        }
    }
    if let Err(e) = send.finish().await {
        debug!(%peer, error = %e, "HTTP/3 stream finish failed");
    }
}
