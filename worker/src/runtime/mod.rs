//! The runtimes a function's `containerImage` picks, the dispatcher between them, and what they
//! share: the error type mapped to problem documents in one place, the kernel executor that puts
//! every kernel call on the blocking pool and accounts for it, and body helpers.
//!
//! | image (tag stripped) | runtime | body |
//! |---|---|---|
//! | `builtin/echo` | [`echo`] | streamed through the `echo` kernel frame by frame, not limited |
//! | `builtin/load-tester` | [`load_tester`] | JSON, buffered up to `max-body-bytes` |
//! | `builtin/saxpy` | [`saxpy`] | JSON or little-endian f32, buffered |
//! | `builtin/mlp` | [`mlp`] | JSON or little-endian f32, buffered, dynamically batched |
//! | anything else | [`passthrough`] | streamed both ways to `127.0.0.1:{inferencePort}` |

pub mod admission;
pub mod echo;
pub mod load_tester;
pub mod mlp;
pub mod passthrough;
pub mod saxpy;

use crate::agent::Shared;
use crate::config::ServeConfig;
use crate::kernels::{Backend, KernelError, KernelTiming};
use crate::metrics::VersionMetrics;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use model::problem::Problem;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use uuid::Uuid;

/// Errors of a response body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the worker sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Which runtime serves a function version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Echo,
    LoadTester,
    Saxpy,
    Mlp,
    Passthrough,
}

impl Runtime {
    /// The runtime of a container image: the built-in names (a `:tag` or `@digest` is ignored),
    /// else passthrough to the inference server beside the worker.
    pub fn for_image(image: &str) -> Self {
        match image.split([':', '@']).next().unwrap_or(image) {
            "builtin/echo" => Self::Echo,
            "builtin/load-tester" => Self::LoadTester,
            "builtin/saxpy" => Self::Saxpy,
            "builtin/mlp" => Self::Mlp,
            _ => Self::Passthrough,
        }
    }
}

/// What the dispatcher knows of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub version_id: Uuid,
    /// The version's metric handles (its id is their label).
    pub metrics: Arc<VersionMetrics>,
    pub runtime: Runtime,
    /// `inferencePort` (passthrough; 8000 when unset).
    pub inference_port: Option<u16>,
    /// `models[0].uri` (mlp weights; seeded network when unset).
    pub model_uri: Option<String>,
    /// The worker-owned headers the worker adds for a container (passthrough only; the built-in
    /// runtimes have no use for them).
    pub container_headers: Option<ContainerHeaders>,
}

/// The worker-owned headers that describe the function, which the worker adds to what a container
/// sees (nvcf-api.md §2.5, NVIDIA's `workerOwnedHeaders`) from its own feed, so that the gateway
/// does not send them on every call: `NVCF-FUNCTION-ID`, `NVCF-NCAID`, `NVCF-FUNCTION-NAME`.
/// A value that is not a valid header value (a name with a control character) is not sent.
#[derive(Debug, Clone)]
pub struct ContainerHeaders([(HeaderName, Option<HeaderValue>); 3]);

impl ContainerHeaders {
    /// The values for `f`.
    pub fn of(f: &model::function::FunctionVersion) -> Self {
        let value = |s: &str| HeaderValue::from_str(s).ok();
        let mut id = Uuid::encode_buffer();
        Self([
            (
                crate::server::FUNCTION_ID_NAME,
                value(f.id.hyphenated().encode_lower(&mut id)),
            ),
            (HeaderName::from_static("nvcf-ncaid"), value(&f.nca_id)),
            (
                HeaderName::from_static("nvcf-function-name"),
                value(&f.name),
            ),
        ])
    }

    /// Sets them on `headers`, replacing any copies already there.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            match value {
                Some(v) => headers.insert(name.clone(), v.clone()),
                None => headers.remove(name),
            };
        }
    }
}

/// Why an invocation failed: the single place where failures become statuses, problem documents
/// and error metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The request is malformed (bad header, JSON, shape): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The version is not assigned to this worker: 404.
    #[error("function version {0} is not deployed on this worker")]
    NotDeployed(Uuid),
    /// The body is over `max-body-bytes`: 413.
    #[error("request body exceeds the worker's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The function's weights file cannot be used: 422 (the request is fine, the function's
    /// `models[].uri` is not).
    #[error("{0}")]
    Weights(String),
    /// The version's `maxRequestConcurrency` is reached: 429 with `Retry-After: 1`.
    #[error("function version {version} is at its maxRequestConcurrency of {limit} on this worker")]
    Overloaded { version: Uuid, limit: u32 },
    /// A kernel refused its input (400) or the device failed (500).
    #[error("{0}")]
    Kernel(KernelError),
    /// The inference server beside the worker cannot be reached: 502.
    #[error("Inference connection error while making inference request: {0}")]
    InferenceConnection(String),
    /// A bug or an unexpected state: 500.
    #[error("{0}")]
    Internal(String),
}

impl From<KernelError> for RuntimeError {
    fn from(e: KernelError) -> Self {
        Self::Kernel(e)
    }
}

impl RuntimeError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Kernel(KernelError::Input(_)) => StatusCode::BAD_REQUEST,
            Self::NotDeployed(_) => StatusCode::NOT_FOUND,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Weights(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Kernel(KernelError::Device { .. }) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::InferenceConnection(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `cause` label of `worker_errors_total`.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::Kernel(KernelError::Input(_)) => "bad_request",
            Self::NotDeployed(_) => "not_deployed",
            Self::TooLarge { .. } => "too_large",
            Self::Weights(_) => "weights",
            Self::Overloaded { .. } => "overloaded",
            Self::Kernel(KernelError::Device { .. }) => "device",
            Self::InferenceConnection(_) => "inference_connection",
            Self::Internal(_) => "internal",
        }
    }

    /// The problem response (`instance` is the request path), counted in `worker_errors_total`.
    pub fn into_response(self, instance: &str) -> Response<Body> {
        let status = self.status();
        crate::metrics::record_error(self.cause(), status);
        let problem = Problem::new(status, self.to_string()).with_instance(instance);
        let mut resp = full(status, model::problem::CONTENT_TYPE, problem.to_json());
        if status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

// === impl Exec ===

/// Runs kernel calls on the blocking pool and accounts for them: kernel time, queue wait, bytes
/// moved, device memory, and device errors (counted; a lost device marks the worker unhealthy).
#[derive(Debug, Clone)]
pub struct Exec {
    backend: Arc<dyn Backend>,
    shared: Arc<Shared>,
    /// Shared, so that cloning the executor (once per echo call) stays one count.
    device: Arc<crate::metrics::DeviceMetrics>,
}

impl Exec {
    pub fn new(backend: Arc<dyn Backend>, shared: Arc<Shared>) -> Self {
        Self {
            backend,
            shared,
            device: Arc::new(crate::metrics::DeviceMetrics::new()),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Runs `f` on the blocking pool. `arrived` (when the input was complete) gives the queue wait;
    /// `None` when the caller records its own (the batcher). If the caller goes away the call still
    /// finishes on its thread and its result is dropped.
    pub async fn run<T, F>(
        &self,
        metrics: &Arc<VersionMetrics>,
        kernel: &'static str,
        arrived: Option<Instant>,
        f: F,
    ) -> Result<T, KernelError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<(T, KernelTiming), KernelError> + Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        let wait = arrived.map(|arrived| (arrived, Arc::clone(metrics)));
        let joined = tokio::task::spawn_blocking(move || {
            if let Some((arrived, metrics)) = wait {
                metrics.queue_wait(arrived.elapsed());
            }
            f(backend.as_ref())
        })
        .await;
        let result = joined.unwrap_or_else(|e| {
            Err(KernelError::Device {
                message: format!("kernel call did not complete: {e}"),
                lost: false,
            })
        });
        self.device.memory(self.backend.memory_in_use());
        match result {
            Ok((out, timing)) => {
                metrics.kernel(kernel, &timing);
                self.device.moved(&timing);
                Ok(out)
            }
            Err(e) => {
                self.kernel_failed(&e);
                Err(e)
            }
        }
    }

    /// Accounts for a failed kernel call: device errors are counted, and a lost device makes the
    /// worker report itself unhealthy at once.
    pub fn kernel_failed(&self, e: &KernelError) {
        if let KernelError::Device { message, lost } = e {
            crate::metrics::record_device_error();
            tracing::error!(error = %message, lost, backend = self.backend.name(), "kernel failed on the device");
            if *lost && self.shared.healthy.swap(false, Ordering::SeqCst) {
                self.shared.changed.notify_one();
            }
        }
    }
}

// === shared context ===

/// What every runtime reaches: the executor, the limits, the mlp models and the proxy client.
#[derive(Debug)]
pub struct Ctx {
    pub exec: Exec,
    pub cfg: ServeConfig,
    pub models: mlp::Models,
    pub proxy: passthrough::Proxy,
}

impl Ctx {
    pub fn new(backend: Arc<dyn Backend>, shared: Arc<Shared>, cfg: ServeConfig) -> Self {
        Self {
            exec: Exec::new(backend, shared),
            cfg,
            models: mlp::Models::default(),
            proxy: passthrough::Proxy::new(),
        }
    }
}

/// Runs one admitted invocation through its runtime.
pub async fn dispatch(
    ctx: &Ctx,
    inv: &Invocation,
    req: Request<Incoming>,
) -> Result<Response<Body>, RuntimeError> {
    match inv.runtime {
        Runtime::Echo => echo::serve(ctx, inv, req).await,
        Runtime::LoadTester => load_tester::serve(ctx, inv, req).await,
        Runtime::Saxpy => saxpy::serve(ctx, inv, req).await,
        Runtime::Mlp => mlp::serve(ctx, inv, req).await,
        Runtime::Passthrough => passthrough::serve(ctx, inv, req).await,
    }
}

// === body helpers ===

/// Bodies at least this large are parsed and encoded on the blocking pool rather than inline: a
/// 64 MiB JSON array takes hundreds of milliseconds to parse, which must not stall an async thread
/// serving other streams. Smaller ones are cheaper inline than a thread hop.
pub const OFFLOAD_BYTES: usize = 64 << 10;

/// Runs CPU-heavy request work (parsing, encoding) of `size` bytes inline when small and on the
/// blocking pool when large.
pub async fn offload<T, F>(size: usize, f: F) -> Result<T, RuntimeError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, RuntimeError> + Send + 'static,
{
    if size < OFFLOAD_BYTES {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Internal(format!("request processing failed: {e}")))?
}

/// A JSON response of `value`, encoded on the blocking pool when `size_hint` is large.
pub async fn json_response(
    size_hint: usize,
    value: impl serde::Serialize + Send + 'static,
) -> Result<Response<Body>, RuntimeError> {
    let json = offload(size_hint, move || {
        serde_json::to_vec(&value)
            .map_err(|e| RuntimeError::Internal(format!("could not encode the result: {e}")))
    })
    .await?;
    Ok(full(StatusCode::OK, "application/json", json))
}

/// A whole-body response.
pub fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Reads a whole body of at most `limit` bytes; 413 beyond it (checked against `Content-Length`
/// first, so an oversized body is refused before it is read).
pub async fn read_body<B>(headers: &HeaderMap, body: B, limit: u64) -> Result<Bytes, RuntimeError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(RuntimeError::TooLarge { limit });
    }
    let cap = usize::try_from(declared.unwrap_or(0).min(limit)).unwrap_or(0);
    let mut buf = BytesMut::with_capacity(cap);
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            RuntimeError::BadRequest(format!("could not read the request body: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(RuntimeError::TooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Whether the request's `Content-Type` is `application/octet-stream` (parameters ignored); any
/// other type, or none, means JSON.
pub fn is_octet_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/octet-stream"))
}

/// A JSON object body.
pub fn json_object(
    body: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, RuntimeError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(RuntimeError::BadRequest(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(RuntimeError::BadRequest(format!("malformed JSON: {e}"))),
    }
}

/// Field `name` of a JSON object as `T`; `None` when absent or null. A wrong type names the field.
pub fn json_field<T: DeserializeOwned>(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    expected: &str,
) -> Result<Option<T>, RuntimeError> {
    match obj.remove(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| RuntimeError::BadRequest(format!("`{name}` must be {expected}: {e}"))),
    }
}

/// Little-endian f32 values of `bytes` (a multiple of 4 long; checked by the caller).
pub fn f32s_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `values` as little-endian bytes.
pub fn f32s_to_le(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_pick_runtimes() {
        assert_eq!(Runtime::for_image("builtin/echo"), Runtime::Echo);
        assert_eq!(Runtime::for_image("builtin/mlp:1.0"), Runtime::Mlp);
        assert_eq!(
            Runtime::for_image("builtin/saxpy@sha256:ab"),
            Runtime::Saxpy
        );
        assert_eq!(
            Runtime::for_image("builtin/load-tester:latest"),
            Runtime::LoadTester
        );
        assert_eq!(Runtime::for_image("nvcr.io/x/y:1"), Runtime::Passthrough);
    }

    #[test]
    fn errors_map_to_statuses_and_causes() {
        let id = Uuid::nil();
        let cases = [
            (RuntimeError::BadRequest("x".into()), 400, "bad_request"),
            (RuntimeError::NotDeployed(id), 404, "not_deployed"),
            (RuntimeError::TooLarge { limit: 1 }, 413, "too_large"),
            (RuntimeError::Weights("w".into()), 422, "weights"),
            (
                RuntimeError::Overloaded {
                    version: id,
                    limit: 1,
                },
                429,
                "overloaded",
            ),
            (KernelError::Input("i".into()).into(), 400, "bad_request"),
            (
                KernelError::Device {
                    message: "d".into(),
                    lost: true,
                }
                .into(),
                500,
                "device",
            ),
            (
                RuntimeError::InferenceConnection("r".into()),
                502,
                "inference_connection",
            ),
            (RuntimeError::Internal("b".into()), 500, "internal"),
        ];
        for (e, status, cause) in cases {
            assert_eq!((e.status().as_u16(), e.cause()), (status, cause), "{e}");
        }
        let r = RuntimeError::Overloaded {
            version: id,
            limit: 2,
        }
        .into_response("/p");
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            model::problem::CONTENT_TYPE
        );
    }

    #[test]
    fn json_fields_name_what_is_wrong() {
        let mut o = json_object(br#"{"a": "x", "b": [1, 2]}"#).expect("object");
        let e = json_field::<f32>(&mut o, "a", "a number").expect_err("type");
        assert!(e.to_string().starts_with("`a` must be a number"), "{e}");
        assert_eq!(
            json_field::<Vec<f32>>(&mut o, "b", "numbers"),
            Ok(Some(vec![1.0, 2.0]))
        );
        assert_eq!(json_field::<f32>(&mut o, "c", "a number"), Ok(None));
        assert!(json_object(b"[1]").is_err());
        assert!(
            json_object(b"{")
                .expect_err("syntax")
                .to_string()
                .contains("malformed JSON")
        );
    }

    #[test]
    fn little_endian_round_trip() {
        let v = [1.5f32, -2.0, 0.0];
        assert_eq!(f32s_from_le(&f32s_to_le(&v)), v);
    }

    #[tokio::test]
    async fn read_body_enforces_the_limit() {
        let mut h = HeaderMap::new();
        let body = Full::new(Bytes::from_static(b"12345"));
        assert_eq!(
            read_body(&h, body.clone(), 5).await,
            Ok(Bytes::from_static(b"12345"))
        );
        assert_eq!(
            read_body(&h, body.clone(), 4).await,
            Err(RuntimeError::TooLarge { limit: 4 })
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("100"));
        assert_eq!(
            read_body(&h, body, 10).await,
            Err(RuntimeError::TooLarge { limit: 10 })
        );
    }
}
