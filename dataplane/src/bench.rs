//! Exists only so that the criterion benches in the root package's `benches/` can reach
//! crate-private hot-path pieces (header rewrite, admission, balancer, pending table, the HTTP/1.1
//! front's head parse and encode, the per-call clock readings); thin wrappers, not a stable API.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use model::function::FunctionStatus;
use uuid::Uuid;

use crate::error::GatewayError;
use crate::invoke::{admit, dispatch};
use crate::pending::{self, store};
use crate::routing::{RouteHeaders, VersionRoute, WorkerTarget};

/// A version route as the routing snapshot builds it (prebuilt version header, metric handles).
pub fn route(
    function_id: Uuid,
    version_id: Uuid,
    name: &str,
    targets: Vec<WorkerTarget>,
) -> VersionRoute {
    VersionRoute {
        headers: RouteHeaders::new(version_id),
        metrics: crate::metrics::VersionMetrics::new(function_id, version_id),
        function_id,
        version_id,
        name: name.into(),
        status: FunctionStatus::Active,
        inference_url: "/infer".into(),
        targets,
    }
}

/// The worker-request header rewrite for one invocation of `route`, as the HTTP/1.1 worker client
/// does it: the client's headers stripped (`dispatch::prepare_headers`), then the gateway's
/// `NVCF-*` lines written into `head` (the request-head buffer) from the route's prebuilt block.
pub fn prepare_headers(
    headers: &mut HeaderMap,
    head: &mut bytes::BytesMut,
    request_id: Uuid,
    route: &VersionRoute,
    region: &Region,
    poll_seconds: u64,
) {
    dispatch::prepare_headers(headers);
    // Formatted here as the invocation path formats it: once per request.
    let id = crate::headers::request_id_value(request_id);
    dispatch::NvcfHeaders::new(route, &id, &region.0, poll_seconds, true).encode(head);
}

/// The gateway's invocation region, as the invocation path keeps it (built once).
#[derive(Debug)]
pub struct Region(dispatch::Region);

impl Region {
    pub fn new(value: HeaderValue) -> Self {
        Self(dispatch::Region::new(value))
    }
}

/// The gateway's admission counters (`invoke::admit::Admission`).
#[derive(Debug)]
pub struct Admission(admit::Admission);

/// One admitted invocation's places; dropping it releases them.
#[derive(Debug)]
pub struct Slot {
    _slot: admit::Slot,
}

impl Admission {
    /// `max_global` in flight in all; `max_waiting` queued per version for at most `timeout`.
    pub fn new(max_global: u64, max_waiting: usize, timeout: Duration) -> Self {
        Self(admit::Admission::new(
            max_global,
            admit::QueuePolicy {
                max_waiting,
                timeout,
            },
        ))
    }

    /// Admits one invocation of `version` with `capacity` places (see `Admission::admit`).
    pub async fn admit(
        &self,
        version: Uuid,
        capacity: u64,
        deadline: Instant,
    ) -> Result<Slot, GatewayError> {
        self.0
            .admit(version, capacity, deadline)
            .await
            .map(|slot| Slot { _slot: slot })
    }
}

/// Power-of-two-choices worker picking (`invoke::dispatch::Balancer`).
#[derive(Debug, Default)]
pub struct Balancer(dispatch::Balancer);

/// One outstanding request on a worker; dropping it ends it.
#[derive(Debug)]
pub struct Outstanding {
    _outstanding: dispatch::Outstanding,
}

impl Balancer {
    /// Picks one of `targets` with `random` (see `Balancer::pick`): its index and the claim.
    pub fn pick(&self, targets: &[WorkerTarget], random: u64) -> Option<(usize, Outstanding)> {
        self.0
            .pick(targets, random)
            .map(|(i, o)| (i, Outstanding { _outstanding: o }))
    }
}

/// What a poll of the pending table found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// The result, handed out (and gone from the table).
    Ready,
    /// Still running.
    Running,
    /// No such entry (or expired).
    Missing,
}

impl From<pending::Taken> for Polled {
    fn from(taken: pending::Taken) -> Self {
        match taken {
            pending::Taken::Ready(_) => Self::Ready,
            pending::Taken::Running => Self::Running,
            pending::Taken::Missing => Self::Missing,
        }
    }
}

const OWNER: pending::Owner = pending::Owner {
    function_id: Uuid::nil(),
    version_id: Uuid::nil(),
    exec: false,
};

fn limits(ttl: Duration, memory_bytes: u64, max_result_bytes: u64) -> pending::Limits {
    pending::Limits {
        ttl,
        memory_bytes,
        max_result_bytes,
    }
}

fn in_memory(body: Bytes) -> pending::Stored {
    pending::Stored::Memory {
        head: pending::Head {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
        },
        body,
    }
}

/// The pending table as plain data (`pending::Table`: no lock, no I/O, `now` passed in).
#[derive(Debug)]
pub struct PendingTable(pending::Table);

impl PendingTable {
    /// A table keeping results `ttl`, with `memory_bytes` for buffered results and
    /// `max_result_bytes` per result.
    pub fn new(ttl: Duration, memory_bytes: u64, max_result_bytes: u64) -> Self {
        Self(pending::Table::new(limits(
            ttl,
            memory_bytes,
            max_result_bytes,
        )))
    }

    /// Parks request `id` as running.
    pub fn insert(&mut self, id: Uuid, now: Instant) {
        self.0.insert(id, OWNER, now);
    }

    /// The ownership check a status poll does first.
    pub fn is_held(&self, id: Uuid) -> bool {
        self.0.owner(id).is_some()
    }

    /// The spill decision for `body` (reserving its bytes when it stays in memory), then the
    /// result recorded: `false` when it would have to be spilled (nothing recorded).
    pub fn complete_in_memory(&mut self, id: Uuid, body: Bytes, now: Instant) -> bool {
        let n = body.len() as u64;
        if !self.0.try_reserve(0, n) {
            return false;
        }
        // An orphan (no running entry) comes back; the table has released its bytes already.
        let _orphan = self.0.complete(id, in_memory(body), n, now);
        true
    }

    /// Takes the result of `id` once it is done.
    pub fn take(&mut self, id: Uuid, now: Instant) -> Polled {
        self.0.take(id, now).0.into()
    }

    /// Removes expired entries; returns how many finished results went.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.0.expire(now).len()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }
}

/// The shared pending store (`pending::store::PendingStore`: the table behind a mutex, gauges, a
/// wake-up for pollers, spill files). Its async calls need a tokio runtime with the time driver.
#[derive(Debug, Clone)]
pub struct PendingStore(std::sync::Arc<store::PendingStore>);

impl PendingStore {
    /// A store with the table's bounds; spill files go under `dir` (cleared now).
    pub fn new(
        ttl: Duration,
        memory_bytes: u64,
        max_result_bytes: u64,
        dir: &std::path::Path,
    ) -> Self {
        Self(store::PendingStore::new(
            limits(ttl, memory_bytes, max_result_bytes),
            dir.to_path_buf(),
        ))
    }

    /// Parks request `id` (a 202'd pexec call) as running.
    pub fn insert(&self, id: Uuid) {
        self.0.insert(id, OWNER);
    }

    /// The ownership check a status poll does first.
    pub fn is_held(&self, id: Uuid) -> bool {
        self.0.owner(id).is_some()
    }

    /// Reads `body` as the finished worker response of `id` (into memory while the bounds allow,
    /// else into a spill file) and records it, waking pollers.
    pub async fn keep_and_complete(&self, id: Uuid, body: Bytes) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let response = Response::new(crate::body::full(body));
        let (stored, bytes) = self.0.keep(id, response, deadline).await;
        self.0.complete(id, stored, bytes);
    }

    /// One status poll of `id` waiting at most `window`: a finished result is taken once.
    pub async fn poll(&self, id: Uuid, window: Duration) -> Polled {
        self.0.wait(id, window).await.into()
    }

    /// The periodic sweep of expired entries.
    pub fn sweep(&self) {
        self.0.sweep();
    }
}

/// The HTTP/1.1 front's request-head parse (`front::head::parse`): `wire` as it arrives, parsed
/// into a request whose path and header values share the buffer. `None` when incomplete or
/// refused.
pub fn parse_request_head(wire: &[u8], limit: usize) -> Option<http::Request<()>> {
    let mut buf = bytes::BytesMut::from(wire);
    crate::front::head::parse(&mut buf, limit)
        .ok()
        .flatten()
        .map(|head| head.request.map(drop))
}

/// The HTTP/1.1 front's response-head encode (`front::response::encode_head`) into `out` for an
/// answer with `headers` and a body of `len` bytes, to a keep-alive HTTP/1.1 POST.
pub fn encode_response_head(out: &mut bytes::BytesMut, headers: &HeaderMap, len: u64) {
    let mut exchange =
        crate::front::response::Exchange::new(&http::Method::POST, http::Version::HTTP_11, true);
    crate::front::response::encode_head(
        out,
        StatusCode::OK,
        headers,
        None,
        &http_body::SizeHint::with_exact(len),
        &mut exchange,
    );
}

/// The coarse monotonic clock the worker pool ages idle connections by, in ms.
pub fn coarse_millis() -> u64 {
    crate::clock::coarse_millis()
}

/// The coarse wall clock a `date` line is written from, in whole seconds.
pub fn coarse_unix_secs() -> u64 {
    crate::clock::coarse_unix_secs()
}

/// The access line's wall time, derived from a monotonic reading already taken.
pub fn wall_at(now: Instant) -> std::time::SystemTime {
    crate::clock::wall_at(now)
}
