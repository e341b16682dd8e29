//! Body types: the boxed response body every handler returns, the protocol-neutral
//! [`RequestBody`] every listener produces (whole or streamed by the HTTP/1.1 front, hyper's
//! `Incoming` for HTTP/2 unchanged, a streamed h3 body for HTTP/3), and the size-limited wrapper
//! that streams client bodies upstream and remembers why it stopped.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use hyper::body::Incoming;

use crate::fields::{Fielded, WireFields};

/// Error type of streamed bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body of every gateway answer: a fixed buffer or a stream from upstream, type-erased,
/// with the worker's header fields when they travel unparsed beside it ([`crate::fields`]).
pub(crate) struct Body {
    inner: BoxBody<Bytes, BoxError>,
    fields: Option<Box<WireFields>>,
}

impl Body {
    /// `body`, type-erased, without fields.
    pub(crate) fn new<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
    {
        Self {
            inner: BoxBody::new(body),
            fields: None,
        }
    }

    /// `body`, type-erased, carrying the fields it carried (a worker's response body).
    pub(crate) fn carrying<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes, Error = BoxError> + Fielded + Send + Sync + 'static,
    {
        Self::wrapping(body, |body| body)
    }

    /// `wrap(inner)`, type-erased, carrying the fields `inner` carried: how a layer over a
    /// response body hands them on.
    pub(crate) fn wrapping<I, B>(mut inner: I, wrap: impl FnOnce(I) -> B) -> Self
    where
        I: Fielded,
        B: HttpBody<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
    {
        let fields = inner.take_fields();
        Self::new(wrap(inner)).with_fields(fields)
    }

    pub(crate) fn with_fields(mut self, fields: Option<Box<WireFields>>) -> Self {
        self.fields = fields;
        self
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl Fielded for Body {
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

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A complete body from bytes.
pub(crate) fn full(bytes: Bytes) -> Body {
    Body::new(http_body_util::Full::new(bytes).map_err(|never| match never {}))
}

/// A streamed body (the control plane's, or a client's request body) as a [`Body`].
pub(crate) fn stream<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    Body::new(body.map_err(Into::into))
}

/// A client's request as every front hands it on: boxed where the front makes it. The request is
/// about 270 bytes, and it moves through several layers (the server's answer, the invoker, each
/// a future holding it) before the worker's request is built from it: each move of the box
/// copies 8 bytes instead.
pub(crate) type ClientRequest = Box<http::Request<RequestBody>>;

/// A client's request body, whichever protocol listener produced it: bytes that came whole with
/// an HTTP/1.1 head, the HTTP/1.1 front's streamed body, hyper's `Incoming` for HTTP/2 (no extra
/// allocation or copy), or any streamed body from another listener. An HTTP/1.1 request's header
/// fields travel with it, unparsed ([`crate::fields`]).
#[derive(Debug)]
pub(crate) struct RequestBody(Inner);

/// The HTTP/1.1 variants hold the fields beside the body (rather than the struct holding them
/// for all): the request moves several times on its way, and this keeps it 8 bytes smaller.
enum Inner {
    Whole(http_body_util::Full<Bytes>, Option<Box<WireFields>>),
    Wire(crate::front::WireBody, Option<Box<WireFields>>),
    Hyper(Incoming),
    /// `Mutex` only makes the body `Sync` (what [`Body`] needs): polling goes through
    /// `get_mut`, which never locks.
    Stream(Mutex<UnsyncBoxBody<Bytes, BoxError>>),
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Whole(b, _) => b.fmt(f),
            Self::Wire(b, _) => b.fmt(f),
            Self::Hyper(b) => b.fmt(f),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl RequestBody {
    /// A body that arrived whole (possibly empty) with an HTTP/1.1 head's fields.
    pub(crate) fn whole(bytes: Bytes, fields: Box<WireFields>) -> Self {
        Self(Inner::Whole(http_body_util::Full::new(bytes), Some(fields)))
    }

    /// A body of `bytes` in hand, without header fields (a request the gateway makes itself).
    pub(crate) fn full(bytes: Bytes) -> Self {
        Self(Inner::Whole(http_body_util::Full::new(bytes), None))
    }

    /// The HTTP/1.1 front's body for a request parsed with an empty one ([`Self::whole`]): the
    /// bytes that came whole after the head, its fields kept.
    pub(crate) fn set_whole(&mut self, bytes: Bytes) {
        let fields = self.take_fields();
        self.0 = Inner::Whole(http_body_util::Full::new(bytes), fields);
    }

    /// [`Self::set_whole`] for a body that did not come whole: read off the connection as it is
    /// polled.
    pub(crate) fn set_wire(&mut self, body: crate::front::WireBody) {
        let fields = self.take_fields();
        self.0 = Inner::Wire(body, fields);
    }

    /// A body streamed by another listener (HTTP/3).
    pub(crate) fn streamed<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        Self(Inner::Stream(Mutex::new(UnsyncBoxBody::new(body))))
    }

    /// The body as a [`Body`] to send on, carrying its fields.
    pub(crate) fn into_body(self) -> Body {
        Body::wrapping(self, |body| body)
    }
}

/// An empty body, without header fields: what is left of a request whose body was taken.
impl Default for RequestBody {
    fn default() -> Self {
        Self::full(Bytes::new())
    }
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        Self(Inner::Hyper(body))
    }
}

impl Fielded for RequestBody {
    fn fields(&self) -> Option<&WireFields> {
        match &self.0 {
            Inner::Whole(_, fields) | Inner::Wire(_, fields) => fields.as_deref(),
            Inner::Hyper(_) | Inner::Stream(_) => None,
        }
    }

    fn fields_mut(&mut self) -> Option<&mut WireFields> {
        match &mut self.0 {
            Inner::Whole(_, fields) | Inner::Wire(_, fields) => fields.as_deref_mut(),
            Inner::Hyper(_) | Inner::Stream(_) => None,
        }
    }

    fn take_fields(&mut self) -> Option<Box<WireFields>> {
        match &mut self.0 {
            Inner::Whole(_, fields) | Inner::Wire(_, fields) => fields.take(),
            Inner::Hyper(_) | Inner::Stream(_) => None,
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Inner::Whole(b, _) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            Inner::Wire(b, _) => Pin::new(b).poll_frame(cx),
            Inner::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Inner::Stream(m) => match m.get_mut() {
                Ok(b) => Pin::new(b).poll_frame(cx),
                Err(_) => Poll::Ready(Some(Err("request body poisoned".into()))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Whole(b, _) => b.is_end_stream(),
            Inner::Wire(b, _) => b.is_end_stream(),
            Inner::Hyper(b) => b.is_end_stream(),
            Inner::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Whole(b, _) => b.size_hint(),
            Inner::Wire(b, _) => b.size_hint(),
            Inner::Hyper(b) => b.size_hint(),
            Inner::Stream(_) => SizeHint::default(),
        }
    }
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
    inner: RequestBody,
    remaining: u64,
    limit: u64,
    outcome: BodyOutcome,
}

impl LimitedBody {
    pub(crate) fn new(inner: RequestBody, limit: u64) -> (Self, BodyOutcome) {
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
                Poll::Ready(Some(Err(e)))
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
