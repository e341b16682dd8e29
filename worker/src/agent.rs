//! The worker's conversation with the control plane: register, follow the feed to learn its
//! assignments, and heartbeat what it can say of each assigned instance. Reconnects with backoff;
//! re-registers when the control plane has forgotten it. Heartbeats carry each instance's in-flight
//! count and the worker's health (false once a kernel reported the device lost).

use crate::readiness::{Check, check_for};
use crate::runtime::admission::InFlight;
use cp_client::{ClientError, CpClient};
use http::StatusCode;
use model::feed::FeedState;
use model::worker::{Heartbeat, HeartbeatAck, InstanceReport, InstanceState, WorkerRegistration};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Shared between the feed follower and the heartbeat loop.
#[derive(Debug, Default)]
pub struct Shared {
    /// The replicated state as last seen on the feed.
    pub feed: Mutex<FeedState>,
    /// Woken when the feed changed, so readiness is reported without waiting a whole period.
    pub changed: Notify,
    /// False once the device is lost (reported in heartbeats).
    pub healthy: std::sync::atomic::AtomicBool,
    /// Invocations in progress per function version (reported per instance in heartbeats).
    pub in_flight: InFlight,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            healthy: std::sync::atomic::AtomicBool::new(true),
            ..Self::default()
        }
    }

    fn feed(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.feed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Follows the feed until `stop` flips, reconnecting from the last revision.
pub async fn follow_feed(
    client: CpClient,
    shared: Arc<Shared>,
    backoff: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut wait = backoff;
    loop {
        let since = shared.feed().revision;
        let session = async {
            let mut stream = client.feed(since).await?;
            loop {
                let Some(msg) = stream.next().await? else {
                    return Ok::<(), ClientError>(());
                };
                let changed = !matches!(msg, model::feed::FeedMessage::Heartbeat { .. });
                let applied = shared.feed().apply(msg);
                if let Err(e) = applied {
                    return Err(ClientError::Decode(e.to_string()));
                }
                if changed {
                    shared.changed.notify_one();
                }
            }
        };
        tokio::select! {
            r = session => match r {
                Ok(()) => wait = backoff,
                Err(e) => tracing::warn!(error = %e, "feed interrupted; reconnecting"),
            },
            _ = stop.changed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// Registers, then heartbeats until `stop` flips.
pub async fn heartbeat_loop(
    client: CpClient,
    registration: WorkerRegistration,
    shared: Arc<Shared>,
    default_interval: Duration,
    backoff: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let id = registration.worker_id.clone();
    let mut registered = false;
    let mut wait = backoff;
    loop {
        let result: Result<HeartbeatAck, ClientError> = if registered {
            let hb = heartbeat(&id, &shared).await;
            client
                .post_json(&format!("/internal/v1/workers/{id}/heartbeat"), &hb)
                .await
        } else {
            client
                .post_json("/internal/v1/workers", &registration)
                .await
        };
        let pause = match result {
            Ok(ack) => {
                registered = true;
                wait = backoff;
                if ack.heartbeat_interval_ms == 0 {
                    default_interval
                } else {
                    Duration::from_millis(ack.heartbeat_interval_ms.max(50))
                }
            }
            Err(ClientError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => {
                tracing::info!(worker = %id, "control plane forgot this worker; registering again");
                registered = false;
                Duration::ZERO
            }
            Err(e) => {
                tracing::warn!(worker = %id, error = %e, "heartbeat failed");
                let w = wait;
                wait = (wait * 2).min(MAX_BACKOFF);
                w
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shared.changed.notified(), if registered => {}
            _ = stop.changed() => return,
        }
    }
}

/// What the worker says of its instances now.
async fn heartbeat(worker_id: &str, shared: &Shared) -> Heartbeat {
    let checks: Vec<_> = {
        let feed = shared.feed();
        feed.instances
            .values()
            .filter(|i| i.worker_id == worker_id)
            .map(|i| {
                let check = match feed.functions.get(&i.function_version_id) {
                    Some(f) => check_for(f),
                    None => Check::Now(InstanceState::Starting, None),
                };
                (i.instance_id, i.function_version_id, check)
            })
            .collect()
    };
    let mut instances = Vec::with_capacity(checks.len());
    for (instance_id, version_id, check) in checks {
        let (state, error) = match check {
            Check::Now(s, e) => (s, e),
            Check::Probe {
                port,
                uri,
                status,
                timeout,
            } => (probe(port, &uri, status, timeout).await, None),
        };
        instances.push(InstanceReport {
            instance_id,
            state,
            in_flight: shared.in_flight.get(&version_id),
            error,
        });
    }
    Heartbeat {
        healthy: shared.healthy.load(std::sync::atomic::Ordering::Relaxed),
        instances,
    }
}

/// Health check of an inference server beside the worker.
async fn probe(port: u16, uri: &str, expected: u16, timeout: Duration) -> InstanceState {
    let url = format!("http://127.0.0.1:{port}{uri}");
    let Ok(uri) = url.parse::<http::Uri>() else {
        return InstanceState::Starting;
    };
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    match tokio::time::timeout(timeout.min(Duration::from_secs(5)), client.get(uri)).await {
        Ok(Ok(resp)) if resp.status().as_u16() == expected => InstanceState::Ready,
        _ => InstanceState::Starting,
    }
}
