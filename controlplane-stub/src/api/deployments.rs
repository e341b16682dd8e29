//! Deployment endpoints (nvcf-api.md §1.3): create, get (two ways), PATCH of one GPU
//! specification, the deprecated PUT, and delete (graceful or not), with NVCF's preconditions and
//! validation against what the registered workers offer.

use crate::api::functions::{render, version};
use crate::app::{App, Ctx, parse_json, read_body};
use crate::core::Core;
use crate::error::{ApiError, ApiResult};
use crate::registry;
use crate::store::Change;
use crate::validate::field_error;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use model::deployment::{
    Deployment, DeploymentDto, DeploymentRequest, GpuSpec, GpuSpecInput, HealthInfo,
    UpdateGpuSpecRequest,
};
use model::feed::Entity;
use model::function::{FunctionStatus, FunctionVersion};
use model::scopes::Scope;
use model::time::Timestamp;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

const OBJ: &str = "functionDeploymentRequest";

/// GPU name → instance type name → description.
pub type GpuOffers = BTreeMap<String, BTreeMap<String, String>>;

/// GPU → instance types, per cluster group, as the registered workers offer them.
#[derive(Debug, Default)]
pub struct Offers {
    /// group name → its GPUs.
    pub groups: BTreeMap<String, GpuOffers>,
    /// group name → cluster names.
    pub clusters: BTreeMap<String, Vec<String>>,
}

impl Offers {
    /// Collects the offers of every registered worker.
    pub fn of(core: &Core) -> Self {
        let mut o = Self::default();
        let mut workers: Vec<_> = core.state.workers.values().collect();
        workers.sort_by(|a, b| a.id().cmp(b.id()));
        for w in workers {
            let r = &w.registration;
            let gpus = o.groups.entry(r.cluster_group.clone()).or_default();
            for it in &r.instance_types {
                gpus.entry(it.gpu.clone())
                    .or_default()
                    .insert(it.name.clone(), it.description.clone());
            }
            for g in &r.gpus {
                gpus.entry(g.name.clone()).or_default();
            }
            let clusters = o.clusters.entry(r.cluster_group.clone()).or_default();
            if !clusters.contains(&r.cluster) {
                clusters.push(r.cluster.clone());
            }
        }
        o
    }

    /// The canonical (group, gpu, instance type) names for a request, or NVCF's 400.
    fn resolve(
        &self,
        backend: Option<&str>,
        gpu: &str,
        instance_type: &str,
    ) -> ApiResult<(String, String, String)> {
        if self.groups.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "No cluster groups found for account '{}': no worker has registered yet",
                model::NCA_ID
            )));
        }
        let groups: Vec<(&String, &GpuOffers)> = match backend {
            Some(b) => {
                let g = self
                    .groups
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(b))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!("Invalid backend '{b}' specified"))
                    })?;
                vec![g]
            }
            None => self.groups.iter().collect(),
        };
        let mut gpu_found = false;
        for (group, gpus) in groups {
            let Some((gname, types)) = gpus.iter().find(|(n, _)| n.eq_ignore_ascii_case(gpu))
            else {
                continue;
            };
            gpu_found = true;
            if let Some((tname, _)) = types
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(instance_type))
            {
                return Ok((group.clone(), gname.clone(), tname.clone()));
            }
        }
        if gpu_found {
            Err(ApiError::BadRequest(format!(
                "Invalid InstanceType '{instance_type}' specified"
            )))
        } else {
            Err(ApiError::BadRequest(format!(
                "Invalid GPU '{gpu}' specified"
            )))
        }
    }
}

/// Largest instance count: NVCF's fields are Java `int`s.
const MAX_COUNT: i64 = i32::MAX as i64;

/// An integer field in `range`; `msg` explains the lower bound, the upper one is named.
fn int_field_of(
    object: &str,
    v: Option<i64>,
    field: &str,
    required: bool,
    range: std::ops::RangeInclusive<i64>,
    msg: &str,
) -> ApiResult<Option<u32>> {
    match v {
        None if required => Err(field_error(object, field, None, "must not be null")),
        None => Ok(None),
        Some(n) if n < *range.start() => Err(field_error(object, field, Some(&n.to_string()), msg)),
        Some(n) if n > *range.end() => Err(field_error(
            object,
            field,
            Some(&n.to_string()),
            &format!("must be less than or equal to {}", range.end()),
        )),
        Some(n) => Ok(u32::try_from(n).ok()),
    }
}

fn int_field(
    v: Option<i64>,
    field: &str,
    required: bool,
    range: std::ops::RangeInclusive<i64>,
    msg: &str,
) -> ApiResult<Option<u32>> {
    int_field_of(OBJ, v, field, required, range, msg)
}

fn min_le_max(min: u32, max: u32) -> ApiResult<()> {
    if min > max {
        return Err(ApiError::BadRequest(format!(
            "minInstances ({min}) must be less than or equal to maxInstances ({max})"
        )));
    }
    Ok(())
}

/// `minInstances` and `maxInstances` (required, min ≤ max) and `maxRequestConcurrency` (optional)
/// of the specification at index `i`: the counts both POST and the deprecated PUT take.
fn instance_counts(i: usize, s: &GpuSpecInput) -> ApiResult<(u32, u32, Option<u32>)> {
    let field = |name: &str| format!("deploymentSpecifications[{i}].{name}");
    let min = int_field(
        s.min_instances,
        &field("minInstances"),
        true,
        0..=MAX_COUNT,
        "must be greater than or equal to 0",
    )?
    .unwrap_or(0);
    let max = int_field(
        s.max_instances,
        &field("maxInstances"),
        true,
        1..=MAX_COUNT,
        "must be greater than 0",
    )?
    .unwrap_or(1);
    min_le_max(min, max)?;
    let concurrency = int_field(
        s.max_request_concurrency,
        &field("maxRequestConcurrency"),
        false,
        1..=16384,
        "must be greater than or equal to 1",
    )?;
    Ok((min, max, concurrency))
}

/// Validates one specification and resolves its names against the offers.
fn spec(i: usize, s: &GpuSpecInput, offers: &Offers, f: &FunctionVersion) -> ApiResult<GpuSpec> {
    let field = |name: &str| format!("deploymentSpecifications[{i}].{name}");
    let gpu = s
        .gpu
        .as_deref()
        .filter(|g| !g.trim().is_empty())
        .ok_or_else(|| field_error(OBJ, &field("gpu"), None, "must not be null"))?;
    let instance_type = s
        .instance_type
        .as_deref()
        .filter(|g| !g.trim().is_empty())
        .ok_or_else(|| field_error(OBJ, &field("instanceType"), None, "must not be null"))?;
    let (min, max, concurrency) = instance_counts(i, s)?;
    let concurrency = concurrency.unwrap_or(1);
    let preferred_order = int_field(
        s.preferred_order,
        &field("preferredOrder"),
        false,
        1..=99,
        "must be greater than or equal to 1",
    )?;
    let clusters = s.clusters.clone().filter(|c| !c.is_empty());
    if s.backend.is_some() && clusters.is_some() {
        return Err(ApiError::BadRequest(
            "'backend' and 'clusters' cannot be specified together".into(),
        ));
    }
    if f.helm_chart.is_none() && (s.configuration.is_some() || s.helm_validation_policy.is_some()) {
        return Err(ApiError::BadRequest(
            "'configuration' and 'helmValidationPolicy' are only allowed for Helm-based functions"
                .into(),
        ));
    }
    let (backend, gpu, instance_type) = offers.resolve(s.backend.as_deref(), gpu, instance_type)?;
    if let Some(cs) = &clusters {
        let known = offers.clusters.get(&backend).cloned().unwrap_or_default();
        if let Some(bad) = cs.iter().find(|c| !known.contains(c)) {
            return Err(ApiError::BadRequest(format!(
                "Invalid cluster '{bad}' specified"
            )));
        }
    }
    Ok(GpuSpec {
        gpu_specification_id: Uuid::new_v4(),
        gpu,
        backend,
        max_instances: max,
        min_instances: min,
        instance_type,
        max_request_concurrency: concurrency,
        clusters,
        regions: s.regions.clone(),
        attributes: s.attributes.clone(),
        availability_zones: s.availability_zones.clone(),
        preferred_order,
        cpu_arch: s.cpu_arch.clone(),
        os: s.os.clone(),
        driver_version: s.driver_version.clone(),
        storage: s.storage.clone(),
        system_memory: s.system_memory.clone(),
        gpu_memory: s.gpu_memory.clone(),
        configuration: s.configuration.clone(),
        helm_validation_policy: s.helm_validation_policy.clone(),
        autoscaling_configuration: s.autoscaling_configuration.clone(),
        autoscaling_configuration_policy: None,
    })
}

/// Errors of failed instances, for `healthInfo`.
fn health_info(core: &Core, d: &Deployment) -> Vec<HealthInfo> {
    core.state
        .instances
        .values()
        .filter(|i| i.deployment_id == d.deployment_id)
        .filter_map(|i| {
            i.error.as_ref().map(|e| HealthInfo {
                gpu: i.gpu.clone(),
                backend: i.backend.clone(),
                instance_type: i.instance_type.clone(),
                error: e.clone(),
            })
        })
        .collect()
}

fn dto(core: &Core, d: &Deployment) -> DeploymentDto {
    let status = core
        .state
        .functions
        .get(&d.function_version_id)
        .map_or(FunctionStatus::Inactive, |f| f.status);
    DeploymentDto::new(d, status, health_info(core, d))
}

/// `{"deployment": ...}` for a deployment just written (rendered after the status engine ran).
fn answer(app: &App, id: Uuid) -> ApiResult<Json<serde_json::Value>> {
    let core = app.lock();
    let d = core
        .state
        .deployments
        .get(&id)
        .ok_or_else(|| ApiError::Internal("deployment vanished".into()))?;
    Ok(Json(json!({ "deployment": dto(&core, d) })))
}

fn deployment_not_found(fid: Uuid, vid: Uuid) -> ApiError {
    ApiError::NotFound(format!(
        "Function id '{fid}', version '{vid}': Deployment not found"
    ))
}

/// `POST /v2/nvcf/deployments/functions/{fid}/versions/{vid}`
pub async fn create(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let fid = ctx.uuid("functionId")?;
    let vid = ctx.uuid("functionVersionId")?;
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    let p = ctx.principal()?;
    let deployment = app
        .write(move |core, _| {
            p.require(Scope::DeployFunction)?;
            let f = version(core, fid, vid)?.clone();
            p.require_access(fid, Some(vid))?;
            let prefix = format!("Function id '{fid}', version '{vid}'");
            match f.status {
                FunctionStatus::Inactive if registry::any_deployment(&core.state, vid).is_some() => {
                    return Err(ApiError::BadRequest(format!(
                        "{prefix}: Function deployment found for INACTIVE function. Wait for current deployment to be gracefully completed and removed."
                    )));
                }
                FunctionStatus::Inactive => {}
                FunctionStatus::Error => {
                    return Err(ApiError::BadRequest(format!("{prefix}: Function already has a deployment with errors")));
                }
                s => {
                    return Err(ApiError::BadRequest(format!(
                        "{prefix}: Status {s}, use PATCH endpoint to update gpu-specification"
                    )));
                }
            }
            let r: DeploymentRequest = parse_json(&body)?;
            let inputs = r.deployment_specifications.unwrap_or_default();
            if inputs.is_empty() {
                return Err(field_error(OBJ, "deploymentSpecifications", None, "must not be empty"));
            }
            let offers = Offers::of(core);
            let specs = inputs.iter().enumerate().map(|(i, s)| spec(i, s, &offers, &f)).collect::<ApiResult<Vec<_>>>()?;
            let now = Timestamp::now();
            let d = Deployment {
                deployment_id: Uuid::new_v4(),
                function_id: fid,
                function_version_id: vid,
                function_name: f.name.clone(),
                nca_id: f.nca_id.clone(),
                deployment_specifications: specs,
                draining: false,
                created_at: now,
                last_updated_at: now,
            };
            let status = if d.min_instances() == 0 { FunctionStatus::Active } else { FunctionStatus::Deploying };
            let f = FunctionVersion { status, ..f };
            core.commit(vec![Change::Upsert(Entity::Deployment(d.clone())), Change::Upsert(Entity::Function(f))])?;
            // Rendered as committed (DEPLOYING, or ACTIVE when no instance is required), as NVCF
            // answers: a worker reporting ready right after must not race into this answer.
            Ok(dto(core, &d))
        })
        .await?;
    Ok(Json(json!({ "deployment": deployment })))
}

/// `GET /v2/nvcf/deployments/functions/{fid}/versions/{vid}`
pub async fn get(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Json<serde_json::Value>> {
    let fid = ctx.uuid("functionId")?;
    let vid = ctx.uuid("functionVersionId")?;
    let core = app.lock();
    let p = ctx.principal()?;
    p.require(Scope::DeployFunction)?;
    version(&core, fid, vid)?;
    p.require_access(fid, Some(vid))?;
    let d =
        registry::any_deployment(&core.state, vid).ok_or_else(|| deployment_not_found(fid, vid))?;
    Ok(Json(json!({ "deployment": dto(&core, d) })))
}

fn by_id(core: &Core, id: Uuid) -> ApiResult<&Deployment> {
    core.state.deployments.get(&id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "Deployment id '{id}': Not found in account '{}'",
            model::NCA_ID
        ))
    })
}

/// `GET /v2/nvcf/deployments/{deploymentId}`
pub async fn get_by_id(
    State(app): State<Arc<App>>,
    ctx: Ctx,
) -> ApiResult<Json<serde_json::Value>> {
    let id = ctx.uuid("deploymentId")?;
    let core = app.lock();
    let p = ctx.principal()?;
    p.require(Scope::DeployFunction)?;
    let d = by_id(&core, id)?;
    p.require_access(d.function_id, Some(d.function_version_id))?;
    Ok(Json(json!({ "deployment": dto(&core, d) })))
}

/// `PATCH /v2/nvcf/deployments/{deploymentId}/gpu-specifications/{gpuSpecificationId}`
pub async fn patch_spec(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let id = ctx.uuid("deploymentId")?;
    let spec_id = ctx.uuid("gpuSpecificationId")?;
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    let p = ctx.principal()?;
    let spec = app
        .write(move |core, _| {
            p.require(Scope::DeployFunction)?;
            let mut d = by_id(core, id)?.clone();
            p.require_access(d.function_id, Some(d.function_version_id))?;
            if d.draining {
                return Err(ApiError::BadRequest(format!("Deployment id '{id}': the deployment is being removed")));
            }
            let r: UpdateGpuSpecRequest = parse_json(&body)?;
            if r.max_instances.is_none()
                && r.min_instances.is_none()
                && r.autoscaling_configuration.is_none()
                && r.autoscaling_configuration_policy.is_none()
            {
                return Err(ApiError::BadRequest(
                    "At least one of 'maxInstances', 'minInstances', 'autoscalingConfiguration' or 'autoscalingConfigurationPolicy' must be specified".into(),
                ));
            }
            let s = d
                .deployment_specifications
                .iter_mut()
                .find(|s| s.gpu_specification_id == spec_id)
                .ok_or_else(|| {
                    ApiError::NotFound(format!("GPU specification '{spec_id}' not found in deployment '{id}'"))
                })?;
            const PATCH: &str = "updateGpuSpecificationRequest";
            if let Some(m) = int_field_of(PATCH, r.min_instances, "minInstances", false, 0..=MAX_COUNT, "must be greater than or equal to 0")? {
                s.min_instances = m;
            }
            if let Some(m) = int_field_of(PATCH, r.max_instances, "maxInstances", false, 1..=MAX_COUNT, "must be greater than 0")? {
                s.max_instances = m;
            }
            min_le_max(s.min_instances, s.max_instances)?;
            if let Some(a) = r.autoscaling_configuration {
                s.autoscaling_configuration = Some(a);
            }
            if let Some(pol) = r.autoscaling_configuration_policy {
                let pol = pol.to_ascii_uppercase();
                if pol != "CUSTOM_CONFIGURATION" && pol != "PLATFORM_CONFIGURATION" {
                    return Err(field_error(
                        PATCH,
                        "autoscalingConfigurationPolicy",
                        Some(&pol),
                        "must be CUSTOM_CONFIGURATION or PLATFORM_CONFIGURATION",
                    ));
                }
                s.autoscaling_configuration_policy = Some(pol);
            }
            let out = s.clone();
            d.last_updated_at = Timestamp::now();
            core.commit(vec![Change::Upsert(Entity::Deployment(d))])?;
            Ok(out)
        })
        .await?;
    Ok(Json(json!({ "gpuSpecification": spec })))
}

/// `PUT /v2/nvcf/deployments/functions/{fid}/versions/{vid}` (deprecated): same specifications,
/// only the instance counts and concurrency may change.
pub async fn put(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let fid = ctx.uuid("functionId")?;
    let vid = ctx.uuid("functionVersionId")?;
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    let p = ctx.principal()?;
    let id = app
        .write(move |core, _| {
            p.require(Scope::DeployFunction)?;
            version(core, fid, vid)?;
            p.require_access(fid, Some(vid))?;
            let mut d = registry::live_deployment(&core.state, vid).ok_or_else(|| deployment_not_found(fid, vid))?.clone();
            let r: DeploymentRequest = parse_json(&body)?;
            let inputs = r.deployment_specifications.unwrap_or_default();
            let prefix = format!("Function id '{fid}', version '{vid}'");
            if d.deployment_specifications.len() > 1 || inputs.len() != d.deployment_specifications.len() {
                return Err(ApiError::BadRequest(format!(
                    "{prefix}: the deprecated PUT supports a single gpu-specification; use PATCH endpoint to update gpu-specification"
                )));
            }
            let (Some(input), Some(s)) = (inputs.first(), d.deployment_specifications.first_mut()) else {
                return Err(field_error(OBJ, "deploymentSpecifications", None, "must not be empty"));
            };
            let same = |given: &Option<String>, have: &str| given.as_deref().is_none_or(|g| g.eq_ignore_ascii_case(have));
            let clusters_same = input.clusters.as_ref().is_none_or(|c| c.is_empty() || Some(c) == s.clusters.as_ref());
            if !same(&input.gpu, &s.gpu)
                || !same(&input.instance_type, &s.instance_type)
                || !same(&input.backend, &s.backend)
                || !clusters_same
                || input.gpu_specification_id.is_some_and(|g| g != s.gpu_specification_id)
            {
                return Err(ApiError::BadRequest(format!(
                    "{prefix}: gpu, instanceType, backend and clusters cannot change; use PATCH endpoint to update gpu-specification"
                )));
            }
            let (min, max, concurrency) = instance_counts(0, input)?;
            s.min_instances = min;
            s.max_instances = max;
            if let Some(c) = concurrency {
                s.max_request_concurrency = c;
            }
            d.last_updated_at = Timestamp::now();
            let id = d.deployment_id;
            core.commit(vec![Change::Upsert(Entity::Deployment(d))])?;
            Ok(id)
        })
        .await?;
    answer(&app, id)
}

/// `DELETE /v2/nvcf/deployments/functions/{fid}/versions/{vid}?graceful=`: 200 with the function,
/// now INACTIVE. Non-graceful removes the instances at once; graceful lets them drain first.
pub async fn delete(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Json<serde_json::Value>> {
    let fid = ctx.uuid("functionId")?;
    let vid = ctx.uuid("functionVersionId")?;
    let graceful = ctx.query_bool("graceful", false)?;
    let p = ctx.principal()?;
    let p = app
        .write(move |core, _| {
            p.require(Scope::DeployFunction)?;
            let f = version(core, fid, vid)?.clone();
            p.require_access(fid, Some(vid))?;
            let d = registry::live_deployment(&core.state, vid)
                .ok_or_else(|| deployment_not_found(fid, vid))?
                .clone();
            let mut changes = Vec::new();
            if graceful {
                changes.push(Change::Upsert(Entity::Deployment(Deployment {
                    draining: true,
                    last_updated_at: Timestamp::now(),
                    ..d
                })));
            } else {
                changes.extend(registry::removal(&core.state, d.deployment_id));
            }
            changes.push(Change::Upsert(Entity::Function(FunctionVersion {
                status: FunctionStatus::Inactive,
                ..f
            })));
            core.commit(changes)?;
            Ok(p)
        })
        .await?;
    let core = app.lock();
    let f = version(&core, fid, vid)?;
    Ok(Json(json!({ "function": render(&core, f, &p, true) })))
}
