//! The GPU worker: finds its devices (CUDA through cudarc, or the CPU backend), registers with the
//! control plane, follows its assignments on the state feed and heartbeats their readiness, and
//! serves invocations: HTTP/2 streams from the gateway into the built-in kernels or the inference
//! server beside it (the contract is in [`server`]).
//!
//! The binary installs the metrics recorder and calls [`metrics::describe_metrics`].

#![deny(unsafe_code)] // only `devices` (the cudarc probe) opts out

pub mod agent;
pub mod batcher;
pub mod config;
pub mod devices;
pub mod kernels;
pub mod metrics;
pub mod readiness;
pub mod runtime;
pub mod server;

use crate::config::WorkerConfig;
use model::worker::WorkerRegistration;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Device(#[from] devices::DeviceError),
    #[error("worker id file {path}: {source}")]
    IdFile {
        path: String,
        source: std::io::Error,
    },
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    #[error("compute backend: {0}")]
    Backend(#[from] kernels::KernelError),
}

/// The worker id: configured, or generated once and kept under the data directory.
pub fn worker_id(configured: Option<&str>, data_dir: &Path) -> Result<String, WorkerError> {
    if let Some(id) = configured {
        return Ok(id.to_owned());
    }
    let path = data_dir.join("worker-id");
    let io = |source| WorkerError::IdFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        Ok(_) | Err(_) => {
            std::fs::create_dir_all(data_dir).map_err(io)?;
            let id = format!("worker-{}", uuid::Uuid::new_v4());
            std::fs::write(&path, &id).map_err(io)?;
            Ok(id)
        }
    }
}

/// Runs the worker on an already-bound listener until `shutdown` resolves.
pub async fn run(
    cfg: WorkerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    // Bringing a CUDA backend up (context, NVRTC compile, pools) blocks: keep it off the runtime.
    let (mode, lanes) = (cfg.device, cfg.lanes);
    let backend = tokio::task::spawn_blocking(move || kernels::select(mode, lanes))
        .await
        .map_err(|e| kernels::KernelError::Device {
            message: format!("backend start-up did not complete: {e}"),
            lost: false,
        })??;
    // Offer what actually runs: a GPU host whose CUDA backend could not start (no NVRTC, say)
    // serves on the CPU and must not advertise its GPUs; the CUDA backend drives device 0 only.
    let offer = if backend.name() == "cuda" {
        let found = devices::cuda_devices()?;
        devices::cuda_offer(found.get(..1).unwrap_or_default())
    } else {
        devices::cpu_offer()
    };
    let id = worker_id(cfg.id.as_deref(), &cfg.data_dir)?;
    let address = cfg
        .advertise_url
        .clone()
        .unwrap_or_else(|| match listener.local_addr() {
            Ok(a) => format!("http://{a}"),
            Err(_) => format!("http://{}", cfg.listen),
        });
    let registration = WorkerRegistration {
        worker_id: id.clone(),
        address,
        cluster_group: cfg.cluster_group.clone(),
        cluster: cfg.cluster.clone(),
        gpus: offer.gpus.clone(),
        instance_types: offer.instance_types.clone(),
        capacity: cfg.capacity,
    };
    tracing::info!(worker = %id, gpus = ?offer.gpus.iter().map(|g| &g.name).collect::<Vec<_>>(), cpu = offer.cpu, backend = backend.name(), "worker starting");
    let client = cp_client::CpClient::new(cfg.controlplane_url.clone(), cfg.internal_token.clone());
    let shared = Arc::new(agent::Shared::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = server::Server::new(id.clone(), Arc::clone(&shared), backend, cfg.serve.clone());
    let tasks = [
        tokio::spawn(server::serve(listener, server, stop_rx.clone())),
        tokio::spawn(agent::follow_feed(
            client.clone(),
            Arc::clone(&shared),
            cfg.reconnect_backoff,
            stop_rx.clone(),
        )),
        tokio::spawn(agent::heartbeat_loop(
            client,
            registration,
            shared,
            cfg.heartbeat_interval,
            cfg.reconnect_backoff,
            stop_rx,
        )),
    ];
    shutdown.await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
