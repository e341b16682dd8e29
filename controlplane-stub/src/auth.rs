//! Who is calling: bearer credentials to a [`Principal`] with scopes and resource entries, scope
//! and resource checks (nvcf-api.md §4), the internal credential, and the caller's address.

use crate::core::Core;
use crate::error::{ApiError, ApiResult};
use crate::keyhash::{ADMIN_PREFIX, KeyHasher, api_key_well_formed};
use http::HeaderMap;
use model::keys::{KeyStatus, Resource};
use model::scopes::{CredentialKind, Scope};
use model::time::Timestamp;
use std::collections::HashSet;
use std::net::IpAddr;
use uuid::Uuid;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub kind: CredentialKind,
    pub key_id: Uuid,
    scopes: HashSet<String>,
    resources: Vec<Resource>,
}

impl Principal {
    /// Whether the credential grants `scope` (`hasAnyAuthority('x', 'apikey:x')`; API keys cannot
    /// hold the JWT-only scopes).
    pub fn has(&self, scope: Scope) -> bool {
        let held = self.scopes.contains(scope.as_str());
        match self.kind {
            CredentialKind::Admin => held,
            CredentialKind::ApiKey => held && scope.api_key_may_hold(),
        }
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
        match self.kind {
            CredentialKind::Admin => true,
            CredentialKind::ApiKey => self
                .resources
                .iter()
                .any(|r| r.type_ == "account-functions" && r.id == "*"),
        }
    }

    /// Whether the credential may touch a function (version `None` = the function as a whole).
    pub fn may_access(&self, function_id: Uuid, version_id: Option<Uuid>) -> bool {
        if self.covers_account() {
            return true;
        }
        self.resources
            .iter()
            .filter(|r| r.type_ == "function")
            .any(|r| {
                let Some((f, v)) = r.id.split_once('/') else {
                    return r.id.parse::<Uuid>().ok() == Some(function_id);
                };
                f.parse::<Uuid>().ok() == Some(function_id)
                    && (v == "*"
                        || version_id.is_some_and(|vid| v.parse::<Uuid>().ok() == Some(vid)))
            })
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
    let (scopes, resources) = match record.kind {
        CredentialKind::Admin => (record.admin_scopes.iter().cloned().collect(), Vec::new()),
        CredentialKind::ApiKey => {
            let policies = record.policies_for(model::NVCF_SERVICE_ID);
            let scopes = policies
                .iter()
                .flat_map(|p| p.scopes.iter().cloned())
                .collect();
            let resources = policies.into_iter().flat_map(|p| p.resources).collect();
            (scopes, resources)
        }
    };
    Ok(Principal {
        kind: record.kind,
        key_id: record.id,
        scopes,
        resources,
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

    fn key(resources: Vec<(&str, &str)>) -> Principal {
        Principal {
            kind: CredentialKind::ApiKey,
            key_id: Uuid::nil(),
            scopes: ["list_functions", "list_cluster_groups"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            resources: resources
                .into_iter()
                .map(|(t, id)| Resource {
                    type_: t.into(),
                    id: id.into(),
                })
                .collect(),
        }
    }

    #[test]
    fn api_keys_cannot_hold_jwt_only_scopes() {
        let p = key(vec![]);
        assert!(p.has(Scope::ListFunctions));
        assert!(!p.has(Scope::ListClusterGroups));
        assert!(p.require(Scope::DeployFunction).is_err());
    }

    #[test]
    fn resource_entries_limit_functions() {
        let f = Uuid::new_v4();
        let v = Uuid::new_v4();
        let other = Uuid::new_v4();
        assert!(key(vec![("account-functions", "*")]).may_access(other, None));
        let p = key(vec![("function", &format!("{f}/{v}"))]);
        assert!(p.may_access(f, Some(v)));
        assert!(!p.may_access(f, Some(other)));
        assert!(!p.may_access(f, None));
        assert!(!p.may_access(other, Some(v)));
        let p = key(vec![("function", &format!("{f}/*"))]);
        assert!(p.may_access(f, None) && p.may_access(f, Some(v)));
        assert!(!p.covers_account());
    }

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
