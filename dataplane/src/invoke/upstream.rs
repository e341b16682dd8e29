//! The worker client's connector: plain TCP through hyper-util's `HttpConnector`, wrapped so that
//! the pool's connections are counted — opened, open now, failed connects. With the invocation
//! count these give upstream connection reuse (`1 − opened / invocations`), which should stay
//! near 1 at steady load: the client multiplexes every call to a worker onto one h2 connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use tower_service::Service;

/// `HttpConnector` with connection metrics.
#[derive(Debug, Clone)]
pub(crate) struct CountingConnector {
    inner: HttpConnector,
}

impl CountingConnector {
    pub(crate) fn new(inner: HttpConnector) -> Self {
        Self { inner }
    }
}

impl Service<Uri> for CountingConnector {
    type Response = Counted<<HttpConnector as Service<Uri>>::Response>;
    type Error = <HttpConnector as Service<Uri>>::Error;
    // Boxed: a connect happens once per worker connection, not per request.
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            match connecting.await {
                Ok(io) => {
                    crate::metrics::record_worker_connection_opened();
                    Ok(Counted { inner: io })
                }
                Err(e) => {
                    crate::metrics::record_worker_connect_failure();
                    Err(e)
                }
            }
        })
    }
}

/// A worker connection that counts itself open until dropped.
#[derive(Debug)]
pub(crate) struct Counted<T> {
    inner: T,
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        crate::metrics::record_worker_connection_closed();
    }
}

impl<T: Read + Unpin> Read for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}
