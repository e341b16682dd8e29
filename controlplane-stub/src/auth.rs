//! Who is calling: bearer credentials to a [`Principal`] with scopes and resource entries, scope
//! and resource checks (nvcf-api.md §4), the internal credential, and the caller's address.

use crate::core::Core;
use crate::error::{ApiError, ApiResult};
use crate::keyhash::{ADMIN_PREFIX, KeyHasher, api_key_well_formed};
use http::HeaderMap;
use model::credentials::Grants;
use model::keys::KeyStatus;
use model::scopes::{CredentialKind, Scope};
use model::time::Timestamp;
use std::net::IpAddr;
use uuid::Uuid;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub kind: CredentialKind,
    pub key_id: Uuid,
    grants: Grants,
}

impl Principal {
    /// Whether the credential grants `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.grants.has(scope)
    }

    /// 403 unless the credential holds one of `scopes`.
    pub fn require_any(&self, scopes: &[Scope]) -> ApiResult<()> {
        if scopes.iter().any(|s| self.has(*s)) {
            return Ok(());
        }
        let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        let kind = match self.kind {
            CredentialKind::Admin => "admin token",
            CredentialKind::ApiKey => "API key",
        };
        Err(ApiError::Forbidden(format!(
            "Access Denied: the {kind} lacks the required scope {}",
            names.join(" or ")
        )))
    }

    /// 403 unless the credential holds `scope`.
    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        self.require_any(&[scope])
    }

    /// Whether the credential covers every function of the account (`account-functions`).
    pub fn covers_account(&self) -> bool {
        self.grants.covers_account()
    }

    /// Whether the credential may touch a function (version `None` = the function as a whole).
    pub fn may_access(&self, function_id: Uuid, version_id: Option<Uuid>) -> bool {
        self.grants.may_access(function_id, version_id)
    }

    /// 403 unless [`Self::may_access`].
    pub fn require_access(&self, function_id: Uuid, version_id: Option<Uuid>) -> ApiResult<()> {
        if self.may_access(function_id, version_id) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "Function '{function_id}':  Missing resource entry in ApiKey for the function"
            )))
        }
    }

    /// 403 unless the credential covers the whole account (needed to create functions).
    pub fn require_account(&self) -> ApiResult<()> {
        if self.covers_account() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "Missing resource entry in ApiKey: creating functions needs {\"type\":\"account-functions\",\"id\":\"*\"}"
                    .into(),
            ))
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> ApiResult<Option<&str>> {
    let Some(v) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::Unauthorized("Unauthorized access".into()))?;
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("Authorization header must be 'Bearer <token>'".into())
        })?;
    Ok(Some(token))
}

/// Authenticates a management call: 401 when the credential is missing, unknown, expired or not
/// active.
pub fn authenticate(
    core: &Core,
    hasher: &KeyHasher,
    headers: &HeaderMap,
    key_prefix: &str,
) -> ApiResult<Principal> {
    let token = bearer(headers)?.ok_or_else(|| {
        ApiError::Unauthorized("Header of type `authorization` was missing".into())
    })?;
    let is_key = token.starts_with("nvapi-");
    if is_key && !api_key_well_formed(token, key_prefix) {
        return Err(ApiError::Unauthorized("api key format invalid".into()));
    }
    if !is_key && !token.starts_with(ADMIN_PREFIX) {
        return Err(ApiError::Unauthorized("Invalid bearer token".into()));
    }
    let record = core
        .key_by_hash(&hasher.hash(token))
        .ok_or_else(|| ApiError::Unauthorized("Invalid or unknown credential".into()))?;
    match record.status_at(Timestamp::now()) {
        KeyStatus::Active => {}
        KeyStatus::Expired => return Err(ApiError::Unauthorized("Credential expired".into())),
        KeyStatus::Suspended => {
            return Err(ApiError::Unauthorized("Credential is suspended".into()));
        }
    }
    Ok(Principal {
        kind: record.kind,
        key_id: record.id,
        grants: Grants::of(record),
    })
}

/// Constant-time comparison of secrets.
pub fn secret_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// 401 unless the request carries the internal credential as its bearer.
pub fn require_internal(headers: &HeaderMap, internal_token: &str) -> ApiResult<()> {
    match bearer(headers)? {
        Some(t) if secret_eq(t, internal_token) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized("Invalid internal credential".into())),
        None => Err(ApiError::Unauthorized(
            "Header of type `authorization` was missing".into(),
        )),
    }
}

/// The caller's address: the gateway's word for it when the gateway proves itself with the internal
/// credential, otherwise the TCP peer. IPv4-mapped IPv6 addresses (what a dual-stack listener
/// reports for IPv4 clients, e.g. `::ffff:127.0.0.1`) come back as IPv4, so loopback checks hold.
pub fn client_ip(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    internal_token: &str,
) -> Option<IpAddr> {
    let via_gateway = headers
        .get(model::headers::GATEWAY_AUTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| secret_eq(v, internal_token));
    let ip = if via_gateway {
        headers
            .get(model::headers::CLIENT_ADDR)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    } else {
        peer
    };
    ip.map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_trusts_gateway_only_with_the_token() {
        let mut h = HeaderMap::new();
        h.insert(model::headers::CLIENT_ADDR, "10.1.2.3".parse().expect("hv"));
        let peer: IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(client_ip(&h, Some(peer), "secret-token-123"), Some(peer));
        h.insert(
            model::headers::GATEWAY_AUTH,
            "secret-token-123".parse().expect("hv"),
        );
        assert_eq!(
            client_ip(&h, Some(peer), "secret-token-123"),
            "10.1.2.3".parse().ok()
        );
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(client_ip(&HeaderMap::new(), Some(mapped), "x"), Some(peer));
    }
}
