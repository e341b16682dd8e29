//! The streaming reverse proxy to the control plane for management and key-service routes: one
//! pooled HTTP/1.1 client, bodies streamed both ways, headers rewritten by [`crate::headers`].

use std::error::Error as StdError;
use std::net::IpAddr;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, Uri, Version, header};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{self, Body, BodyFailure, LimitedBody, RequestBody};
use crate::config::DataplaneConfig;
use crate::error::{DataplaneError, GatewayError};
use crate::headers::{prepare_upstream_request, remove_hop_by_hop};

/// Idle pooled connections to the control plane are closed after this long (below the usual
/// 60–75 s server keep-alive timeouts, so we rarely reuse a connection the server is closing).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Longest TCP connect to the control plane (a local or same-network service connects in
/// milliseconds; a black-holed address should fail fast as 502).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept to the control plane; management traffic is light.
const POOL_MAX_IDLE: usize = 32;

/// The reverse proxy to the control plane.
#[derive(Debug)]
pub(crate) struct Proxy {
    client: Client<HttpConnector, LimitedBody>,
    upstream: Authority,
    token: HeaderValue,
    max_body: u64,
    timeout: Duration,
}

impl Proxy {
    pub(crate) fn new(config: &DataplaneConfig) -> Result<Self, DataplaneError> {
        let upstream = config
            .controlplane_url
            .authority()
            .cloned()
            .ok_or_else(|| {
                DataplaneError::Config("dataplane.controlplane-url: must name a host".to_owned())
            })?;
        let mut token = HeaderValue::from_str(&config.internal_token).map_err(|_| {
            DataplaneError::Config("dataplane internal token: not a valid header value".to_owned())
        })?;
        token.set_sensitive(true);

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Bound connects separately so an unreachable control plane is a quick 502, not a 504.
        connector.set_connect_timeout(Some(config.upstream_timeout.min(CONNECT_TIMEOUT)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build(connector);
        Ok(Self {
            client,
            upstream,
            token,
            max_body: config.max_management_body_bytes,
            timeout: config.upstream_timeout,
        })
    }

    /// Forwards one request from the client at `peer` and returns the control plane's response
    /// (streamed), or the error to answer with.
    pub(crate) async fn forward(
        &self,
        req: Request<RequestBody>,
        peer: IpAddr,
    ) -> Result<Response<Body>, GatewayError> {
        let (mut parts, incoming) = req.into_parts();
        if declared_length(&parts.headers).is_some_and(|len| len > self.max_body) {
            return Err(GatewayError::BodyTooLarge {
                limit: self.max_body,
            });
        }

        // h2 requests carry the host in :authority; give the HTTP/1.1 request a Host header.
        if !parts.headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.upstream.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| {
                GatewayError::BadRequest(format!("cannot forward this request target: {e}"))
            })?;
        parts.version = Version::HTTP_11;
        prepare_upstream_request(&mut parts.headers, &self.token, peer);

        let (limited, outcome) = LimitedBody::new(incoming, self.max_body);
        let sent = tokio::time::timeout(
            self.timeout,
            self.client.request(Request::from_parts(parts, limited)),
        )
        .await;

        // A body failure explains whatever the upstream exchange reported.
        let body_error = |detail: &dyn StdError| match outcome.failure() {
            Some(BodyFailure::TooLarge) => Some(GatewayError::BodyTooLarge {
                limit: self.max_body,
            }),
            Some(BodyFailure::ClientError) => Some(GatewayError::ClientBody(chain(detail))),
            None => None,
        };
        match sent {
            Err(elapsed) => {
                Err(body_error(&elapsed).unwrap_or(GatewayError::ControlPlaneTimeout(self.timeout)))
            }
            Ok(Err(e)) => Err(body_error(&e).unwrap_or_else(|| {
                if e.is_connect() {
                    GatewayError::ControlPlaneUnreachable(chain(&e))
                } else {
                    GatewayError::ControlPlaneFailed(chain(&e))
                }
            })),
            Ok(Ok(response)) => {
                let (mut parts, incoming) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(parts, body::stream(incoming)))
            }
        }
    }
}

/// The declared Content-Length (largest, if a client sent several), when there is one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .max()
}

/// An error and its sources, `a: b: c` (hyper's top-level messages alone say little).
fn chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.ends_with(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_length_takes_the_largest() {
        let mut h = HeaderMap::new();
        assert_eq!(declared_length(&h), None);
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert_eq!(declared_length(&h), Some(10));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5, 99"));
        assert_eq!(declared_length(&h), Some(99));
    }

    #[test]
    fn chain_joins_sources() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(chain(&outer), "refused");
        #[derive(Debug, thiserror::Error)]
        #[error("connect")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("refused"));
        assert_eq!(chain(&e), "connect: refused");
    }
}
