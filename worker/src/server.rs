//! The worker's invocation listener: HTTP/1.1 and h2c (prior knowledge) on one port.
//!
//! # Contract with the gateway
//!
//! * The gateway opens HTTP/2 streams (h2c, prior knowledge; HTTP/1.1 works too) to the address the
//!   worker registered. **One stream is one invocation.** Method, path and query are what the
//!   function's container should see (for pexec the gateway has already put the function's
//!   `inferenceUrl` in the path); the body streams in and the answer streams out.
//! * Request headers: `NVCF-FUNCTION-VERSION-ID` (required, a UUID; missing or invalid → 400),
//!   `NVCF-FUNCTION-ID` (optional; when present it must be the version's function, else 400), and
//!   the per-call worker-owned headers the gateway sets (`NVCF-REQID`, `NVCF-INVOCATION-REGION`,
//!   `nvcf-poll-seconds`), which the built-in runtimes ignore and passthrough forwards to the
//!   container. The ones that describe the function (`NVCF-FUNCTION-ID`, `-NCAID`,
//!   `-FUNCTION-NAME`) passthrough sets itself from the feed, as NVIDIA's worker does, so the
//!   gateway does not send them. Timeouts are the gateway's: it resets the stream when its poll
//!   budget runs out.
//! * The version must be in the worker's feed state with an instance assigned to this worker id,
//!   else 404 "function version <vid> is not deployed on this worker".
//! * The function's `containerImage` (tag stripped) picks the runtime: `builtin/echo`,
//!   `builtin/load-tester`, `builtin/saxpy`, `builtin/mlp`, anything else passthrough to
//!   `127.0.0.1:{inferencePort or 8000}` (see [`crate::runtime`]).
//! * Concurrency: at most the instance's `maxRequestConcurrency` invocations of a version run at
//!   once; one more gets 429 with `Retry-After: 1` at once (the gateway's admission keeps within
//!   the limit; this is the backstop).
//! * Buffering runtimes (load-tester, saxpy, mlp) refuse bodies over `max-body-bytes` with 413.
//! * Errors the worker produces are `application/problem+json` ([`model::problem::Problem`], type
//!   `urn:nv-boot:problem-details:<reason>`, `instance` = the request path): 400 malformed input,
//!   404 not deployed here, 413 body too large, 422 unusable weights file, 429 over the limit,
//!   500 device error, 502 inference server unreachable. A failure after the response head was sent
//!   (echo, a stream) resets the stream.
//! * Resetting a stream cancels the invocation: its queued batch entry is dropped, its concurrency
//!   slot released, and a kernel call already running finishes with its result discarded.
//! * `GET /health` without `NVCF-FUNCTION-VERSION-ID` answers `{"status":"OK"}` (with the header,
//!   `/health` is an invocation like any other path).

use crate::agent::Shared;
use crate::config::ServeConfig;
use crate::kernels::Backend;
use crate::runtime::admission::Permit;
use crate::runtime::{self, Body, BoxError, Ctx, Invocation, Runtime, RuntimeError};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use std::collections::HashSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

/// The version being invoked (required).
pub const FUNCTION_VERSION_ID: &str = "nvcf-function-version-id";
/// Its function (optional, checked when present).
pub const FUNCTION_ID: &str = "nvcf-function-id";
/// The names as header names, so that a lookup does not parse them again.
const FUNCTION_VERSION_ID_NAME: HeaderName = HeaderName::from_static(FUNCTION_VERSION_ID);
pub(crate) const FUNCTION_ID_NAME: HeaderName = HeaderName::from_static(FUNCTION_ID);

/// HTTP/2 streams one gateway connection may keep open at once. Per-version limits bound the work;
/// this only has to exceed what one gateway multiplexes onto one connection.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// How often state of versions that left this worker (loaded networks, idle counters) is dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The serving side of one worker.
#[derive(Debug)]
pub struct Server {
    worker_id: String,
    shared: Arc<Shared>,
    ctx: Ctx,
}

impl Server {
    /// A server for worker `worker_id`, serving the versions `shared.feed` assigns to it on
    /// `backend`.
    pub fn new(
        worker_id: impl Into<String>,
        shared: Arc<Shared>,
        backend: Arc<dyn Backend>,
        cfg: ServeConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            worker_id: worker_id.into(),
            ctx: Ctx::new(backend, Arc::clone(&shared), cfg),
            shared,
        })
    }

    /// The state shared with the agent.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Function versions with a loaded (or loading) mlp network.
    pub fn loaded_models(&self) -> usize {
        self.ctx.models.len()
    }

    /// Drops the state of versions no longer assigned to this worker.
    pub fn sweep(&self) {
        let assigned: HashSet<Uuid> = {
            let feed = self
                .shared
                .feed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            feed.instances
                .values()
                .filter(|i| i.worker_id == self.worker_id)
                .map(|i| i.function_version_id)
                .collect()
        };
        self.ctx.models.retain(|v| assigned.contains(v));
        self.shared.in_flight.retain(|v| assigned.contains(v));
    }

    /// What serving `version` needs to know, and its concurrency limit, if assigned here.
    fn lookup(
        &self,
        version: Uuid,
        function: Option<Uuid>,
    ) -> Result<(Deployed, u32), RuntimeError> {
        let feed = self
            .shared
            .feed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let f = feed
            .functions
            .get(&version)
            .ok_or(RuntimeError::NotDeployed(version))?;
        let instance = feed
            .instances
            .values()
            .find(|i| i.function_version_id == version && i.worker_id == self.worker_id)
            .ok_or(RuntimeError::NotDeployed(version))?;
        if let Some(fid) = function.filter(|fid| *fid != f.id) {
            return Err(RuntimeError::BadRequest(format!(
                "function version {version} is not a version of function {fid}"
            )));
        }
        let runtime = Runtime::for_image(f.container_image.as_deref().unwrap_or_default());
        let deployed = Deployed {
            runtime,
            inference_port: f.inference_port,
            model_uri: f.models.first().and_then(|m| m.uri.clone()),
            container_headers: (runtime == Runtime::Passthrough)
                .then(|| runtime::ContainerHeaders::of(f)),
        };
        Ok((deployed, instance.max_request_concurrency))
    }

    /// Admits and runs one request; every failure becomes a problem response here.
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Guarded> {
        let path = req.uri().path().to_owned();
        if req.method() == Method::GET
            && path == "/health"
            && !req.headers().contains_key(FUNCTION_VERSION_ID)
        {
            let r = runtime::full(
                StatusCode::OK,
                "application/json",
                &br#"{"status":"OK"}"#[..],
            );
            return r.map(|b| Guarded::new(b, None));
        }
        let (inv, permit) = match self.admit(req.headers()) {
            Ok(admitted) => admitted,
            Err((version, e)) => {
                // Never admitted: counted under the version it named, if any.
                let label = version.map(|v| v.to_string()).unwrap_or_default();
                let resp = e.into_response(&path);
                crate::metrics::record_request(&label, resp.status());
                return resp.map(|b| Guarded::new(b, None));
            }
        };
        tracing::debug!(
            version = %inv.version_id,
            reqid = req.headers().get(model::headers::NVCF_REQID).and_then(|v| v.to_str().ok()),
            runtime = ?inv.runtime,
            "invocation"
        );
        let (resp, permit) = match runtime::dispatch(&self.ctx, &inv, req).await {
            Ok(resp) => (resp, Some(permit)),
            Err(e) => {
                drop(permit);
                (e.into_response(&path), None)
            }
        };
        inv.metrics.request(resp.status());
        resp.map(|b| Guarded::new(b, permit))
    }

    /// Parses the version headers, looks the version up and takes a concurrency slot. The error
    /// carries the version when the request named a valid one.
    fn admit(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Invocation, Permit), (Option<Uuid>, RuntimeError)> {
        let version = uuid_header(headers, &FUNCTION_VERSION_ID_NAME)
            .and_then(|v| {
                v.ok_or_else(|| {
                    RuntimeError::BadRequest(
                        "the NVCF-FUNCTION-VERSION-ID header is required".into(),
                    )
                })
            })
            .map_err(|e| (None, e))?;
        let function = uuid_header(headers, &FUNCTION_ID_NAME).map_err(|e| (Some(version), e))?;
        let (deployed, limit) = self
            .lookup(version, function)
            .map_err(|e| (Some(version), e))?;
        let permit = self
            .shared
            .in_flight
            .try_admit(version, limit)
            .map_err(|e| (Some(version), e))?;
        let inv = Invocation {
            version_id: version,
            metrics: Arc::clone(permit.metrics()),
            runtime: deployed.runtime,
            inference_port: deployed.inference_port,
            model_uri: deployed.model_uri,
            container_headers: deployed.container_headers,
        };
        Ok((inv, permit))
    }
}

/// What the feed says of a version assigned here.
struct Deployed {
    runtime: Runtime,
    inference_port: Option<u16>,
    model_uri: Option<String>,
    container_headers: Option<runtime::ContainerHeaders>,
}

/// A UUID header: `Ok(None)` when absent, 400 when not a UUID.
fn uuid_header(headers: &HeaderMap, name: &HeaderName) -> Result<Option<Uuid>, RuntimeError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .map(Some)
        .ok_or_else(|| {
            RuntimeError::BadRequest(format!(
                "the {} header must be a UUID, got '{}'",
                name.as_str().to_ascii_uppercase(),
                String::from_utf8_lossy(v.as_bytes())
            ))
        })
}

// === impl Guarded ===

/// A response body that holds the invocation's concurrency slot until the body is finished or
/// dropped (stream reset, client gone). The slot is given back as the last frame is handed out,
/// not when the server later drops the body: a gateway that saw the end may send the next
/// invocation at once, and must not meet a stale 429.
#[derive(Debug)]
pub struct Guarded {
    inner: Body,
    permit: Option<Permit>,
}

impl Guarded {
    fn new(inner: Body, permit: Option<Permit>) -> Self {
        let permit = if http_body::Body::is_end_stream(&inner) {
            None
        } else {
            permit
        };
        Self { inner, permit }
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            || (matches!(polled, Poll::Ready(Some(Ok(_)))) && this.inner.is_end_stream())
        {
            this.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === serve ===

/// Serves HTTP/1.1 and h2c until `stop` flips.
pub async fn serve(listener: TcpListener, server: Arc<Server>, mut stop: watch::Receiver<bool>) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = sweep.tick() => {
                server.sweep();
                continue;
            }
            _ = stop.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut stop = stop.clone();
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http2()
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
            let service = service_fn(move |req| {
                let server = Arc::clone(&server);
                async move { Ok::<_, Infallible>(server.handle(req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}
