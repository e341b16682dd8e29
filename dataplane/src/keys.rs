//! The `authenticate` phase's key index: credentials checked locally from the key records of the
//! state feed (keyed hash, status, expiry, scopes, resource entries), so invocations never wait on
//! the control plane. Rebuilt with the routing snapshot on every feed change, which is what makes a
//! deleted or expired key stop working as soon as the change arrives.

use model::credentials::{ADMIN_PREFIX, Grants, KeyHasher, api_key_shaped, digest_from_hex};
use model::feed::FeedState;
use model::keys::KeyStatus;
use model::scopes::Scope;
use model::time::Timestamp;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

/// Why a caller may not invoke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401.
    #[error("Header of type `authorization` was missing")]
    Missing,
    /// 401.
    #[error("Unauthorized access")]
    Malformed,
    /// 401.
    #[error("Invalid or unknown credential")]
    Unknown,
    /// 401.
    #[error("Credential expired")]
    Expired,
    /// 401.
    #[error("Credential is suspended")]
    Suspended,
    /// 403.
    #[error("missing requested authorities: invoke_function")]
    MissingScope,
    /// 403.
    #[error("Function '{0}':  Missing resource entry in ApiKey for the function")]
    MissingResource(Uuid),
}

impl AuthError {
    /// The `result` label of `gateway_key_lookups_total` (grant errors are not lookups).
    pub fn lookup_label(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Suspended => "suspended",
            Self::MissingScope | Self::MissingResource(_) => "hit",
        }
    }

    /// 401 for a credential problem, 403 for a missing grant.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::MissingScope | Self::MissingResource(_))
    }
}

/// Credentials by keyed hash.
#[derive(Debug, Clone)]
pub struct KeyIndex {
    hasher: KeyHasher,
    key_prefix: String,
    /// By the raw digest: no hex encoding on the hot path.
    by_hash: HashMap<[u8; 32], Entry, BuildHasherDefault<DigestHasher>>,
    /// Which build this is: digests remembered under another one are not trusted (the hash
    /// secret may have changed).
    generation: u64,
}

/// Hashes a key digest by its first eight bytes. An HMAC output under a secret the caller does
/// not know is already uniform and cannot be steered, so SipHash's flooding defence buys nothing
/// here.
#[derive(Debug, Default)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length, then its bytes: the first write of eight or more wins.
        if bytes.len() >= 8 && self.0 == 0 {
            let mut first = [0u8; 8];
            first.copy_from_slice(&bytes[..8]);
            self.0 = u64::from_le_bytes(first);
        }
    }

    fn write_usize(&mut self, _len: usize) {}
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Slots of the per-thread digest memo.
const MEMO_SLOTS: usize = 16;

/// The digests of bearer tokens this thread checked recently: a client sends the same token on
/// every call, and its keyed hash (HMAC-SHA256, two compressions and the key set-up) was the
/// largest single cost of the invocation path. The index lookup, status and expiry checks still
/// run on every call, so a revoked or expired key stops at once.
struct DigestMemo {
    slots: [Option<Memo>; MEMO_SLOTS],
}

struct Memo {
    generation: u64,
    token: Box<[u8]>,
    digest: [u8; 32],
}

thread_local! {
    static MEMO: RefCell<DigestMemo> = const {
        RefCell::new(DigestMemo { slots: [const { None }; MEMO_SLOTS] })
    };
}

/// A token's memo slot, from its tail (the random part of a key).
fn memo_slot(token: &[u8]) -> usize {
    let tail = &token[token.len().saturating_sub(8)..];
    let h = tail.iter().fold(0u64, |h, &b| {
        (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95)
    });
    (h >> 32) as usize % MEMO_SLOTS
}

/// Equality whose time does not depend on where two equal-length tokens first differ: the memo
/// compares a caller's token with another caller's.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    // Eight bytes at a time (a key is about 70 bytes, compared on every call), then the tail.
    fn word(chunk: &[u8]) -> u64 {
        u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]))
    }
    if a.len() != b.len() {
        return false;
    }
    let (words_a, words_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = words_a
        .remainder()
        .iter()
        .zip(words_b.remainder())
        .fold(0u64, |d, (x, y)| d | u64::from(x ^ y));
    words_a
        .zip(words_b)
        .fold(tail, |d, (x, y)| d | (word(x) ^ word(y)))
        == 0
}

#[derive(Debug, Clone)]
struct Entry {
    status: KeyStatus,
    /// The expiry in milliseconds since the Unix epoch (a `Timestamp` holds milliseconds): a
    /// comparison with the clock's reading, where making a `Timestamp` of now costs a calendar
    /// conversion on every call.
    expires_ms: i64,
    grants: Grants,
}

impl KeyIndex {
    /// Indexes the key records of `state` (hash secret from its snapshot). `key_prefix` is the API
    /// key prefix the control plane issues.
    pub fn build(state: &FeedState, key_prefix: &str) -> Self {
        // A record whose hash is not 64 hex digits cannot match any bearer; it is left out.
        let by_hash = state
            .keys
            .values()
            .filter_map(|k| {
                Some((
                    digest_from_hex(&k.hash)?,
                    Entry {
                        status: k.status,
                        expires_ms: k.expires_at.unix_millis(),
                        grants: Grants::of(k),
                    },
                ))
            })
            .collect();
        Self {
            hasher: KeyHasher::new(&state.key_hash_secret),
            key_prefix: key_prefix.to_owned(),
            by_hash,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Whether `token` has the shape of a credential this index could hold. Shape only: the
    /// keyed-hash lookup is the real check, and skipping the checksum saves a second SHA-256.
    fn shaped(&self, token: &str) -> bool {
        if token.starts_with("nvapi-") {
            api_key_shaped(token, &self.key_prefix)
        } else {
            token.starts_with(ADMIN_PREFIX)
        }
    }

    /// The digest this thread's memo holds for the bearer token in `authorization`, matched on
    /// the header's bytes: the usual call skips the value's UTF-8 check. (A remembered token had
    /// the shape of a credential, which is ASCII, so a match here is one that [`Self::digest`]
    /// would make of the value read as text.)
    fn remembered(&self, authorization: &[u8]) -> Option<[u8; 32]> {
        let token = authorization
            .strip_prefix(b"Bearer ")
            .or_else(|| authorization.strip_prefix(b"bearer "))?
            .trim_ascii();
        self.memo_hit(token)
    }

    /// The digest this thread's memo holds for `token` under this index, if any.
    fn memo_hit(&self, token: &[u8]) -> Option<[u8; 32]> {
        MEMO.with_borrow(|memo| {
            memo.slots[memo_slot(token)]
                .as_ref()
                .filter(|m| m.generation == self.generation && same_token(&m.token, token))
                .map(|m| m.digest)
        })
    }

    /// The keyed hash of `token`, from this thread's memo when it checked the same token under
    /// this index before (the memo holds only tokens that had the shape); `None` when it has not
    /// the shape of a credential.
    fn digest(&self, token: &str) -> Option<[u8; 32]> {
        let bytes = token.as_bytes();
        if let Some(digest) = self.memo_hit(bytes) {
            return Some(digest);
        }
        let slot = memo_slot(bytes);
        MEMO.with_borrow_mut(|memo| {
            if !self.shaped(token) {
                return None;
            }
            let digest = self.hasher.digest(token);
            memo.slots[slot] = Some(Memo {
                generation: self.generation,
                token: bytes.into(),
                digest,
            });
            Some(digest)
        })
    }

    /// The grants of the bearer in an `Authorization` header value, checked at `now`.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<&Grants, AuthError> {
        self.authenticate_at(authorization, now.unix_millis())
    }

    /// [`Self::authenticate`] at the system clock's time.
    pub fn authenticate_now(&self, authorization: Option<&[u8]>) -> Result<&Grants, AuthError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.authenticate_at(authorization, now)
    }

    /// [`Self::authenticate`] at `now_ms`, milliseconds since the Unix epoch.
    fn authenticate_at(
        &self,
        authorization: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<&Grants, AuthError> {
        let raw = authorization.ok_or(AuthError::Missing)?;
        let digest = match self.remembered(raw) {
            Some(digest) => digest,
            None => {
                let value = std::str::from_utf8(raw).map_err(|_| AuthError::Malformed)?;
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or(AuthError::Malformed)?;
                self.digest(token).ok_or(AuthError::Unknown)?
            }
        };
        let entry = self.by_hash.get(&digest).ok_or(AuthError::Unknown)?;
        match entry.status {
            KeyStatus::Suspended => return Err(AuthError::Suspended),
            KeyStatus::Expired => return Err(AuthError::Expired),
            KeyStatus::Active if now_ms > entry.expires_ms => return Err(AuthError::Expired),
            KeyStatus::Active => {}
        }
        Ok(&entry.grants)
    }
}

/// The invoke check: `invoke_function`, and a resource entry covering the function (and version,
/// when one is pinned).
pub fn authorize_invoke(
    grants: &Grants,
    function_id: Uuid,
    version_id: Option<Uuid>,
) -> Result<(), AuthError> {
    if !grants.has(Scope::InvokeFunction) {
        return Err(AuthError::MissingScope);
    }
    if !grants.may_access(function_id, version_id) {
        return Err(AuthError::MissingResource(function_id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::feed::{Entity, FeedMessage};
    use model::keys::KeyRecord;
    use model::scopes::CredentialKind;
    use serde_json::json;
    use std::time::Duration;

    const SECRET: &str = "00ff";

    /// A well-formed key whose random part is one letter repeated.
    fn key_value(n: u8) -> String {
        let head = format!(
            "nvapi-{}",
            char::from(b'A' + n)
                .to_string()
                .repeat(model::credentials::RANDOM_CHARS)
        );
        format!("{head}{}", model::credentials::checksum(&head))
    }

    fn record(
        value: &str,
        scopes: &[&str],
        resources: serde_json::Value,
        expires_in: i64,
    ) -> KeyRecord {
        let now = Timestamp::now();
        KeyRecord {
            id: Uuid::new_v4(),
            kind: CredentialKind::ApiKey,
            hash: KeyHasher::new(SECRET).hash(value),
            status: KeyStatus::Active,
            owner_type: "USER".into(),
            owner_id: "o".into(),
            issuer_service_id: model::NVCF_SERVICE_ID.into(),
            audience_service_ids: vec![model::NVCF_SERVICE_ID.into()],
            description: "d".into(),
            created_at: now,
            expires_at: if expires_in >= 0 {
                now.plus(Duration::from_secs(expires_in as u64))
            } else {
                Timestamp::from_unix_millis(now.unix_millis() + expires_in * 1000)
            },
            authorizations: json!({"policies": [{"aud": model::NVCF_SERVICE_ID, "scopes": scopes, "resources": resources}]}),
            authz_updated_at: None,
            admin_scopes: vec![],
        }
    }

    fn index(records: Vec<KeyRecord>) -> KeyIndex {
        index_under(SECRET, records)
    }

    fn index_under(secret: &str, records: Vec<KeyRecord>) -> KeyIndex {
        let mut s = FeedState::default();
        let entities = records.into_iter().map(Entity::Key).collect();
        s.apply(FeedMessage::Snapshot {
            revision: 1,
            key_hash_secret: secret.into(),
            entities,
        })
        .expect("snapshot");
        KeyIndex::build(&s, "nvapi-")
    }

    fn bearer(v: &str) -> Vec<u8> {
        format!("Bearer {v}").into_bytes()
    }

    #[test]
    fn authenticates_from_the_feed_records() {
        let (good, old, weak) = (key_value(0), key_value(1), key_value(2));
        let all = json!([{"type": "account-functions", "id": "*"}]);
        let idx = index(vec![
            record(&good, &["invoke_function"], all.clone(), 3600),
            record(&old, &["invoke_function"], all.clone(), -5),
            record(&weak, &["list_functions"], all, 3600),
        ]);
        let now = Timestamp::now();
        let f = Uuid::new_v4();
        let g = idx.authenticate(Some(&bearer(&good)), now).expect("good");
        authorize_invoke(g, f, None).expect("invoke");
        assert_eq!(
            idx.authenticate(None, now).expect_err("missing"),
            AuthError::Missing
        );
        assert_eq!(
            idx.authenticate(Some(b"Basic x"), now).expect_err("basic"),
            AuthError::Malformed
        );
        assert_eq!(
            idx.authenticate(Some(&[0xff]), now).expect_err("utf8"),
            AuthError::Malformed
        );
        assert_eq!(
            idx.authenticate(Some(&bearer("nvapi-nope")), now)
                .expect_err("shape"),
            AuthError::Unknown
        );
        assert_eq!(
            idx.authenticate(Some(&bearer(&key_value(9))), now)
                .expect_err("unknown"),
            AuthError::Unknown
        );
        assert_eq!(
            idx.authenticate(Some(&bearer(&old)), now)
                .expect_err("expired"),
            AuthError::Expired
        );
        let w = idx.authenticate(Some(&bearer(&weak)), now).expect("weak");
        assert_eq!(
            authorize_invoke(w, f, None).expect_err("scope"),
            AuthError::MissingScope
        );
    }

    #[test]
    fn resource_entries_limit_invocations() {
        let (f, v, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let k = key_value(3);
        let idx = index(vec![record(
            &k,
            &["invoke_function"],
            json!([{"type": "function", "id": format!("{f}/{v}")}]),
            60,
        )]);
        let g = idx
            .authenticate(Some(&bearer(&k)), Timestamp::now())
            .expect("auth");
        authorize_invoke(g, f, Some(v)).expect("pinned version");
        let e = authorize_invoke(g, other, None).expect_err("other function");
        assert!(e.is_forbidden());
        assert_eq!(
            e.to_string(),
            format!("Function '{other}':  Missing resource entry in ApiKey for the function")
        );
    }

    #[test]
    fn remembered_digests_follow_the_index_and_the_key_state() {
        let (a, b) = (key_value(4), key_value(5));
        let all = json!([{"type": "account-functions", "id": "*"}]);
        let now = Timestamp::now();
        let first = index(vec![record(&a, &["invoke_function"], all.clone(), 3600)]);
        for _ in 0..3 {
            first
                .authenticate(Some(&bearer(&a)), now)
                .expect("a, then from the memo");
        }
        // Another token, whatever slot it shares: never mistaken for the remembered one.
        assert_eq!(
            first.authenticate(Some(&bearer(&b)), now).expect_err("b"),
            AuthError::Unknown
        );
        first.authenticate(Some(&bearer(&a)), now).expect("a again");
        // A rebuilt index under another secret: the digest of `a` under the old one must not be
        // reused (the record stores the hash under the new secret).
        let mut rec = record(&a, &["invoke_function"], all.clone(), 3600);
        rec.hash = KeyHasher::new("beef").hash(&a);
        let second = index_under("beef", vec![rec]);
        second
            .authenticate(Some(&bearer(&a)), now)
            .expect("a under the new secret");
        assert_eq!(
            first.authenticate(Some(&bearer(&a)), now).map(|_| ()),
            Ok(()),
            "the old index still answers for its own secret"
        );
        // The key suspended in the next build: refused although its digest is remembered.
        let mut suspended = record(&a, &["invoke_function"], all, 3600);
        suspended.status = KeyStatus::Suspended;
        let third = index(vec![suspended]);
        assert_eq!(
            third
                .authenticate(Some(&bearer(&a)), now)
                .expect_err("suspended"),
            AuthError::Suspended
        );
    }

    #[test]
    fn token_comparison_and_slots() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abc", b"abd"));
        assert!(!same_token(b"abc", b"abcd"));
        assert!(!same_token(b"", b"a"));
        // Past the first word, and in a short last one.
        assert!(same_token(b"0123456789abcdefXY", b"0123456789abcdefXY"));
        assert!(!same_token(b"0123456789abcdefXY", b"0123456789abcdefXZ"));
        assert!(!same_token(b"0123456789Abcdef", b"0123456789abcdef"));
        for t in [&b""[..], b"x", b"nvapi-0123456789"] {
            assert!(memo_slot(t) < MEMO_SLOTS);
        }
        let mut h = DigestHasher::default();
        std::hash::Hash::hash(&[7u8; 32], &mut h);
        assert_eq!(h.finish(), u64::from_le_bytes([7; 8]));
    }
}
