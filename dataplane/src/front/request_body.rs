//! A request body that did not arrive whole with its head: the [`Feed`] reads it off the
//! connection (length-delimited or chunked) while the handler runs, and hands it over a frame at a
//! time to the [`WireBody`] the handler polls. The channel holds one frame, so the client is read
//! no faster than the handler (and the worker behind it) takes the body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

use super::head::Framing;
use crate::body::BoxError;
use crate::invoke::h1::codec::{ChunkedDecoder, Decoded, ParseError};
use crate::io::ReadSize;

/// Read buffer room asked for before each read of a body: 16 KiB, doubled up to 64 KiB while reads
/// fill it (a large upload is read in large pieces, with fewer hand-offs).
const READ_SIZE: ReadSize = ReadSize::new(16 * 1024, 64 * 1024);

type Item = Result<Frame<Bytes>, BoxError>;

/// The handler's side: a streamed request body.
#[derive(Debug)]
pub(crate) struct WireBody {
    rx: mpsc::Receiver<Item>,
    /// Fired at the first poll: a client waiting for `100 Continue` gets it then.
    want: Option<oneshot::Sender<()>>,
    /// Bytes still to come of a length-delimited body (`sized`). Not an `Option`: this body
    /// travels inside every request, and the pair would make it 8 bytes larger.
    remaining: u64,
    sized: bool,
    ended: bool,
}

/// The connection's side: reads the body and feeds the [`WireBody`].
#[derive(Debug)]
pub(crate) struct Feed {
    tx: mpsc::Sender<Item>,
    wanted: Option<oneshot::Receiver<()>>,
    state: State,
}

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// How reading a request body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FeedEnd {
    /// The whole body was read: the connection can carry the next request.
    Complete,
    /// The handler dropped the body before its end; the rest is unread.
    Abandoned,
    /// The client broke the body off or framed it wrongly.
    Failed,
}

/// A body for `framing` (never [`Framing::Empty`], whose body is whole at once) and its feed.
pub(crate) fn channel(framing: Framing, expect_continue: bool) -> (WireBody, Feed) {
    let (tx, rx) = mpsc::channel(1);
    let (want, wanted) = if expect_continue {
        let (want, wanted) = oneshot::channel();
        (Some(want), Some(wanted))
    } else {
        (None, None)
    };
    let (state, remaining, sized) = match framing {
        Framing::Length(n) => (State::Length(n), n, true),
        Framing::Empty => (State::Length(0), 0, true),
        Framing::Chunked => (State::Chunked(ChunkedDecoder::default()), 0, false),
    };
    let body = WireBody {
        rx,
        want,
        remaining,
        sized,
        ended: false,
    };
    (body, Feed { tx, wanted, state })
}

impl Feed {
    /// Resolves when the handler first polls the body (`Err` if it dropped it unpolled); `None`
    /// unless the client sent `Expect: 100-continue`.
    pub(crate) fn take_wanted(&mut self) -> Option<oneshot::Receiver<()>> {
        self.wanted.take()
    }

    /// Reads the body: first what `buf` already holds, then from `rd`. Whatever follows the body
    /// (a pipelined request) stays in `buf`.
    pub(crate) async fn run<R: AsyncRead + Unpin>(
        mut self,
        rd: &mut R,
        buf: &mut BytesMut,
    ) -> FeedEnd {
        let mut read_size = READ_SIZE;
        loop {
            let data = match &mut self.state {
                State::Length(0) => return FeedEnd::Complete,
                State::Length(left) if !buf.is_empty() => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= take as u64;
                    Some(buf.split_to(take).freeze())
                }
                State::Length(_) => None,
                State::Chunked(decoder) => match decoder.decode(buf) {
                    Ok(Decoded::Data(data)) => Some(data),
                    Ok(Decoded::NeedMore) => None,
                    Ok(Decoded::Done(trailers)) => {
                        if let Some(trailers) = trailers {
                            // The handler may be gone already; the body was read whole either way.
                            let _ = self.tx.send(Ok(Frame::trailers(trailers))).await;
                        }
                        return FeedEnd::Complete;
                    }
                    Err(e) => {
                        let detail = match e {
                            ParseError::Chunk(what) => what,
                            _ => "malformed chunk",
                        };
                        return self
                            .fail(format!("malformed chunked request body: {detail}"))
                            .await;
                    }
                },
            };
            if let Some(data) = data {
                if self.tx.send(Ok(Frame::data(data))).await.is_err() {
                    return FeedEnd::Abandoned;
                }
                continue;
            }
            let room = read_size.prepare(buf);
            tokio::select! {
                biased;
                read = rd.read_buf(buf) => match read {
                    Ok(0) => {
                        return self
                            .fail("the client closed the connection before the end of the body".into())
                            .await;
                    }
                    Ok(n) => read_size.read(n, room),
                    Err(e) => return self.fail(format!("reading the request body failed: {e}")).await,
                },
                () = self.tx.closed() => return FeedEnd::Abandoned,
            }
        }
    }

    async fn fail(self, detail: String) -> FeedEnd {
        let _ = self.tx.send(Err(detail.into())).await;
        FeedEnd::Failed
    }
}

impl HttpBody for WireBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(want) = self.want.take() {
            let _ = want.send(());
        }
        let polled = self.rx.poll_recv(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.remaining = self.remaining.saturating_sub(data.len() as u64);
                }
            }
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || (self.sized && self.remaining == 0)
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Feeds `wire` (what the buffer holds, then what the reader gives) and collects the body.
    async fn feed(
        framing: Framing,
        buffered: &[u8],
        wire: &[u8],
    ) -> (Result<Vec<u8>, String>, FeedEnd, BytesMut) {
        let (body, feed) = channel(framing, false);
        let mut buf = BytesMut::from(buffered);
        let mut rd = wire;
        let collect = async {
            body.collect()
                .await
                .map(|c| c.to_bytes().to_vec())
                .map_err(|e| e.to_string())
        };
        let (collected, end) = tokio::join!(collect, feed.run(&mut rd, &mut buf));
        (collected, end, buf)
    }

    #[tokio::test]
    async fn length_bodies_stop_at_their_length() {
        let (body, end, rest) = feed(Framing::Length(10), b"0123", b"456789GET /").await;
        assert_eq!(body.as_deref(), Ok(&b"0123456789"[..]));
        assert_eq!(end, FeedEnd::Complete);
        assert_eq!(&rest[..], b"GET /", "the next request stays buffered");
    }

    #[tokio::test]
    async fn chunked_bodies_decode_and_keep_what_follows() {
        let (body, end, rest) = feed(
            Framing::Chunked,
            b"4\r\nwiki\r\n",
            b"5\r\npedia\r\n0\r\n\r\nNEXT",
        )
        .await;
        assert_eq!(body.as_deref(), Ok(&b"wikipedia"[..]));
        assert_eq!(end, FeedEnd::Complete);
        assert_eq!(&rest[..], b"NEXT");
    }

    #[tokio::test]
    async fn broken_bodies_fail_the_handler_read() {
        let (body, end, _) = feed(Framing::Length(10), b"0123", b"").await;
        assert!(
            body.expect_err("refused")
                .contains("before the end of the body")
        );
        assert_eq!(end, FeedEnd::Failed);
        let (body, end, _) = feed(Framing::Chunked, b"zz\r\n", b"").await;
        assert!(
            body.expect_err("refused")
                .contains("malformed chunked request body")
        );
        assert_eq!(end, FeedEnd::Failed);
    }

    #[tokio::test]
    async fn a_dropped_body_abandons_the_feed() {
        let (body, feed) = channel(Framing::Length(1 << 20), false);
        drop(body);
        let mut buf = BytesMut::from(&b"some"[..]);
        let mut rd: &[u8] = b"";
        assert_eq!(feed.run(&mut rd, &mut buf).await, FeedEnd::Abandoned);
    }

    #[tokio::test]
    async fn the_first_poll_is_what_the_client_waits_for() {
        let (mut body, mut feed) = channel(Framing::Length(3), true);
        let wanted = feed.take_wanted().expect("expect-continue");
        assert_eq!(body.size_hint().exact(), Some(3));
        let mut buf = BytesMut::new();
        let mut rd: &[u8] = b"abc";
        let run = feed.run(&mut rd, &mut buf);
        let first = body.frame();
        let (frame, end) = tokio::join!(first, run);
        let data = frame
            .expect("frame")
            .expect("ok")
            .into_data()
            .expect("data");
        assert_eq!(&data[..], b"abc");
        assert_eq!(end, FeedEnd::Complete);
        assert!(wanted.await.is_ok());
        assert!(body.is_end_stream());
    }
}
