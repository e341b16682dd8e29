//! The HTTP surface: one route table, the fallbacks for unknown routes and methods, and the
//! middleware that fills each problem document's `instance` and counts requests.

pub mod clusters;
pub mod deployments;
pub mod functions;
pub mod internal;
pub mod keys;

use crate::app::App;
use crate::error::{ApiError, PendingProblem};
use axum::Router;
use axum::extract::Request;
use axum::extract::State;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use std::sync::Arc;
use std::time::Instant;

/// The control plane's routes.
pub fn router(app: Arc<App>) -> Router {
    const FN: &str = "/v2/nvcf/functions/{functionId}/versions/{functionVersionId}";
    const DEP: &str = "/v2/nvcf/deployments/functions/{functionId}/versions/{functionVersionId}";
    // Management routes authenticate before anything else, as NVCF's security filter does: a
    // request without a valid credential gets 401 even when its path parameters are malformed.
    let management = Router::new()
        // Function management (§1.2).
        .route(
            "/v2/nvcf/functions",
            post(functions::create).get(functions::list),
        )
        .route("/v2/nvcf/functions/ids", get(functions::ids))
        .route(
            "/v2/nvcf/functions/{functionId}/versions",
            post(functions::create_version).get(functions::list_versions),
        )
        .route(
            FN,
            get(functions::get)
                .put(functions::update)
                .delete(functions::delete),
        )
        .route(
            "/v2/nvcf/metadata/functions/{functionId}/versions/{functionVersionId}",
            put(functions::update),
        )
        // Deployments (§1.3).
        .route(
            DEP,
            post(deployments::create)
                .get(deployments::get)
                .put(deployments::put)
                .delete(deployments::delete),
        )
        .route(
            "/v2/nvcf/deployments/{deploymentId}",
            get(deployments::get_by_id),
        )
        .route(
            "/v2/nvcf/deployments/{deploymentId}/gpu-specifications/{gpuSpecificationId}",
            axum::routing::patch(deployments::patch_spec),
        )
        // Cluster groups, GPUs, queues (§1.4, §1.1).
        .route("/v2/nvcf/clusterGroups", get(clusters::cluster_groups))
        .route("/v2/nvcf/supportedGpus", get(clusters::supported_gpus))
        .route(
            "/v2/nvcf/queues/functions/{functionId}",
            get(clusters::function_queues),
        )
        .route(
            "/v2/nvcf/queues/functions/{functionId}/versions/{versionId}",
            get(clusters::version_queue),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            authenticated,
        ));
    Router::new()
        .route("/health", get(health))
        .merge(management)
        // Key service (§1.7).
        .route("/v1/admin/keys", post(keys::mint_admin))
        .route("/v1/keys", post(keys::create).get(keys::list))
        .route("/v1/keys/{keyId}", get(keys::get).delete(keys::delete))
        .route(
            "/v1/keys/{keyId}/authorizations",
            put(keys::update_authorizations),
        )
        .route("/v1/introspect", post(keys::introspect))
        .route("/v1/services", get(keys::services))
        .route("/v1/services/{serviceId}", get(keys::service))
        // Internal: feed and worker registry.
        .route("/internal/v1/feed", get(internal::feed))
        .route("/internal/v1/workers", post(internal::register))
        .route(
            "/internal/v1/workers/{workerId}/heartbeat",
            post(internal::heartbeat),
        )
        .route(
            "/internal/v1/gateways/{gatewayId}/queues",
            post(internal::queue_report),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(finish))
        .with_state(app)
}

/// 401 unless the request carries a valid management credential (scopes are checked by handlers).
/// The principal travels to the handler in the request's extensions ([`crate::app::Ctx::principal`]),
/// so the credential is checked once per call.
async fn authenticated(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let checked = {
        let core = app.lock();
        app.principal(&core, req.headers())
    };
    match checked {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "OK" }))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!("No endpoint {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "Request method '{}' is not supported for {}",
        req.method(),
        req.uri().path()
    ))
}

/// Fills `instance` of problem documents with the request path, and counts the request.
async fn finish(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    metrics::counter!("controlplane_requests_total", "status" => status.as_str().to_owned())
        .increment(1);
    metrics::histogram!("controlplane_request_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    let Some(PendingProblem(p)) = resp.extensions().get::<PendingProblem>().cloned() else {
        return resp;
    };
    // Keep the headers the router or handler set (`Allow` on 405, `WWW-Authenticate` on 401).
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        axum::body::Body::from(p.with_instance(path).to_json()),
    )
}
