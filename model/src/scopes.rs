//! Scopes (nvcf-api.md §4.1), the admin token's fixed set (§4.2) and how a credential's authorities
//! are checked (`hasAnyAuthority('x', 'apikey:x')`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The scopes this project enforces. Others may appear in a key's policy: the record keeps them as
/// strings, and a credential's grants ignore them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    RegisterFunction,
    ListFunctions,
    ListFunctionsDetails,
    UpdateFunction,
    DeleteFunction,
    DeployFunction,
    InvokeFunction,
    QueueDetails,
    ListClusterGroups,
    UpdateSecrets,
    ManageTelemetries,
    ManageRegistryCredentials,
    ClusterManagement,
}

impl Scope {
    /// Every scope, in declaration order (each one's [`Self::bit`] is its index here). A new
    /// variant goes here too, or no credential is ever found to hold it.
    pub const ALL: [Self; 13] = [
        Self::RegisterFunction,
        Self::ListFunctions,
        Self::ListFunctionsDetails,
        Self::UpdateFunction,
        Self::DeleteFunction,
        Self::DeployFunction,
        Self::InvokeFunction,
        Self::QueueDetails,
        Self::ListClusterGroups,
        Self::UpdateSecrets,
        Self::ManageTelemetries,
        Self::ManageRegistryCredentials,
        Self::ClusterManagement,
    ];

    /// The scope named `s` exactly as NVCF spells it, if it is one this project enforces.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    /// This scope's bit in a set of scopes held as a mask.
    pub const fn bit(self) -> u16 {
        const { assert!(Self::ALL.len() <= 16, "scope masks are u16") };
        1 << self as u16
    }

    /// The scope string as NVCF spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RegisterFunction => "register_function",
            Self::ListFunctions => "list_functions",
            Self::ListFunctionsDetails => "list_functions_details",
            Self::UpdateFunction => "update_function",
            Self::DeleteFunction => "delete_function",
            Self::DeployFunction => "deploy_function",
            Self::InvokeFunction => "invoke_function",
            Self::QueueDetails => "queue_details",
            Self::ListClusterGroups => "list_cluster_groups",
            Self::UpdateSecrets => "update_secrets",
            Self::ManageTelemetries => "manage_telemetries",
            Self::ManageRegistryCredentials => "manage_registry_credentials",
            Self::ClusterManagement => "cluster-management",
        }
    }

    /// Whether an API key (authority `apikey:<scope>`) may use this scope. NVCF has no
    /// `apikey:list_cluster_groups` (nvcf-api.md §1.4, §4.2).
    pub const fn api_key_may_hold(self) -> bool {
        !matches!(self, Self::ListClusterGroups | Self::ClusterManagement)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The admin token's scopes: NVIDIA's fixed set plus `list_cluster_groups` and `queue_details`, so an
/// operator can see where to deploy and how queues stand.
pub const ADMIN_SCOPES: &[Scope] = &[
    Scope::RegisterFunction,
    Scope::ListFunctions,
    Scope::ListFunctionsDetails,
    Scope::DeployFunction,
    Scope::UpdateFunction,
    Scope::UpdateSecrets,
    Scope::DeleteFunction,
    Scope::ManageTelemetries,
    Scope::ManageRegistryCredentials,
    Scope::ClusterManagement,
    Scope::ListClusterGroups,
    Scope::QueueDetails,
];

/// Which kind of credential a principal presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// The admin token from `POST /v1/admin/keys` (NVIDIA's JWT; ours is opaque, see docs).
    Admin,
    /// A scoped `nvapi-` key from `POST /v1/keys`.
    ApiKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bits_are_one_to_one() {
        let mut seen = 0u16;
        for (i, scope) in Scope::ALL.into_iter().enumerate() {
            assert_eq!(scope as usize, i, "ALL is in declaration order");
            assert_eq!(Scope::from_name(scope.as_str()), Some(scope));
            assert_eq!(seen & scope.bit(), 0, "{scope} shares a bit");
            seen |= scope.bit();
        }
        assert_eq!(Scope::from_name("invoke_function "), None);
        assert_eq!(Scope::from_name("apikey:invoke_function"), None);
    }
}
