//! Function management endpoints (nvcf-api.md §1.2): create, versions, list, ids, get, update,
//! delete.

use crate::app::{App, Ctx, parse_json, read_body};
use crate::auth::Principal;
use crate::core::Core;
use crate::error::{ApiError, ApiResult};
use crate::registry;
use crate::store::Change;
use crate::validate;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use model::NCA_ID;
use model::feed::{Entity, EntityKind};
use model::function::{
    CreateFunctionRequest, FunctionDto, FunctionStatus, FunctionVersion, InstanceDto,
    UpdateFunctionRequest, Visibility,
};
use model::scopes::Scope;
use model::time::Timestamp;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

const LIST_SCOPES: &[Scope] = &[Scope::ListFunctions, Scope::ListFunctionsDetails];

/// 404 for an unknown function.
pub fn function_not_found(fid: Uuid) -> ApiError {
    ApiError::NotFound(format!(
        "Function id '{fid}': Not found in account '{NCA_ID}'"
    ))
}

/// 404 for an unknown version.
pub fn version_not_found(fid: Uuid, vid: Uuid) -> ApiError {
    ApiError::NotFound(format!(
        "Function id '{fid}', version '{vid}': Not found in account '{NCA_ID}'"
    ))
}

/// The version `vid` of function `fid`, or 404.
pub fn version(core: &Core, fid: Uuid, vid: Uuid) -> ApiResult<&FunctionVersion> {
    core.state
        .functions
        .get(&vid)
        .filter(|v| v.id == fid)
        .ok_or_else(|| version_not_found(fid, vid))
}

/// All versions of a function, oldest first.
pub fn versions(core: &Core, fid: Uuid) -> Vec<&FunctionVersion> {
    let mut v: Vec<&FunctionVersion> = core
        .state
        .functions
        .values()
        .filter(|v| v.id == fid)
        .collect();
    v.sort_by_key(|v| (v.created_at, v.version_id));
    v
}

/// The instances of a version as `InstanceDto`s.
pub fn instances(core: &Core, vid: Uuid) -> Vec<InstanceDto> {
    let mut out: Vec<InstanceDto> = core
        .state
        .instances
        .values()
        .filter(|i| i.function_version_id == vid)
        .map(|i| InstanceDto {
            instance_id: i.instance_id.to_string(),
            function_id: i.function_id,
            function_version_id: i.function_version_id,
            instance_type: i.instance_type.clone(),
            instance_status: match i.status {
                model::worker::InstanceStatus::Starting => "STARTING",
                model::worker::InstanceStatus::Active => "ACTIVE",
                model::worker::InstanceStatus::Errored => "ERRORED",
            }
            .into(),
            nca_id: NCA_ID.into(),
            gpu: i.gpu.clone(),
            backend: i.backend.clone(),
            location: core
                .state
                .workers
                .get(&i.worker_id)
                .map(|w| w.registration.cluster.clone()),
            instance_created_at: i.created_at,
            instance_updated_at: i.updated_at,
        })
        .collect();
    out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    out
}

/// Renders a version for `p`: instances only for callers with `list_functions_details`.
pub fn render(
    core: &Core,
    v: &FunctionVersion,
    p: &Principal,
    include_secrets: bool,
) -> FunctionDto {
    let details = p.has(Scope::ListFunctionsDetails);
    FunctionDto::from_version(v, instances(core, v.version_id), details, include_secrets)
}

fn new_version(
    r: &CreateFunctionRequest,
    valid: validate::ValidFunction,
    id: Uuid,
) -> FunctionVersion {
    FunctionVersion {
        id,
        version_id: Uuid::new_v4(),
        nca_id: NCA_ID.into(),
        name: valid.name,
        status: FunctionStatus::Inactive,
        inference_url: valid.inference_url,
        inference_port: valid.inference_port,
        container_args: r.container_args.clone(),
        container_environment: r.container_environment.clone().unwrap_or_default(),
        models: r.models.clone().unwrap_or_default(),
        container_image: r.container_image.clone().filter(|s| !s.is_empty()),
        api_body_format: valid.api_body_format,
        helm_chart: r.helm_chart.clone().filter(|s| !s.is_empty()),
        helm_chart_service_name: r.helm_chart_service_name.clone().filter(|s| !s.is_empty()),
        health: valid.health,
        created_at: Timestamp::now(),
        resources: r.resources.clone().unwrap_or_default(),
        tags: r.tags.clone().unwrap_or_default(),
        description: r.description.clone(),
        function_type: valid.function_type,
        secrets: valid.secrets,
        rate_limit: r.rate_limit.clone(),
        llm_invocation_config: r.llm_invocation_config.clone(),
        telemetries: r.telemetries.clone(),
        utils_container_image: r.utils_container_image.clone(),
    }
}

/// `POST /v2/nvcf/functions`
pub async fn create(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    let p = ctx.principal()?;
    app.write(move |core, app| {
        p.require(Scope::RegisterFunction)?;
        p.require_account()?;
        let r: CreateFunctionRequest = parse_json(&body)?;
        let valid = validate::create_function(&r)?;
        let mut ids: Vec<Uuid> = core.state.functions.values().map(|f| f.id).collect();
        ids.sort();
        ids.dedup();
        if ids.len() >= app.cfg.max_functions {
            return Err(ApiError::BadRequest(format!(
                "Account '{NCA_ID}': Reached or exceeded the max limit for the number of functions allowed: {}",
                app.cfg.max_functions
            )));
        }
        let v = new_version(&r, valid, Uuid::new_v4());
        core.commit(vec![Change::Upsert(Entity::Function(v.clone()))])?;
        Ok(Json(json!({ "function": render(core, &v, &p, true) })))
    })
    .await
}

/// `POST /v2/nvcf/functions/{functionId}/versions`
pub async fn create_version(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let fid = ctx.uuid("functionId")?;
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    let p = ctx.principal()?;
    app.write(move |core, _| {
        p.require(Scope::RegisterFunction)?;
        let existing = versions(core, fid);
        let first = existing.first().ok_or_else(|| function_not_found(fid))?;
        p.require_access(fid, None)?;
        let r: CreateFunctionRequest = parse_json(&body)?;
        let valid = validate::create_function(&r)?;
        if valid.function_type != first.function_type {
            return Err(ApiError::BadRequest(format!(
                "Function id '{fid}': All versions must have the same function type '{}'",
                first.function_type
            )));
        }
        let v = new_version(&r, valid, fid);
        core.commit(vec![Change::Upsert(Entity::Function(v.clone()))])?;
        Ok(Json(json!({ "function": render(core, &v, &p, true) })))
    })
    .await
}

fn visibility(ctx: &Ctx) -> ApiResult<Vec<Visibility>> {
    let values = ctx.query_values("visibility");
    if values.is_empty() {
        return Ok(Visibility::ALL.to_vec());
    }
    values
        .iter()
        .map(|v| {
            Visibility::parse(v).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Failed to convert 'visibility' with value: '{}'; expected authorized, private or public",
                    crate::app::truncate(v, 256)
                ))
            })
        })
        .collect()
}

/// The versions a caller may list under the requested visibility. Single-tenant: every function is
/// the account's own (`private`); none are shared (`authorized`) or `public`.
fn listable<'a>(core: &'a Core, p: &Principal, vis: &[Visibility]) -> Vec<&'a FunctionVersion> {
    if !vis.contains(&Visibility::Private) {
        return Vec::new();
    }
    let mut v: Vec<&FunctionVersion> = core
        .state
        .functions
        .values()
        .filter(|v| p.may_access(v.id, Some(v.version_id)))
        .collect();
    v.sort_by_key(|v| (v.created_at, v.version_id));
    v
}

/// `GET /v2/nvcf/functions`
pub async fn list(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Json<serde_json::Value>> {
    let core = app.lock();
    let p = ctx.principal()?;
    p.require_any(LIST_SCOPES)?;
    let vis = visibility(&ctx)?;
    let list: Vec<FunctionDto> = listable(&core, &p, &vis)
        .into_iter()
        .map(|v| render(&core, v, &p, true))
        .collect();
    Ok(Json(json!({ "functions": list })))
}

/// `GET /v2/nvcf/functions/ids`
pub async fn ids(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Json<serde_json::Value>> {
    let core = app.lock();
    let p = ctx.principal()?;
    p.require_any(LIST_SCOPES)?;
    let vis = visibility(&ctx)?;
    let mut ids: Vec<Uuid> = Vec::new();
    for v in listable(&core, &p, &vis) {
        if !ids.contains(&v.id) {
            ids.push(v.id);
        }
    }
    Ok(Json(json!({ "functionIds": ids })))
}

/// `GET /v2/nvcf/functions/{functionId}/versions`
pub async fn list_versions(
    State(app): State<Arc<App>>,
    ctx: Ctx,
) -> ApiResult<Json<serde_json::Value>> {
    let fid = ctx.uuid("functionId")?;
    let core = app.lock();
    let p = ctx.principal()?;
    p.require_any(LIST_SCOPES)?;
    let all = versions(&core, fid);
    if all.is_empty() {
        return Err(function_not_found(fid));
    }
    let visible: Vec<FunctionDto> = all
        .into_iter()
        .filter(|v| p.may_access(fid, Some(v.version_id)))
        .map(|v| render(&core, v, &p, true))
        .collect();
    if visible.is_empty() {
        p.require_access(fid, None)?;
    }
    Ok(Json(json!({ "functions": visible })))
}

/// `GET /v2/nvcf/functions/{functionId}/versions/{functionVersionId}`
pub async fn get(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Json<serde_json::Value>> {
    let fid = ctx.uuid("functionId")?;
    let vid = ctx.uuid("functionVersionId")?;
    let include_secrets = ctx.query_bool("includeSecrets", true)?;
    let core = app.lock();
    let p = ctx.principal()?;
    p.require_any(LIST_SCOPES)?;
    let v = version(&core, fid, vid)?;
    p.require_access(fid, Some(vid))?;
    Ok(Json(
        json!({ "function": render(&core, v, &p, include_secrets) }),
    ))
}

/// `PUT /v2/nvcf/functions/{fid}/versions/{vid}` and its deprecated `/v2/nvcf/metadata/...` alias.
pub async fn update(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let fid = ctx.uuid("functionId")?;
    let vid = ctx.uuid("functionVersionId")?;
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    let p = ctx.principal()?;
    app.write(move |core, _| {
        p.require(Scope::UpdateFunction)?;
        let mut v = version(core, fid, vid)?.clone();
        p.require_access(fid, Some(vid))?;
        let r: UpdateFunctionRequest = parse_json(&body)?;
        let model_names: Vec<String> = v.models.iter().filter_map(|m| m.name.clone()).collect();
        validate::update_function(&r, &model_names, v.function_type)?;
        if let Some(tags) = r.tags {
            v.tags = tags;
        }
        if let Some(rl) = r.rate_limit {
            v.rate_limit = Some(rl);
        }
        if let Some(c) = r.llm_invocation_config {
            v.llm_invocation_config = Some(c);
        }
        for u in r.model_updates.unwrap_or_default() {
            let Some(m) = v.models.iter_mut().find(|m| m.name == u.model_name) else {
                continue;
            };
            let Some(upd) = u.llm_config else { continue };
            let cfg = m.llm_config.get_or_insert(model::function::LlmConfig {
                uris: None,
                routing_method: None,
                token_rate_limit: None,
            });
            if upd.token_rate_limit.is_some() {
                cfg.token_rate_limit = upd.token_rate_limit;
            }
            if upd.routing_method.is_some() {
                cfg.routing_method = upd.routing_method;
            }
        }
        core.commit(vec![Change::Upsert(Entity::Function(v.clone()))])?;
        Ok(Json(json!({ "function": render(core, &v, &p, true) })))
    })
    .await
}

/// `DELETE /v2/nvcf/functions/{fid}/versions/{vid}`: 204; also force-removes the version's
/// deployment and its instances.
pub async fn delete(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Response> {
    let fid = ctx.uuid("functionId")?;
    let vid = ctx.uuid("functionVersionId")?;
    let p = ctx.principal()?;
    app.write(move |core, _| {
        p.require(Scope::DeleteFunction)?;
        version(core, fid, vid)?;
        p.require_access(fid, Some(vid))?;
        let mut changes: Vec<Change> = core
            .state
            .deployments
            .values()
            .filter(|d| d.function_version_id == vid)
            .flat_map(|d| registry::removal(&core.state, d.deployment_id))
            .collect();
        changes.push(Change::Delete(EntityKind::Function, vid.to_string()));
        core.commit(changes)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}
