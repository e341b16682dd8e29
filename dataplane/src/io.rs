//! The accepted-connection wrapper: a deadline for the protocol-detection phase (hyper's own header
//! timeout only starts once HTTP/1 is chosen) and a lingering close, so that a response written just
//! before closing (a 413 or 431 sent while the client is still sending) is not destroyed by a TCP
//! reset caused by unread input.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// The HTTP/2 connection preface that `hyper_util`'s auto builder looks for.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a closed connection keeps reading (and discarding) what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much a closed connection reads and discards at most before giving up.
const LINGER_BYTES: usize = 1024 * 1024;

/// An accepted TCP connection as hyper sees it.
#[derive(Debug)]
pub(crate) struct ConnIo {
    /// `None` only after drop handed it to the lingering task.
    stream: Option<TcpStream>,
    /// Present until the protocol is known (first byte that is not the h2 preface, or the whole
    /// preface); reading fails with `TimedOut` if it expires first.
    detect: Option<Detect>,
}

#[derive(Debug)]
struct Detect {
    preface_bytes_seen: usize,
    deadline: Pin<Box<Sleep>>,
}

impl ConnIo {
    pub(crate) fn new(stream: TcpStream, detect_timeout: Duration) -> Self {
        Self {
            stream: Some(stream),
            detect: Some(Detect {
                preface_bytes_seen: 0,
                deadline: Box::pin(tokio::time::sleep(detect_timeout)),
            }),
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Detect {
    /// Feeds newly read bytes; returns true once the protocol is decided.
    fn decided(&mut self, new: &[u8]) -> bool {
        if new.is_empty() {
            return true; // EOF
        }
        for &b in new {
            if H2_PREFACE.get(self.preface_bytes_seen) != Some(&b) {
                return true; // not h2: HTTP/1, whose own header timeout takes over
            }
            self.preface_bytes_seen += 1;
        }
        self.preface_bytes_seen >= H2_PREFACE.len()
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(detect) = &mut this.detect
            && detect.deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request within header-read-timeout",
            )));
        }
        let before = buf.filled().len();
        ready!(Pin::new(this.stream()?).poll_read(cx, buf))?;
        if let Some(detect) = &mut this.detect
            && detect.decided(&buf.filled()[before..])
        {
            this.detect = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_shutdown(cx)
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        // Outside a runtime (only at process teardown) the socket simply closes.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(linger(stream));
        }
    }
}

/// Lingering close: send FIN, then read and discard until the client closes too (or a bound is
/// reached), so that closing with unread input does not reset the connection under a response the
/// client has not read yet.
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0usize;
        while total < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect() -> Detect {
        Detect {
            preface_bytes_seen: 0,
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    #[tokio::test]
    async fn detection_decides_on_first_mismatch_or_full_preface() {
        assert!(detect().decided(b"GET / HTTP/1.1\r\n"));
        assert!(detect().decided(b"POST"));
        assert!(detect().decided(b""));
        let mut d = detect();
        assert!(!d.decided(b"PRI * HT"));
        assert!(!d.decided(b"TP/2.0\r\n\r\nSM\r\n"));
        assert!(d.decided(b"\r\n"));
        let mut d = detect();
        assert!(!d.decided(b"PR"));
        assert!(d.decided(b"X"));
    }
}
