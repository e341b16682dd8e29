//! The worker registry and the status engine, as plain functions over the replicated state that
//! take `now` and return the changes to commit. Nothing here does I/O or reads a clock.
//!
//! * liveness: a worker silent for longer than the heartbeat timeout is LOST (and forgotten later);
//! * assignment: each GPU specification of a deployment gets up to `maxInstances` instances on
//!   distinct READY workers that offer its GPU and instance type (and backend/clusters when given);
//! * status: a version's status follows the instances its workers report ready (nvcf-api.md §3.1).

use crate::store::Change;
use model::deployment::Deployment;
use model::feed::{Entity, EntityKind, FeedState};
use model::function::FunctionStatus;
use model::time::Timestamp;
use model::worker::{
    Heartbeat, InstanceRecord, InstanceState, InstanceStatus, WorkerRecord, WorkerStatus,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What the control plane knows of workers beyond the feed: when each was last heard from and what
/// it last said of its instances' in-flight work. Kept in memory; after a restart every worker gets
/// a fresh timeout window to heartbeat again.
#[derive(Debug, Default)]
pub struct Liveness {
    last_seen: HashMap<String, Instant>,
    in_flight: HashMap<Uuid, u32>,
}

impl Liveness {
    /// Records a sign of life.
    pub fn seen(&mut self, worker_id: &str, now: Instant) {
        self.last_seen.insert(worker_id.to_owned(), now);
    }

    /// Records in-flight counts from a heartbeat.
    pub fn record(&mut self, hb: &Heartbeat) {
        for r in &hb.instances {
            self.in_flight.insert(r.instance_id, r.in_flight);
        }
    }

    /// Starts the clock for every known worker (called once at start-up).
    pub fn adopt(&mut self, state: &FeedState, now: Instant) {
        for id in state.workers.keys() {
            self.last_seen.entry(id.clone()).or_insert(now);
        }
    }

    fn silent_for(&self, worker_id: &str, now: Instant) -> Duration {
        self.last_seen
            .get(worker_id)
            .map_or(Duration::MAX, |t| now.saturating_duration_since(*t))
    }

    fn forget(&mut self, worker_id: &str) {
        self.last_seen.remove(worker_id);
    }
}

/// Changes a heartbeat causes: worker status and the states of the instances it reports.
pub fn heartbeat_changes(
    state: &FeedState,
    worker_id: &str,
    hb: &Heartbeat,
    now: Timestamp,
) -> Vec<Change> {
    let mut out = Vec::new();
    let Some(worker) = state.workers.get(worker_id) else {
        return out;
    };
    let status = if hb.healthy {
        WorkerStatus::Ready
    } else {
        WorkerStatus::Unhealthy
    };
    if worker.status != status {
        out.push(Change::Upsert(Entity::Worker(WorkerRecord {
            status,
            ..worker.clone()
        })));
    }
    for report in &hb.instances {
        let Some(inst) = state.instances.get(&report.instance_id) else {
            continue;
        };
        if inst.worker_id != worker_id {
            continue;
        }
        let (status, error) = match report.state {
            InstanceState::Starting => (InstanceStatus::Starting, None),
            InstanceState::Ready => (InstanceStatus::Active, None),
            InstanceState::Failed => (
                InstanceStatus::Errored,
                Some(
                    report
                        .error
                        .clone()
                        .unwrap_or_else(|| "instance failed".into()),
                ),
            ),
        };
        if inst.status != status || inst.error != error {
            out.push(Change::Upsert(Entity::Instance(InstanceRecord {
                status,
                error,
                updated_at: now,
                ..inst.clone()
            })));
        }
    }
    out
}

/// Marks silent workers LOST, drops their instances, and forgets workers silent for very long.
pub fn liveness_changes(
    state: &FeedState,
    live: &mut Liveness,
    now: Instant,
    timeout: Duration,
    forget_after: Duration,
) -> Vec<Change> {
    let mut out = Vec::new();
    let mut gone: HashSet<&str> = HashSet::new();
    for (id, w) in &state.workers {
        let silent = live.silent_for(id, now);
        if silent > forget_after {
            out.push(Change::Delete(EntityKind::Worker, id.clone()));
            live.forget(id);
            gone.insert(id);
        } else if silent > timeout {
            if w.status != WorkerStatus::Lost {
                out.push(Change::Upsert(Entity::Worker(WorkerRecord {
                    status: WorkerStatus::Lost,
                    ..w.clone()
                })));
            }
            gone.insert(id);
        }
    }
    for inst in state.instances.values() {
        let orphan = !state.workers.contains_key(&inst.worker_id);
        if orphan || gone.contains(inst.worker_id.as_str()) {
            out.push(Change::Delete(
                EntityKind::Instance,
                inst.instance_id.to_string(),
            ));
        }
    }
    out
}

/// The live deployment of a version, if any (a draining one does not count).
pub fn live_deployment(state: &FeedState, version_id: Uuid) -> Option<&Deployment> {
    state
        .deployments
        .values()
        .find(|d| d.function_version_id == version_id && !d.draining)
}

/// Any deployment of a version, draining or not.
pub fn any_deployment(state: &FeedState, version_id: Uuid) -> Option<&Deployment> {
    state
        .deployments
        .values()
        .find(|d| d.function_version_id == version_id)
}

/// Changes that remove a deployment together with its instances.
pub fn removal(state: &FeedState, deployment_id: Uuid) -> Vec<Change> {
    let mut out: Vec<Change> = state
        .instances
        .values()
        .filter(|i| i.deployment_id == deployment_id)
        .map(|i| Change::Delete(EntityKind::Instance, i.instance_id.to_string()))
        .collect();
    out.push(Change::Delete(
        EntityKind::Deployment,
        deployment_id.to_string(),
    ));
    out
}

fn worker_offers(w: &WorkerRecord, gpu: &str, instance_type: &str) -> bool {
    w.registration
        .instance_types
        .iter()
        .any(|it| it.name.eq_ignore_ascii_case(instance_type) && it.gpu.eq_ignore_ascii_case(gpu))
}

/// Places and removes instances so that each specification of each live deployment has up to
/// `maxInstances` of them; removes instances of deployments that are gone, and finishes graceful
/// deletions whose instances report no work in flight.
pub fn assignment_changes(state: &FeedState, live: &Liveness, now: Timestamp) -> Vec<Change> {
    let mut out = Vec::new();
    let mut removed: HashSet<Uuid> = HashSet::new();
    let mut used: HashMap<&str, u32> = HashMap::new();
    for inst in state.instances.values() {
        *used.entry(inst.worker_id.as_str()).or_default() += 1;
    }

    // Instances whose deployment is gone; draining deployments that have drained.
    for inst in state.instances.values() {
        if !state.deployments.contains_key(&inst.deployment_id) {
            out.push(Change::Delete(
                EntityKind::Instance,
                inst.instance_id.to_string(),
            ));
            removed.insert(inst.instance_id);
        }
    }
    for d in state.deployments.values().filter(|d| d.draining) {
        let mine: Vec<&InstanceRecord> = state
            .instances
            .values()
            .filter(|i| i.deployment_id == d.deployment_id)
            .collect();
        if mine
            .iter()
            .all(|i| live.in_flight.get(&i.instance_id).copied().unwrap_or(0) == 0)
        {
            out.extend(removal(state, d.deployment_id));
        }
    }

    // Deterministic order: deployments by creation, workers by id.
    let mut deployments: Vec<&Deployment> =
        state.deployments.values().filter(|d| !d.draining).collect();
    deployments.sort_by_key(|d| (d.created_at, d.deployment_id));
    let workers: BTreeMap<&str, &WorkerRecord> =
        state.workers.iter().map(|(k, v)| (k.as_str(), v)).collect();

    for d in deployments {
        let hosting: HashSet<&str> = state
            .instances
            .values()
            .filter(|i| {
                i.function_version_id == d.function_version_id && !removed.contains(&i.instance_id)
            })
            .map(|i| i.worker_id.as_str())
            .collect();
        let mut hosting: HashSet<String> = hosting.into_iter().map(str::to_owned).collect();
        for spec in &d.deployment_specifications {
            let mut existing: Vec<&InstanceRecord> = state
                .instances
                .values()
                .filter(|i| {
                    i.gpu_specification_id == spec.gpu_specification_id
                        && !removed.contains(&i.instance_id)
                })
                .collect();
            let max = spec.max_instances as usize;
            if existing.len() > max {
                // Scale down: give up instances that are not serving first, newest first.
                existing.sort_by_key(|i| {
                    (
                        i.status == InstanceStatus::Active,
                        std::cmp::Reverse(i.created_at),
                    )
                });
                for i in existing.iter().take(existing.len() - max) {
                    out.push(Change::Delete(
                        EntityKind::Instance,
                        i.instance_id.to_string(),
                    ));
                    hosting.remove(&i.worker_id);
                    if let Some(n) = used.get_mut(i.worker_id.as_str()) {
                        *n = n.saturating_sub(1);
                    }
                }
                continue;
            }
            let mut missing = max - existing.len();
            while missing > 0 {
                let pick = workers
                    .values()
                    .filter(|w| w.status == WorkerStatus::Ready)
                    .filter(|w| !hosting.contains(w.id()))
                    .filter(|w| worker_offers(w, &spec.gpu, &spec.instance_type))
                    .filter(|w| {
                        spec.backend.is_empty()
                            || w.registration
                                .cluster_group
                                .eq_ignore_ascii_case(&spec.backend)
                    })
                    .filter(|w| {
                        spec.clusters.as_ref().is_none_or(|c| {
                            c.is_empty() || c.iter().any(|c| c == &w.registration.cluster)
                        })
                    })
                    .filter(|w| used.get(w.id()).copied().unwrap_or(0) < w.registration.capacity)
                    // Spread: the worker with the most free slots first.
                    .max_by_key(|w| {
                        let free = w.registration.capacity - used.get(w.id()).copied().unwrap_or(0);
                        (free, std::cmp::Reverse(w.id().to_owned()))
                    });
                let Some(w) = pick else { break };
                out.push(Change::Upsert(Entity::Instance(InstanceRecord {
                    instance_id: Uuid::new_v4(),
                    worker_id: w.id().to_owned(),
                    function_id: d.function_id,
                    function_version_id: d.function_version_id,
                    deployment_id: d.deployment_id,
                    gpu_specification_id: spec.gpu_specification_id,
                    gpu: spec.gpu.clone(),
                    instance_type: spec.instance_type.clone(),
                    backend: w.registration.cluster_group.clone(),
                    max_request_concurrency: spec.max_request_concurrency,
                    status: InstanceStatus::Starting,
                    error: None,
                    created_at: now,
                    updated_at: now,
                })));
                hosting.insert(w.id().to_owned());
                *used.entry(w.id()).or_default() += 1;
                missing -= 1;
            }
        }
    }
    out
}

/// Counts of a deployment's instances as the status engine sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Readiness {
    /// ACTIVE instances on READY workers.
    pub ready: u32,
    pub errored: u32,
    pub total: u32,
}

/// Readiness of a deployment's instances.
pub fn readiness(state: &FeedState, deployment_id: Uuid) -> Readiness {
    let mut r = Readiness::default();
    for i in state
        .instances
        .values()
        .filter(|i| i.deployment_id == deployment_id)
    {
        r.total += 1;
        let worker_ready = state
            .workers
            .get(&i.worker_id)
            .is_some_and(|w| w.status == WorkerStatus::Ready);
        match i.status {
            InstanceStatus::Active if worker_ready => r.ready += 1,
            InstanceStatus::Errored => r.errored += 1,
            _ => {}
        }
    }
    r
}

/// The next status of a deployed version (nvcf-api.md §3.1).
pub fn next_status(current: FunctionStatus, min: u32, r: Readiness) -> FunctionStatus {
    use FunctionStatus::*;
    let enough = r.ready >= min;
    match current {
        Inactive | Deploying => {
            if enough {
                Active
            } else if r.total > 0 && r.errored == r.total {
                Error
            } else {
                Deploying
            }
        }
        Active | Degrading | Degraded => {
            if enough {
                Active
            } else if r.ready == 0 {
                Degraded
            } else {
                Degrading
            }
        }
        Error => Error,
    }
}

/// Status changes of every version, from its deployment and the readiness of its instances.
pub fn status_changes(state: &FeedState) -> Vec<Change> {
    let mut out = Vec::new();
    for f in state.functions.values() {
        let next = match live_deployment(state, f.version_id) {
            None => FunctionStatus::Inactive,
            Some(d) => next_status(
                f.status,
                d.min_instances(),
                readiness(state, d.deployment_id),
            ),
        };
        if next != f.status {
            let mut f = f.clone();
            f.status = next;
            out.push(Change::Upsert(Entity::Function(f)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use FunctionStatus::*;

    fn r(ready: u32, errored: u32, total: u32) -> Readiness {
        Readiness {
            ready,
            errored,
            total,
        }
    }

    #[test]
    fn status_table_follows_readiness() {
        assert_eq!(next_status(Deploying, 2, r(1, 0, 2)), Deploying);
        assert_eq!(next_status(Deploying, 2, r(2, 0, 2)), Active);
        assert_eq!(next_status(Deploying, 0, r(0, 0, 0)), Active);
        assert_eq!(next_status(Deploying, 1, r(0, 2, 2)), Error);
        assert_eq!(next_status(Active, 2, r(1, 0, 2)), Degrading);
        assert_eq!(next_status(Active, 2, r(0, 0, 1)), Degraded);
        assert_eq!(next_status(Degraded, 2, r(1, 0, 1)), Degrading);
        assert_eq!(next_status(Degrading, 2, r(2, 0, 2)), Active);
        assert_eq!(next_status(Degrading, 2, r(0, 0, 0)), Degraded);
        assert_eq!(next_status(Error, 1, r(1, 0, 1)), Error);
    }
}
