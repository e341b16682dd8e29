//! The `[dataplane]` configuration: the serde file struct with documented defaults, and its validation
//! into the typed [`DataplaneConfig`] that the server uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderValue, Uri};
use serde::{Deserialize, Serialize};

pub use crate::quic::config::QuicConfig;

/// The smallest `max-header-bytes` accepted: below 8 KiB ordinary requests (cookies, long tokens)
/// start to be refused.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// The largest `max-header-bytes` we accept: a header block this large is a client bug or an attack,
/// and the value doubles as the h1 read buffer limit per connection.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// The most `serving-threads`: far above any core count this runs on, low enough that a typo
/// (10000) is refused rather than starting that many threads.
pub const MAX_SERVING_THREADS: usize = 1024;

/// The dataplane section of the configuration file, as written (kebab-case keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DataplaneFile {
    /// Address the gateway listens on (HTTP/1.1 and h2c on the same port).
    pub listen: String,
    /// Base URL of the control plane that management and key-service calls are proxied to.
    pub controlplane_url: String,
    /// Largest request header block (h1: request line + headers; h2: header list size). Larger
    /// requests get 431. Also bounds the per-connection h1 read buffer.
    pub max_header_bytes: usize,
    /// Largest request body proxied to the control plane; larger bodies get 413.
    pub max_management_body_bytes: u64,
    /// How long an HTTP/1 client may take to send a complete request head (and how long a new
    /// connection may stay silent before its protocol is known).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long an HTTP/1.1 keep-alive connection may wait for its next request before it is
    /// closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long the control plane may take to answer with response headers; then 504.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// TLS listener (HTTP/1.1 and HTTP/2 chosen by ALPN); empty disables it.
    pub tls_listen: String,
    /// PEM certificate chain for the TLS listener; with `tls-key-file`, or both empty for a
    /// self-signed pair generated once under `data-dir`.
    pub tls_cert_file: String,
    /// PEM private key for the TLS listener.
    pub tls_key_file: String,
    /// Where the gateway keeps what it generates (the self-signed TLS pair).
    pub data_dir: PathBuf,
    /// Prefix of the API keys the control plane issues (checked locally before hashing).
    pub key_prefix: String,
    /// Most invocations in flight in the whole gateway; beyond it new ones get 429.
    pub max_in_flight: u64,
    /// Invocations that may wait for a place per function version once its workers are at
    /// `maxRequestConcurrency`; beyond it 429 at once. 0 disables queueing.
    pub max_queued_per_version: usize,
    /// Longest wait in a version's queue before 429 (never longer than the request's poll window).
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// How the gateway talks to workers: `http1` (a pool of keep-alive connections, one per
    /// invocation in flight, the default) or `h2` (h2c, every invocation of a worker multiplexed
    /// on one connection).
    pub worker_protocol: WorkerProtocol,
    /// How often the gateway reports its queue depths to the control plane
    /// (`/v2/nvcf/queues/...`).
    #[serde(with = "humantime_serde")]
    pub queue_report_interval: Duration,
    /// The region sent to workers as `NVCF-INVOCATION-REGION` (a client's value is overwritten).
    pub region: String,
    /// How long the result of a pexec/exec call answered 202 is kept for its status poll.
    #[serde(with = "humantime_serde")]
    pub pending_ttl: Duration,
    /// Memory for buffered results of parked calls, all together; beyond it results spill to
    /// files under `data-dir/pending`.
    pub pending_memory_bytes: u64,
    /// Largest single parked result buffered in memory; larger ones spill to a file.
    pub pending_max_result_bytes: u64,
    /// HTTP/3 (QUIC) listener on UDP, with the TLS listener's certificate and ALPN `h3`; empty
    /// disables it. 0-RTT is always off: early data can be replayed, and invocations are POSTs.
    pub quic_listen: String,
    /// Bidirectional streams (concurrent requests) one QUIC connection may have open.
    pub quic_max_concurrent_streams: u32,
    /// A QUIC connection with no traffic for this long is closed.
    #[serde(with = "humantime_serde")]
    pub quic_idle_timeout: Duration,
    /// Flow-control window of one QUIC stream (bytes the client may send ahead of us reading).
    pub quic_stream_receive_window: u64,
    /// Flow-control window of a whole QUIC connection, all streams together.
    pub quic_receive_window: u64,
    /// Largest UDP payload we accept (advertised as `max_udp_payload_size`).
    pub quic_max_udp_payload: u16,
    /// One `access` log line (tracing target `access`, level info) per finished request.
    pub access_log: bool,
    /// Threads that serve the gateway's TCP connections (HTTP/1.1, h2c and TLS), each with a
    /// single-threaded runtime and its own idle worker connections, as nginx's worker processes;
    /// the accept loop hands each new connection to the next. One per core by default; 0 serves
    /// them on the process's runtime (`runtime-threads`) instead. HTTP/3 stays on the process's
    /// runtime.
    pub serving_threads: usize,
}

impl Default for DataplaneFile {
    fn default() -> Self {
        Self {
            // Loopback by default: exposing the gateway beyond the host is a deliberate choice.
            listen: "127.0.0.1:8080".to_owned(),
            // The bundled control plane's default listen address.
            controlplane_url: "http://127.0.0.1:8090".to_owned(),
            // 16 KiB holds a bearer JWT, cookies and the usual headers several times over (nginx uses
            // 8 KiB buffers, Envoy 60 KiB); it also caps per-connection h1 buffer memory.
            max_header_bytes: 16 * 1024,
            // Management and key bodies are small JSON documents; 1 MiB is far above any of them and
            // keeps one client from pushing large uploads through the control plane.
            max_management_body_bytes: 1024 * 1024,
            // Honest clients send a request head in well under a second; 10 s frees slow-loris
            // connections quickly without hurting clients on bad links.
            header_read_timeout: Duration::from_secs(10),
            // nginx's `keepalive_timeout`: long enough for clients that pause between calls.
            idle_timeout: Duration::from_secs(75),
            // Control-plane calls are SQLite-backed and answer in milliseconds; 30 s only fires when
            // it is wedged, and stays below common client timeouts (60 s) so the client sees our 504.
            upstream_timeout: Duration::from_secs(30),
            // TLS on the conventional alternate port, loopback like the plain listener.
            tls_listen: "127.0.0.1:8443".to_owned(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            data_dir: PathBuf::from("data/dataplane"),
            // What the control plane issues by default (controlplane.key-prefix).
            key_prefix: "nvapi-".to_owned(),
            // A global cap protects the gateway itself (memory for bodies in flight, file
            // descriptors, h2 streams) when per-version limits add up to more than one process can
            // hold; 10 000 concurrent invocations is far above one loopback installation's workers
            // and well below what exhausts a default 64 Ki descriptor limit or a few GiB of buffers.
            max_in_flight: 10_000,
            // A burst of a few hundred calls above a version's capacity waits rather than failing;
            // beyond that the client is better told at once (429) than held.
            max_queued_per_version: 1024,
            // Long enough to ride out a burst at typical inference latencies, short enough that a
            // client stuck behind a stalled function hears 429 and can back off or go elsewhere.
            queue_timeout: Duration::from_secs(10),
            // Reports go out only when depths change (or to refresh a standing queue), so a short
            // interval is free when idle and keeps `queueDepth` within a quarter second under load.
            queue_report_interval: Duration::from_millis(250),
            // Keep-alive HTTP/1.1 driven on the calling task: the cheapest per request on both
            // ends (docs/performance.md); `h2` uses one multiplexed connection per worker instead.
            worker_protocol: WorkerProtocol::Http1,
            region: "local".to_owned(),
            // NVCF keeps its request-to-function mapping for 1 h (`max_age`), so a client polls
            // for at most that long.
            pending_ttl: Duration::from_secs(3600),
            // A fixed slice of the host's memory, so parked results cannot starve the hot path:
            // 32 results at the per-result bound, or tens of thousands of typical JSON answers.
            // Beyond it results spill to disk, which is slower but loses nothing.
            pending_memory_bytes: 256 * 1024 * 1024,
            // Most results are small JSON documents; 8 MiB keeps those in memory while large
            // outputs (images, tensors) go to disk instead of crowding out many small ones.
            pending_max_result_bytes: 8 * 1024 * 1024,
            // The same port as TLS over TCP (UDP and TCP ports are separate), as Alt-Svc expects.
            quic_listen: "127.0.0.1:8443".to_owned(),
            // High-fan-out clients multiplex many calls on one connection; 256 is 2.5x quinn's
            // default of 100 and still bounds per-connection handler tasks and buffers.
            quic_max_concurrent_streams: 256,
            // Long enough for clients that keep a connection for bursts, short enough to free
            // state of vanished (mobile) clients quickly; above the 10-25 s keep-alives clients send.
            quic_idle_timeout: Duration::from_secs(30),
            // 2 MiB per stream fills ~160 Mbit/s at 100 ms RTT for one upload while bounding what
            // one stream can make us buffer.
            quic_stream_receive_window: 2 * 1024 * 1024,
            // 16 MiB per connection caps buffered request data for all of a connection's streams
            // (256 streams x 2 MiB would be 512 MiB) while letting several uploads run at full speed.
            quic_receive_window: 16 * 1024 * 1024,
            // 1500-byte Ethernet MTU minus IPv4 (20) and UDP (8) headers: no IP fragmentation on
            // ordinary paths. QUIC's minimum is 1200.
            quic_max_udp_payload: 1472,
            // On: one line per request is what operators expect from a gateway, and the line costs
            // nothing when the `access` target is filtered out of the log.
            access_log: true,
            // One per core, as nginx's `worker_processes auto`: in the method's HTTP/1.1 runs this
            // served 1.06-1.12 x the calls of the multi-threaded runtime for 6-11% less CPU per
            // call; on cores shared with workers and clients it costs latency at partial load
            // (docs/performance.md, ninth round).
            serving_threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// The protocol of gateway → worker requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerProtocol {
    /// HTTP/2 with prior knowledge (h2c).
    H2,
    /// HTTP/1.1 keep-alive.
    Http1,
}

/// The validated dataplane configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// Address to listen on (the caller binds it; [`crate::run`] takes the bound listener).
    pub listen: SocketAddr,
    /// `http://host:port` of the control plane, no path.
    pub controlplane_url: Uri,
    /// Sent as `x-nvcf-gateway-auth` on every proxied request; checked to be a valid header value.
    pub internal_token: String,
    /// See [`DataplaneFile::max_header_bytes`]; within [`MIN_HEADER_BYTES`]..=[`MAX_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// See [`DataplaneFile::max_management_body_bytes`]; at least 1.
    pub max_management_body_bytes: u64,
    /// See [`DataplaneFile::header_read_timeout`]; non-zero.
    pub header_read_timeout: Duration,
    /// See [`DataplaneFile::idle_timeout`]; non-zero.
    pub idle_timeout: Duration,
    /// See [`DataplaneFile::upstream_timeout`]; non-zero.
    pub upstream_timeout: Duration,
    /// The TLS listener, when enabled.
    pub tls: Option<TlsConfig>,
    /// See [`DataplaneFile::key_prefix`]; starts with `nvapi-`.
    pub key_prefix: String,
    /// See [`DataplaneFile::max_in_flight`]; at least 1.
    pub max_in_flight: u64,
    /// See [`DataplaneFile::max_queued_per_version`].
    pub max_queued_per_version: usize,
    /// See [`DataplaneFile::queue_timeout`]; non-zero.
    pub queue_timeout: Duration,
    /// See [`DataplaneFile::queue_report_interval`]; non-zero.
    pub queue_report_interval: Duration,
    /// See [`DataplaneFile::worker_protocol`].
    pub worker_protocol: WorkerProtocol,
    /// See [`DataplaneFile::region`]; a valid, non-empty header value.
    pub region: String,
    /// See [`DataplaneFile::data_dir`]; parked results spill under `data_dir/pending`.
    pub data_dir: PathBuf,
    /// See [`DataplaneFile::pending_ttl`]; non-zero.
    pub pending_ttl: Duration,
    /// See [`DataplaneFile::pending_memory_bytes`]; at least 1.
    pub pending_memory_bytes: u64,
    /// See [`DataplaneFile::pending_max_result_bytes`]; 1 to `pending_memory_bytes`.
    pub pending_max_result_bytes: u64,
    /// The HTTP/3 listener, when enabled.
    pub quic: Option<QuicConfig>,
    /// See [`DataplaneFile::access_log`].
    pub access_log: bool,
    /// See [`DataplaneFile::serving_threads`]; at most [`MAX_SERVING_THREADS`].
    pub serving_threads: usize,
}

/// Where the TLS listener listens and which certificate it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// True when the pair is self-signed and generated on first start if missing.
    pub generate: bool,
}

/// A configuration value that failed validation; each message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("dataplane.listen: invalid socket address '{0}'")]
    Listen(String),
    #[error("dataplane.controlplane-url: '{value}' {reason}")]
    ControlplaneUrl { value: String, reason: &'static str },
    #[error("dataplane internal token: {0}")]
    InternalToken(&'static str),
    #[error(
        "dataplane.max-header-bytes: {0} is out of range (must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES})"
    )]
    MaxHeaderBytes(usize),
    #[error("dataplane.max-management-body-bytes: must be at least 1")]
    MaxManagementBodyBytes,
    #[error("dataplane.{0}: must be greater than zero")]
    ZeroDuration(&'static str),
    #[error("dataplane.key-prefix: '{0}' must start with 'nvapi-'")]
    KeyPrefix(String),
    #[error("dataplane.max-in-flight: must be at least 1")]
    MaxInFlight,
    #[error("dataplane.region: must be non-empty visible ASCII (it is sent as a header value)")]
    Region,
    #[error(
        "dataplane.pending-memory-bytes and pending-max-result-bytes: both at least 1, and the result bound at most the memory bound"
    )]
    PendingBytes,
    #[error("dataplane.serving-threads: {0} is more than {MAX_SERVING_THREADS}")]
    ServingThreads(usize),
    #[error("dataplane.tls-listen: invalid socket address '{0}'")]
    TlsListen(String),
    #[error("dataplane.quic-listen: invalid socket address '{0}'")]
    QuicListen(String),
    #[error("dataplane.{key}: {reason}")]
    Quic {
        key: &'static str,
        reason: &'static str,
    },
    #[error(
        "dataplane.tls-cert-file and dataplane.tls-key-file: set both, or neither for a generated self-signed pair"
    )]
    TlsPair,
}

impl DataplaneFile {
    fn tls_config(&self) -> Result<Option<TlsConfig>, ConfigError> {
        let addr = self.tls_listen.trim();
        if addr.is_empty() {
            return Ok(None);
        }
        let listen = addr
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::TlsListen(self.tls_listen.clone()))?;
        self.certificate(listen).map(Some)
    }

    /// The certificate pair the TLS and QUIC listeners present, for a listener on `listen`.
    pub(crate) fn certificate(&self, listen: SocketAddr) -> Result<TlsConfig, ConfigError> {
        let (cert, key) = (self.tls_cert_file.trim(), self.tls_key_file.trim());
        let tls = match (cert.is_empty(), key.is_empty()) {
            (true, true) => TlsConfig {
                listen,
                cert_file: self.data_dir.join("tls").join("cert.pem"),
                key_file: self.data_dir.join("tls").join("key.pem"),
                generate: true,
            },
            (false, false) => TlsConfig {
                listen,
                cert_file: cert.into(),
                key_file: key.into(),
                generate: false,
            },
            _ => return Err(ConfigError::TlsPair),
        };
        Ok(tls)
    }

    /// Checks every value and produces the typed configuration. `internal_token` is the shared
    /// secret the control plane expects in `x-nvcf-gateway-auth`.
    pub fn validate(&self, internal_token: &str) -> Result<DataplaneConfig, ConfigError> {
        let listen = self
            .listen
            .trim()
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::Listen(self.listen.clone()))?;
        let controlplane_url = parse_controlplane_url(&self.controlplane_url)?;
        if internal_token.is_empty() {
            return Err(ConfigError::InternalToken("must not be empty"));
        }
        if HeaderValue::from_str(internal_token).is_err() {
            return Err(ConfigError::InternalToken(
                "must be visible ASCII (it is sent as a header value)",
            ));
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&self.max_header_bytes) {
            return Err(ConfigError::MaxHeaderBytes(self.max_header_bytes));
        }
        if self.max_management_body_bytes == 0 {
            return Err(ConfigError::MaxManagementBodyBytes);
        }
        if self.header_read_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("header-read-timeout"));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("idle-timeout"));
        }
        if self.upstream_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("upstream-timeout"));
        }
        let tls = self.tls_config()?;
        let quic = self.quic_config()?;
        if !self.key_prefix.starts_with("nvapi-") {
            return Err(ConfigError::KeyPrefix(self.key_prefix.clone()));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::MaxInFlight);
        }
        if self.queue_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("queue-timeout"));
        }
        if self.queue_report_interval.is_zero() {
            return Err(ConfigError::ZeroDuration("queue-report-interval"));
        }
        if self.region.trim().is_empty() || HeaderValue::from_str(&self.region).is_err() {
            return Err(ConfigError::Region);
        }
        if self.serving_threads > MAX_SERVING_THREADS {
            return Err(ConfigError::ServingThreads(self.serving_threads));
        }
        if self.pending_ttl.is_zero() {
            return Err(ConfigError::ZeroDuration("pending-ttl"));
        }
        if self.pending_max_result_bytes == 0
            || self.pending_max_result_bytes > self.pending_memory_bytes
        {
            return Err(ConfigError::PendingBytes);
        }
        Ok(DataplaneConfig {
            data_dir: self.data_dir.clone(),
            pending_ttl: self.pending_ttl,
            pending_memory_bytes: self.pending_memory_bytes,
            pending_max_result_bytes: self.pending_max_result_bytes,
            key_prefix: self.key_prefix.clone(),
            max_in_flight: self.max_in_flight,
            max_queued_per_version: self.max_queued_per_version,
            queue_timeout: self.queue_timeout,
            queue_report_interval: self.queue_report_interval,
            worker_protocol: self.worker_protocol,
            region: self.region.clone(),
            tls,
            quic,
            listen,
            controlplane_url,
            internal_token: internal_token.to_owned(),
            max_header_bytes: self.max_header_bytes,
            max_management_body_bytes: self.max_management_body_bytes,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            upstream_timeout: self.upstream_timeout,
            access_log: self.access_log,
            serving_threads: self.serving_threads,
        })
    }
}

fn parse_controlplane_url(value: &str) -> Result<Uri, ConfigError> {
    let err = |reason| ConfigError::ControlplaneUrl {
        value: value.to_owned(),
        reason,
    };
    let uri: Uri = value
        .trim()
        .parse()
        .map_err(|_| err("is not a valid URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(err("must start with http://"));
    }
    let Some(authority) = uri.authority() else {
        return Err(err("must name a host"));
    };
    if authority.host().is_empty() {
        return Err(err("must name a host"));
    }
    if authority.port_u16().is_none() {
        return Err(err("must name a port, e.g. http://127.0.0.1:8090"));
    }
    if authority.as_str().contains('@') {
        return Err(err("must not carry credentials"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(err("must not have a path or query"));
    }
    // Normalize to `http://host:port/` so the proxy only has to swap in the request's path.
    Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|_| err("is not a valid URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml_text: &str) -> DataplaneFile {
        toml::from_str(toml_text).expect("parse")
    }

    #[test]
    fn defaults_validate() {
        let cfg = DataplaneFile::default().validate("secret").expect("valid");
        assert_eq!(
            cfg.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            cfg.controlplane_url.authority().map(|a| a.as_str()),
            Some("127.0.0.1:8090")
        );
        assert_eq!(cfg.max_header_bytes, 16384);
        assert_eq!(cfg.max_management_body_bytes, 1 << 20);
        assert_eq!(cfg.header_read_timeout, Duration::from_secs(10));
        assert_eq!(cfg.idle_timeout, Duration::from_secs(75));
        assert_eq!(cfg.upstream_timeout, Duration::from_secs(30));
        assert_eq!(cfg.key_prefix, "nvapi-");
        assert_eq!(cfg.max_in_flight, 10_000);
        assert_eq!(cfg.region, "local");
        assert_eq!(cfg.pending_ttl, Duration::from_secs(3600));
        assert_eq!(cfg.pending_memory_bytes, 256 << 20);
        assert_eq!(cfg.pending_max_result_bytes, 8 << 20);
        assert_eq!(cfg.data_dir, PathBuf::from("data/dataplane"));
        assert!(cfg.access_log);
        assert_eq!(
            cfg.serving_threads,
            std::thread::available_parallelism().map_or(1, usize::from),
            "one serving thread per core"
        );
        assert_eq!(
            file("serving-threads = 4")
                .validate("t")
                .expect("valid")
                .serving_threads,
            4
        );
        assert_eq!(
            file("serving-threads = 100000")
                .validate("t")
                .expect_err("too many")
                .to_string(),
            "dataplane.serving-threads: 100000 is more than 1024"
        );
        assert!(
            !file("access-log = false")
                .validate("t")
                .expect("valid")
                .access_log
        );
    }

    #[test]
    fn pending_bounds() {
        let f = file(
            "pending-ttl = \"10m\"\npending-memory-bytes = 100\npending-max-result-bytes = 100\n",
        );
        let cfg = f.validate("t").expect("valid");
        assert_eq!(cfg.pending_ttl, Duration::from_secs(600));
        let bad = |f: DataplaneFile| f.validate("t").expect_err("invalid").to_string();
        assert!(bad(file("pending-max-result-bytes = 0")).starts_with("dataplane.pending-"));
        assert!(
            bad(file(
                "pending-memory-bytes = 10\npending-max-result-bytes = 11"
            ))
            .starts_with("dataplane.pending-")
        );
        assert_eq!(
            bad(file("pending-ttl = \"0s\"")),
            "dataplane.pending-ttl: must be greater than zero"
        );
    }

    #[test]
    fn empty_file_is_default() {
        assert_eq!(file(""), DataplaneFile::default());
    }

    #[test]
    fn parses_kebab_keys_and_humantime() {
        let f = file(
            r#"
            listen = "0.0.0.0:9000"
            controlplane-url = "http://cp.local:8091"
            max-header-bytes = 32768
            max-management-body-bytes = 2048
            header-read-timeout = "500ms"
            upstream-timeout = "1m"
            "#,
        );
        let cfg = f.validate("t").expect("valid");
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.controlplane_url.to_string(), "http://cp.local:8091/");
        assert_eq!(cfg.max_header_bytes, 32768);
        assert_eq!(cfg.max_management_body_bytes, 2048);
        assert_eq!(cfg.header_read_timeout, Duration::from_millis(500));
        assert_eq!(cfg.upstream_timeout, Duration::from_secs(60));
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = toml::from_str::<DataplaneFile>("listn = \"x\"").expect_err("unknown key");
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |f: DataplaneFile| f.validate("t").expect_err("invalid").to_string();
        let d = DataplaneFile::default;

        assert_eq!(
            bad(DataplaneFile {
                listen: "x".into(),
                ..d()
            }),
            "dataplane.listen: invalid socket address 'x'"
        );
        for url in [
            "https://127.0.0.1:8090",
            "127.0.0.1:8090",
            "http://127.0.0.1",
            "http://127.0.0.1:8090/api",
            "http://127.0.0.1:8090/?a=b",
            "http://u:p@127.0.0.1:8090",
            "not a url",
        ] {
            let msg = bad(DataplaneFile {
                controlplane_url: url.into(),
                ..d()
            });
            assert!(
                msg.starts_with("dataplane.controlplane-url: "),
                "{url}: {msg}"
            );
        }
        assert!(
            bad(DataplaneFile {
                max_header_bytes: 100,
                ..d()
            })
            .starts_with("dataplane.max-header-bytes")
        );
        assert!(
            bad(DataplaneFile {
                max_management_body_bytes: 0,
                ..d()
            })
            .starts_with("dataplane.max-management-body-bytes")
        );
        assert_eq!(
            bad(DataplaneFile {
                header_read_timeout: Duration::ZERO,
                ..d()
            }),
            "dataplane.header-read-timeout: must be greater than zero"
        );
        assert_eq!(
            bad(DataplaneFile {
                upstream_timeout: Duration::ZERO,
                ..d()
            }),
            "dataplane.upstream-timeout: must be greater than zero"
        );
        assert_eq!(
            bad(DataplaneFile {
                key_prefix: "key-".into(),
                ..d()
            }),
            "dataplane.key-prefix: 'key-' must start with 'nvapi-'"
        );
        assert!(
            bad(DataplaneFile {
                max_in_flight: 0,
                ..d()
            })
            .starts_with("dataplane.max-in-flight")
        );
        assert!(
            bad(DataplaneFile {
                region: " ".into(),
                ..d()
            })
            .starts_with("dataplane.region")
        );
        assert!(d().validate("").is_err());
        assert!(d().validate("bad\ntoken").is_err());
    }

    #[test]
    fn controlplane_url_trailing_slash_is_fine() {
        let f = DataplaneFile {
            controlplane_url: "http://[::1]:8090/".into(),
            ..Default::default()
        };
        let cfg = f.validate("t").expect("valid");
        assert_eq!(
            cfg.controlplane_url.authority().map(|a| a.as_str()),
            Some("[::1]:8090")
        );
    }
}
