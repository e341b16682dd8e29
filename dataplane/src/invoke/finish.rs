//! The `finish` step: what is recorded when an invocation ends, and the response body that carries
//! the invocation's admission slot and worker load to the end of the stream.
//!
//! A [`Finish`] guard lives from the start of the pipeline until the response body ends. If it is
//! dropped first — the client went away while the gateway waited for the worker, or in the middle
//! of a streamed response — the invocation counts as `499` in `app_invocation_error`, and dropping
//! the worker request (or its response body) resets the worker's h2 stream, which cancels the work.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};
use crate::invoke::admit::Slot;
use crate::invoke::dispatch::{Outstanding, WorkerBody};

/// The function (and version) the access line names: as the request named them once its target
/// is resolved, then the version it was routed to, which served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Named {
    pub(crate) function_id: uuid::Uuid,
    pub(crate) version_id: Option<uuid::Uuid>,
}

/// Records the end of one invocation; `499` unless [`Finish::done`] or [`Finish::failed`] ran.
#[derive(Debug)]
pub(crate) struct Finish {
    /// Label for the metrics; set once the target is known.
    pub(crate) function_id: Option<uuid::Uuid>,
    /// What the access line names (see [`Named`]).
    pub(crate) named: Option<Named>,
    /// Whether the request was routed to a worker (a worker request may be cancelled).
    pub(crate) routed: bool,
    // Atomic only so the body that owns it stays `Sync`.
    done: AtomicBool,
}

impl Finish {
    pub(crate) fn new() -> Self {
        Self {
            function_id: None,
            named: None,
            routed: false,
            done: AtomicBool::new(false),
        }
    }

    fn label(&self) -> String {
        self.function_id
            .map_or_else(|| "unknown".to_owned(), |id| id.to_string())
    }

    /// The invocation completed (its response ended).
    pub(crate) fn done(&self) {
        self.done.store(true, Ordering::Release);
    }

    /// The gateway answered with an error of `status`.
    pub(crate) fn failed(&self, status: StatusCode) {
        if !self.done.swap(true, Ordering::AcqRel) {
            crate::metrics::record_invocation_error(
                crate::metrics::status_label(status),
                self.label(),
            );
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.done.load(Ordering::Acquire) {
            crate::metrics::record_invocation_error("499", self.label());
            if self.routed {
                // The worker request dropped with this invocation is cancelled: its h2 stream is
                // reset, or its HTTP/1.1 connection closed.
                crate::metrics::record_worker_stream_reset();
            }
            tracing::debug!(function_id = %self.label(), "client went away before the response finished");
        }
    }
}

/// What a response body holds until it ends: the admission slot and the worker load (only their
/// drops matter).
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct Held {
    pub(crate) slot: Slot,
    pub(crate) outstanding: Outstanding,
}

/// What an invocation answers with: on the left, a passthrough call's worker body as the worker
/// client gave it (not boxed once more: the whole response is boxed once, as [`Tracked`]); on the
/// right, a body already boxed (pexec's, which may have been parked; the gateway's own answers).
pub(crate) type Answer = http_body_util::Either<WorkerBody, Body>;

/// The client's response body: the worker's body (or the gateway's own), streamed frame by frame,
/// holding the invocation's places until it ends or is dropped.
#[derive(Debug)]
pub(crate) struct Tracked {
    inner: Answer,
    finish: Finish,
    held: Option<Held>,
}

impl Tracked {
    pub(crate) fn new(inner: Answer, finish: Finish, held: Option<Held>) -> Self {
        let mut tracked = Self {
            inner,
            finish,
            held,
        };
        if tracked.inner.is_end_stream() {
            tracked.end();
        }
        tracked
    }

    /// The body ended: the invocation is done, and its places are given back now rather than when
    /// the server gets round to dropping the body (a client that saw the end may send the next
    /// request at once).
    fn end(&mut self) {
        self.finish.done();
        self.held = None;
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.end(),
            Poll::Ready(Some(Err(e))) => {
                // The worker broke the stream, not the client.
                tracing::debug!(error = %e, "worker response body failed");
                self.finish.failed(StatusCode::BAD_GATEWAY);
                self.held = None;
            }
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.end(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_body_read_to_the_end_is_done() {
        let body = crate::body::full(Bytes::from_static(b"abc"));
        let mut f = Finish::new();
        f.function_id = Some(uuid::Uuid::nil());
        let t = Tracked::new(Answer::Right(body), f, None);
        let bytes = t.collect().await.expect("collect").to_bytes();
        assert_eq!(&bytes[..], b"abc");
    }

    #[test]
    fn failed_disarms() {
        let f = Finish::new();
        f.failed(StatusCode::NOT_FOUND);
        assert!(f.done.load(Ordering::Acquire));
    }
}
