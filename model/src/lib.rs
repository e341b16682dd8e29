//! Shared types of the gateway, the control plane and the workers: NVCF DTOs, scopes, key records,
//! worker records, the state feed's wire format and problem documents. No I/O lives here.

#![forbid(unsafe_code)]

pub mod credentials;
pub mod deployment;
pub mod feed;
pub mod function;
pub mod headers;
pub mod keys;
pub mod problem;
pub mod queues;
pub mod scopes;
pub mod time;
pub mod worker;

/// The single account of a self-hosted installation (nvcf-api.md §3.2).
pub const NCA_ID: &str = "nvcf-default";

/// The NVCF service id that keys are issued for (nvcf-api.md §1.7).
pub const NVCF_SERVICE_ID: &str = "nvidia-cloud-functions-ncp-service-id-aketm";
