//! Test harness for the serving side: a worker server on `127.0.0.1:0` over a feed state built from
//! a snapshot, a backend that counts mlp launches, and HTTP/2 (prior knowledge) and HTTP/1.1
//! clients.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::StreamBody;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use model::feed::{Entity, FeedMessage, FeedState};
use model::function::{
    ApiBodyFormat, FunctionStatus, FunctionType, FunctionVersion, HealthDto, HealthProtocol,
};
use model::problem::Problem;
use model::time::Timestamp;
use model::worker::{InstanceRecord, InstanceStatus};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use uuid::Uuid;
use worker::agent::Shared;
use worker::config::ServeConfig;
use worker::kernels::cpu::CpuBackend;
use worker::kernels::{Backend, KernelError, KernelTiming, LoadedMlp, MlpWeights};
use worker::server::{Server, serve};

pub const WORKER_ID: &str = "worker-under-test";

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ReqBody = BoxBody<Bytes, BoxError>;

/// The CPU backend, counting the rows of every mlp launch; optionally failing every saxpy.
#[derive(Debug, Default)]
pub struct Counting {
    pub launches: Arc<Mutex<Vec<usize>>>,
    pub saxpy_fails: Option<KernelError>,
}

#[derive(Debug)]
struct CountingMlp {
    inner: Arc<dyn LoadedMlp>,
    launches: Arc<Mutex<Vec<usize>>>,
}

impl Backend for Counting {
    fn name(&self) -> &'static str {
        "counting-cpu"
    }
    fn echo(&self, input: &[u8]) -> Result<(Vec<u8>, KernelTiming), KernelError> {
        CpuBackend.echo(input)
    }
    fn repeat(&self, m: &[u8], times: usize) -> Result<(Vec<u8>, KernelTiming), KernelError> {
        CpuBackend.repeat(m, times)
    }
    fn saxpy(&self, a: f32, x: &[f32], y: &[f32]) -> Result<(Vec<f32>, KernelTiming), KernelError> {
        match &self.saxpy_fails {
            Some(e) => Err(e.clone()),
            None => CpuBackend.saxpy(a, x, y),
        }
    }
    fn load_mlp(&self, weights: &MlpWeights) -> Result<Arc<dyn LoadedMlp>, KernelError> {
        Ok(Arc::new(CountingMlp {
            inner: CpuBackend.load_mlp(weights)?,
            launches: Arc::clone(&self.launches),
        }))
    }
}

impl LoadedMlp for CountingMlp {
    fn input_width(&self) -> usize {
        self.inner.input_width()
    }
    fn output_width(&self) -> usize {
        self.inner.output_width()
    }
    fn forward(
        &self,
        inputs: &[f32],
        rows: usize,
    ) -> Result<(Vec<f32>, KernelTiming), KernelError> {
        self.launches.lock().expect("lock").push(rows);
        self.inner.forward(inputs, rows)
    }
}

/// A function version running `image`.
pub fn function(image: &str) -> FunctionVersion {
    FunctionVersion {
        id: Uuid::new_v4(),
        version_id: Uuid::new_v4(),
        nca_id: "nvcf-default".into(),
        name: "f".into(),
        status: FunctionStatus::Active,
        inference_url: "/infer".into(),
        inference_port: None,
        container_args: None,
        container_environment: vec![],
        models: vec![],
        container_image: Some(image.into()),
        api_body_format: ApiBodyFormat::Custom,
        helm_chart: None,
        helm_chart_service_name: None,
        health: HealthDto {
            protocol: HealthProtocol::Http,
            uri: "/health".into(),
            port: 8000,
            timeout: "PT10S".into(),
            expected_status_code: 200,
        },
        created_at: Timestamp::now(),
        resources: vec![],
        tags: vec![],
        description: None,
        function_type: FunctionType::Default,
        secrets: vec![],
        rate_limit: None,
        llm_invocation_config: None,
        telemetries: None,
        utils_container_image: None,
    }
}

/// An instance of `f` on `worker_id`.
pub fn instance(f: &FunctionVersion, worker_id: &str, max: u32) -> InstanceRecord {
    InstanceRecord {
        instance_id: Uuid::new_v4(),
        worker_id: worker_id.into(),
        function_id: f.id,
        function_version_id: f.version_id,
        deployment_id: Uuid::new_v4(),
        gpu_specification_id: Uuid::new_v4(),
        gpu: "CPU".into(),
        instance_type: "NCP.CPU_1x".into(),
        backend: "nvcf-default".into(),
        max_request_concurrency: max,
        status: InstanceStatus::Active,
        error: None,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
    }
}

/// A running worker server.
pub struct Worker {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub server: Arc<Server>,
    pub launches: Arc<Mutex<Vec<usize>>>,
    _stop: watch::Sender<bool>,
}

/// Serves `fns` (each with its `maxRequestConcurrency`, assigned to [`WORKER_ID`]) plus `extra`
/// feed entities, on `backend`.
pub async fn start_with(
    fns: &[(&FunctionVersion, u32)],
    extra: Vec<Entity>,
    cfg: ServeConfig,
    backend: Counting,
) -> Worker {
    let mut entities = extra;
    for (f, max) in fns {
        entities.push(Entity::Function((*f).clone()));
        entities.push(Entity::Instance(instance(f, WORKER_ID, *max)));
    }
    let mut state = FeedState::default();
    state
        .apply(FeedMessage::Snapshot {
            revision: 1,
            key_hash_secret: String::new(),
            entities,
        })
        .expect("snapshot");
    let shared = Arc::new(Shared::new());
    *shared.feed.lock().expect("lock") = state;
    let launches = Arc::clone(&backend.launches);
    let server = Server::new(WORKER_ID, Arc::clone(&shared), Arc::new(backend), cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = watch::channel(false);
    tokio::spawn(serve(listener, Arc::clone(&server), rx));
    Worker {
        addr,
        shared,
        server,
        launches,
        _stop: stop,
    }
}

/// Serves `fns` on the counting CPU backend with `cfg`.
pub async fn start(fns: &[(&FunctionVersion, u32)], cfg: ServeConfig) -> Worker {
    start_with(fns, vec![], cfg, Counting::default()).await
}

/// An HTTP/2 prior-knowledge connection.
pub async fn h2(addr: SocketAddr) -> http2::SendRequest<ReqBody> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

/// An HTTP/1.1 connection.
pub async fn h1(addr: SocketAddr) -> http1::SendRequest<ReqBody> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    send
}

pub fn full(body: impl Into<Bytes>) -> ReqBody {
    Full::new(body.into()).map_err(|e| match e {}).boxed()
}

/// A POST to `path` on `addr` for version `vid` (absolute URI: HTTP/2 needs scheme and authority).
pub fn post(
    addr: SocketAddr,
    vid: Option<Uuid>,
    path: &str,
    content_type: Option<&str>,
    body: ReqBody,
) -> Request<ReqBody> {
    let mut b = Request::post(format!("http://{addr}{path}"));
    if let Some(v) = vid {
        b = b.header("nvcf-function-version-id", v.to_string());
    }
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.header("nvcf-reqid", Uuid::new_v4().to_string())
        .body(body)
        .expect("request")
}

/// A whole answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// The problem document, checking its content type and status.
    pub fn problem(&self) -> Problem {
        assert_eq!(
            self.headers["content-type"],
            model::problem::CONTENT_TYPE,
            "{self:?}"
        );
        let p: Problem = serde_json::from_slice(&self.body).expect("problem");
        assert_eq!(p.status, self.status.as_u16());
        p
    }

    pub fn detail(&self) -> String {
        self.problem().detail.unwrap_or_default()
    }
}

pub async fn collect(resp: http::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Sends on a fresh HTTP/2 connection and reads the whole answer.
pub async fn call(addr: SocketAddr, req: Request<ReqBody>) -> Reply {
    let mut s = h2(addr).await;
    collect(s.send_request(req).await.expect("response")).await
}

/// JSON POST of `body` for `vid`.
pub async fn call_json(addr: SocketAddr, vid: Uuid, body: serde_json::Value) -> Reply {
    let bytes = serde_json::to_vec(&body).expect("json");
    call(
        addr,
        post(
            addr,
            Some(vid),
            "/infer",
            Some("application/json"),
            full(bytes),
        ),
    )
    .await
}

/// Waits (bounded) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn from_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

pub fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
    }
}

/// A streamed request body of `chunks` chunks of `size` bytes (no length known up front).
pub fn chunked(chunks: usize, size: usize) -> (ReqBody, Vec<u8>) {
    let all: Vec<u8> = (0..chunks * size).map(|i| (i * 31 % 251) as u8).collect();
    let parts: Vec<Result<Frame<Bytes>, BoxError>> = all
        .chunks(size)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    (StreamBody::new(stream::iter(parts)).boxed(), all)
}
