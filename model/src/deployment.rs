//! Deployment types (nvcf-api.md §1.3): requests, the stored deployment and its DTOs.

use crate::function::FunctionStatus;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One GPU specification as given on input; validated by the control plane.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpecInput {
    pub gpu_specification_id: Option<Uuid>,
    pub gpu: Option<String>,
    pub instance_type: Option<String>,
    pub backend: Option<String>,
    pub min_instances: Option<i64>,
    pub max_instances: Option<i64>,
    pub max_request_concurrency: Option<i64>,
    pub clusters: Option<Vec<String>>,
    pub regions: Option<Vec<String>>,
    pub attributes: Option<Vec<String>>,
    pub availability_zones: Option<Vec<String>>,
    pub configuration: Option<serde_json::Value>,
    pub preferred_order: Option<i64>,
    pub cpu_arch: Option<String>,
    pub os: Option<String>,
    pub driver_version: Option<String>,
    pub storage: Option<String>,
    pub system_memory: Option<String>,
    pub gpu_memory: Option<String>,
    pub autoscaling_configuration: Option<serde_json::Value>,
    pub helm_validation_policy: Option<serde_json::Value>,
}

/// `FunctionDeploymentRequest` (POST) and `UpdateFunctionDeploymentRequest` (deprecated PUT).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRequest {
    pub deployment_specifications: Option<Vec<GpuSpecInput>>,
}

/// `UpdateGpuSpecificationRequest` (PATCH).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateGpuSpecRequest {
    pub max_instances: Option<i64>,
    pub min_instances: Option<i64>,
    pub autoscaling_configuration: Option<serde_json::Value>,
    pub autoscaling_configuration_policy: Option<String>,
}

/// `GpuSpecificationDto` as stored and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpec {
    pub gpu_specification_id: Uuid,
    pub gpu: String,
    pub backend: String,
    pub max_instances: u32,
    pub min_instances: u32,
    pub instance_type: String,
    pub max_request_concurrency: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zones: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_order: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<String>,
    /// Helm values overrides (Helm functions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_validation_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling_configuration: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling_configuration_policy: Option<String>,
}

/// A deployment as the control plane stores it and the feed carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub deployment_id: Uuid,
    pub function_id: Uuid,
    pub function_version_id: Uuid,
    pub function_name: String,
    pub nca_id: String,
    pub deployment_specifications: Vec<GpuSpec>,
    /// Set by a graceful delete: no new work is assigned, and the record goes once drained.
    #[serde(default)]
    pub draining: bool,
    pub created_at: Timestamp,
    pub last_updated_at: Timestamp,
}

impl Deployment {
    /// Sum of `minInstances` over the specifications (saturating: stored counts are not trusted
    /// to be small, and an overflow must not take the status engine down).
    pub fn min_instances(&self) -> u32 {
        self.deployment_specifications
            .iter()
            .fold(0u32, |sum, s| sum.saturating_add(s.min_instances))
    }
}

/// `healthInfo[]` entries (only present when something failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthInfo {
    pub gpu: String,
    pub backend: String,
    pub instance_type: String,
    pub error: String,
}

/// `FunctionDeploymentDto`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentDto {
    pub function_id: Uuid,
    pub function_version_id: Uuid,
    pub deployment_id: Uuid,
    pub function_name: String,
    pub nca_id: String,
    pub function_status: FunctionStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_info: Vec<HealthInfo>,
    pub deployment_specifications: Vec<GpuSpec>,
    pub created_at: Timestamp,
    pub last_updated_at: Timestamp,
}

impl DeploymentDto {
    /// Renders a stored deployment with the version's current status.
    pub fn new(d: &Deployment, status: FunctionStatus, health_info: Vec<HealthInfo>) -> Self {
        Self {
            function_id: d.function_id,
            function_version_id: d.function_version_id,
            deployment_id: d.deployment_id,
            function_name: d.function_name.clone(),
            nca_id: d.nca_id.clone(),
            function_status: status,
            health_info,
            deployment_specifications: d.deployment_specifications.clone(),
            created_at: d.created_at,
            last_updated_at: d.last_updated_at,
        }
    }
}
