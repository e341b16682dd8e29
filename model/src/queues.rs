//! Queue-depth reports: each gateway tells the control plane how many invocations wait in its
//! per-version queues, and `/v2/nvcf/queues/...` answers the sum over gateways.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `POST /internal/v1/gateways/{gatewayId}/queues`: one gateway's whole picture, replacing its
/// previous report. Versions not listed have no queue on that gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueReport {
    pub queues: Vec<QueueDepth>,
    /// How long the report stands if no newer one comes (a gateway that died stops counting).
    pub valid_for_ms: u64,
}

/// Invocations of one version waiting on one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueDepth {
    pub function_version_id: Uuid,
    pub queue_depth: u64,
}
