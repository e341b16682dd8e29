//! Control plane configuration: the TOML section as written (`ControlplaneFile`) and the validated,
//! typed values the server runs with (`ControlplaneConfig`).

use model::keys::ServiceDto;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[controlplane]` as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControlplaneFile {
    /// Internal listener (management API behind the gateway, feed, worker registration).
    pub listen: String,
    /// Directory of the SQLite database (`controlplane.db`).
    pub data_dir: PathBuf,
    /// When set, `POST /v1/admin/keys` requires `Authorization: Bearer <secret>` from every caller;
    /// when empty, it is allowed from loopback only.
    pub bootstrap_secret: String,
    /// Lifetime of an admin token. NVIDIA's issuer uses 12 h.
    #[serde(with = "humantime_serde")]
    pub admin_token_ttl: Duration,
    /// Largest accepted request body. Management bodies are small; 1 MiB leaves room for big
    /// `containerArgs` and secrets (32 KiB each) without letting a client fill memory.
    pub max_body_bytes: usize,
    /// How often workers are told to heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is LOST and its instances stop counting as ready. Three
    /// missed heartbeats: long enough to ride out a GC pause or a busy core, short enough that
    /// status follows reality within seconds.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// A LOST worker is removed from the registry after this long.
    #[serde(with = "humantime_serde")]
    pub worker_forget_after: Duration,
    /// Feed changes kept for resuming clients; an older `since` gets a snapshot instead.
    pub feed_retention: u64,
    /// Idle feed streams send a heartbeat line this often so both ends notice dead connections.
    #[serde(with = "humantime_serde")]
    pub feed_heartbeat: Duration,
    /// Functions per account (NVIDIA's default is 50).
    pub max_functions: usize,
    /// Prefix of API keys. It must begin with `nvapi-`, which is how NVCF tells keys from JWTs.
    pub key_prefix: String,
    /// Registered key-issuing services (`GET /v1/services`).
    pub key_services: Vec<KeyServiceFile>,
}

/// One `[[controlplane.key-services]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeyServiceFile {
    pub service_id: String,
    pub service_name: String,
    #[serde(default)]
    pub audience_service_ids: Vec<String>,
    pub max_api_keys_per_user: u32,
    pub max_api_key_ttl_days: u32,
    pub max_authz_size_chars: u32,
    pub min_authz_update_interval_seconds: u32,
}

impl Default for ControlplaneFile {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8090".into(),
            data_dir: PathBuf::from("data/controlplane"),
            bootstrap_secret: String::new(),
            admin_token_ttl: Duration::from_secs(12 * 3600),
            max_body_bytes: 1 << 20,
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(6),
            worker_forget_after: Duration::from_secs(3600),
            feed_retention: 100_000,
            feed_heartbeat: Duration::from_secs(5),
            max_functions: 50,
            key_prefix: "nvapi-".into(),
            // The sample registration of NVIDIA's key service (nvcf-api.md §1.7).
            key_services: vec![KeyServiceFile {
                service_id: model::NVCF_SERVICE_ID.into(),
                service_name: "nvcf-api".into(),
                audience_service_ids: vec![model::NVCF_SERVICE_ID.into()],
                max_api_keys_per_user: 8,
                max_api_key_ttl_days: 365,
                max_authz_size_chars: 2048,
                min_authz_update_interval_seconds: 3,
            }],
        }
    }
}

/// Validated control plane settings.
#[derive(Debug, Clone)]
pub struct ControlplaneConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub bootstrap_secret: Option<String>,
    pub internal_token: String,
    pub admin_token_ttl: Duration,
    pub max_body_bytes: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub worker_forget_after: Duration,
    pub feed_retention: u64,
    pub feed_heartbeat: Duration,
    pub max_functions: usize,
    pub key_prefix: String,
    pub key_services: Vec<ServiceDto>,
}

/// A config value that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("controlplane.{key}: {message}")]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        message: message.into(),
    }
}

impl ControlplaneFile {
    /// Checks every value and produces the typed config.
    pub fn validate(&self, internal_token: &str) -> Result<ControlplaneConfig, ConfigError> {
        let listen = self.listen.parse().map_err(|_| {
            err(
                "listen",
                format!("invalid socket address '{}'", self.listen),
            )
        })?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(err("data-dir", "must not be empty"));
        }
        if self.admin_token_ttl < Duration::from_secs(60) {
            return Err(err("admin-token-ttl", "must be at least 1m"));
        }
        if self.max_body_bytes < 1024 {
            return Err(err("max-body-bytes", "must be at least 1024"));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(err("heartbeat-interval", "must be greater than 0"));
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(err(
                "heartbeat-timeout",
                "must be longer than heartbeat-interval",
            ));
        }
        if self.worker_forget_after < self.heartbeat_timeout {
            return Err(err(
                "worker-forget-after",
                "must be at least heartbeat-timeout",
            ));
        }
        if self.feed_retention == 0 {
            return Err(err("feed-retention", "must be at least 1"));
        }
        if self.feed_heartbeat.is_zero() {
            return Err(err("feed-heartbeat", "must be greater than 0"));
        }
        if !self.key_prefix.starts_with("nvapi-") {
            return Err(err(
                "key-prefix",
                "must begin with 'nvapi-' (NVCF treats only those tokens as API keys)",
            ));
        }
        if self.key_prefix.len() > 32
            || !self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(err(
                "key-prefix",
                "must be at most 32 characters of [A-Za-z0-9-]",
            ));
        }
        if self.key_services.is_empty() {
            return Err(err(
                "key-services",
                "at least one service must be registered",
            ));
        }
        let mut services = Vec::new();
        for s in &self.key_services {
            if s.service_id.trim().is_empty() {
                return Err(err("key-services", "service-id must not be empty"));
            }
            if s.max_api_keys_per_user == 0
                || s.max_api_key_ttl_days == 0
                || s.max_authz_size_chars < 2
            {
                return Err(err(
                    "key-services",
                    format!("service '{}': limits must be greater than 0", s.service_id),
                ));
            }
            let audience = if s.audience_service_ids.is_empty() {
                vec![s.service_id.clone()]
            } else {
                s.audience_service_ids.clone()
            };
            services.push(ServiceDto {
                service_id: s.service_id.clone(),
                service_name: s.service_name.clone(),
                audience_service_ids: audience,
                max_api_keys_per_user: s.max_api_keys_per_user,
                max_api_key_ttl_days: s.max_api_key_ttl_days,
                max_authz_size_chars: s.max_authz_size_chars,
                min_authz_update_interval_seconds: s.min_authz_update_interval_seconds,
            });
        }
        if internal_token.len() < 16 {
            return Err(ConfigError {
                key: "internal-token",
                message: "the internal token must be at least 16 characters".into(),
            });
        }
        Ok(ControlplaneConfig {
            listen,
            data_dir: self.data_dir.clone(),
            bootstrap_secret: (!self.bootstrap_secret.is_empty())
                .then(|| self.bootstrap_secret.clone()),
            internal_token: internal_token.to_owned(),
            admin_token_ttl: self.admin_token_ttl,
            max_body_bytes: self.max_body_bytes,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            worker_forget_after: self.worker_forget_after,
            feed_retention: self.feed_retention,
            feed_heartbeat: self.feed_heartbeat,
            max_functions: self.max_functions,
            key_prefix: self.key_prefix.clone(),
            key_services: services,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_errors_name_the_key() {
        let f = ControlplaneFile::default();
        assert!(f.validate("0123456789abcdef").is_ok());
        let bad = ControlplaneFile {
            listen: "nope".into(),
            ..f.clone()
        };
        let e = bad.validate("0123456789abcdef").expect_err("bad listen");
        assert_eq!(
            e.to_string(),
            "controlplane.listen: invalid socket address 'nope'"
        );
        let bad = ControlplaneFile {
            key_prefix: "key-".into(),
            ..f
        };
        assert!(
            bad.validate("0123456789abcdef")
                .expect_err("prefix")
                .to_string()
                .contains("key-prefix")
        );
    }
}
