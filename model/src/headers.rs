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

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the legacy ones
/// proxies drop (nvcf-api.md §2.1 step 3).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The hop-by-hop headers of one message: the fixed ones ([`HOP_BY_HOP`]) and those its
/// `Connection` headers name.
#[derive(Debug)]
pub struct HopByHop<'a> {
    /// The names the message's `Connection` headers list (rarely any; inline room for two).
    named: smallvec::SmallVec<[&'a str; 2]>,
}

impl<'a> HopByHop<'a> {
    pub fn of(headers: &'a http::HeaderMap) -> Self {
        let named = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|list| list.split(',').map(str::trim))
            .filter(|token| !token.is_empty())
            .collect();
        Self { named }
    }

    /// Whether a header of this name is one of them.
    pub fn contains(&self, name: &http::HeaderName) -> bool {
        let name = name.as_str();
        HOP_BY_HOP.contains(&name) || self.named.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

/// Removes `Connection`, every header it names, and the fixed hop-by-hop headers. One pass over
/// the names present (usually none of them) instead of a hashed removal per listed name: this runs
/// on every proxied request and response.
pub fn remove_hop_by_hop(headers: &mut http::HeaderMap) {
    let dropped: Vec<http::HeaderName> = {
        let hop = HopByHop::of(headers);
        headers
            .keys()
            .filter(|name| hop.contains(name))
            .cloned()
            .collect()
    };
    for name in dropped {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_named_headers_go() {
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("connection", "x-a, keep-alive"),
            ("x-a", "1"),
            ("te", "trailers"),
            ("x-keep", "2"),
        ] {
            h.insert(
                http::HeaderName::from_static(k),
                http::HeaderValue::from_static(v),
            );
        }
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-keep"]);
    }
}
