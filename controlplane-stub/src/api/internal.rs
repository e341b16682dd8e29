//! Internal endpoints, reachable only on the control plane's own listener and only with the
//! internal credential: the state feed, worker registration and heartbeats. The gateway never
//! routes `/internal/...`, so key hashes never reach clients.

use crate::app::{App, Ctx, parse_json, read_body};
use crate::auth::require_internal;
use crate::error::{ApiError, ApiResult};
use crate::registry;
use crate::store::Change;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, header};
use model::feed::{Entity, FeedMessage};
use model::queues::QueueReport;
use model::time::Timestamp;
use model::worker::{Heartbeat, HeartbeatAck, WorkerRecord, WorkerRegistration, WorkerStatus};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast;

/// Content type of the feed stream.
pub const NDJSON: &str = "application/x-ndjson";

fn line(msg: &FeedMessage) -> Bytes {
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// `GET /internal/v1/feed?since=<rev>`: snapshot or backlog, then live changes and heartbeats.
pub async fn feed(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Response> {
    require_internal(&ctx.headers, &app.cfg.internal_token)?;
    let since = match ctx.query_values("since").first() {
        None => 0,
        Some(s) => s.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "since must be a revision number, got '{}'",
                crate::app::truncate(s, 256)
            ))
        })?,
    };
    let (first, rx) = app.lock().subscribe(since)?;
    let mut last = first.last().map_or(since, FeedMessage::revision);
    if let Some(FeedMessage::Snapshot { revision, .. }) = first.first() {
        last = *revision;
    }
    let heartbeat = app.cfg.feed_heartbeat;
    let stopping = app.stopping();
    let initial =
        futures_util::stream::iter(first.into_iter().map(|m| Ok::<_, std::io::Error>(line(&m))));
    let live = futures_util::stream::unfold(
        (rx, last, stopping),
        move |(mut rx, mut last, mut stopping)| async move {
            loop {
                let next = tokio::select! {
                    // The control plane is shutting down: end the stream so the connection can close.
                    _ = stopping.wait_for(|s| *s) => return None,
                    next = tokio::time::timeout(heartbeat, rx.recv()) => next,
                };
                match next {
                    Err(_) => {
                        return Some((
                            Ok(line(&FeedMessage::Heartbeat { revision: last })),
                            (rx, last, stopping),
                        ));
                    }
                    Ok(Ok(msg)) if msg.revision() <= last => continue,
                    Ok(Ok(msg)) => {
                        last = msg.revision();
                        return Some((Ok(line(&msg)), (rx, last, stopping)));
                    }
                    // Fell too far behind, or the control plane is shutting down: end the stream; the
                    // client reconnects with its revision and gets the backlog or a snapshot.
                    Ok(Err(
                        broadcast::error::RecvError::Lagged(_)
                        | broadcast::error::RecvError::Closed,
                    )) => return None,
                }
            }
        },
    );
    let mut resp = Body::from_stream(initial.chain(live)).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn check_registration(r: &WorkerRegistration) -> ApiResult<()> {
    let bad = |m: String| Err(ApiError::BadRequest(m));
    // The id goes into heartbeat URLs unencoded, so it must be a plain path segment.
    if r.worker_id.is_empty()
        || r.worker_id.len() > 128
        || !r
            .worker_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return bad(format!(
            "workerId must be 1 to 128 characters of [A-Za-z0-9._:-], got '{}'",
            crate::app::truncate(&r.worker_id, 128)
        ));
    }
    if !(r.address.starts_with("http://") || r.address.starts_with("https://"))
        || r.address.parse::<http::Uri>().is_err()
    {
        return bad(format!(
            "address must be an http(s) URL, got '{}'",
            crate::app::truncate(&r.address, 256)
        ));
    }
    if r.cluster_group.trim().is_empty() || r.cluster.trim().is_empty() {
        return bad("clusterGroup and cluster must not be empty".into());
    }
    if r.capacity == 0 {
        return bad("capacity must be at least 1".into());
    }
    if r.gpus.is_empty() || r.instance_types.is_empty() {
        return bad("a worker must offer at least one GPU and one instance type".into());
    }
    if let Some(it) = r
        .instance_types
        .iter()
        .find(|it| !r.gpus.iter().any(|g| g.name == it.gpu))
    {
        return bad(format!(
            "instance type '{}' names GPU '{}', which the worker does not offer",
            it.name, it.gpu
        ));
    }
    Ok(())
}

/// `POST /internal/v1/workers`: registers (or re-registers) a worker.
pub async fn register(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Json<HeartbeatAck>> {
    require_internal(&ctx.headers, &app.cfg.internal_token)?;
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    let r: WorkerRegistration = parse_json(&body)?;
    check_registration(&r)?;
    app.write(move |core, app| {
        let id = r.worker_id.clone();
        let registered_at = core
            .state
            .workers
            .get(&id)
            .map_or_else(Timestamp::now, |w| w.registered_at);
        let record = WorkerRecord {
            registration: r,
            status: WorkerStatus::Ready,
            registered_at,
        };
        core.liveness.seen(&id, Instant::now());
        if core.state.workers.get(&id) != Some(&record) {
            core.commit(vec![Change::Upsert(Entity::Worker(record))])?;
        }
        tracing::info!(worker = %id, "worker registered");
        Ok(Json(HeartbeatAck {
            worker_id: id,
            heartbeat_interval_ms: app.cfg.heartbeat_interval.as_millis() as u64,
            revision: core.state.revision,
        }))
    })
    .await
}

/// `POST /internal/v1/workers/{workerId}/heartbeat`: 404 for an unknown worker (it then registers).
pub async fn heartbeat(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Json<HeartbeatAck>> {
    require_internal(&ctx.headers, &app.cfg.internal_token)?;
    let id = ctx.param("workerId")?.to_owned();
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    let hb: Heartbeat = parse_json(&body)?;
    app.write(move |core, app| {
        if !core.state.workers.contains_key(&id) {
            return Err(ApiError::NotFound(format!(
                "Worker '{}' is not registered",
                crate::app::truncate(&id, 128)
            )));
        }
        core.liveness.seen(&id, Instant::now());
        core.liveness.record(&hb);
        let changes = registry::heartbeat_changes(&core.state, &id, &hb, Timestamp::now());
        core.commit(changes)?;
        Ok(Json(HeartbeatAck {
            worker_id: id,
            heartbeat_interval_ms: app.cfg.heartbeat_interval.as_millis() as u64,
            revision: core.state.revision,
        }))
    })
    .await
}

/// `POST /internal/v1/gateways/{gatewayId}/queues`: a gateway's queue depths, replacing its last
/// report (an empty list clears them).
pub async fn queue_report(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    require_internal(&ctx.headers, &app.cfg.internal_token)?;
    let gateway = ctx.param("gatewayId")?.to_owned();
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    let report: QueueReport = parse_json(&body)?;
    app.queues().record(&gateway, &report, Instant::now());
    Ok(Json(serde_json::json!({})))
}
