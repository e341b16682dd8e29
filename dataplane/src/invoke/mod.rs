//! The synchronous invocation path (architecture §2): one driver runs the phases in order over a
//! per-request [`Ctx`]:
//!
//! authenticate ([`crate::keys`]) → [`target`] → authorize → poll window ([`respond`]) → route
//! ([`crate::routing`]) → [`admit`] → [`dispatch`] → [`respond`] (or the [`exec`] wrapper) →
//! [`finish`].
//!
//! Authentication runs before the target is parsed, as NVCF's auth middleware does: a request
//! without a credential is a 401 whatever its path. Every request reads the published snapshot
//! once, so a feed change never splits one request across two states.
//!
//! A pexec/exec call whose poll window ends before the worker's response head is parked
//! ([`park`]): the client gets `202`, the worker request keeps running in a task that owns it, and
//! `GET /v2/nvcf/{pexec,exec}/status/{id}` fetches the result once. Host-routed passthrough answers
//! 504 after the window + 2 s instead.

pub(crate) mod admit;
pub(crate) mod dispatch;
pub(crate) mod exec;
pub(crate) mod finish;
pub(crate) mod h1;
pub(crate) mod park;
pub(crate) mod respond;
pub(crate) mod target;
mod upstream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::BodyExt;

use uuid::Uuid;

use crate::body::{self, Body, ClientRequest};
use crate::config::DataplaneConfig;
use crate::error::GatewayError;
use crate::feed::SharedSnapshot;
use crate::headers::RequestHeaders;
use crate::keys::authorize_invoke;
use crate::pending::Limits;
use crate::pending::store::PendingStore;
use crate::routing::{VersionRoute, WorkerTarget};
use admit::{Admission, QueuePolicy};
use dispatch::{Balancer, NvcfHeaders, WorkerBody, WorkerClient};
use finish::{Answer, Finish, Held, Named, Tracked};
use target::{Endpoint, Resolved, Target};

/// Shared state of the invocation path.
#[derive(Debug)]
pub(crate) struct Invoker {
    snapshot: SharedSnapshot,
    admission: Admission,
    balancer: Balancer,
    client: WorkerClient,
    /// The HTTP version worker requests are sent with (`dataplane.worker-protocol`).
    worker_version: http::Version,
    region: dispatch::Region,
    pending: Arc<PendingStore>,
    /// `gateway_key_lookups_total{result="hit"}`, counted on nearly every call.
    key_hits: metrics::Counter,
}

/// A pexec/exec call's work from sending to the worker up to the client's response (the head for
/// pexec, whose body then streams; the whole wrapped answer for exec). Boxed so that it can move
/// into a background task when the poll window ends first.
type Work = Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;

/// One invocation as it moves through the phases.
#[derive(Debug)]
struct Ctx {
    start: Instant,
    request_id: Uuid,
    /// `request_id` as a header value, formatted once: it goes to the worker and to the client.
    request_id_value: HeaderValue,
    target: Target,
    route: Arc<VersionRoute>,
    /// The poll window.
    poll: Duration,
}

impl Invoker {
    /// Needs a Tokio runtime: it starts the pending table's sweeper.
    pub(crate) fn new(config: &DataplaneConfig, snapshot: SharedSnapshot) -> Self {
        let pending = PendingStore::new(
            Limits {
                ttl: config.pending_ttl,
                memory_bytes: config.pending_memory_bytes,
                max_result_bytes: config.pending_max_result_bytes,
            },
            config.data_dir.join("pending"),
        );
        pending.spawn_sweeper();
        Self {
            pending,
            snapshot,
            admission: Admission::new(
                config.max_in_flight,
                QueuePolicy {
                    max_waiting: config.max_queued_per_version,
                    timeout: config.queue_timeout,
                },
            ),
            balancer: Balancer::default(),
            key_hits: crate::metrics::key_lookup_counter("hit"),
            client: WorkerClient::new(config.worker_protocol, config.serving_threads),
            worker_version: dispatch::worker_version(config.worker_protocol),
            // Validated as a header value by the config.
            region: dispatch::Region::new(
                HeaderValue::from_str(&config.region).unwrap_or(HeaderValue::from_static("local")),
            ),
        }
    }

    /// Answers one invocation request, which arrived at `start` (its poll window counts from
    /// then) and whose target is `resolved` ([`target::resolve`]), with what its access line
    /// names (the function version that served it, or the one the request named).
    ///
    /// Not an `async fn`: that would keep `req` twice in the state (see [`crate::server::handle`]).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its by-value arguments twice in its state"
    )]
    pub(crate) fn handle(
        &self,
        resolved: Result<Resolved, GatewayError>,
        req: ClientRequest,
        start: Instant,
    ) -> impl Future<Output = (Result<Response<Body>, GatewayError>, Option<Named>)> + Send {
        async move {
            // Lives across every await: dropped early (the client went away) it records a 499.
            let mut finish = Finish::new();
            let outcome = self.run(resolved, req, start, &mut finish).await;
            let named = finish.named;
            let result = match outcome {
                Ok((response, held)) => Ok(response
                    .map(|inner| Body::wrapping(inner, |inner| Tracked::new(inner, finish, held)))),
                Err(e) => {
                    finish.failed(e.status());
                    Err(e)
                }
            };
            (result, named)
        }
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its by-value arguments twice in its state"
    )]
    fn run(
        &self,
        resolved: Result<Resolved, GatewayError>,
        req: ClientRequest,
        start: Instant,
        finish: &mut Finish,
    ) -> impl Future<Output = Result<(Response<Answer>, Option<Held>), GatewayError>> + Send {
        async move {
            let snapshot = self.snapshot.load_full();
            // Resolved before the credential check (by the caller) so that the access line names
            // the function even when the credential is refused; its errors still come after that
            // check's (a request without a credential is a 401 whatever its path).
            let headers = RequestHeaders::of(&req);
            finish.named = resolved.as_ref().ok().and_then(Resolved::named);
            let grants = snapshot
                .keys
                .authenticate_now(headers.get(&header::AUTHORIZATION))
                .inspect(|_| self.key_hits.increment(1))
                .map_err(|e| {
                    crate::metrics::record_key_lookup(e.lookup_label());
                    GatewayError::Unauthorized(e)
                })?;
            let target = match resolved? {
                Resolved::Invoke(t) => t,
                Resolved::Status(id) => {
                    let (id, owner) = self.poll_owner(&id)?;
                    finish.function_id = Some(owner.function_id);
                    authorize_invoke(grants, owner.function_id, Some(owner.version_id))
                        .map_err(GatewayError::Forbidden)?;
                    let window = respond::poll_seconds(headers, Endpoint::Pexec)?;
                    drop(snapshot);
                    // The rare steps (this poll, the exec wrapper below) are boxed and awaited
                    // through their vtable: inline, their states would make every call's future
                    // larger (1.3 KiB against 0.6), and their code, inlined into the call's poll,
                    // would spread the common path over more instruction-cache lines.
                    let response = self
                        .poll(id, owner, Duration::from_secs(window))
                        .boxed()
                        .await?;
                    return Ok((response.map(Answer::Right), None));
                }
            };
            finish.function_id = Some(target.function_id);
            authorize_invoke(grants, target.function_id, target.version_id)
                .map_err(GatewayError::Forbidden)?;
            let poll = respond::poll_seconds(headers, target.endpoint)?;
            let route = snapshot
                .routing
                .lookup(target.function_id, target.version_id, rand::random())
                .map_err(GatewayError::Route)?;
            let request_id = Uuid::new_v4();
            // Mutable from the start (exec may shorten the poll window): a rebinding later would be a
            // second copy in the future's state.
            let mut ctx = Ctx {
                start,
                request_id,
                request_id_value: crate::headers::request_id_value(request_id),
                target,
                route: Arc::clone(route),
                poll: Duration::from_secs(poll),
            };
            drop(snapshot);
            finish.routed = true;
            finish.named = Some(Named {
                function_id: ctx.route.function_id,
                version_id: Some(ctx.route.version_id),
            });
            ctx.route.metrics.record_request();

            let slot = self
                .admission
                .admit(
                    ctx.route.version_id,
                    ctx.route.capacity(),
                    ctx.start + ctx.poll,
                )
                .await?;
            let (index, outstanding) = self
                .balancer
                .pick(&ctx.route.targets, rand::random())
                .ok_or(GatewayError::NoHealthyWorker(ctx.route.version_id))?;
            let held = Held { slot, outstanding };
            // Its own handle on the route: `ctx` is lent mutably below (exec).
            let route = Arc::clone(&ctx.route);
            let worker = route
                .targets
                .get(index)
                .ok_or(GatewayError::NoHealthyWorker(route.version_id))?;

            if ctx.target.endpoint == Endpoint::Passthrough {
                let request = self.dispatch(&ctx, worker, req)?;
                let response = self.send(&ctx, request).await?;
                let response = respond::passthrough(response, &ctx.request_id_value);
                return Ok((response.map(Answer::Left), Some(held)));
            }
            let work = if ctx.target.endpoint == Endpoint::Exec {
                self.exec(&mut ctx, worker, req).boxed().await?
            } else {
                let request = self.dispatch(&ctx, worker, req)?;
                self.pexec(&ctx, request)
            };
            let (response, held) = self.answer_or_park(&ctx, work, held).await?;
            Ok((response.map(Answer::Right), held))
        }
    }

    /// Invocations waiting for a place, per version (see [`admit`]).
    pub(crate) fn queue_depths(&self) -> Vec<(Uuid, u64)> {
        self.admission.queue_depths()
    }

    /// Builds the worker's request from the client's (body streamed).
    fn dispatch(
        &self,
        ctx: &Ctx,
        worker: &WorkerTarget,
        mut req: ClientRequest,
    ) -> Result<ClientRequest, GatewayError> {
        let needs_type = ctx.target.endpoint == Endpoint::Pexec
            && !RequestHeaders::of(&req).contains(&header::CONTENT_TYPE);
        // Rewritten where it lies: the request stays boxed from the front to the worker client.
        let uri = match (ctx.target.endpoint, req.uri().path_and_query()) {
            // Passthrough: the client's path and query as parsed (its bytes shared).
            (Endpoint::Passthrough, Some(pq)) => worker.uri_with(pq),
            (Endpoint::Passthrough, None) => worker.uri("/"),
            // pexec: the function's inferenceUrl; the client's query is not forwarded (§2.1).
            (Endpoint::Pexec | Endpoint::Exec, _) => worker.uri(&ctx.route.inference_url),
        };
        *req.uri_mut() = uri.map_err(|detail| GatewayError::WorkerUnreachable {
            request_id: ctx.request_id,
            detail,
        })?;
        *req.version_mut() = self.worker_version;
        if needs_type {
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        Ok(req)
    }

    /// The pexec work: the worker's answer, streamed through with NVCF's headers.
    fn pexec(&self, ctx: &Ctx, request: ClientRequest) -> Work {
        let sent = self.request_worker(ctx, request);
        let id = ctx.request_id_value.clone();
        Box::pin(async move { Ok(respond::passthrough(sent.await?, &id).map(Body::carrying)) })
    }

    /// Sends `request` to the worker; the future answers its response head (recording the
    /// function's latency) or the gateway's error when the worker cannot be reached.
    fn request_worker(
        &self,
        ctx: &Ctx,
        request: ClientRequest,
    ) -> impl Future<Output = Result<Response<WorkerBody>, GatewayError>> + Send + 'static {
        // Boxed: the exchange's state (its head, pump and connection) is a large value, and the
        // wrappers below (and the timeout around them) would each move it on the way in.
        let sent = Box::pin(self.client.request(request, self.nvcf(ctx)));
        let (id, start) = (ctx.request_id, ctx.start);
        let route = Arc::clone(&ctx.route);
        // A combinator, not an `async` block: the block would keep `sent` twice in its state
        // (as the captured value and as the future being awaited), and this state is copied
        // whole each time the invocation's future moves.
        sent.map(move |sent| {
            let response = sent.map_err(|e| GatewayError::WorkerUnreachable {
                request_id: id,
                detail: error_chain(&*e),
            })?;
            route.metrics.record_latency(start.elapsed());
            Ok(response)
        })
    }

    /// The exec wrapper: read and unwrap the request, POST `requestBody` as JSON; the work wraps
    /// the answer.
    async fn exec(
        &self,
        ctx: &mut Ctx,
        worker: &WorkerTarget,
        req: ClientRequest,
    ) -> Result<Work, GatewayError> {
        let mut req = *req;
        // Rewritten below through the map.
        crate::fields::materialize_request(&mut req);
        let (mut parts, incoming) = req.into_parts();
        let wrapped = exec::parse(&exec::read_limited(incoming).await?)?;
        if let Some(n) = wrapped
            .request_header
            .as_ref()
            .and_then(|h| h.poll_duration_seconds)
        {
            ctx.poll = Duration::from_secs(respond::check_poll(n)?);
        }
        let json = serde_json::to_vec(&wrapped.request_body)
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        parts.method = Method::POST;
        parts.uri = self.uri(ctx, worker, &ctx.route.inference_url)?;
        parts.version = self.worker_version;
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let request = Box::new(Request::from_parts(
            parts,
            body::RequestBody::full(Bytes::from(json)),
        ));
        let sent = self.request_worker(ctx, request);
        let id = ctx.request_id;
        Ok(Box::pin(async move {
            let mut response = sent.await?;
            let status = response.status();
            crate::fields::materialize(&mut response);
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = http_body_util::Limited::new(response.into_body(), exec::MAX_EXEC_BODY)
                .collect()
                .await
                .map_err(|e| GatewayError::WorkerResponse {
                    request_id: id,
                    detail: e.to_string(),
                })?
                .to_bytes();
            let (status, body) = exec::wrap(id, status, location, &bytes)?;
            Ok(exec::response(id, status, body))
        }))
    }

    /// The gateway's `NVCF-*` headers for the worker request of `ctx`.
    fn nvcf<'a>(&'a self, ctx: &'a Ctx) -> NvcfHeaders<'a> {
        NvcfHeaders::new(
            &ctx.route,
            &ctx.request_id_value,
            &self.region,
            ctx.poll.as_secs(),
            ctx.target.endpoint == Endpoint::Passthrough,
        )
    }

    fn uri(&self, ctx: &Ctx, worker: &WorkerTarget, path: &str) -> Result<http::Uri, GatewayError> {
        worker
            .uri(path)
            .map_err(|detail| GatewayError::WorkerUnreachable {
                request_id: ctx.request_id,
                detail,
            })
    }

    /// Sends a passthrough call to the worker, waiting for the response head until the window +
    /// grace; dropping the request future on timeout resets the worker's stream (the work is
    /// cancelled). A combinator rather than an `async fn`, for the same reason as
    /// [`Self::request_worker`].
    fn send(
        &self,
        ctx: &Ctx,
        request: ClientRequest,
    ) -> impl Future<Output = Result<Response<WorkerBody>, GatewayError>> + Send + 'static {
        let waited = ctx.poll + respond::GRACE;
        let deadline = tokio::time::Instant::from_std(ctx.start) + waited;
        let request_id = ctx.request_id;
        crate::deadline::deadline(deadline, self.request_worker(ctx, request)).map(move |answer| {
            answer.unwrap_or_else(|_| Err(GatewayError::WorkerTimeout { request_id, waited }))
        })
    }
}

/// An error and its sources, joined (hyper's top-level errors say little on their own).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
