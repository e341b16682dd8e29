//! Waiting for a request head on an HTTP/1.x connection: the reads, the idle and header read
//! timeouts, and the connection's one timer that enforces both.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::{Flags, Front, HEAD_READ, head};
use crate::error::GatewayError;

impl Front {
    /// Reads until `buf` holds a whole head. `Ok(None)`: the connection is done (closed by the
    /// client between requests, or idle for too long).
    pub(super) async fn read_head<R: AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        buf: &mut BytesMut,
        timer: &mut Pin<&mut tokio::time::Sleep>,
        head_started: &mut Option<Instant>,
        flags: &Flags,
    ) -> Result<Option<head::Head>, GatewayError> {
        loop {
            if !buf.is_empty()
                && let Some(head) = head::parse(buf, self.max_head)?
            {
                return Ok(Some(head));
            }
            let idle = buf.is_empty();
            HEAD_READ.prepare(buf);
            // Most reads are answered at once (pipelined or whole requests): no timer then.
            let read = match rd.read_buf(buf).now_or_never() {
                Some(read) => read,
                None => {
                    let limit = if idle {
                        Instant::now() + self.idle_timeout
                    } else {
                        // The head's time runs from when its first byte was seen waiting.
                        *head_started.get_or_insert_with(Instant::now) + self.head_timeout
                    };
                    flags.idle.store(idle, Ordering::Relaxed);
                    let read = read_until(rd, buf, timer, limit).await;
                    flags.idle.store(false, Ordering::Relaxed);
                    match read {
                        Some(read) => read,
                        None if idle => return Ok(None),
                        None => return Err(GatewayError::HeadTimeout(self.head_timeout)),
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }
}

/// Reads into `buf` unless `limit` passes first (`None`). The connection's `timer` is moved
/// earlier when `limit` is, and never later: a keep-alive connection waits between requests
/// with a limit that moves on each time, and re-arming the runtime's timer for each wait
/// cost more than the read. When the timer fires before `limit`, it is armed again for it.
async fn read_until<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    timer: &mut Pin<&mut tokio::time::Sleep>,
    limit: Instant,
) -> Option<io::Result<usize>> {
    if timer.deadline() > limit || timer.is_elapsed() {
        timer.as_mut().reset(limit);
    }
    loop {
        tokio::select! {
            biased;
            read = rd.read_buf(buf) => return Some(read),
            () = timer.as_mut() => {
                if Instant::now() >= limit {
                    return None;
                }
                timer.as_mut().reset(limit);
            }
        }
    }
}
