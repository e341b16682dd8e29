//! Starting components from a config: binds each listener (so tests can pass port 0 and read the
//! real address back), wires the components to each other, and shuts them all down together.

use crate::admin;
use crate::config::FileConfig;
use anyhow::{Context, bail};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which components this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Control plane, gateway and one worker on loopback.
    Up,
    Controlplane,
    Dataplane,
    Worker,
}

/// A running set of components.
#[derive(Debug)]
pub struct Stack {
    pub controlplane: Option<SocketAddr>,
    pub gateway: Option<SocketAddr>,
    /// The gateway's TLS listener (HTTP/1.1 and HTTP/2 by ALPN), when enabled.
    pub gateway_tls: Option<SocketAddr>,
    /// The gateway's HTTP/3 (QUIC) listener on UDP, when enabled.
    pub gateway_quic: Option<SocketAddr>,
    pub worker: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub internal_token: String,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<Result<(), String>>)>,
}

async fn bind(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// A random internal token for a single-process stack.
pub fn random_token() -> String {
    use rand::Rng;
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Starts `role`'s components from `cfg`. `metrics` is the installed recorder's handle, if any.
pub async fn start(
    cfg: &FileConfig,
    role: Role,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<Stack> {
    let mut cfg = cfg.clone();
    let token = match (role, cfg.internal_token.is_empty()) {
        (Role::Up, true) => random_token(),
        (_, true) => bail!(
            "internal-token must be set for the {role:?} role: every process of the installation shares it"
        ),
        (_, false) => cfg.internal_token.clone(),
    };
    let (stop, stop_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    let mut stack = Stack {
        controlplane: None,
        gateway: None,
        gateway_tls: None,
        gateway_quic: None,
        worker: None,
        admin: None,
        internal_token: token.clone(),
        stop,
        tasks: Vec::new(),
    };
    if let Some(addr) = cfg.admin_addr().map_err(anyhow::Error::msg)? {
        let l = bind("admin listener", &addr.to_string()).await?;
        stack.admin = Some(l.local_addr()?);
        let (ready, rx) = (Arc::clone(&ready), stop_rx.clone());
        stack.tasks.push((
            "admin",
            tokio::spawn(async move {
                admin::serve(l, metrics, ready, rx).await;
                Ok(())
            }),
        ));
    }
    if matches!(role, Role::Up | Role::Controlplane) {
        let c = cfg.controlplane.validate(&token)?;
        let l = bind("control plane", &c.listen.to_string()).await?;
        let addr = l.local_addr()?;
        stack.controlplane = Some(addr);
        if role == Role::Up {
            // In one process the other components talk to the control plane wherever it landed.
            cfg.dataplane.controlplane_url = format!("http://{addr}");
            cfg.worker.controlplane_url = format!("http://{addr}");
        }
        let rx = stop_rx.clone();
        stack.tasks.push((
            "controlplane",
            tokio::spawn(async move {
                controlplane_stub::run(c, l, stopped(rx))
                    .await
                    .map_err(|e| e.to_string())
            }),
        ));
    }
    if matches!(role, Role::Up | Role::Worker) {
        let c = cfg.worker.validate(&token)?;
        let l = bind("worker", &c.listen.to_string()).await?;
        stack.worker = Some(l.local_addr()?);
        let rx = stop_rx.clone();
        stack.tasks.push((
            "worker",
            tokio::spawn(async move {
                worker::run(c, l, stopped(rx))
                    .await
                    .map_err(|e| e.to_string())
            }),
        ));
    }
    if matches!(role, Role::Up | Role::Dataplane) {
        let c = cfg.dataplane.validate(&token)?;
        let l = bind("gateway", &c.listen.to_string()).await?;
        stack.gateway = Some(l.local_addr()?);
        let tls = match &c.tls {
            Some(t) => {
                let l = bind("gateway's TLS listener", &t.listen.to_string()).await?;
                stack.gateway_tls = Some(l.local_addr()?);
                Some(l)
            }
            None => None,
        };
        let quic = match &c.quic {
            Some(q) => {
                let addr = q.tls.listen;
                let socket = std::net::UdpSocket::bind(addr).with_context(|| {
                    format!("cannot listen on UDP {addr} for the gateway's HTTP/3 listener")
                })?;
                stack.gateway_quic = Some(socket.local_addr()?);
                Some(socket)
            }
            None => None,
        };
        let listeners = dataplane::Listeners {
            plain: l,
            tls,
            quic,
        };
        let rx = stop_rx.clone();
        stack.tasks.push((
            "dataplane",
            tokio::spawn(async move {
                dataplane::serve_all(c, listeners, stopped(rx))
                    .await
                    .map_err(|e| e.to_string())
            }),
        ));
    }
    ready.store(true, Ordering::Release);
    Ok(stack)
}

impl Stack {
    /// Waits until a component stops on its own (which is an error: they run until shutdown).
    pub async fn wait_for_failure(&mut self) -> anyhow::Error {
        if self.tasks.is_empty() {
            return anyhow::anyhow!("no component is running");
        }
        let futures = self.tasks.iter_mut().map(|(name, t)| {
            let name = *name;
            Box::pin(async move { (name, t.await) })
        });
        let ((name, result), _, _) = futures_util::future::select_all(futures).await;
        match result {
            Ok(Ok(())) => anyhow::anyhow!("{name} stopped unexpectedly"),
            Ok(Err(e)) => anyhow::anyhow!("{name} failed: {e}"),
            Err(e) => anyhow::anyhow!("{name} crashed: {e}"),
        }
    }

    /// Stops every component and waits for them.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let mut first_error = None;
        for (name, t) in self.tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert_with(|| anyhow::anyhow!("{name}: {e}"));
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| anyhow::anyhow!("{name} crashed: {e}"));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
