//! Key service types (nvcf-api.md §1.7): requests, `KeyDto`, service registrations, and the key
//! record that the feed carries to the gateway (hash, scopes, resources, expiry, status).

use crate::scopes::CredentialKind;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `CreateKeyRequest` (snake_case).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateKeyRequest {
    pub description: Option<String>,
    pub expires_at: Option<String>,
    pub authorizations: Option<serde_json::Value>,
    pub audience_service_ids: Option<Vec<String>>,
}

/// `PUT /v1/keys/{id}/authorizations` body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UpdateAuthorizationsRequest {
    pub authorizations: Option<serde_json::Value>,
}

/// `POST /v1/introspect` body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IntrospectRequest {
    pub audience_service_id: Option<String>,
    pub key: Option<String>,
}

/// Key status as stored; `EXPIRED` is computed on read once `now > expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyStatus {
    Active,
    Expired,
    Suspended,
}

/// `authorizations.policies[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auds: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A resource entry: `account-functions`/`authorized-functions` with id `*`, or `function` with
/// `<functionId>/<versionId|*>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub id: String,
    #[serde(rename = "type")]
    pub type_: String,
}

/// `authorizations`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Authorizations {
    #[serde(default)]
    pub policies: Vec<Policy>,
}

/// A stored credential: an API key or an admin token. Only the keyed hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: Uuid,
    pub kind: CredentialKind,
    /// Hex HMAC-SHA256 of the full secret under the installation's key-hash secret.
    pub hash: String,
    pub status: KeyStatus,
    pub owner_type: String,
    pub owner_id: String,
    pub issuer_service_id: String,
    pub audience_service_ids: Vec<String>,
    pub description: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The raw authorizations JSON as the caller gave it (answered back verbatim).
    pub authorizations: serde_json::Value,
    /// When the authorizations were last replaced (rate-limits `PUT .../authorizations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz_updated_at: Option<Timestamp>,
    /// Fixed scopes of an admin token (empty for API keys, whose scopes come from the policies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_scopes: Vec<String>,
}

impl KeyRecord {
    /// Status as seen at `now` (`EXPIRED` once past `expires_at`).
    pub fn status_at(&self, now: Timestamp) -> KeyStatus {
        if self.status == KeyStatus::Active && now > self.expires_at {
            KeyStatus::Expired
        } else {
            self.status
        }
    }

    /// The policies that apply to `service_id` (policies naming another audience are ignored).
    pub fn policies_for(&self, service_id: &str) -> Vec<Policy> {
        let Ok(a) = serde_json::from_value::<Authorizations>(self.authorizations.clone()) else {
            return Vec::new();
        };
        a.policies
            .into_iter()
            .filter(|p| {
                let by_aud = p.aud.as_deref().is_none_or(|a| a == service_id);
                let by_auds = p
                    .auds
                    .as_ref()
                    .is_none_or(|v| v.iter().any(|a| a == service_id));
                by_aud && by_auds
            })
            .collect()
    }
}

/// `KeyDto` (snake_case, nulls omitted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyDto {
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub status: KeyStatus,
    pub owner_type: String,
    pub owner_id: String,
    pub issuer_service_id: String,
    pub audience_service_ids: Vec<String>,
    pub description: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorizations: Option<serde_json::Value>,
}

impl KeyDto {
    /// Renders a record at `now`; `with_authz` adds the authorizations (left out of lists).
    pub fn new(r: &KeyRecord, now: Timestamp, with_authz: bool) -> Self {
        Self {
            id: r.id,
            value: None,
            status: r.status_at(now),
            owner_type: r.owner_type.clone(),
            owner_id: r.owner_id.clone(),
            issuer_service_id: r.issuer_service_id.clone(),
            audience_service_ids: r.audience_service_ids.clone(),
            description: r.description.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            authorizations: with_authz.then(|| r.authorizations.clone()),
        }
    }
}

/// A registered key-issuing service (`GET /v1/services`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDto {
    pub service_id: String,
    pub service_name: String,
    pub audience_service_ids: Vec<String>,
    pub max_api_keys_per_user: u32,
    pub max_api_key_ttl_days: u32,
    pub max_authz_size_chars: u32,
    pub min_authz_update_interval_seconds: u32,
}
