//! The config file: one TOML document with a section per role, parsed into serde structs that
//! refuse unknown keys, overridden from `NVCF__SECTION__KEY` environment variables, and validated
//! into each component's typed config. The embedded default is `config/local.toml`.

use controlplane_stub::config::ControlplaneFile;
use dataplane::DataplaneFile;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use worker::config::WorkerFile;

/// The embedded default: the whole stack on loopback.
pub const LOCAL_TOML: &str = include_str!("../config/local.toml");

/// Prefix of environment overrides: `NVCF__DATAPLANE__LISTEN=127.0.0.1:9090`.
pub const ENV_PREFIX: &str = "NVCF__";

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// Log filter (`info`, `debug`, `dataplane=debug,info`, …); `RUST_LOG` wins when set.
    pub log: Option<String>,
    /// Shared secret of the internal endpoints (feed, worker registration) and of the gateway's
    /// forwarded client address. Empty: `up` generates one per run; the single-role commands need
    /// the same value in every process's file.
    pub internal_token: String,
    /// Threads of the async runtime: 0 (default) one per core (tokio's multi-thread scheduler;
    /// `TOKIO_WORKER_THREADS` overrides the count), 1 a single-threaded scheduler for the whole
    /// process, like an nginx worker process (cheapest per request for a lone dataplane on a small
    /// box, see docs/performance.md; the wrong choice for `up`, which runs every role), N that many.
    pub runtime_threads: usize,
    pub admin: AdminFile,
    pub controlplane: ControlplaneFile,
    pub dataplane: DataplaneFile,
    pub worker: WorkerFile,
}

/// `[admin]`: the metrics and health listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminFile {
    /// `/metrics`, `/healthz`, `/readyz`. Empty disables it.
    pub listen: String,
}

impl Default for AdminFile {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// A config problem; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// Reads and parses a file (or the embedded default when `path` is `None`) with env overrides.
pub fn load(
    path: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<FileConfig, ConfigError> {
    let (name, text) = match path {
        None => (
            "embedded config/local.toml".to_owned(),
            LOCAL_TOML.to_owned(),
        ),
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?,
        ),
    };
    parse(&name, &text, env)
}

/// Parses TOML text, applies env overrides, and deserializes.
pub fn parse(
    source_name: &str,
    text: &str,
    env: &BTreeMap<String, String>,
) -> Result<FileConfig, ConfigError> {
    let perr = |message: String| ConfigError::Parse {
        source_name: source_name.to_owned(),
        message,
    };
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| perr(e.to_string()))?;
    apply_env(&mut table, env).map_err(perr)?;
    FileConfig::deserialize(toml::Value::Table(table)).map_err(|e| perr(e.to_string()))
}

/// Applies `NVCF__A__B=value` overrides: the path is lower-cased, `_` becomes `-` (the file's
/// kebab-case), and the value is read as a TOML literal when it is one (`8`, `true`, `"x"`), as a
/// string otherwise.
pub fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if value.is_empty() {
            return Err(format!(
                "environment variable {name} is empty (unset it to keep the file's value)"
            ));
        }
        let keys: Vec<String> = path
            .split("__")
            .map(|k| k.to_ascii_lowercase().replace('_', "-"))
            .collect();
        if keys.iter().any(String::is_empty) {
            return Err(format!(
                "environment variable {name} has an empty key segment"
            ));
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let (last, parents) = keys.split_last().ok_or_else(|| format!("{name}: no key"))?;
        let mut cur = &mut *table;
        for k in parents {
            let entry = cur
                .entry(k.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = entry
                .as_table_mut()
                .ok_or_else(|| format!("{name}: '{k}' is not a section"))?;
        }
        cur.insert(last.clone(), parsed);
    }
    Ok(())
}

/// The process environment's overrides (read once, never mutated).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

/// An internal token good enough for validation when the file leaves it empty.
const PLACEHOLDER_TOKEN: &str = "validation-placeholder-token";

impl FileConfig {
    /// Validates every section (what `check-config` runs).
    pub fn validate_all(&self, source_name: &str) -> Result<(), ConfigError> {
        let token = if self.internal_token.is_empty() {
            PLACEHOLDER_TOKEN
        } else {
            &self.internal_token
        };
        let invalid = |message: String| ConfigError::Invalid {
            source_name: source_name.to_owned(),
            message,
        };
        if !self.internal_token.is_empty() && self.internal_token.len() < 16 {
            return Err(invalid(
                "internal-token: must be at least 16 characters".into(),
            ));
        }
        self.admin_addr().map_err(invalid)?;
        self.controlplane
            .validate(token)
            .map_err(|e| invalid(e.to_string()))?;
        self.dataplane
            .validate(token)
            .map_err(|e| invalid(e.to_string()))?;
        self.worker
            .validate(token)
            .map_err(|e| invalid(e.to_string()))?;
        if let Some(filter) = &self.log {
            tracing_subscriber::EnvFilter::try_new(filter)
                .map_err(|e| invalid(format!("log: {e}")))?;
        }
        Ok(())
    }

    /// The admin listener address, if enabled.
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.admin.listen.is_empty() {
            return Ok(None);
        }
        self.admin.listen.parse().map(Some).map_err(|_| {
            format!(
                "admin.listen: invalid socket address '{}'",
                self.admin.listen
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_default_is_valid() {
        let cfg = load(None, &BTreeMap::new()).expect("parse");
        cfg.validate_all("local").expect("valid");
        assert_eq!(cfg.dataplane.listen, "127.0.0.1:8080");
        assert_eq!(cfg.admin.listen, "127.0.0.1:9464");
        assert_eq!(cfg.runtime_threads, 0, "one thread per core unless asked");
    }

    #[test]
    fn env_overrides_use_double_underscores() {
        let cfg = parse(
            "t",
            "",
            &env(&[
                ("NVCF__DATAPLANE__LISTEN", "127.0.0.1:9999"),
                ("NVCF__WORKER__CAPACITY", "3"),
                ("NVCF__CONTROLPLANE__MAX_FUNCTIONS", "7"),
                ("NVCF__RUNTIME_THREADS", "1"),
                ("OTHER__X", "ignored"),
            ]),
        )
        .expect("parse");
        assert_eq!(cfg.runtime_threads, 1);
        assert_eq!(cfg.dataplane.listen, "127.0.0.1:9999");
        assert_eq!(cfg.worker.capacity, 3);
        assert_eq!(cfg.controlplane.max_functions, 7);
        let e = parse("t", "", &env(&[("NVCF__WORKER__CAPACITY", "")])).expect_err("empty");
        assert!(e.to_string().contains("NVCF__WORKER__CAPACITY"), "{e}");
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let e = parse(
            "f.toml",
            "[dataplane]\nlisten = \"x\"\nbogus = 1\n",
            &BTreeMap::new(),
        )
        .expect_err("unknown");
        assert!(e.to_string().contains("bogus"), "{e}");
        let cfg = parse("f.toml", "[worker]\ncapacity = 0\n", &BTreeMap::new()).expect("parse");
        let e = cfg.validate_all("f.toml").expect_err("capacity");
        assert!(e.to_string().contains("worker.capacity"), "{e}");
        let cfg = parse("f.toml", "[admin]\nlisten = \"nope\"\n", &BTreeMap::new()).expect("parse");
        assert!(
            cfg.validate_all("f.toml")
                .expect_err("admin")
                .to_string()
                .contains("admin.listen")
        );
    }
}
