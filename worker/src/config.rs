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
    /// Largest request body the buffering runtimes (`load-tester`, `saxpy`, `mlp`) accept; larger
    /// bodies get 413. 64 MiB holds a saxpy over 8 M elements or an mlp batch of 256 K rows of 64
    /// inputs, and matches the largest text `repeat` builds; a buffered request costs up to about
    /// twice this in memory (bytes plus parsed floats), times the versions' concurrency. `echo`
    /// and passthrough stream and are not limited.
    pub max_body_bytes: u64,
    /// Most rows one `mlp` launch gathers (dynamic batching). 64 rows fill a GPU's SMs for the
    /// seeded network without making any request wait long for the others' rows.
    pub max_batch_size: u32,
    /// Longest an `mlp` request waits for others to share its launch. 2 ms is below a network
    /// round trip, so batching costs latency nobody notices; 0 batches only what already queued.
    #[serde(with = "humantime_serde")]
    pub max_batch_delay: Duration,
    /// Execution lanes of the CUDA backend: one stream and one set of pooled buffers each. Two let
    /// one request's copies overlap another's compute; each lane costs device memory.
    pub lanes: u32,
    /// Largest `delay` a load-tester request may ask for (larger ones get 400), so one request
    /// cannot hold a concurrency slot for hours. 60 s covers every load-test pattern of the sample.
    #[serde(with = "humantime_serde")]
    pub max_load_tester_delay: Duration,
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
            max_body_bytes: ServeConfig::default().max_body_bytes,
            max_batch_size: 64,
            max_batch_delay: ServeConfig::default().max_batch_delay,
            lanes: 2,
            max_load_tester_delay: ServeConfig::default().max_load_tester_delay,
        }
    }
}

/// The invocation data path's limits (see [`WorkerFile`] for why each default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    pub max_body_bytes: u64,
    pub max_batch_size: usize,
    pub max_batch_delay: Duration,
    pub max_load_tester_delay: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 << 20,
            max_batch_size: 64,
            max_batch_delay: Duration::from_millis(2),
            max_load_tester_delay: Duration::from_secs(60),
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
    /// Execution lanes of the backend.
    pub lanes: usize,
    /// Limits of the invocation data path.
    pub serve: ServeConfig,
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
        if !(1024..=1 << 30).contains(&self.max_body_bytes) {
            return Err(err(
                "max-body-bytes",
                "must be between 1024 and 1073741824 (1 GiB): bodies are buffered in memory",
            ));
        }
        if !(1..=4096).contains(&self.max_batch_size) {
            return Err(err("max-batch-size", "must be between 1 and 4096 rows"));
        }
        if self.max_batch_delay > Duration::from_secs(1) {
            return Err(err(
                "max-batch-delay",
                "must be at most 1s: every batched request waits up to this long",
            ));
        }
        if !(1..=32).contains(&self.lanes) {
            return Err(err("lanes", "must be between 1 and 32"));
        }
        if self.max_load_tester_delay > Duration::from_secs(3600) {
            return Err(err("max-load-tester-delay", "must be at most 1h"));
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
            lanes: self.lanes as usize,
            serve: ServeConfig {
                max_body_bytes: self.max_body_bytes,
                max_batch_size: self.max_batch_size as usize,
                max_batch_delay: self.max_batch_delay,
                max_load_tester_delay: self.max_load_tester_delay,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef";

    #[test]
    fn defaults_validate_and_carry_the_serving_limits() {
        let c = WorkerFile::default().validate(TOKEN).expect("valid");
        assert_eq!(c.serve, ServeConfig::default());
        assert_eq!(c.lanes, 2);
        assert_eq!(c.serve.max_batch_size, 64);
    }

    #[test]
    fn serving_keys_are_checked_by_name() {
        let bad = [
            (
                WorkerFile {
                    max_body_bytes: 10,
                    ..WorkerFile::default()
                },
                "max-body-bytes",
            ),
            (
                WorkerFile {
                    max_batch_size: 0,
                    ..WorkerFile::default()
                },
                "max-batch-size",
            ),
            (
                WorkerFile {
                    max_batch_delay: Duration::from_secs(2),
                    ..WorkerFile::default()
                },
                "max-batch-delay",
            ),
            (
                WorkerFile {
                    lanes: 0,
                    ..WorkerFile::default()
                },
                "lanes",
            ),
            (
                WorkerFile {
                    max_load_tester_delay: Duration::from_secs(7200),
                    ..WorkerFile::default()
                },
                "max-load-tester-delay",
            ),
        ];
        for (file, key) in bad {
            let e = file.validate(TOKEN).expect_err(key);
            assert_eq!(e.key, key, "{e}");
            assert!(e.to_string().starts_with(&format!("worker.{key}:")), "{e}");
        }
    }

    #[test]
    fn shipped_worker_toml_is_valid_and_states_the_defaults() {
        let doc: toml::Table =
            toml::from_str(include_str!("../../config/worker.toml")).expect("config/worker.toml");
        let section = doc.get("worker").cloned().expect("[worker]");
        let f: WorkerFile = section.try_into().expect("[worker] keys");
        let c = f.validate(TOKEN).expect("valid");
        assert_eq!(c.serve, ServeConfig::default());
        assert_eq!(c.lanes, 2);
    }

    #[test]
    fn parses_kebab_case_keys() {
        let f: WorkerFile = toml::from_str(
            "max-body-bytes = 2048\nmax-batch-size = 8\nmax-batch-delay = \"5ms\"\nlanes = 4\nmax-load-tester-delay = \"10s\"\n",
        )
        .expect("parse");
        let c = f.validate(TOKEN).expect("valid");
        assert_eq!(c.serve.max_body_bytes, 2048);
        assert_eq!(c.serve.max_batch_size, 8);
        assert_eq!(c.serve.max_batch_delay, Duration::from_millis(5));
        assert_eq!(c.serve.max_load_tester_delay, Duration::from_secs(10));
        assert_eq!(c.lanes, 4);
    }
}
