//! The HTTP/1.1 worker client (`dataplane.worker-protocol = "http1"`, the default): nginx's
//! upstream shape, driven on the task of the client's request rather than on connection tasks of
//! its own.
//!
//! A call takes an idle keep-alive connection to the worker (or opens one), writes the request
//! head and body, and reads the response head; the returned [`ResponseBody`] owns the connection
//! and reads the body as the client's side polls it, then puts the connection back. Nothing is
//! spawned and no channel is crossed per request: the exchange runs wherever the caller polls
//! it, which for HTTP/1.1 and HTTP/2 clients is the client connection's task. A call dropped
//! midway closes its connection, which cancels the work on the worker.

mod body;
pub(crate) mod codec;

// foldhash, not SipHash: looked up on every call, keyed by control-plane ids and worker
// addresses (seeded per process).
use foldhash::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::{Response, Version};
use http_body::Body as _;
use tokio::net::TcpStream;

use crate::body::{Body, BoxError, ClientRequest};
use crate::fields::Fielded;
use crate::invoke::dispatch::{Forwarded, NvcfHeaders};
use crate::io::ReadSize;
pub(crate) use body::ResponseBody;
use body::{Pump, ReadOutcome};
use codec::RequestFraming;

/// Connects that do not complete in this long fail the call (workers are on the same host or
/// network; a black-holed address should not eat the whole poll window).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections older than this (in ms) are closed rather than reused.
const IDLE_TIMEOUT_MS: u64 = 90_000;
/// Idle connections kept per worker (in each idle list); more are closed as they come back.
const MAX_IDLE_PER_WORKER: usize = 1024;
/// How often idle connections are swept (expired, or closed by the worker).
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The HTTP/1.1 worker client: keep-alive connections pooled per worker authority.
#[derive(Debug)]
pub(crate) struct Client {
    workers: Mutex<HashMap<Box<str>, Arc<WorkerPool>>>,
    /// Idle lists per pool: one for the process's runtime and one per serving thread.
    lists: usize,
}

/// Idle connections to one worker, in one list per thread that serves connections (see
/// [`crate::serving`]): a serving thread's calls take and give back only its own, which its
/// runtime drives; every other thread shares the first list. In each, the most recently used is
/// last (reused first: it is the one least likely to have been closed, and its buffers are warm).
#[derive(Debug)]
pub(crate) struct WorkerPool {
    idle: Box<[Mutex<Vec<Idle>>]>,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    /// When it came back, on the coarse clock ([`crate::clock::coarse_millis`]): its age is
    /// measured against a limit of seconds.
    since: u64,
}

impl Idle {
    /// Whether it has been idle too long to be reused, at `now` on the same coarse clock.
    fn expired(&self, now: u64) -> bool {
        now.saturating_sub(self.since) >= IDLE_TIMEOUT_MS
    }
}

/// One connection to a worker, counted open until dropped.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    read_buf: BytesMut,
    /// Room asked for before each read (grows while reads fill it).
    read_size: ReadSize,
}

impl Drop for Conn {
    fn drop(&mut self) {
        crate::metrics::record_worker_connection_closed();
    }
}

impl Client {
    /// A client for a gateway with `serving_threads` serving threads, whose idle connections
    /// are swept every [`SWEEP_INTERVAL`] by a task that ends with the client. Needs a Tokio
    /// runtime.
    pub(crate) fn new(serving_threads: usize) -> Arc<Self> {
        let client = Arc::new(Self {
            workers: Mutex::default(),
            lists: serving_threads + 1,
        });
        let weak = Arc::downgrade(&client);
        tokio::spawn(sweep(weak));
        client
    }

    fn worker(&self, authority: &str) -> Arc<WorkerPool> {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = workers.get(authority) {
            return Arc::clone(pool);
        }
        let pool = Arc::new(WorkerPool::new(self.lists));
        workers.insert(authority.into(), Arc::clone(&pool));
        pool
    }

    /// Sends `request` (an absolute `http://` URI) with the client's headers that go to the
    /// worker ([`Forwarded`]) and the gateway's `nvcf` header lines after them, and answers the
    /// response head, its body streaming from the connection.
    pub(crate) fn request(
        &self,
        mut request: ClientRequest,
        nvcf: Option<NvcfHeaders<'_>>,
    ) -> impl Future<Output = Result<Response<Box<ResponseBody>>, BoxError>> + Send + 'static + use<>
    {
        // Everything before the first await happens here, so the request, its parts and the NVCF
        // lines are not kept in the future's state, which is copied whole as it moves. The head
        // is read where it lies (boxed since the front parsed it), not moved out.
        let prepared = self.prepare(&mut request, nvcf);
        drop(request);
        async move {
            let Prepared {
                authority,
                pool,
                idle,
                head,
                body,
                framing,
                method,
            } = prepared?;
            // A connect's future is boxed: it is rare (an idle connection is the rule), and
            // held inline it would make this future, which is boxed and copied once per call,
            // about 300 bytes larger.
            let (conn, reused) = match idle {
                Some(conn) => (conn, true),
                None => (Box::pin(connect(authority.as_str())).await?, false),
            };
            let mut exchange = Exchange {
                conn: Some(conn),
                // Only what may be sent twice (RFC 9110 §9.2.2): a worker that closes a reused
                // connection without answering may still have acted on the request.
                pump: Pump::new(head, body, framing, reused && method.is_idempotent()),
                method,
                received: false,
            };
            let head = match std::future::poll_fn(|cx| exchange.poll_head(cx)).await {
                Ok(head) => head,
                // A reused connection the worker closed as the request went out (it answered
                // nothing): an idempotent request once more on a new connection, when it is
                // whole in hand.
                Err(e) if !exchange.received => {
                    let Some(pieces) = exchange.pump.take_replay() else {
                        return Err(e);
                    };
                    exchange.conn = Some(Box::pin(connect(authority.as_str())).await?);
                    exchange.pump = Pump::replaying(pieces);
                    std::future::poll_fn(|cx| exchange.poll_head(cx)).await?
                }
                Err(e) => return Err(e),
            };
            let conn = exchange
                .conn
                .take()
                .ok_or("the exchange lost its connection")?;
            // Boxed where it is made: the response moves through several layers on its way to
            // the client, each a copy of the head and this body (250 bytes) if it were inline.
            let mut response = Response::new(Box::new(ResponseBody::new(
                conn,
                exchange.pump,
                head.framing,
                head.keep_alive,
                pool,
                head.fields,
            )));
            *response.status_mut() = head.status;
            *response.version_mut() = Version::HTTP_11;
            Ok(response)
        }
    }

    /// The synchronous part of [`Self::request`]: the worker's pool and an idle connection from it,
    /// and the request head encoded. (A request future dropped before its first poll closes that
    /// connection instead of giving it back; the invocation path polls it at once.)
    fn prepare(
        &self,
        request: &mut ClientRequest,
        nvcf: Option<NvcfHeaders<'_>>,
    ) -> Result<Prepared, BoxError> {
        let body = std::mem::take(request.body_mut()).into_body();
        let uri = request.uri();
        if uri.scheme_str().is_some_and(|s| s != "http") {
            return Err(format!("worker URI {uri}: only http is supported").into());
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("worker URI {uri} names no host"))?
            .clone();
        let pool = self.worker(authority.as_str());
        let idle = pool.checkout();
        let framing = if body.is_end_stream() {
            RequestFraming::Empty
        } else if let Some(n) = body.size_hint().exact() {
            RequestFraming::Length(n)
        } else {
            RequestFraming::Chunked
        };
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let forwarded = Forwarded::new(request.headers());
        let line = codec::RequestLine {
            method: request.method(),
            path_and_query: path,
            authority: authority.as_str(),
        };
        let head = codec::encode_request_head(
            line,
            body.fields(),
            request.headers(),
            codec::Forwards {
                map: |name: &http::HeaderName| forwarded.forwards(name),
                fields: |name: &[u8]| !crate::invoke::dispatch::not_forwarded(name),
            },
            framing,
            |buf| {
                if let Some(nvcf) = &nvcf {
                    nvcf.encode(buf);
                }
            },
        );
        Ok(Prepared {
            authority,
            pool,
            idle,
            head: head.freeze(),
            body,
            framing,
            method: request.method().clone(),
        })
    }

    /// Closes idle connections that expired or that their worker closed, and forgets workers
    /// with none left.
    fn sweep(&self) {
        let pools: Vec<(Box<str>, Arc<WorkerPool>)> = self
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let now = crate::clock::coarse_millis();
        for (authority, pool) in pools {
            for list in &pool.idle {
                let closed: Vec<Idle> = {
                    let mut idle = list.lock().unwrap_or_else(PoisonError::into_inner);
                    let (keep, closed) = std::mem::take(&mut *idle)
                        .into_iter()
                        .partition(|i| !i.expired(now) && i.conn.is_idle());
                    *idle = keep;
                    closed
                };
                drop(closed);
            }
            let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
            // Only this sweep and `workers` itself hold the pool: nobody is using it.
            if Arc::strong_count(&pool) == 2 && pool.idle_len() == 0 {
                workers.remove(&authority);
            }
        }
    }
}

async fn sweep(client: Weak<Client>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(client) = client.upgrade() else {
            return;
        };
        client.sweep();
    }
}

impl WorkerPool {
    fn new(lists: usize) -> Self {
        Self {
            idle: (0..lists.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// The calling thread's idle list.
    fn list(&self) -> &Mutex<Vec<Idle>> {
        let index = crate::serving::current().min(self.idle.len() - 1);
        &self.idle[index]
    }

    /// The calling thread's most recently used idle connection that is still open.
    fn checkout(&self) -> Option<Conn> {
        let now = crate::clock::coarse_millis();
        let mut idle = self.list().lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(candidate) = idle.pop() {
            if candidate.expired(now) {
                // The rest are older still.
                let stale = std::mem::take(&mut *idle);
                drop(idle);
                drop(stale);
                return None;
            }
            if candidate.conn.is_idle() {
                return Some(candidate.conn);
            }
        }
        None
    }

    /// Puts a connection whose exchange completed back for the next call, without the read room
    /// a large body made it take.
    fn checkin(&self, mut conn: Conn) {
        if conn.read_size.reset() {
            conn.read_buf = BytesMut::new();
        }
        let mut idle = self.list().lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_PER_WORKER {
            idle.push(Idle {
                conn,
                since: crate::clock::coarse_millis(),
            });
        }
    }

    /// Idle connections held, all lists together.
    fn idle_len(&self) -> usize {
        self.idle
            .iter()
            .map(|list| list.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl Conn {
    /// False when the worker closed the connection (or sent bytes nobody asked for) while it was
    /// idle. Costs no syscall unless the reactor saw the socket become readable: the exchange's
    /// last read was short, which cleared the readiness.
    fn is_idle(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

async fn connect(authority: &str) -> Result<Conn, BoxError> {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority)).await;
    let io = match connected {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => {
            crate::metrics::record_worker_connect_failure();
            return Err(format!("connecting to {authority}: {e}").into());
        }
        Err(_) => {
            crate::metrics::record_worker_connect_failure();
            return Err(
                format!("connecting to {authority}: timed out after {CONNECT_TIMEOUT:?}").into(),
            );
        }
    };
    io.set_nodelay(true)?;
    crate::metrics::record_worker_connection_opened();
    Ok(Conn {
        io,
        read_buf: BytesMut::new(),
        read_size: body::READ_SIZE,
    })
}

/// A request ready to go: its worker's pool (and an idle connection from it, when there was
/// one), its head encoded, its body.
struct Prepared {
    authority: http::uri::Authority,
    pool: Arc<WorkerPool>,
    idle: Option<Conn>,
    head: bytes::Bytes,
    body: Body,
    framing: RequestFraming,
    method: http::Method,
}

/// A request on its way: the body is pumped while the response head is awaited (a worker may
/// answer before it has read the whole body).
struct Exchange {
    conn: Option<Conn>,
    pump: Pump,
    method: http::Method,
    /// Whether the worker sent anything on this connection.
    received: bool,
}

impl Exchange {
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<codec::ResponseHead, BoxError>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Err("the exchange lost its connection".into()));
        };
        if let Poll::Ready(Err(e)) = self.pump.poll_send(&mut conn.io, cx) {
            return Poll::Ready(Err(format!("sending the request to the worker: {e}").into()));
        }
        loop {
            // Nothing read yet (the usual first pass, and any wake-up before the worker answers):
            // nothing to parse.
            if !conn.read_buf.is_empty()
                && let Some(head) = codec::parse_response_head(&mut conn.read_buf, &self.method)?
            {
                return Poll::Ready(Ok(head));
            }
            match conn.poll_read(cx) {
                Poll::Ready(Ok(ReadOutcome::Data)) => self.received = true,
                Poll::Ready(Ok(ReadOutcome::Eof)) => {
                    return Poll::Ready(Err(
                        "the worker closed the connection before answering".into()
                    ));
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(format!("reading the worker's response: {e}").into()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests;
