//! Shared handler plumbing: the application state, the per-request context extractor (path
//! parameters, query, caller address), body reading with a size limit, and JSON parsing that turns
//! every malformed input into a 400 problem.

use crate::auth::{self, Principal};
use crate::config::ControlplaneConfig;
use crate::core::Core;
use crate::error::{ApiError, ApiResult};
use crate::keyhash::KeyHasher;
use crate::queues::QueueReports;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams};
use bytes::Bytes;
use http::HeaderMap;
use http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;
use uuid::Uuid;

/// Everything handlers share.
#[derive(Debug)]
pub struct App {
    core: Mutex<Core>,
    pub cfg: ControlplaneConfig,
    pub hasher: KeyHasher,
    /// Becomes `true` when the server starts shutting down; long-lived responses (the feed) end
    /// then, so that graceful shutdown does not wait for them forever.
    stopping: watch::Receiver<bool>,
    /// The gateways' latest queue-depth reports (live state; see [`crate::queues`]).
    queues: Mutex<QueueReports>,
}

impl App {
    pub fn new(
        core: Core,
        cfg: ControlplaneConfig,
        hasher: KeyHasher,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            core: Mutex::new(core),
            cfg,
            hasher,
            stopping,
            queues: Mutex::new(QueueReports::default()),
        }
    }

    /// The gateways' queue reports. Never held across an await or together with the core.
    pub fn queues(&self) -> MutexGuard<'_, QueueReports> {
        // Every update replaces whole entries, so a panic mid-update leaves nothing half-written.
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A receiver that turns `true` once the server shuts down.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.clone()
    }

    /// The state, locked. A panic elsewhere while holding the lock leaves the data consistent
    /// (state changes only after a successful commit), so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Core> {
        self.core
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs a mutation on the blocking pool (it writes SQLite), then lets the registry and status
    /// engine react to it before the caller is answered.
    pub async fn write<T, F>(self: &Arc<Self>, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Core, &Self) -> ApiResult<T> + Send + 'static,
    {
        let app = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut core = app.lock();
            let out = f(&mut core, &app)?;
            core.reconcile(Instant::now(), &app.cfg)?;
            Ok(out)
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// Authenticates a management call.
    pub fn principal(&self, core: &Core, headers: &HeaderMap) -> ApiResult<Principal> {
        auth::authenticate(core, &self.hasher, headers, &self.cfg.key_prefix)
    }
}

/// Per-request context: headers, caller address, path parameters and raw query.
#[derive(Debug)]
pub struct Ctx {
    pub headers: HeaderMap,
    pub peer: Option<IpAddr>,
    pub path: String,
    pub query: Option<String>,
    params: Vec<(String, String)>,
    /// Set by the management routes' authentication middleware.
    principal: Option<Principal>,
}

impl Ctx {
    /// The caller of a management route, authenticated by the router's middleware.
    pub fn principal(&self) -> ApiResult<Principal> {
        self.principal.clone().ok_or_else(|| {
            ApiError::Internal("route is not behind the authentication middleware".into())
        })
    }

    /// A path parameter parsed as a UUID; 400 naming the parameter otherwise.
    pub fn uuid(&self, name: &str) -> ApiResult<Uuid> {
        let raw = self.param(name)?;
        Uuid::parse_str(raw).map_err(|_| {
            ApiError::BadRequest(format!(
                "Failed to convert '{name}' with value: '{}'; Invalid UUID string: {}",
                truncate(raw, 256),
                truncate(raw, 256)
            ))
        })
    }

    /// A path parameter as text.
    pub fn param(&self, name: &str) -> ApiResult<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| ApiError::Internal(format!("route has no parameter '{name}'")))
    }

    /// All values of a query parameter (repeated and comma-separated forms both count).
    pub fn query_values(&self, name: &str) -> Vec<String> {
        let Some(q) = &self.query else {
            return Vec::new();
        };
        q.split('&')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k) == name).then(|| percent_decode(v))
            })
            .flat_map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// A boolean query parameter (`true`/`false`, case-insensitive), with a default.
    pub fn query_bool(&self, name: &str, default: bool) -> ApiResult<bool> {
        match self
            .query_values(name)
            .first()
            .map(|s| s.to_ascii_lowercase())
        {
            None => Ok(default),
            Some(v) if v == "true" => Ok(true),
            Some(v) if v == "false" => Ok(false),
            Some(v) => Err(ApiError::BadRequest(format!(
                "Failed to convert '{name}' with value: '{}' to a boolean",
                truncate(&v, 256)
            ))),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Cuts text for echoing in an error (NVCF cuts rejected values at 256 characters).
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = match RawPathParams::from_request_parts(parts, state).await {
            Ok(p) => p
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            Err(e) => return Err(ApiError::BadRequest(format!("invalid path: {e}"))),
        };
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Self {
            headers: parts.headers.clone(),
            peer,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            params,
            principal: parts.extensions.get::<Principal>().cloned(),
        })
    }
}

/// Reads a request body of at most `limit` bytes; 413 beyond it.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> ApiResult<Bytes> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("Request body exceeds the limit of {limit} bytes"));
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::BadRequest(format!(
            "failed to read request body: {e}"
        ))),
    }
}

/// Parses a JSON body; 400 with the parser's message prefixed by the path of the offending field
/// (e.g. `JSON parse error: inferencePort: invalid type: string "abc", expected i64 at line 1
/// column 20`), as Jackson names the reference chain.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "Required request body is missing".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| ApiError::BadRequest(format!("JSON parse error: {e}")))?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("JSON parse error: {e}")))?;
    Ok(value)
}

/// Parses a JSON body that may be absent (`{}` assumed).
pub fn parse_json_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(body)
}
