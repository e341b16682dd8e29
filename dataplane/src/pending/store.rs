//! The async side of the pending-request table: a [`Table`] behind a mutex, a wake-up for pollers
//! waiting on a result, reading a finished response into memory or a spill file under
//! `<data-dir>/pending/<id>`, streaming a spilled result back (the file is unlinked as soon as it
//! is opened, so it goes with the fetch), and the periodic sweep of expired entries.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Head, Limits, Owner, Stored, Table, Taken};
use crate::body::{Body, BoxError};
use crate::error::GatewayError;

/// Chunk size when streaming a spilled result back.
const READ_CHUNK: usize = 64 * 1024;

/// The shared pending-request store.
#[derive(Debug)]
pub(crate) struct PendingStore {
    table: Mutex<Table>,
    /// Woken whenever a result arrives; pollers re-check their entry.
    arrived: Notify,
    /// `<data-dir>/pending`.
    dir: PathBuf,
}

impl PendingStore {
    /// A store spilling under `dir`. Spill files a previous process left there are removed: the
    /// entries that named them are gone with it.
    pub(crate) fn new(limits: Limits, dir: PathBuf) -> Arc<Self> {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot clear old spill files")
            }
        }
        Arc::new(Self {
            table: Mutex::new(Table::new(limits)),
            arrived: Notify::new(),
            dir,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes the gauges from `table`.
    fn publish(table: &Table) {
        crate::metrics::set_pending(table.len(), table.memory());
    }

    /// The configured limits.
    pub(crate) fn limits(&self) -> Limits {
        self.lock().limits()
    }

    /// Parks request `id` as running.
    pub(crate) fn insert(&self, id: Uuid, owner: Owner) {
        let mut t = self.lock();
        t.insert(id, owner, Instant::now());
        Self::publish(&t);
    }

    /// Who owns `id`, if it is held.
    pub(crate) fn owner(&self, id: Uuid) -> Option<Owner> {
        self.lock().owner(id)
    }

    /// Waits up to `window` for the result of `id`: the result (handed out once), still running,
    /// or missing.
    pub(crate) async fn wait(&self, id: Uuid, window: Duration) -> Taken {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            // Registered before the check, so a result arriving in between still wakes us.
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (taken, stale) = {
                let mut t = self.lock();
                let out = t.take(id, Instant::now());
                Self::publish(&t);
                out
            };
            if let Some(stale) = stale {
                discard(&stale);
            }
            if !matches!(taken, Taken::Running) {
                return taken;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Taken::Running;
            }
        }
    }

    /// Records the outcome of `id` (`bytes` reserved for its buffered body) and wakes its pollers.
    pub(crate) fn complete(&self, id: Uuid, stored: Stored, bytes: u64) {
        let orphan = {
            let mut t = self.lock();
            let orphan = t.complete(id, stored, bytes, Instant::now());
            Self::publish(&t);
            orphan
        };
        if let Some(orphan) = orphan {
            tracing::debug!(%id, "result arrived after its entry expired");
            discard(&orphan);
        }
        self.arrived.notify_waiters();
    }

    /// Removes expired entries (deleting their spill files) and counts them.
    pub(crate) fn sweep(&self) {
        let expired = {
            let mut t = self.lock();
            let expired = t.expire(Instant::now());
            Self::publish(&t);
            expired
        };
        for stored in &expired {
            discard(stored);
        }
        if !expired.is_empty() {
            crate::metrics::record_pending_expired(expired.len() as u64);
        }
    }

    /// Sweeps every `min(ttl / 4, 60 s)` (at least 1 s) until the store is dropped.
    pub(crate) fn spawn_sweeper(self: &Arc<Self>) {
        let every = (self.limits().ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(store) = weak.upgrade() else { break };
                store.sweep();
            }
        });
    }

    /// Reads a finished response whole: into memory while [`Table::try_reserve`] allows, else into
    /// the spill file. Returns the outcome and the memory reserved for it. A body that breaks off
    /// becomes the 502 the client would have seen; a result that can be kept neither in memory nor
    /// on disk becomes a 500 saying so (and is counted); one still arriving at `deadline` a 504.
    pub(crate) async fn keep(
        &self,
        id: Uuid,
        mut response: Response<Body>,
        deadline: tokio::time::Instant,
    ) -> (Stored, u64) {
        // Kept as a map: the result may be answered over any protocol.
        crate::fields::materialize(&mut response);
        let (parts, mut body) = response.into_parts();
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut held = 0u64;
        let mut len = 0u64;
        let mut spill: Option<(tokio::fs::File, PathBuf)> = None;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => Err(BoxError::from("it did not end within the pending TTL")),
            };
            let data = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers are not kept.
                    Err(_) => continue,
                },
                Err(e) => {
                    self.lock().release(held);
                    if let Some((_, path)) = &spill {
                        remove(path);
                    }
                    return (
                        Stored::Failed(GatewayError::WorkerUnreachable {
                            request_id: id,
                            detail: format!("the response body broke off: {e}"),
                        }),
                        0,
                    );
                }
            };
            let n = data.len() as u64;
            len += n;
            if spill.is_none() {
                if self.lock().try_reserve(held, n) {
                    held += n;
                    chunks.push(data);
                    continue;
                }
                match self.open_spill(id, &chunks).await {
                    Ok(file) => {
                        self.lock().release(held);
                        held = 0;
                        chunks.clear();
                        spill = Some(file);
                    }
                    Err(e) => return (self.lost(id, held, None, &e), 0),
                }
            }
            if let Some((file, path)) = spill.as_mut()
                && let Err(e) = file.write_all(&data).await
            {
                let path = path.clone();
                return (self.lost(id, 0, Some(&path), &e), 0);
            }
        }
        let mut headers = parts.headers;
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        let head = Head {
            status: parts.status,
            headers,
        };
        match spill {
            Some((mut file, path)) => {
                if let Err(e) = file.flush().await {
                    return (self.lost(id, 0, Some(&path), &e), 0);
                }
                crate::metrics::record_pending_spilled();
                (Stored::Spilled { head, path, len }, 0)
            }
            None => (
                Stored::Memory {
                    head,
                    body: concat(chunks),
                },
                held,
            ),
        }
    }

    /// Creates the spill file of `id` and writes what was buffered so far.
    async fn open_spill(
        &self,
        id: Uuid,
        chunks: &[Bytes],
    ) -> std::io::Result<(tokio::fs::File, PathBuf)> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let path = self.dir.join(id.to_string());
        let mut file = tokio::fs::File::create(&path).await?;
        for chunk in chunks {
            if let Err(e) = file.write_all(chunk).await {
                remove(&path);
                return Err(e);
            }
        }
        Ok((file, path))
    }

    /// A result that could be kept neither in memory nor on disk: released, counted, and turned
    /// into the 500 its poller gets.
    fn lost(&self, id: Uuid, held: u64, path: Option<&PathBuf>, e: &std::io::Error) -> Stored {
        self.lock().release(held);
        if let Some(path) = path {
            remove(path);
        }
        crate::metrics::record_pending_lost();
        tracing::error!(%id, error = %e, "a parked result could not be kept");
        Stored::Failed(GatewayError::ResultLost {
            request_id: id,
            detail: format!("the memory bound is reached and spilling to disk failed: {e}"),
        })
    }
}

fn concat(chunks: Vec<Bytes>) -> Bytes {
    if chunks.len() == 1 {
        return chunks.into_iter().next().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        out.extend_from_slice(&c);
    }
    out.freeze()
}

fn remove(path: &PathBuf) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete a spill file");
    }
}

/// Cleans up an outcome nobody will fetch.
fn discard(stored: &Stored) {
    if let Some(path) = stored.spill_path() {
        remove(path);
    }
}

/// The response a poller gets for a finished request.
pub(crate) async fn answer(stored: Stored) -> Result<Response<Body>, GatewayError> {
    let (head, body) = match stored {
        Stored::Failed(e) => return Err(e),
        Stored::Memory { head, body } => (head, crate::body::full(body)),
        Stored::Spilled { head, path, len } => {
            let request_id = head
                .headers
                .get(model::headers::NVCF_REQID)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| Uuid::try_parse(s).ok())
                .unwrap_or_default();
            let file = tokio::fs::File::open(&path).await;
            // Unlinked now: the open handle keeps the data until the stream ends or is dropped.
            remove(&path);
            let file = file.map_err(|e| {
                crate::metrics::record_pending_lost();
                GatewayError::ResultLost {
                    request_id,
                    detail: format!("the spilled result cannot be read: {e}"),
                }
            })?;
            let body = FileBody {
                file,
                remaining: len,
                buf: vec![0; READ_CHUNK],
            };
            (head, Body::new(body))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    Ok(response)
}

/// A spilled result streamed from its (already unlinked) file.
#[derive(Debug)]
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Vec<u8>,
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let want = usize::try_from(this.remaining)
            .unwrap_or(usize::MAX)
            .min(this.buf.len());
        let mut read = ReadBuf::new(&mut this.buf[..want]);
        match Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Ok(())) => {
                let filled = read.filled();
                if filled.is_empty() {
                    return Poll::Ready(Some(Err("the spill file ended early".into())));
                }
                let chunk = Bytes::copy_from_slice(filled);
                this.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn limits() -> Limits {
        Limits {
            ttl: Duration::from_secs(3600),
            memory_bytes: 1000,
            max_result_bytes: 10,
        }
    }

    fn far() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(60)
    }

    fn response(body: &'static [u8]) -> Response<Body> {
        Response::new(crate::body::full(Bytes::from_static(body)))
    }

    async fn read(r: Response<Body>) -> Bytes {
        r.into_body().collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn small_results_stay_in_memory_and_large_ones_spill() {
        let dir = std::env::temp_dir().join(format!("pending-test-{}", Uuid::new_v4()));
        let store = PendingStore::new(limits(), dir.clone());
        let owner = Owner {
            function_id: Uuid::nil(),
            version_id: Uuid::nil(),
            exec: false,
        };
        let (small, big) = (Uuid::new_v4(), Uuid::new_v4());
        store.insert(small, owner);
        store.insert(big, owner);
        assert!(matches!(
            store.wait(small, Duration::from_millis(10)).await,
            Taken::Running
        ));
        let (stored, bytes) = store.keep(small, response(b"tiny"), far()).await;
        assert!(matches!(stored, Stored::Memory { .. }));
        assert_eq!(bytes, 4);
        store.complete(small, stored, bytes);
        let (stored, bytes) = store.keep(big, response(b"larger than ten"), far()).await;
        assert_eq!(bytes, 0);
        let path = stored.spill_path().expect("spilled").clone();
        assert!(path.starts_with(&dir));
        store.complete(big, stored, bytes);
        assert_eq!(store.lock().memory(), 4);

        let Taken::Ready(s) = store.wait(small, Duration::from_secs(1)).await else {
            panic!("small not ready");
        };
        let r = answer(s).await.expect("answer");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "4");
        assert_eq!(&read(r).await[..], b"tiny");
        let Taken::Ready(s) = store.wait(big, Duration::from_secs(1)).await else {
            panic!("big not ready");
        };
        let r = answer(s).await.expect("answer");
        assert!(!path.exists(), "spill file unlinked on fetch");
        assert_eq!(&read(r).await[..], b"larger than ten");
        assert!(matches!(
            store.wait(big, Duration::from_millis(1)).await,
            Taken::Missing
        ));
        assert_eq!(store.lock().memory(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn failures_are_kept_as_the_problem_the_client_would_get() {
        // A worker that failed after the 202: its 502 is the stored answer.
        let e = answer(Stored::Failed(GatewayError::WorkerUnreachable {
            request_id: Uuid::nil(),
            detail: "connection reset".into(),
        }))
        .await
        .expect_err("failed");
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        // Memory full and the spill directory unusable (a file stands where it should be): a
        // 500 saying so, never a silent drop.
        let blocker = std::env::temp_dir().join(format!("pending-test-{}", Uuid::new_v4()));
        std::fs::write(&blocker, b"").expect("blocker");
        let store = PendingStore::new(limits(), blocker.join("pending"));
        let id = Uuid::new_v4();
        let (stored, bytes) = store.keep(id, response(b"larger than ten"), far()).await;
        assert_eq!(bytes, 0);
        assert_eq!(store.lock().memory(), 0);
        let e = answer(stored).await.expect_err("lost");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.request_id(), Some(id));
        assert!(e.to_string().contains("spilling to disk failed"), "{e}");
        let _ = std::fs::remove_file(blocker);
    }

    #[tokio::test]
    async fn a_waiting_poller_is_woken_by_the_result() {
        let dir = std::env::temp_dir().join(format!("pending-test-{}", Uuid::new_v4()));
        let store = PendingStore::new(limits(), dir);
        let id = Uuid::new_v4();
        store.insert(
            id,
            Owner {
                function_id: Uuid::nil(),
                version_id: Uuid::nil(),
                exec: true,
            },
        );
        let s2 = Arc::clone(&store);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (stored, bytes) = s2.keep(id, response(b"x"), far()).await;
            s2.complete(id, stored, bytes);
        });
        let started = Instant::now();
        assert!(matches!(
            store.wait(id, Duration::from_secs(5)).await,
            Taken::Ready(_)
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
