//! `nvcf-gateway`: runs the whole stack (`up`, the default) or one role of it, or checks config
//! files. Parses arguments, loads config, installs logging and metrics, and hands over to the
//! launcher.

use anyhow::Context;
use clap::{Parser, Subcommand};
use nvcf_gateway::config::{self, FileConfig};
use nvcf_gateway::launcher::{self, Role};
use std::path::PathBuf;

/// mimalloc instead of glibc's malloc: the request path allocates and frees many small, short-lived
/// buffers (headers, frames, futures) across threads, where glibc's arenas spend measurably more
/// (see docs/performance.md).
#[global_allocator]
static GLOBAL: alloc::Mimalloc = alloc::Mimalloc;

// The one module allowed `unsafe`: a `GlobalAlloc` is an unsafe trait over C calls.
#[allow(unsafe_code)]
mod alloc;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "NVCF-compatible invocation gateway, control plane and GPU worker"
)]
struct Cli {
    /// Config file (TOML). Without it the embedded config/local.toml is used.
    #[arg(short, long, global = true, env = "NVCF_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Control plane, gateway and a worker in one process on loopback (the default).
    Up,
    /// The gateway only.
    Dataplane,
    /// The control plane only.
    Controlplane,
    /// A worker only.
    Worker,
    /// Validates config files (every section) and exits non-zero on the first bad one.
    CheckConfig {
        /// Files to check; none checks the embedded default.
        files: Vec<PathBuf>,
    },
}

fn check_config(files: &[PathBuf]) -> anyhow::Result<()> {
    let env = config::process_env();
    if files.is_empty() {
        config::load(None, &env)?.validate_all("embedded config/local.toml")?;
        println!("ok: embedded config/local.toml");
        return Ok(());
    }
    for f in files {
        let name = f.display().to_string();
        config::load(Some(f), &env)?.validate_all(&name)?;
        println!("ok: {name}");
    }
    Ok(())
}

/// Installs the log subscriber (`RUST_LOG`, else the config's `log`, else `info`).
fn init_logging(cfg: &FileConfig) -> nvcf_gateway::logging::FlushGuard {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| cfg.log.clone())
        .unwrap_or_else(|| "info".into());
    nvcf_gateway::logging::init(&filter)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(cli: Cli, cfg: FileConfig, role: Role) -> anyhow::Result<()> {
    let name = cli.config.as_ref().map_or_else(
        || "embedded config/local.toml".to_owned(),
        |p| p.display().to_string(),
    );
    cfg.validate_all(&name)?;
    let _log_guard = init_logging(&cfg);
    // Without an admin listener nothing can scrape the metrics: no recorder is installed, and
    // every metric call is a no-op (the cost of metrics can be measured this way, too).
    let metrics = match cfg.admin_addr().map_err(anyhow::Error::msg)? {
        Some(_) => Some(
            nvcf_gateway::admin::install_recorder()
                .map_err(anyhow::Error::msg)
                .context("metrics recorder")?,
        ),
        None => None,
    };
    let mut stack = launcher::start(&cfg, role, metrics).await?;
    let show =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
    tracing::info!(
        gateway = %show(stack.gateway),
        gateway_tls = %show(stack.gateway_tls),
        gateway_quic = %show(stack.gateway_quic),
        controlplane = %show(stack.controlplane),
        worker = %show(stack.worker),
        admin = %show(stack.admin),
        "started {role:?}"
    );
    let outcome = tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
        e = stack.wait_for_failure() => Err(e),
    };
    stack.shutdown().await?;
    outcome
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let role = match &cli.command {
        Some(Command::CheckConfig { files }) => return check_config(files),
        None | Some(Command::Up) => Role::Up,
        Some(Command::Dataplane) => Role::Dataplane,
        Some(Command::Controlplane) => Role::Controlplane,
        Some(Command::Worker) => Role::Worker,
    };
    let cfg = config::load(cli.config.as_deref(), &config::process_env())?;
    let rt = match cfg.runtime_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    rt.block_on(serve(cli, cfg, role))
}
