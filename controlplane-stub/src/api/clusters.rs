//! Where functions can run and how their queues stand: `/v2/nvcf/clusterGroups`,
//! `/v2/nvcf/supportedGpus` (both built from the registered workers) and `/v2/nvcf/queues/...`.

use crate::api::deployments::Offers;
use crate::api::functions::{function_not_found, version, versions};
use crate::app::{App, Ctx};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::State;
use model::function::{FunctionStatus, FunctionVersion};
use model::scopes::Scope;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Stable id for a named thing (cluster group, cluster): the same name always gets the same UUID.
fn name_id(kind: &str, name: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("nvcf-{kind}:{name}").as_bytes(),
    )
}

/// `GET /v2/nvcf/clusterGroups`
pub async fn cluster_groups(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let core = app.lock();
    let p = ctx.principal()?;
    p.require(Scope::ListClusterGroups)?;
    let offers = Offers::of(&core);
    let groups: Vec<Value> = offers
        .groups
        .iter()
        .map(|(group, gpus)| {
            let gpus: Vec<Value> = gpus
                .iter()
                .map(|(gpu, types)| {
                    let types: Vec<Value> = types
                        .iter()
                        .enumerate()
                        .map(|(i, (name, desc))| json!({ "name": name, "description": desc, "default": i == 0 }))
                        .collect();
                    json!({ "name": gpu, "instanceTypes": types })
                })
                .collect();
            let clusters: Vec<Value> = offers
                .clusters
                .get(group)
                .into_iter()
                .flatten()
                .map(|c| json!({ "id": name_id("cluster", &format!("{group}/{c}")), "name": c }))
                .collect();
            json!({
                "id": name_id("cluster-group", group),
                "name": group,
                "ncaId": model::NCA_ID,
                "authorizedNcaIds": [model::NCA_ID],
                "gpus": gpus,
                "clusters": clusters,
            })
        })
        .collect();
    Ok(Json(json!({ "clusterGroups": groups })))
}

/// `GET /v2/nvcf/supportedGpus`
pub async fn supported_gpus(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let core = app.lock();
    let p = ctx.principal()?;
    p.require(Scope::RegisterFunction)?;
    let offers = Offers::of(&core);
    let list: Vec<Value> = offers
        .groups
        .iter()
        .flat_map(|(group, gpus)| {
            gpus.keys()
                .map(move |gpu| json!({ "gpu": gpu, "backend": group }))
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// One version's queue: `queueDepth` is the invocations waiting for a place on all gateways, as
/// their latest reports say.
fn queue_entry(v: &FunctionVersion, depth: u64) -> Value {
    json!({
        "functionVersionId": v.version_id,
        "functionName": v.name,
        "functionStatus": v.status,
        "queueDepth": depth,
    })
}

fn queued(v: &FunctionVersion) -> bool {
    matches!(v.status, FunctionStatus::Active | FunctionStatus::Deploying)
}

fn not_deployed(fid: Uuid) -> ApiError {
    ApiError::NotFound(format!(
        "Function id '{fid}': Queue not found - Function is likely not deployed"
    ))
}

/// `GET /v2/nvcf/queues/functions/{functionId}`
pub async fn function_queues(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let fid = ctx.uuid("functionId")?;
    let core = app.lock();
    let p = ctx.principal()?;
    p.require(Scope::QueueDetails)?;
    let all = versions(&core, fid);
    if all.is_empty() {
        return Err(function_not_found(fid));
    }
    p.require_access(fid, None).or_else(|e| {
        if all.iter().any(|v| p.may_access(fid, Some(v.version_id))) {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    let (reports, now) = (app.queues(), Instant::now());
    let queues: Vec<Value> = all
        .into_iter()
        .filter(|v| queued(v) && p.may_access(fid, Some(v.version_id)))
        .map(|v| queue_entry(v, reports.depth(v.version_id, now)))
        .collect();
    if queues.is_empty() {
        return Err(not_deployed(fid));
    }
    Ok(Json(json!({ "functionId": fid, "queues": queues })))
}

/// `GET /v2/nvcf/queues/functions/{functionId}/versions/{versionId}`
pub async fn version_queue(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let fid = ctx.uuid("functionId")?;
    let vid = ctx.uuid("versionId")?;
    let core = app.lock();
    let p = ctx.principal()?;
    p.require(Scope::QueueDetails)?;
    let v = version(&core, fid, vid)?;
    p.require_access(fid, Some(vid))?;
    if !queued(v) {
        return Err(not_deployed(fid));
    }
    let depth = app.queues().depth(vid, Instant::now());
    Ok(Json(
        json!({ "functionId": fid, "queues": [queue_entry(v, depth)] }),
    ))
}
