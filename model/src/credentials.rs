//! Credentials as both the control plane and the gateway check them: the keyed hash that is all
//! either ever stores, the format check of API keys, and the grants (scopes and resource entries) a
//! key record confers (nvcf-api.md §1.7, §4).
//!
//! API key format: `<prefix><43 base64url chars: 32 random bytes><21 base64url chars: checksum>`,
//! as NVIDIA's key service builds them; the checksum lets a malformed key be refused before any
//! lookup. Admin tokens are opaque too: `nvcf-admin-<43 base64url chars>`.

use crate::keys::{KeyRecord, Resource};
use crate::scopes::{CredentialKind, Scope};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Prefix of admin tokens (they must not start with `nvapi-`, which marks API keys).
pub const ADMIN_PREFIX: &str = "nvcf-admin-";
/// Characters of the random part (32 bytes, base64url without padding).
pub const RANDOM_CHARS: usize = 43;
/// Characters of an API key's checksum.
pub const CHECKSUM_CHARS: usize = 21;

/// Computes keyed hashes of credentials.
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    /// A hasher under a hex secret. Any byte string is a valid HMAC key, so this cannot fail.
    pub fn new(secret_hex: &str) -> Self {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret_hex.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        Self { mac }
    }

    /// HMAC-SHA256 of a credential.
    pub fn digest(&self, credential: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(credential.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Hex HMAC-SHA256 of a credential (what key records store).
    pub fn hash(&self, credential: &str) -> String {
        hex(&self.digest(credential))
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The digest a hex key hash stands for (`None` unless it is 64 hex digits).
pub fn digest_from_hex(hash: &str) -> Option<[u8; 32]> {
    if hash.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hash.as_bytes().chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Whether `key` has the shape of an API key with `prefix` (length and alphabet, not the
/// checksum): the cheap refusal before a lookup, where the lookup itself is the real check.
pub fn api_key_shaped(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == RANDOM_CHARS + CHECKSUM_CHARS
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The checksum part of an API key whose prefix and random part are `head`.
pub fn checksum(head: &str) -> String {
    let digest = Sha256::digest(head.as_bytes());
    let mut s = URL_SAFE_NO_PAD.encode(digest);
    s.truncate(CHECKSUM_CHARS);
    s
}

/// Whether `key` has the shape of a key with `prefix` and a correct checksum.
pub fn api_key_well_formed(key: &str, prefix: &str) -> bool {
    if !api_key_shaped(key, prefix) {
        return false;
    }
    let (head, sum) = key.split_at(prefix.len() + RANDOM_CHARS);
    checksum(head) == sum
}

/// What a credential may do: its scopes and, for API keys, its resource entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub kind: CredentialKind,
    pub key_id: Uuid,
    /// The enforced scopes held, one [`Scope::bit`] each: checked on every invocation, so a mask
    /// instead of a set of strings (others a policy may list are never asked about).
    scopes: u16,
    resources: Vec<Resource>,
}

impl Grants {
    /// The grants of a stored credential towards the NVCF service.
    pub fn of(record: &KeyRecord) -> Self {
        let (scopes, resources) = match record.kind {
            CredentialKind::Admin => (scope_mask(&record.admin_scopes), Vec::new()),
            CredentialKind::ApiKey => {
                let policies = record.policies_for(crate::NVCF_SERVICE_ID);
                let scopes = scope_mask(policies.iter().flat_map(|p| p.scopes.iter()));
                let resources = policies.into_iter().flat_map(|p| p.resources).collect();
                (scopes, resources)
            }
        };
        Self {
            kind: record.kind,
            key_id: record.id,
            scopes,
            resources,
        }
    }

    /// Whether the credential grants `scope` (`hasAnyAuthority('x', 'apikey:x')`; API keys cannot
    /// hold the JWT-only scopes).
    pub fn has(&self, scope: Scope) -> bool {
        let held = self.scopes & scope.bit() != 0;
        match self.kind {
            CredentialKind::Admin => held,
            CredentialKind::ApiKey => held && scope.api_key_may_hold(),
        }
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
}

/// The mask of the enforced scopes among `names`.
fn scope_mask<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> u16 {
    names
        .into_iter()
        .filter_map(|name| Scope::from_name(name.as_ref()))
        .fold(0, |mask, scope| mask | scope.bit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyStatus;
    use crate::time::Timestamp;
    use serde_json::json;

    fn key(resources: serde_json::Value) -> KeyRecord {
        KeyRecord {
            id: Uuid::nil(),
            kind: CredentialKind::ApiKey,
            hash: String::new(),
            status: KeyStatus::Active,
            owner_type: "USER".into(),
            owner_id: "o".into(),
            issuer_service_id: crate::NVCF_SERVICE_ID.into(),
            audience_service_ids: vec![crate::NVCF_SERVICE_ID.into()],
            description: "d".into(),
            created_at: Timestamp::now(),
            expires_at: Timestamp::now(),
            authorizations: json!({"policies": [{"aud": crate::NVCF_SERVICE_ID,
                "scopes": ["list_functions", "list_cluster_groups"], "resources": resources}]}),
            authz_updated_at: None,
            admin_scopes: vec![],
        }
    }

    #[test]
    fn api_keys_cannot_hold_jwt_only_scopes() {
        let g = Grants::of(&key(json!([])));
        assert!(g.has(Scope::ListFunctions));
        assert!(!g.has(Scope::ListClusterGroups));
        assert!(!g.has(Scope::DeployFunction));
    }

    #[test]
    fn resource_entries_limit_functions() {
        let f = Uuid::new_v4();
        let v = Uuid::new_v4();
        let other = Uuid::new_v4();
        let all = Grants::of(&key(json!([{"type": "account-functions", "id": "*"}])));
        assert!(all.may_access(other, None));
        let one = Grants::of(&key(
            json!([{"type": "function", "id": format!("{f}/{v}")}]),
        ));
        assert!(one.may_access(f, Some(v)));
        assert!(
            !one.may_access(f, Some(other))
                && !one.may_access(f, None)
                && !one.may_access(other, Some(v))
        );
        let any_version = Grants::of(&key(json!([{"type": "function", "id": format!("{f}/*")}])));
        assert!(any_version.may_access(f, None) && any_version.may_access(f, Some(v)));
        assert!(!any_version.covers_account());
    }

    #[test]
    fn keys_check_their_checksum_and_hashes_are_keyed() {
        let head = format!("nvapi-{}", "A".repeat(RANDOM_CHARS));
        let k = format!("{head}{}", checksum(&head));
        assert!(api_key_well_formed(&k, "nvapi-"));
        let bad = format!("{}B{}", &k[..10], &k[11..]);
        assert!(!api_key_well_formed(&bad, "nvapi-"));
        assert!(!api_key_well_formed("nvapi-short", "nvapi-"));
        let (a, b) = (KeyHasher::new("one"), KeyHasher::new("two"));
        assert_eq!(a.hash("x"), a.hash("x"));
        assert_ne!(a.hash("x"), b.hash("x"));
        assert_eq!(a.hash("x").len(), 64);
        assert_eq!(digest_from_hex(&a.hash("x")), Some(a.digest("x")));
        assert_eq!(digest_from_hex("zz"), None);
        assert!(api_key_shaped(&bad, "nvapi-") && !api_key_shaped("nvapi-x", "nvapi-"));
    }
}
