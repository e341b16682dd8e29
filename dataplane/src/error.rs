//! Gateway errors: who caused each one, and the single function that turns an error into a status,
//! an `application/problem+json` body and a metric.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use model::problem::{CONTENT_TYPE, Problem};

use crate::body::{Body, full};

/// Who caused an error (labels `gateway_errors_total{cause}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The client sent something we refuse (unknown route, oversized body, broken body).
    Client,
    /// The control plane could not be reached, timed out or broke the exchange.
    ControlPlane,
    /// The gateway itself cannot serve this (not built yet, a bug).
    Internal,
}

impl Cause {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::ControlPlane => "control_plane",
            Self::Internal => "internal",
        }
    }
}

/// An error answering one request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route for this Host and path (also every `/internal/` path).
    #[error("No route for host '{host}' and path '{path}'")]
    NoRoute { host: String, path: String },
    /// The request body is larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The client's request body broke off or could not be read.
    #[error("reading the request body failed: {0}")]
    ClientBody(String),
    /// The request cannot be forwarded as it is (e.g. a header that cannot be rewritten).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The invocation path is built in a later issue.
    #[error("the invocation path is not available in this build yet")]
    InvocationUnavailable,
    /// Connecting to the control plane failed.
    #[error("control plane unreachable: {0}")]
    ControlPlaneUnreachable(String),
    /// The control plane did not answer with response headers in time.
    #[error("control plane did not answer within {}", humantime::format_duration(*.0))]
    ControlPlaneTimeout(Duration),
    /// The control plane broke the exchange after the connection was made.
    #[error("control plane request failed: {0}")]
    ControlPlaneFailed(String),
    /// A gateway bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// Who caused this error.
    pub fn cause(&self) -> Cause {
        match self {
            Self::NoRoute { .. }
            | Self::BodyTooLarge { .. }
            | Self::ClientBody(_)
            | Self::BadRequest(_) => Cause::Client,
            Self::ControlPlaneUnreachable(_)
            | Self::ControlPlaneTimeout(_)
            | Self::ControlPlaneFailed(_) => Cause::ControlPlane,
            Self::InvocationUnavailable | Self::Internal(_) => Cause::Internal,
        }
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientBody(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::InvocationUnavailable => StatusCode::NOT_IMPLEMENTED,
            Self::ControlPlaneUnreachable(_) | Self::ControlPlaneFailed(_) => {
                StatusCode::BAD_GATEWAY
            }
            Self::ControlPlaneTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// THE mapping from an error to what the client sees: status, problem document with `instance`
    /// set to the request path, and one `gateway_errors_total{cause, status}` increment.
    pub fn into_response(self, instance: &str) -> Response<Body> {
        let status = self.status();
        let cause = self.cause();
        crate::metrics::record_error(cause.label(), status);
        match cause {
            Cause::Client => tracing::debug!(%status, error = %self, instance, "request refused"),
            Cause::ControlPlane | Cause::Internal => {
                tracing::warn!(%status, cause = cause.label(), error = %self, instance, "request failed");
            }
        }
        let problem = Problem::new(status, self.to_string()).with_instance(instance);
        let mut response = Response::new(full(Bytes::from(problem.to_json())));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

/// An error that stops [`crate::run`] as a whole.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The listener could not be used (e.g. its local address is unavailable).
    #[error("dataplane listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The configuration cannot be used (normally caught by [`crate::DataplaneFile::validate`]).
    #[error("{0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn problem_body_and_headers() {
        let err = GatewayError::NoRoute {
            host: "foo.example".into(),
            path: "/x".into(),
        };
        assert_eq!(err.cause(), Cause::Client);
        let resp = err.into_response("/x");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let p: Problem = serde_json::from_slice(&body).expect("problem json");
        assert_eq!(p.status, 404);
        assert_eq!(
            p.type_.as_deref(),
            Some("urn:nv-boot:problem-details:not-found")
        );
        assert_eq!(
            p.detail.as_deref(),
            Some("No route for host 'foo.example' and path '/x'")
        );
        assert_eq!(p.instance.as_deref(), Some("/x"));
    }

    #[test]
    fn statuses_and_causes() {
        let cases = [
            (GatewayError::BodyTooLarge { limit: 1 }, 413, Cause::Client),
            (GatewayError::ClientBody("x".into()), 400, Cause::Client),
            (GatewayError::InvocationUnavailable, 501, Cause::Internal),
            (
                GatewayError::ControlPlaneUnreachable("x".into()),
                502,
                Cause::ControlPlane,
            ),
            (
                GatewayError::ControlPlaneTimeout(Duration::from_secs(1)),
                504,
                Cause::ControlPlane,
            ),
            (
                GatewayError::ControlPlaneFailed("x".into()),
                502,
                Cause::ControlPlane,
            ),
            (GatewayError::Internal("x".into()), 500, Cause::Internal),
        ];
        for (err, status, cause) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.cause(), cause, "{err}");
        }
        assert_eq!(
            GatewayError::ControlPlaneTimeout(Duration::from_secs(30)).to_string(),
            "control plane did not answer within 30s"
        );
    }
}
