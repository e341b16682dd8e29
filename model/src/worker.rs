//! Worker registry types: what a worker reports when it registers and heartbeats, and the worker and
//! instance records the control plane publishes on the feed.

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One kind of device a worker offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuOffer {
    /// GPU name as deployments name it, e.g. `H100`, or `CPU` for the CPU backend.
    pub name: String,
    /// Memory of one device in bytes.
    pub memory_bytes: u64,
    /// Number of such devices on the worker.
    pub count: u32,
}

/// One instance type a worker offers, e.g. `NCP.GPU.H100_1x`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTypeOffer {
    pub name: String,
    pub gpu: String,
    pub gpu_count: u32,
    pub description: String,
}

/// `POST /internal/v1/workers` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRegistration {
    pub worker_id: String,
    /// Base URL the gateway opens invocation streams to, e.g. `http://127.0.0.1:9000`.
    pub address: String,
    /// Cluster group (`backend`) this worker belongs to, e.g. `nvcf-default`.
    pub cluster_group: String,
    /// Cluster name inside the group.
    pub cluster: String,
    pub gpus: Vec<GpuOffer>,
    pub instance_types: Vec<InstanceTypeOffer>,
    /// How many function-version instances the worker hosts at once.
    pub capacity: u32,
}

/// What a worker says of one instance assigned to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Starting,
    Ready,
    Failed,
}

/// One instance's state in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReport {
    pub instance_id: Uuid,
    pub state: InstanceState,
    /// Requests of this instance still in progress (a graceful undeploy waits for 0).
    #[serde(default)]
    pub in_flight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /internal/v1/workers/{id}/heartbeat` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// False when the worker lost its device.
    pub healthy: bool,
    #[serde(default)]
    pub instances: Vec<InstanceReport>,
}

/// Answer to a registration or heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatAck {
    pub worker_id: String,
    /// How often the control plane expects heartbeats.
    pub heartbeat_interval_ms: u64,
    /// The feed revision at the time of the answer.
    pub revision: u64,
}

/// Liveness of a worker as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkerStatus {
    /// Heartbeating and healthy.
    Ready,
    /// Heartbeating but reporting its device lost.
    Unhealthy,
    /// No heartbeat within the timeout.
    Lost,
}

/// A worker as the feed carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRecord {
    #[serde(flatten)]
    pub registration: WorkerRegistration,
    pub status: WorkerStatus,
    pub registered_at: Timestamp,
}

impl WorkerRecord {
    /// The worker id.
    pub fn id(&self) -> &str {
        &self.registration.worker_id
    }
}

/// Instance status, as NVCF's `InstanceDto.instanceStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    /// Assigned, not yet reported ready.
    Starting,
    /// Reported ready by its worker.
    Active,
    /// The worker reported a failure.
    Errored,
}

/// One function version placed on one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    pub instance_id: Uuid,
    pub worker_id: String,
    pub function_id: Uuid,
    pub function_version_id: Uuid,
    pub deployment_id: Uuid,
    pub gpu_specification_id: Uuid,
    pub gpu: String,
    pub instance_type: String,
    pub backend: String,
    pub max_request_concurrency: u32,
    pub status: InstanceStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
