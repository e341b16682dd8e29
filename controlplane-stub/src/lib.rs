//! The bundled NVCF control plane: the management API (functions, versions, deployments, cluster
//! groups, queues) and the key service on SQLite, the worker registry and status engine, and the
//! state feed that keeps gateways and workers in sync.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod core;
pub mod error;
pub mod keyhash;
pub mod queues;
pub mod registry;
pub mod store;
pub mod validate;

use crate::app::App;
use crate::config::ControlplaneConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the control plane could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot open the control plane store: {0}")]
    Store(#[from] store::StoreError),
    #[error("control plane server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Describes the control plane's metrics (one table).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "controlplane_requests_total",
        "Requests answered by the control plane, by status"
    );
    metrics::describe_counter!(
        "controlplane_errors_total",
        "Error answers of the control plane, by status and cause (client or internal)"
    );
    metrics::describe_histogram!(
        "controlplane_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer a control plane request"
    );
    metrics::describe_gauge!(
        "controlplane_feed_revision",
        "Latest committed feed revision"
    );
}

/// Serves the control plane on an already-bound listener until `shutdown` resolves.
pub async fn run(
    config: ControlplaneConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (core, hasher) = core::Core::open(&config, Instant::now())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = Arc::new(App::new(core, config, hasher, stop_rx));
    let sweeper = tokio::spawn(sweep(Arc::clone(&app)));
    tracing::info!(addr = %listener.local_addr()?, "control plane listening");
    let router = api::router(Arc::clone(&app));
    // Graceful shutdown waits for every response to finish; feed streams never do on their own,
    // so they are told to end first (gateways reconnect and resume from their revision).
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    sweeper.abort();
    served?;
    Ok(())
}

/// Periodically lets the registry notice silent workers, finishes graceful undeploys, and removes
/// credentials two days after they expired (as NVIDIA's key service does).
async fn sweep(app: Arc<App>) {
    let period =
        (app.cfg.heartbeat_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = app
            .write(|core, _| {
                let purge_before = model::time::Timestamp::now();
                let expired: Vec<store::Change> = core
                    .state
                    .keys
                    .values()
                    .filter(|k| k.expires_at.plus(Duration::from_secs(2 * 86_400)) < purge_before)
                    .map(|k| store::Change::Delete(model::feed::EntityKind::Key, k.id.to_string()))
                    .collect();
                core.commit(expired)?;
                metrics::gauge!("controlplane_feed_revision").set(core.state.revision as f64);
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "control plane sweep failed");
        }
    }
}
