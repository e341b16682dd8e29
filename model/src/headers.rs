//! Header names shared by the gateway, the control plane and the workers.

/// Set by the gateway on requests it forwards to the control plane, carrying the internal credential,
/// so that the control plane can trust [`CLIENT_ADDR`]. Client copies are removed by the gateway.
pub const GATEWAY_AUTH: &str = "x-nvcf-gateway-auth";

/// The address of the client that reached the gateway (set by the gateway, trusted by the control plane
/// only together with a valid [`GATEWAY_AUTH`]).
pub const CLIENT_ADDR: &str = "x-nvcf-client-addr";

/// Key service request headers (nvcf-api.md §1.7).
pub const KEY_ISSUER_ID: &str = "key-issuer-id";
pub const KEY_OWNER_ID: &str = "key-owner-id";

/// Bootstrap secret header for minting an admin token from off-box callers.
pub const BOOTSTRAP_SECRET: &str = "x-nvcf-bootstrap-secret";

/// Request id header (nvcf-api.md §2.5).
pub const NVCF_REQID: &str = "nvcf-reqid";
