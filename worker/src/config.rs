//! Worker configuration: the `[worker]` TOML section and its validated form.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which compute backend the worker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceMode {
    /// CUDA devices when a driver and a device are present, otherwise the CPU.
    Auto,
    /// Always the CPU backend, even on a GPU host.
    Cpu,
    /// CUDA only: start-up fails without a device.
    Cuda,
}

/// `[worker]` as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WorkerFile {
    /// Worker id; empty means one generated on first start and kept in `data-dir/worker-id`.
    pub id: String,
    /// Invocation listener (HTTP/2 streams from the gateway).
    pub listen: String,
    /// URL the gateway uses to reach this worker; empty means `http://<listen>`.
    pub advertise_url: String,
    /// Control plane base URL (registration, heartbeats, feed).
    pub controlplane_url: String,
    /// Where the worker keeps its id.
    pub data_dir: PathBuf,
    /// Cluster group (`backend` of deployments) this worker joins.
    pub cluster_group: String,
    /// Cluster name within the group.
    pub cluster: String,
    /// Function-version instances hosted at once. Each instance holds its weights and buffers, so
    /// this bounds the worker's memory; 8 fits the built-in kernels on any card or laptop.
    pub capacity: u32,
    /// `auto`, `cpu` or `cuda`.
    pub device: DeviceMode,
    /// Heartbeat period used until the control plane says otherwise.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// First wait before reconnecting to the control plane; doubles up to 10 s.
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff: Duration,
}

impl Default for WorkerFile {
    fn default() -> Self {
        Self {
            id: String::new(),
            listen: "127.0.0.1:9000".into(),
            advertise_url: String::new(),
            controlplane_url: "http://127.0.0.1:8090".into(),
            data_dir: PathBuf::from("data/worker"),
            cluster_group: "nvcf-default".into(),
            cluster: "local".into(),
            capacity: 8,
            device: DeviceMode::Auto,
            heartbeat_interval: Duration::from_secs(2),
            reconnect_backoff: Duration::from_millis(200),
        }
    }
}

/// Validated worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: Option<String>,
    pub listen: SocketAddr,
    pub advertise_url: Option<String>,
    pub controlplane_url: http::Uri,
    pub internal_token: String,
    pub data_dir: PathBuf,
    pub cluster_group: String,
    pub cluster: String,
    pub capacity: u32,
    pub device: DeviceMode,
    pub heartbeat_interval: Duration,
    pub reconnect_backoff: Duration,
}

/// A config value that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("worker.{key}: {message}")]
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

/// Parses a base URL of the form `http://host:port` (no path).
pub fn base_url(key: &'static str, s: &str) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri = s
        .parse()
        .map_err(|_| err(key, format!("invalid URL '{s}'")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(err(
            key,
            format!("must be an http:// URL with a host, got '{s}'"),
        ));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(err(key, format!("must not have a path, got '{s}'")));
    }
    Ok(uri)
}

impl WorkerFile {
    /// Checks every value and produces the typed config.
    pub fn validate(&self, internal_token: &str) -> Result<WorkerConfig, ConfigError> {
        let listen = self.listen.parse().map_err(|_| {
            err(
                "listen",
                format!("invalid socket address '{}'", self.listen),
            )
        })?;
        let advertise_url = if self.advertise_url.is_empty() {
            None
        } else {
            base_url("advertise-url", &self.advertise_url)?;
            Some(self.advertise_url.trim_end_matches('/').to_owned())
        };
        if self.id.len() > 128 {
            return Err(err("id", "must be at most 128 characters"));
        }
        if self.cluster_group.trim().is_empty() {
            return Err(err("cluster-group", "must not be empty"));
        }
        if self.cluster.trim().is_empty() {
            return Err(err("cluster", "must not be empty"));
        }
        if self.capacity == 0 {
            return Err(err("capacity", "must be at least 1"));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(err("heartbeat-interval", "must be greater than 0"));
        }
        if self.reconnect_backoff.is_zero() {
            return Err(err("reconnect-backoff", "must be greater than 0"));
        }
        if internal_token.len() < 16 {
            return Err(err(
                "internal-token",
                "the internal token must be at least 16 characters",
            ));
        }
        Ok(WorkerConfig {
            id: (!self.id.is_empty()).then(|| self.id.clone()),
            listen,
            advertise_url,
            controlplane_url: base_url("controlplane-url", &self.controlplane_url)?,
            internal_token: internal_token.to_owned(),
            data_dir: self.data_dir.clone(),
            cluster_group: self.cluster_group.clone(),
            cluster: self.cluster.clone(),
            capacity: self.capacity,
            device: self.device,
            heartbeat_interval: self.heartbeat_interval,
            reconnect_backoff: self.reconnect_backoff,
        })
    }
}
