//! Credential secrets: generation of API keys and admin tokens, their format check, and the keyed
//! hash (HMAC-SHA256 under the installation's secret) that is all the control plane stores.
//!
//! API key format: `<prefix><43 base64url chars: 32 random bytes><21 base64url chars: checksum>`,
//! as NVIDIA's key service builds them; the checksum lets a malformed key be refused before any
//! lookup. Admin tokens are opaque too: `nvcf-admin-<43 base64url chars>`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};

/// Prefix of admin tokens (they must not start with `nvapi-`, which marks API keys).
pub const ADMIN_PREFIX: &str = "nvcf-admin-";

const RANDOM_CHARS: usize = 43;
const CHECKSUM_CHARS: usize = 21;

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

    /// A fresh random secret, hex.
    pub fn generate_secret() -> String {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Hex HMAC-SHA256 of a credential.
    pub fn hash(&self, credential: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(credential.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    }
}

fn random_part() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

fn checksum(prefix_and_random: &str) -> String {
    let digest = Sha256::digest(prefix_and_random.as_bytes());
    let mut s = URL_SAFE_NO_PAD.encode(digest);
    s.truncate(CHECKSUM_CHARS);
    s
}

/// A new API key with `prefix`.
pub fn new_api_key(prefix: &str) -> String {
    let head = format!("{prefix}{}", random_part());
    let sum = checksum(&head);
    head + &sum
}

/// Whether `key` has the shape of a key with `prefix` and a correct checksum.
pub fn api_key_well_formed(key: &str, prefix: &str) -> bool {
    let Some(rest) = key.strip_prefix(prefix) else {
        return false;
    };
    if rest.len() != RANDOM_CHARS + CHECKSUM_CHARS
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return false;
    }
    let (head, sum) = key.split_at(prefix.len() + RANDOM_CHARS);
    checksum(head) == sum
}

/// A new admin token.
pub fn new_admin_token() -> String {
    format!("{ADMIN_PREFIX}{}", random_part())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_check_their_checksum() {
        let k = new_api_key("nvapi-");
        assert!(k.starts_with("nvapi-") && k.len() == 6 + 64, "{k}");
        assert!(api_key_well_formed(&k, "nvapi-"));
        let mut bad = k.clone();
        bad.replace_range(10..11, if &k[10..11] == "A" { "B" } else { "A" });
        assert!(!api_key_well_formed(&bad, "nvapi-"));
        assert!(!api_key_well_formed("nvapi-short", "nvapi-"));
        assert!(!api_key_well_formed(&new_admin_token(), "nvapi-"));
    }

    #[test]
    fn hash_is_keyed() {
        let a = KeyHasher::new("one");
        let b = KeyHasher::new("two");
        assert_eq!(a.hash("x"), a.hash("x"));
        assert_ne!(a.hash("x"), b.hash("x"));
        assert_eq!(a.hash("x").len(), 64);
    }
}
