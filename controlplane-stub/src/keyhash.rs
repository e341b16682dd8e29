//! Generation of credential secrets: API keys, admin tokens and the installation's hash secret.
//! Their format check and keyed hash live in `model::credentials`, shared with the gateway.
//!
//! API key format: `<prefix><43 base64url chars: 32 random bytes><21 base64url chars: checksum>`,
//! as NVIDIA's key service builds them; the checksum lets a malformed key be refused before any
//! lookup. Admin tokens are opaque too: `nvcf-admin-<43 base64url chars>`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use model::credentials::checksum;
pub use model::credentials::{ADMIN_PREFIX, KeyHasher, api_key_well_formed};
use rand::Rng;

/// A fresh random secret for the keyed hash, hex.
pub fn generate_secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn random_part() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A new API key with `prefix`.
pub fn new_api_key(prefix: &str) -> String {
    let head = format!("{prefix}{}", random_part());
    let sum = checksum(&head);
    head + &sum
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
}
