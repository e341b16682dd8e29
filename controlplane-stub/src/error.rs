//! The control plane's error type and its one mapping to HTTP: status, `application/problem+json`
//! body with the nv-boot type URN, and a metric.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use model::problem::{CONTENT_TYPE, Problem};

/// Who caused an error: the caller (4xx) or the control plane itself (5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Client,
    Internal,
}

/// An error answered to a caller. `instance` (the request path) is filled in by [`with_path`] when
/// the handler knows it; otherwise the router's middleware does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who caused it.
    pub fn cause(&self) -> Cause {
        if self.status().is_server_error() {
            Cause::Internal
        } else {
            Cause::Client
        }
    }

    /// The detail text.
    pub fn detail(&self) -> &str {
        match self {
            Self::BadRequest(d)
            | Self::Unauthorized(d)
            | Self::Forbidden(d)
            | Self::NotFound(d)
            | Self::MethodNotAllowed(d)
            | Self::Conflict(d)
            | Self::PayloadTooLarge(d)
            | Self::TooManyRequests(d)
            | Self::Internal(d) => d,
        }
    }

    /// An internal error from anything displayable (storage, serialization).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Marker put in a response's extensions so the path-filling middleware knows the body is a
/// problem document still lacking its `instance`.
#[derive(Debug, Clone)]
pub(crate) struct PendingProblem(pub(crate) Problem);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let cause = match self.cause() {
            Cause::Client => "client",
            Cause::Internal => "internal",
        };
        metrics::counter!("controlplane_errors_total", "status" => status.as_str().to_owned(), "cause" => cause)
            .increment(1);
        if status.is_server_error() {
            tracing::error!(
                status = status.as_u16(),
                detail = self.detail(),
                "control plane error"
            );
        }
        let problem = Problem::new(status, self.detail());
        let mut resp = problem_response(status, problem);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Builds the response for a problem document; its `instance` is added by the router middleware.
pub(crate) fn problem_response(status: StatusCode, problem: Problem) -> Response {
    let mut resp = (status, problem.to_json()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp.extensions_mut().insert(PendingProblem(problem));
    resp
}

/// Result alias of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
