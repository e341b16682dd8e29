//! The key service (nvcf-api.md §1.7): admin token minting, scoped API keys, introspection and the
//! service registry. Unlike NVIDIA's, it does not trust `Key-*` headers from anyone: key calls come
//! from loopback or carry an admin token, and minting an admin token needs loopback or the
//! configured bootstrap secret.

use crate::app::{App, Ctx, parse_json, parse_json_or_default, read_body};
use crate::auth::{self, secret_eq};
use crate::core::Core;
use crate::error::{ApiError, ApiResult};
use crate::keyhash::{api_key_well_formed, new_admin_token, new_api_key};
use crate::store::Change;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use model::feed::{Entity, EntityKind};
use model::headers::{KEY_ISSUER_ID, KEY_OWNER_ID};
use model::keys::{
    CreateKeyRequest, IntrospectRequest, KeyDto, KeyRecord, KeyStatus, ServiceDto,
    UpdateAuthorizationsRequest,
};
use model::scopes::{ADMIN_SCOPES, CredentialKind};
use model::time::Timestamp;
use regex::Regex;
use serde_json::{Value, json};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use uuid::Uuid;

static DESCRIPTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-zA-Z0-9\s_-]{1,64}$").unwrap_or_else(|e| unreachable!("built-in regex: {e}"))
});

/// `POST /v1/admin/keys`: mints an admin token. Loopback only, unless a bootstrap secret is
/// configured, in which case every caller must present it as its bearer.
pub async fn mint_admin(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Json<KeyDto>> {
    match &app.cfg.bootstrap_secret {
        Some(secret) => match auth::bearer(&ctx.headers)? {
            Some(t) if secret_eq(t, secret) => {}
            Some(_) => return Err(ApiError::Unauthorized("Invalid bootstrap secret".into())),
            None => {
                return Err(ApiError::Unauthorized(
                    "Minting an admin token requires 'Authorization: Bearer <bootstrap secret>'"
                        .into(),
                ));
            }
        },
        None => {
            let ip = auth::client_ip(&ctx.headers, ctx.peer, &app.cfg.internal_token);
            if !ip.is_some_and(|ip| ip.is_loopback()) {
                return Err(ApiError::Forbidden(
                    "Admin tokens are minted only for loopback callers unless a bootstrap secret is configured".into(),
                ));
            }
        }
    }
    // The body is `{}` in NVCF; anything else present must at least be JSON.
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    let _: Value = parse_json_or_default::<Option<Value>>(&body)?.unwrap_or(Value::Null);
    app.write(|core, app| {
        let token = new_admin_token();
        let now = Timestamp::now();
        let scopes: Vec<String> = ADMIN_SCOPES.iter().map(|s| s.as_str().to_owned()).collect();
        let record = KeyRecord {
            id: Uuid::new_v4(),
            kind: CredentialKind::Admin,
            hash: app.hasher.hash(&token),
            status: KeyStatus::Active,
            owner_type: "SYSTEM".into(),
            owner_id: "admin-issuer-proxy".into(),
            issuer_service_id: model::NVCF_SERVICE_ID.into(),
            audience_service_ids: vec![model::NVCF_SERVICE_ID.into()],
            description: "admin token".into(),
            created_at: now,
            expires_at: now.plus(app.cfg.admin_token_ttl),
            authorizations: json!({"policies": [{
                "aud": model::NVCF_SERVICE_ID,
                "auds": [model::NVCF_SERVICE_ID],
                "product": "nv-cloud-functions",
                "resources": [{"id": "*", "type": "account-functions"}],
                "scopes": scopes,
            }]}),
            authz_updated_at: None,
            admin_scopes: scopes.clone(),
        };
        core.commit(vec![Change::Upsert(Entity::Key(record.clone()))])?;
        let mut dto = KeyDto::new(&record, now, true);
        dto.value = Some(token);
        Ok(Json(dto))
    })
    .await
}

/// The issuing service and owner of a key call, after checking that the caller may manage keys.
struct KeyCaller {
    service: ServiceDto,
    owner: String,
}

fn key_caller(app: &App, core: &Core, ctx: &Ctx) -> ApiResult<KeyCaller> {
    let ip = auth::client_ip(&ctx.headers, ctx.peer, &app.cfg.internal_token);
    if !ip.is_some_and(|ip| ip.is_loopback()) {
        let p = app.principal(core, &ctx.headers).map_err(|_| {
            ApiError::Unauthorized(
                "Key management needs a loopback caller or 'Authorization: Bearer <admin token>'"
                    .into(),
            )
        })?;
        if p.kind != CredentialKind::Admin {
            return Err(ApiError::Forbidden(
                "Key management needs an admin token, not an API key".into(),
            ));
        }
    }
    let header = |name: &str| {
        ctx.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let issuer = header(KEY_ISSUER_ID)
        .ok_or_else(|| ApiError::BadRequest("Key-Issuer-Id is not set".into()))?;
    let service = app
        .cfg
        .key_services
        .iter()
        .find(|s| s.service_id == issuer)
        .cloned()
        .ok_or_else(|| ApiError::BadRequest("Caller service not registered".into()))?;
    let owner = header(KEY_OWNER_ID)
        .ok_or_else(|| ApiError::BadRequest("Key-Owner-Id is not set".into()))?;
    if owner.chars().count() > 256 {
        return Err(ApiError::BadRequest(
            "Key-Owner-Id is too long (at most 256 characters)".into(),
        ));
    }
    Ok(KeyCaller {
        service,
        owner: owner.to_owned(),
    })
}

fn authorizations_ok(v: Option<Value>, service: &ServiceDto) -> ApiResult<Value> {
    let v = v
        .filter(|v| !v.is_null())
        .ok_or_else(|| ApiError::BadRequest("authorizations must not be null".into()))?;
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "authorizations must be a JSON object".into(),
        ));
    }
    if serde_json::from_value::<model::keys::Authorizations>(v.clone()).is_err() {
        return Err(ApiError::BadRequest(
            "authorizations is invalid: expected {\"policies\":[{\"aud\",\"product\",\"resources\":[{\"id\",\"type\"}],\"scopes\":[...]}]}".into(),
        ));
    }
    let len = v.to_string().chars().count();
    if len > service.max_authz_size_chars as usize {
        return Err(ApiError::BadRequest(format!(
            "authorizations size {len} exceeds the maximum of {} characters",
            service.max_authz_size_chars
        )));
    }
    Ok(v)
}

fn owned<'a>(core: &'a Core, c: &KeyCaller, id: Uuid) -> ApiResult<&'a KeyRecord> {
    core.state
        .keys
        .get(&id)
        .filter(|k| {
            k.kind == CredentialKind::ApiKey
                && k.issuer_service_id == c.service.service_id
                && k.owner_id == c.owner
        })
        .ok_or_else(|| ApiError::NotFound("Key not found".into()))
}

/// `POST /v1/keys`
pub async fn create(State(app): State<Arc<App>>, ctx: Ctx, body: Body) -> ApiResult<Json<KeyDto>> {
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    app.write(move |core, app| {
        let c = key_caller(app, core, &ctx)?;
        let r: CreateKeyRequest = parse_json(&body)?;
        let description = r.description.unwrap_or_default();
        if !DESCRIPTION.is_match(&description) {
            return Err(ApiError::BadRequest("description is invalid".into()));
        }
        let now = Timestamp::now();
        let max_days = c.service.max_api_key_ttl_days;
        let ttl_error = || {
            ApiError::BadRequest(format!(
                "expires_at must be in the future and not more than {max_days} days from now"
            ))
        };
        let expires_at = r
            .expires_at
            .as_deref()
            .and_then(Timestamp::parse)
            .ok_or_else(ttl_error)?;
        if expires_at <= now
            || expires_at > now.plus(Duration::from_secs(u64::from(max_days) * 86_400))
        {
            return Err(ttl_error());
        }
        let authorizations = authorizations_ok(r.authorizations, &c.service)?;
        let audience = r
            .audience_service_ids
            .unwrap_or_else(|| vec![c.service.service_id.clone()]);
        if audience.is_empty()
            || audience
                .iter()
                .any(|a| !c.service.audience_service_ids.contains(a))
        {
            return Err(ApiError::BadRequest("audience_service_ids invalid".into()));
        }
        let held = core
            .state
            .keys
            .values()
            .filter(|k| {
                k.kind == CredentialKind::ApiKey
                    && k.owner_id == c.owner
                    && k.issuer_service_id == c.service.service_id
                    && k.status_at(now) == KeyStatus::Active
            })
            .count();
        if held >= c.service.max_api_keys_per_user as usize {
            return Err(ApiError::BadRequest(
                "Actor reached maximum allowed number of keys in service".into(),
            ));
        }
        let value = new_api_key(&app.cfg.key_prefix);
        let record = KeyRecord {
            id: Uuid::new_v4(),
            kind: CredentialKind::ApiKey,
            hash: app.hasher.hash(&value),
            status: KeyStatus::Active,
            owner_type: "USER".into(),
            owner_id: c.owner.clone(),
            issuer_service_id: c.service.service_id.clone(),
            audience_service_ids: audience,
            description,
            created_at: now,
            expires_at,
            authorizations,
            authz_updated_at: Some(now),
            admin_scopes: Vec::new(),
        };
        core.commit(vec![Change::Upsert(Entity::Key(record.clone()))])?;
        let mut dto = KeyDto::new(&record, now, true);
        dto.value = Some(value);
        Ok(Json(dto))
    })
    .await
}

/// `GET /v1/keys`
pub async fn list(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let core = app.lock();
    let c = key_caller(&app, &core, &ctx)?;
    let now = Timestamp::now();
    let mut keys: Vec<&KeyRecord> = core
        .state
        .keys
        .values()
        .filter(|k| {
            k.kind == CredentialKind::ApiKey
                && k.owner_id == c.owner
                && k.issuer_service_id == c.service.service_id
        })
        .collect();
    keys.sort_by_key(|k| (k.created_at, k.id));
    let keys: Vec<KeyDto> = keys
        .into_iter()
        .map(|k| KeyDto::new(k, now, false))
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

/// `GET /v1/keys/{keyId}`
pub async fn get(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Json<KeyDto>> {
    let id = ctx.uuid("keyId")?;
    let core = app.lock();
    let c = key_caller(&app, &core, &ctx)?;
    Ok(Json(KeyDto::new(
        owned(&core, &c, id)?,
        Timestamp::now(),
        true,
    )))
}

/// `DELETE /v1/keys/{keyId}`: 204; the key stops working as soon as the change is applied.
pub async fn delete(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Response> {
    let id = ctx.uuid("keyId")?;
    app.write(move |core, app| {
        let c = key_caller(app, core, &ctx)?;
        owned(core, &c, id)?;
        core.commit(vec![Change::Delete(EntityKind::Key, id.to_string())])?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `PUT /v1/keys/{keyId}/authorizations`
pub async fn update_authorizations(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    body: Body,
) -> ApiResult<Json<KeyDto>> {
    let id = ctx.uuid("keyId")?;
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    app.write(move |core, app| {
        let c = key_caller(app, core, &ctx)?;
        let now = Timestamp::now();
        let mut k = owned(core, &c, id)?.clone();
        if k.status_at(now) != KeyStatus::Active {
            return Err(ApiError::BadRequest("Key is not active".into()));
        }
        let r: UpdateAuthorizationsRequest = parse_json(&body)?;
        let authorizations = authorizations_ok(r.authorizations, &c.service)?;
        let min = Duration::from_secs(u64::from(c.service.min_authz_update_interval_seconds));
        if let Some(last) = k.authz_updated_at
            && now < last.plus(min)
        {
            return Err(ApiError::TooManyRequests(format!(
                "Authorizations of a key may be updated at most once every {} seconds",
                min.as_secs()
            )));
        }
        k.authorizations = authorizations;
        k.authz_updated_at = Some(now);
        core.commit(vec![Change::Upsert(Entity::Key(k.clone()))])?;
        Ok(Json(KeyDto::new(&k, now, true)))
    })
    .await
}

/// `POST /v1/introspect`: what a key may do, for whoever holds it.
pub async fn introspect(State(app): State<Arc<App>>, ctx: Ctx, body: Body) -> ApiResult<Response> {
    let body = read_body(body, &ctx.headers, app.cfg.max_body_bytes).await?;
    let r: IntrospectRequest = parse_json(&body)?;
    let audience = r.audience_service_id.unwrap_or_default();
    if !app
        .cfg
        .key_services
        .iter()
        .any(|s| s.audience_service_ids.contains(&audience))
    {
        return Err(ApiError::BadRequest("audience_service_id invalid".into()));
    }
    let key = r.key.unwrap_or_default();
    if !api_key_well_formed(&key, &app.cfg.key_prefix) {
        return Err(ApiError::BadRequest("api key format invalid".into()));
    }
    let core = app.lock();
    let now = Timestamp::now();
    let k = core
        .key_by_hash(&app.hasher.hash(&key))
        .filter(|k| k.kind == CredentialKind::ApiKey && k.status_at(now) == KeyStatus::Active)
        .filter(|k| k.audience_service_ids.contains(&audience))
        .ok_or_else(|| ApiError::NotFound("Key not found".into()))?;
    let mut resp = Json(json!({
        "owner_type": k.owner_type,
        "owner_id": k.owner_id,
        "key_id": k.id,
        "issuer_service_id": k.issuer_service_id,
        "authorizations": k.authorizations,
    }))
    .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=360"),
    );
    Ok(resp)
}

/// `GET /v1/services`
pub async fn services(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({ "services": app.cfg.key_services }))
}

/// `GET /v1/services/{serviceId}`
pub async fn service(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Json<ServiceDto>> {
    let id = ctx.param("serviceId")?;
    app.cfg
        .key_services
        .iter()
        .find(|s| s.service_id == id)
        .cloned()
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "Service '{}' not found",
                crate::app::truncate(id, 256)
            ))
        })
}
