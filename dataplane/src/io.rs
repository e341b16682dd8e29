//! Connection I/O pieces: the accepted-connection wrapper, with a lingering close so that a
//! response written just before closing (a 413 or 431 sent while the client is still sending) is
//! not destroyed by a TCP reset caused by unread input; [`Halves`], how the HTTP/1.1 front reads
//! and writes one connection at once; and [`ReadSize`], the read-buffer sizing of every
//! connection reader (client heads and bodies, worker responses).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// How long a closed connection keeps reading (and discarding) what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much a closed connection reads and discards at most before giving up.
const LINGER_BYTES: usize = 1024 * 1024;

/// How much read-buffer room a connection reader asks for before a read: `start` at first,
/// doubled up to `max` while reads fill the room, so that a large body is read in large pieces
/// and a small exchange keeps a small buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadSize {
    start: usize,
    size: usize,
    max: usize,
}

impl ReadSize {
    pub(crate) const fn new(start: usize, max: usize) -> Self {
        Self {
            start,
            size: start,
            max,
        }
    }

    /// Makes room in `buf` for a read (a whole one when less than a quarter is left) and says
    /// how much there is.
    pub(crate) fn prepare(&self, buf: &mut BytesMut) -> usize {
        if buf.capacity() - buf.len() < self.size / 4 {
            buf.reserve(self.size);
        }
        buf.capacity() - buf.len()
    }

    /// Notes a read of `n` bytes into `room`: one that filled it means more is coming.
    pub(crate) fn read(&mut self, n: usize, room: usize) {
        if n == room {
            self.size = (self.size * 2).min(self.max);
        }
    }

    /// Back to `start`; true when it had grown (its buffer is then worth dropping).
    pub(crate) fn reset(&mut self) -> bool {
        let grown = self.size > self.start;
        self.size = self.start;
        grown
    }
}

/// A connection that the HTTP/1.1 front reads (the next request, or a client leaving) while it
/// writes: its two halves, borrowed for as long as the connection is served.
pub(crate) trait Halves: AsyncRead + AsyncWrite + Send + Unpin {
    type Read<'a>: AsyncRead + Send + Unpin
    where
        Self: 'a;
    type Write<'a>: AsyncWrite + Send + Unpin
    where
        Self: 'a;

    fn halves(&mut self) -> io::Result<(Self::Read<'_>, Self::Write<'_>)>;
}

/// A plain TCP connection splits for nothing: its halves are two references to the socket.
/// (`tokio::io::split` locks a mutex on every read and write: about 200 instructions a call.)
impl Halves for ConnIo {
    type Read<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Write<'a> = tokio::net::tcp::WriteHalf<'a>;

    fn halves(&mut self) -> io::Result<(Self::Read<'_>, Self::Write<'_>)> {
        Ok(self.stream()?.split())
    }
}

/// TLS state is one object that reads and writes, so its halves share it under a lock.
impl Halves for tokio_rustls::server::TlsStream<TcpStream> {
    type Read<'a> = tokio::io::ReadHalf<&'a mut Self>;
    type Write<'a> = tokio::io::WriteHalf<&'a mut Self>;

    fn halves(&mut self) -> io::Result<(Self::Read<'_>, Self::Write<'_>)> {
        Ok(tokio::io::split(self))
    }
}

/// An accepted TCP connection.
#[derive(Debug)]
pub(crate) struct ConnIo {
    /// `None` only after drop handed it to the lingering task.
    stream: Option<TcpStream>,
}

impl ConnIo {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream: Some(stream),
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_read(cx, buf)
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

    #[test]
    fn reads_that_fill_the_room_grow_it_up_to_the_bound() {
        let mut size = ReadSize::new(16, 64);
        let mut buf = BytesMut::new();
        let room = size.prepare(&mut buf);
        assert!(room >= 16, "{room}");
        size.read(room - 1, room);
        assert_eq!(size.size, 16, "a short read keeps the size");
        for _ in 0..4 {
            size.read(room, room);
        }
        assert_eq!(size.size, 64, "doubled, then held at the bound");
        assert!(size.reset());
        assert_eq!(size.size, 16);
        assert!(!size.reset(), "nothing to drop once back at the start");
    }
}
