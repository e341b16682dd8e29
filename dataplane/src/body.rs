//! Body types: the boxed response body every handler returns, and the size-limited request body
//! wrapper that streams client bodies upstream and remembers why it stopped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;

/// Error type of streamed bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body of every gateway answer: a fixed buffer or a stream from upstream.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub(crate) fn full(bytes: Bytes) -> Body {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed()
}

/// A streamed body (e.g. the control plane's response) as a [`Body`].
pub(crate) fn stream(body: Incoming) -> Body {
    body.map_err(BoxError::from).boxed()
}

/// What became of a [`LimitedBody`], shared with the code awaiting the upstream response.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyOutcome(Arc<AtomicU8>);

const OUTCOME_OK: u8 = 0;
const OUTCOME_TOO_LARGE: u8 = 1;
const OUTCOME_CLIENT_ERROR: u8 = 2;

/// Why a request body stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFailure {
    /// More bytes than the limit.
    TooLarge,
    /// The client's stream broke.
    ClientError,
}

impl BodyOutcome {
    pub(crate) fn failure(&self) -> Option<BodyFailure> {
        match self.0.load(Ordering::Acquire) {
            OUTCOME_TOO_LARGE => Some(BodyFailure::TooLarge),
            OUTCOME_CLIENT_ERROR => Some(BodyFailure::ClientError),
            _ => None,
        }
    }

    fn set(&self, value: u8) {
        // Keep the first failure.
        let _ = self
            .0
            .compare_exchange(OUTCOME_OK, value, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// The error a [`LimitedBody`] yields when the client sent too much.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub(crate) struct TooLarge(pub(crate) u64);

/// A client request body streamed upstream that fails once more than `limit` bytes went through
/// (which aborts the upstream request) and records why in a [`BodyOutcome`].
#[derive(Debug)]
pub(crate) struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    outcome: BodyOutcome,
}

impl LimitedBody {
    pub(crate) fn new(inner: Incoming, limit: u64) -> (Self, BodyOutcome) {
        let outcome = BodyOutcome::default();
        (
            Self {
                inner,
                remaining: limit,
                limit,
                outcome: outcome.clone(),
            },
            outcome,
        )
    }
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                self.outcome.set(OUTCOME_CLIENT_ERROR);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    if len > self.remaining {
                        self.outcome.set(OUTCOME_TOO_LARGE);
                        self.remaining = 0;
                        return Poll::Ready(Some(Err(Box::new(TooLarge(self.limit)))));
                    }
                    self.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Passing the exact hint through lets the client keep a Content-Length framing.
        self.inner.size_hint()
    }
}
