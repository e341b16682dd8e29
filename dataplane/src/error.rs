//! Gateway errors: who caused each one, and the single function that turns an error into a status,
//! an `application/problem+json` body and a metric.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use model::problem::{CONTENT_TYPE, Problem};
use uuid::Uuid;

use crate::body::{Body, full};
use crate::keys::AuthError;
use crate::routing::RouteError;

/// Who caused an error (labels `gateway_errors_total{cause}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The client sent something we refuse (unknown route, oversized body, broken body).
    Client,
    /// The control plane could not be reached, timed out or broke the exchange.
    ControlPlane,
    /// The gateway itself cannot serve this (not built yet, a bug).
    Internal,
    /// Admission refused: a version's workers or the gateway are full.
    Capacity,
    /// A worker could not be reached, did not answer in time, or answered unusably.
    Worker,
}

impl Cause {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::ControlPlane => "control_plane",
            Self::Internal => "internal",
            Self::Capacity => "capacity",
            Self::Worker => "worker",
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
    /// An HTTP/1.1 request head that does not parse or frames its body ambiguously (400).
    #[error("{0}")]
    MalformedHead(String),
    /// An HTTP/1.1 request head larger than `max-header-bytes`, or with too many fields (431).
    #[error("{0}")]
    HeadTooLarge(String),
    /// A request body in a transfer-coding other than chunked (501).
    #[error("{0}")]
    UnsupportedTransferCoding(String),
    /// An HTTP/1.1 request head that took longer than `header-read-timeout` (408).
    #[error("the request head did not arrive within {}", humantime::format_duration(*.0))]
    HeadTimeout(Duration),
    /// The credential is missing, malformed, unknown, expired or suspended (401).
    #[error("{0}")]
    Unauthorized(AuthError),
    /// The credential may not invoke this function (403).
    #[error("{0}")]
    Forbidden(AuthError),
    /// The function or version cannot be invoked (404, or 400 when DEGRADED).
    #[error("{0}")]
    Route(RouteError),
    /// A function or version id in the path or headers is not a UUID.
    #[error("invalid {what} '{value}': must be a UUID")]
    InvalidId { what: &'static str, value: String },
    /// `NVCF-POLL-SECONDS` is not a number of seconds up to 3600 (NVIDIA's text).
    #[error("failed to parse poll duration")]
    PollDuration,
    /// No parked request with this id (never answered 202, already fetched, or expired).
    #[error("request '{0}' is not pending")]
    RequestNotFound(String),
    /// A parked request's result could be kept neither in memory nor in a spill file (500).
    #[error("the result of request {request_id} was lost: {detail}")]
    ResultLost { request_id: Uuid, detail: String },
    /// The version's workers run as many invocations as they take (429, `Retry-After`).
    #[error("function version {0} is at its concurrency limit and its queue is full; retry later")]
    VersionFull(Uuid),
    /// The version stayed full for as long as the request could wait in its queue (429).
    #[error("function version {version} stayed at its concurrency limit for {}; retry later", humantime::format_duration(*.waited))]
    QueueTimeout { version: Uuid, waited: Duration },
    /// The gateway runs as many invocations as `max-in-flight` allows (429, `Retry-After`).
    #[error("the gateway is at its in-flight limit of {0}; retry later")]
    GatewayFull(u64),
    /// The version has no ready worker (503).
    #[error("no healthy worker for function version {0}")]
    NoHealthyWorker(Uuid),
    /// Connecting to or talking to the worker failed before a response head (502).
    #[error("worker unreachable: {detail}")]
    WorkerUnreachable { request_id: Uuid, detail: String },
    /// The worker sent no response head within poll + 2 s (504).
    #[error("no response from the function within {}", humantime::format_duration(*.waited))]
    WorkerTimeout { request_id: Uuid, waited: Duration },
    /// The exec wrapper got a 200 whose body is not JSON, or could not read it (500).
    #[error("the function's response cannot be wrapped: {detail}")]
    WorkerResponse { request_id: Uuid, detail: String },
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
            | Self::BadRequest(_)
            | Self::MalformedHead(_)
            | Self::HeadTooLarge(_)
            | Self::UnsupportedTransferCoding(_)
            | Self::HeadTimeout(_)
            | Self::Unauthorized(_)
            | Self::Forbidden(_)
            | Self::Route(_)
            | Self::InvalidId { .. }
            | Self::PollDuration
            | Self::RequestNotFound(_) => Cause::Client,
            Self::VersionFull(_) | Self::QueueTimeout { .. } | Self::GatewayFull(_) => {
                Cause::Capacity
            }
            Self::NoHealthyWorker(_)
            | Self::WorkerUnreachable { .. }
            | Self::WorkerTimeout { .. }
            | Self::WorkerResponse { .. } => Cause::Worker,
            Self::ControlPlaneUnreachable(_)
            | Self::ControlPlaneTimeout(_)
            | Self::ControlPlaneFailed(_) => Cause::ControlPlane,
            Self::Internal(_) | Self::ResultLost { .. } => Cause::Internal,
        }
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute { .. } | Self::RequestNotFound(_) => StatusCode::NOT_FOUND,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientBody(_)
            | Self::BadRequest(_)
            | Self::MalformedHead(_)
            | Self::InvalidId { .. }
            | Self::PollDuration => StatusCode::BAD_REQUEST,
            Self::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UnsupportedTransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            Self::HeadTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Route(RouteError::NotFound { .. }) => StatusCode::NOT_FOUND,
            Self::Route(RouteError::Degraded { .. }) => StatusCode::BAD_REQUEST,
            Self::VersionFull(_) | Self::QueueTimeout { .. } | Self::GatewayFull(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::NoHealthyWorker(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::ControlPlaneUnreachable(_)
            | Self::ControlPlaneFailed(_)
            | Self::WorkerUnreachable { .. } => StatusCode::BAD_GATEWAY,
            Self::ControlPlaneTimeout(_) | Self::WorkerTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::Internal(_) | Self::WorkerResponse { .. } | Self::ResultLost { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The invocation's request id, for errors raised after the request reached the worker path
    /// (NVCF answers those with `NVCF-REQID` and `NVCF-STATUS: errored`).
    pub fn request_id(&self) -> Option<Uuid> {
        match self {
            Self::WorkerUnreachable { request_id, .. }
            | Self::WorkerTimeout { request_id, .. }
            | Self::WorkerResponse { request_id, .. }
            | Self::ResultLost { request_id, .. } => Some(*request_id),
            _ => None,
        }
    }

    /// THE mapping from an error to what the client sees: status, problem document with `instance`
    /// set to the request path, one `gateway_errors_total{cause, status}` increment, and the
    /// headers some errors carry (`Retry-After` on 429; `NVCF-REQID`/`NVCF-STATUS` once a request
    /// reached the worker path).
    pub(crate) fn into_response(self, instance: &str) -> Response<Body> {
        let status = self.status();
        let cause = self.cause();
        crate::metrics::record_error(cause.label(), status);
        match cause {
            Cause::Client | Cause::Capacity => {
                tracing::debug!(%status, error = %self, instance, "request refused");
            }
            Cause::ControlPlane | Cause::Internal | Cause::Worker => {
                tracing::warn!(%status, cause = cause.label(), error = %self, instance, "request failed");
            }
        }
        let mut problem = Problem::new(status, self.to_string());
        // Empty for a request whose head did not parse: it names no path.
        if !instance.is_empty() {
            problem = problem.with_instance(instance);
        }
        let mut response = Response::new(full(Bytes::from(problem.to_json())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(id) = self.request_id() {
            crate::invoke::respond::mark(
                headers,
                &crate::headers::request_id_value(id),
                StatusCode::INTERNAL_SERVER_ERROR,
            );
        }
        response
    }
}

/// An error that stops [`crate::run`] as a whole.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The listener could not be used (e.g. its local address is unavailable).
    #[error("dataplane listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The serving threads (`serving-threads`) could not be started.
    #[error("dataplane serving threads: {0}")]
    Threads(#[source] std::io::Error),
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
    fn invocation_errors_carry_their_headers() {
        let resp = GatewayError::VersionFull(Uuid::nil()).into_response("/x");
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert!(resp.headers().get("nvcf-reqid").is_none());
        let id = Uuid::new_v4();
        let resp = GatewayError::WorkerTimeout {
            request_id: id,
            waited: Duration::from_secs(3),
        }
        .into_response("/x");
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(resp.headers()["nvcf-reqid"], id.to_string().as_str());
        assert_eq!(resp.headers()["nvcf-status"], "errored");
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS],
            "nvcf-reqid"
        );
        let resp = GatewayError::Unauthorized(AuthError::Missing).into_response("/x");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let resp = GatewayError::Forbidden(AuthError::MissingScope).into_response("/x");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let degraded = RouteError::Degraded {
            function_id: Uuid::nil(),
        };
        assert_eq!(
            GatewayError::Route(degraded).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn statuses_and_causes() {
        let cases = [
            (GatewayError::BodyTooLarge { limit: 1 }, 413, Cause::Client),
            (GatewayError::ClientBody("x".into()), 400, Cause::Client),
            (GatewayError::PollDuration, 400, Cause::Client),
            (GatewayError::VersionFull(Uuid::nil()), 429, Cause::Capacity),
            (
                GatewayError::NoHealthyWorker(Uuid::nil()),
                503,
                Cause::Worker,
            ),
            (
                GatewayError::WorkerTimeout {
                    request_id: Uuid::nil(),
                    waited: Duration::from_secs(3),
                },
                504,
                Cause::Worker,
            ),
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
