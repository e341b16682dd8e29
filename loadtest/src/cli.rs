//! Command-line flags. `loadtest [RUN FLAGS] URL` drives any HTTP target; `loadtest nvcf ...` sets
//! itself up against a running stack first (see [`crate::nvcf`]).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Wire protocol of the generated load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// HTTP/1.1 keep-alive (over TLS when the URL is https).
    H1,
    /// HTTP/2 with prior knowledge over plain TCP.
    H2c,
    /// HTTP/2 over TLS, negotiated by ALPN.
    H2,
    /// HTTP/3 over QUIC (quinn + h3), ALPN h3.
    H3,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H1 => "h1",
            Self::H2c => "h2c",
            Self::H2 => "h2",
            Self::H3 => "h3",
        }
    }
}

/// A load generator for HTTP/1.1, h2c and HTTP/2, closed or open loop.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub plain: PlainArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up keys, a function and a deployment on a running stack, then invoke it under load.
    Nvcf(NvcfArgs),
}

/// Plain mode: a target URL and the run flags.
#[derive(Debug, Args)]
pub struct PlainArgs {
    /// Target URL (http:// for h1/h2c, https:// for h2 or h1 over TLS).
    pub url: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub request: RequestArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// How the load is generated and reported (shared by both modes).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Protocol: h1, h2c, h2 (HTTP/2 over TLS) or h3 (HTTP/3 over QUIC).
    #[arg(long, value_enum, default_value = "h1")]
    pub proto: Proto,
    /// Connections to open.
    #[arg(short = 'c', long, default_value_t = 16)]
    pub connections: usize,
    /// Concurrent streams per connection (HTTP/2 and HTTP/3; HTTP/1.1 always uses 1).
    #[arg(short = 'm', long, default_value_t = 1)]
    pub streams: usize,
    /// Open loop: send this many requests per second, spread over connections × streams; latency is
    /// measured from each request's intended send time. Without it the run is closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured duration (after the warm-up). Ignored when --requests is given.
    #[arg(short = 'd', long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Stop after this many measured requests instead of after --duration.
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Warm-up before measuring; its requests are not in the results.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Per-request timeout (including the body and any 202 status polls).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// Connect (and TLS handshake) timeout.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,
    /// Open loop: a send later than this past its intended time counts as late.
    #[arg(long, value_parser = parse_duration, default_value = "1ms")]
    pub lag_threshold: Duration,
    /// CA certificate (PEM) to trust for https targets.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// What each request carries.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// HTTP method (default: POST when there is a body, else GET).
    #[arg(short = 'X', long)]
    pub method: Option<String>,
    /// Extra header `Name: value` (repeatable). A `Host` header overrides the URL's authority.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Request body, literally.
    #[arg(long, group = "bodysrc")]
    pub body: Option<String>,
    /// Request body read from a file.
    #[arg(long, group = "bodysrc")]
    pub body_file: Option<PathBuf>,
    /// Request body of N fixed bytes ('x').
    #[arg(long, group = "bodysrc")]
    pub body_size: Option<usize>,
    /// JSON body `{"data":"xxx…"}` padded to about N bytes, sent as application/json.
    #[arg(long, group = "bodysrc")]
    pub json_template: Option<usize>,
}

/// NVCF mode.
#[derive(Debug, Clone, Args)]
pub struct NvcfArgs {
    /// The gateway's plain (h1 + h2c) address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: String,
    /// The gateway's TLS address (TCP for --proto h2; UDP for --proto h3).
    #[arg(long)]
    pub tls_gateway: Option<String>,
    /// Container image of the function: builtin/echo, builtin/mlp, builtin/load-tester, builtin/saxpy.
    #[arg(long, default_value = "builtin/echo")]
    pub image: String,
    /// GPU name to deploy on (default: the first one /v2/nvcf/clusterGroups lists).
    #[arg(long)]
    pub gpu: Option<String>,
    /// Instance type to deploy on (default: the GPU's default one).
    #[arg(long)]
    pub instance_type: Option<String>,
    /// maxRequestConcurrency of the deployment (default: max(64, connections × streams)).
    #[arg(long)]
    pub max_concurrency: Option<u32>,
    /// How long to wait for the function to become ACTIVE.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub ready_timeout: Duration,
    /// Invocation style: pexec (`POST /v2/nvcf/pexec/functions/{id}`) or host (`Host: {id}.invocation.<gw>`).
    #[arg(long, value_enum, default_value = "pexec")]
    pub mode: InvokeMode,
    /// Pause between status polls after a 202.
    #[arg(long, value_parser = parse_duration, default_value = "10ms")]
    pub poll_interval: Duration,
    /// Keep the function and its deployment at the end (by default they are deleted, also when
    /// the set-up fails or the run is interrupted, so that repeated runs do not fill the workers).
    #[arg(long)]
    pub keep: bool,
    /// Accepted for older scripts: deleting at the end is the default now (see --keep).
    #[arg(long, hide = true, conflicts_with = "keep")]
    pub cleanup: bool,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub request: RequestArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InvokeMode {
    Pexec,
    Host,
}

impl RequestArgs {
    /// The body and its default content type; `default` is used when no body flag is given.
    pub fn body(
        &self,
        default: Option<(bytes::Bytes, &'static str)>,
    ) -> Result<(bytes::Bytes, Option<&'static str>), crate::ClientError> {
        use bytes::Bytes;
        if let Some(b) = &self.body {
            return Ok((Bytes::from(b.clone()), None));
        }
        if let Some(p) = &self.body_file {
            let b = std::fs::read(p)
                .map_err(|e| crate::ClientError::Config(format!("{}: {e}", p.display())))?;
            return Ok((Bytes::from(b), None));
        }
        if let Some(n) = self.body_size {
            return Ok((Bytes::from(vec![b'x'; n]), Some("application/octet-stream")));
        }
        if let Some(n) = self.json_template {
            return Ok((json_body(n), Some("application/json")));
        }
        Ok(match default {
            Some((b, ct)) => (b, Some(ct)),
            None => (Bytes::new(), None),
        })
    }
}

/// `{"data":"xxx…"}` of `n` bytes (at least the 11 bytes of the frame).
pub fn json_body(n: usize) -> bytes::Bytes {
    let pad = n.saturating_sub(r#"{"data":""}"#.len());
    bytes::Bytes::from(format!(r#"{{"data":"{}"}}"#, "x".repeat(pad)))
}

impl RunArgs {
    pub fn tls(&self) -> crate::client::TlsOptions<'_> {
        crate::client::TlsOptions {
            cacert: self.cacert.as_deref(),
            insecure: self.insecure,
        }
    }

    /// The run plan for a target and a request template.
    pub fn plan(
        &self,
        url: String,
        target: crate::Target,
        template: crate::client::RequestTemplate,
    ) -> crate::RunPlan {
        crate::RunPlan {
            target: std::sync::Arc::new(target),
            template: std::sync::Arc::new(template),
            connections: self.connections,
            streams: self.streams,
            rate: self.rate,
            duration: self.duration,
            requests: self.requests,
            warmup: self.warmup,
            timeout: self.timeout,
            lag_threshold: self.lag_threshold,
            progress: !self.quiet,
            url,
        }
    }
}

/// Builds the plan of plain mode.
pub fn plain_plan(p: &PlainArgs) -> Result<crate::RunPlan, crate::ClientError> {
    let url = p.url.clone().ok_or_else(|| {
        crate::ClientError::Config("give a target URL or the `nvcf` subcommand (see --help)".into())
    })?;
    let (body, ct) = p.request.body(None)?;
    let (tpl, host) = crate::client::RequestTemplate::new(
        p.request.method.as_deref(),
        &p.request.headers,
        body,
        ct,
    )?;
    let target = crate::Target::new(
        &url,
        p.run.proto,
        host.as_deref(),
        &p.run.tls(),
        p.run.connect_timeout,
    )?;
    Ok(p.run.plan(url, target, tpl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_nvcf_parse() {
        let c = Cli::try_parse_from([
            "loadtest",
            "--proto",
            "h2c",
            "-c",
            "2",
            "-m",
            "8",
            "--rate",
            "100",
            "-H",
            "a: b",
            "--body-size",
            "256",
            "http://127.0.0.1:1/x",
        ])
        .expect("parse");
        let p = c.plain;
        assert_eq!(p.run.proto, Proto::H2c);
        assert_eq!(p.run.streams, 8);
        assert_eq!(p.run.rate, Some(100.0));
        assert_eq!(p.request.headers, vec!["a: b".to_string()]);
        assert_eq!(p.url.as_deref(), Some("http://127.0.0.1:1/x"));

        let c = Cli::try_parse_from([
            "loadtest",
            "nvcf",
            "--gateway",
            "127.0.0.1:9",
            "--duration",
            "2s",
            "--mode",
            "host",
        ])
        .expect("parse");
        let Some(Command::Nvcf(n)) = c.command else {
            panic!("nvcf")
        };
        assert_eq!(n.mode, InvokeMode::Host);
        assert_eq!(n.run.duration, Duration::from_secs(2));
        assert!(
            Cli::try_parse_from(["loadtest", "--body", "a", "--body-size", "3", "http://x"])
                .is_err()
        );
    }
}
