//! Harness of the control plane's integration tests: `controlplane_stub::run` on a port-0 listener
//! with its SQLite store in a temporary directory, a small HTTP client that answers
//! (status, headers, JSON body), credential and function helpers, a feed reader, and scripted
//! workers that register and heartbeat like real ones.

#![allow(dead_code)] // each test binary uses a part of the harness

use bytes::Bytes;
use controlplane_stub::RunError;
use controlplane_stub::config::ControlplaneFile;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use model::feed::{Entity, FeedMessage};
use model::time::Timestamp;
use model::worker::{
    GpuOffer, Heartbeat, InstanceReport, InstanceState, InstanceTypeOffer, WorkerRegistration,
};
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The installation's internal credential in every test.
pub(crate) const TOKEN: &str = "internal-test-token-0123456789";
/// NVCF's key service id.
pub(crate) const NVCF: &str = model::NVCF_SERVICE_ID;
/// Owner of the keys the helpers create.
pub(crate) const OWNER: &str = "svc@nvcf-api.local";
/// Every wait on the control plane is bounded by this, so a bug fails a test instead of hanging it.
pub(crate) const GUARD: Duration = Duration::from_secs(10);
/// GPU and instance type the scripted workers offer.
pub(crate) const GPU: &str = "A10G";
pub(crate) const INSTANCE_TYPE: &str = "NCP.GPU.A10G_1x";
pub(crate) const GROUP: &str = "nvcf-default";

/// The configuration every test starts from: fast heartbeats so that status changes within a
/// second, a short feed heartbeat so idle feeds answer quickly.
pub(crate) fn test_file() -> ControlplaneFile {
    ControlplaneFile {
        listen: "127.0.0.1:0".into(),
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_millis(500),
        feed_heartbeat: Duration::from_millis(300),
        ..ControlplaneFile::default()
    }
}

// ------------------------------------------------------------------------------------- client

/// A connection to one control plane: base address and a pooled HTTP/1 client.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    pub(crate) addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Starts a request.
    pub(crate) fn call(&self, method: Method, path: &str) -> Call {
        Call {
            conn: self.clone(),
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub(crate) fn get(&self, path: &str) -> Call {
        self.call(Method::GET, path)
    }

    pub(crate) fn post(&self, path: &str) -> Call {
        self.call(Method::POST, path)
    }

    pub(crate) fn put(&self, path: &str) -> Call {
        self.call(Method::PUT, path)
    }

    pub(crate) fn patch(&self, path: &str) -> Call {
        self.call(Method::PATCH, path)
    }

    pub(crate) fn delete(&self, path: &str) -> Call {
        self.call(Method::DELETE, path)
    }

    // ------------------------------------------------------------------ credentials

    /// Mints an admin token (the test client is a loopback caller).
    pub(crate) async fn admin(&self) -> String {
        let r = self.post("/v1/admin/keys").json(&json!({})).send().await;
        r.expect(200)["value"]
            .as_str()
            .expect("admin token value")
            .to_owned()
    }

    /// Creates an API key with the given body; returns the KeyDto.
    pub(crate) async fn create_key(&self, body: &Value) -> Value {
        self.post("/v1/keys")
            .key_headers()
            .json(body)
            .send()
            .await
            .expect(200)
            .clone()
    }

    /// An API key holding `scopes` on every function of the account: (id, value).
    pub(crate) async fn api_key(&self, scopes: &[&str]) -> Key {
        self.api_key_on(scopes, json!([{"id": "*", "type": "account-functions"}]))
            .await
    }

    /// An API key holding `scopes` on `resources`.
    pub(crate) async fn api_key_on(&self, scopes: &[&str], resources: Value) -> Key {
        let dto = self.create_key(&key_body(scopes, resources)).await;
        Key {
            id: dto["id"].as_str().expect("key id").to_owned(),
            value: dto["value"].as_str().expect("key value").to_owned(),
        }
    }

    // ------------------------------------------------------------------ functions

    /// Creates a function; returns (function id, version id).
    pub(crate) async fn create_function(&self, token: &str, name: &str) -> (Uuid, Uuid) {
        let r = self
            .post("/v2/nvcf/functions")
            .bearer(token)
            .json(&fn_body(name))
            .send()
            .await;
        ids(&r.expect(200)["function"])
    }

    /// Creates a version of `fid`; returns its version id.
    pub(crate) async fn create_version(&self, token: &str, fid: Uuid) -> Uuid {
        let r = self
            .post(&format!("/v2/nvcf/functions/{fid}/versions"))
            .bearer(token)
            .json(&fn_body("v2"))
            .send()
            .await;
        ids(&r.expect(200)["function"]).1
    }

    /// The function version's DTO.
    pub(crate) async fn function(&self, token: &str, fid: Uuid, vid: Uuid) -> Value {
        self.get(&fn_path(fid, vid))
            .bearer(token)
            .send()
            .await
            .expect(200)["function"]
            .clone()
    }

    /// Deploys a version with one specification on the scripted workers' GPU.
    pub(crate) async fn deploy(
        &self,
        token: &str,
        fid: Uuid,
        vid: Uuid,
        min: u32,
        max: u32,
    ) -> Value {
        let r = self
            .post(&dep_path(fid, vid))
            .bearer(token)
            .json(&dep_body(min, max))
            .send()
            .await;
        r.expect(200)["deployment"].clone()
    }

    /// Polls the function until its status is `want`.
    pub(crate) async fn wait_status(&self, token: &str, fid: Uuid, vid: Uuid, want: &str) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + GUARD;
        while Instant::now() < deadline {
            let f = self.function(token, fid, vid).await;
            if f["status"] == want {
                return f;
            }
            last = f;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("function {fid}/{vid} never reached {want}; last: {last}");
    }

    // ------------------------------------------------------------------ workers and feed

    /// Registers a worker offering A10G / NCP.GPU.A10G_1x in `nvcf-default`.
    pub(crate) async fn register_worker(&self, id: &str) -> Resp {
        self.post("/internal/v1/workers")
            .bearer(TOKEN)
            .json(&serde_json::to_value(registration(id)).expect("registration json"))
            .send()
            .await
    }

    /// One heartbeat.
    pub(crate) async fn heartbeat(&self, id: &str, instances: Vec<InstanceReport>) -> Resp {
        let hb = Heartbeat {
            healthy: true,
            instances,
        };
        self.post(&format!("/internal/v1/workers/{id}/heartbeat"))
            .bearer(TOKEN)
            .json(&serde_json::to_value(hb).expect("heartbeat json"))
            .send()
            .await
    }

    /// Opens `GET /internal/v1/feed?since=<since>`: the status, and a reader of its lines (for an
    /// error status, the reader yields the problem document once).
    pub(crate) async fn open_feed(
        &self,
        since: u64,
        token: Option<&str>,
    ) -> (StatusCode, FeedReader) {
        let mut req = Request::builder().method(Method::GET).uri(format!(
            "http://{}/internal/v1/feed?since={since}",
            self.addr
        ));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::new())).expect("request");
        let resp = tokio::time::timeout(GUARD, self.client.request(req))
            .await
            .expect("feed answers in time")
            .expect("feed request");
        let status = resp.status();
        if status == StatusCode::OK {
            assert_eq!(
                resp.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("application/x-ndjson")
            );
        }
        let reader = FeedReader {
            body: resp.into_body(),
            buf: Vec::new(),
        };
        (status, reader)
    }

    /// Reads the first `n` lines of `GET /internal/v1/feed?since=<since>` (status, lines); an error
    /// answer gives its problem document as the only line.
    pub(crate) async fn feed(
        &self,
        since: u64,
        n: usize,
        token: Option<&str>,
    ) -> (StatusCode, Vec<Value>) {
        let (status, mut reader) = self.open_feed(since, token).await;
        if status != StatusCode::OK {
            let b = reader.body.collect().await.expect("error body").to_bytes();
            return (
                status,
                vec![serde_json::from_slice(&b).unwrap_or(Value::Null)],
            );
        }
        let mut lines = Vec::new();
        for _ in 0..n {
            lines.push(reader.next().await);
        }
        (status, lines)
    }

    /// The state as a snapshot.
    pub(crate) async fn snapshot(&self) -> Value {
        let (status, mut lines) = self.feed(0, 1, Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        let line = lines.remove(0);
        assert_eq!(line["type"], "snapshot", "{line}");
        line
    }

    /// Instances assigned to a worker, from a feed snapshot.
    pub(crate) async fn instances_of(&self, worker: &str) -> Vec<Uuid> {
        let snap: FeedMessage = serde_json::from_value(self.snapshot().await).expect("snapshot");
        let FeedMessage::Snapshot { entities, .. } = snap else {
            unreachable!("checked above")
        };
        entities
            .into_iter()
            .filter_map(|e| match e {
                Entity::Instance(i) if i.worker_id == worker => Some(i.instance_id),
                _ => None,
            })
            .collect()
    }

    /// Reports every instance of `worker` in `state`.
    pub(crate) async fn report_all(
        &self,
        worker: &str,
        state: InstanceState,
        in_flight: u32,
    ) -> Resp {
        let reports = self
            .instances_of(worker)
            .await
            .into_iter()
            .map(|id| report(id, state, in_flight))
            .collect();
        self.heartbeat(worker, reports).await
    }

    /// A worker that heartbeats in the background as its script says, starting by reporting its
    /// instances in `state`.
    pub(crate) async fn spawn_worker(&self, id: &str, state: InstanceState) -> ScriptedWorker {
        self.register_worker(id).await.expect(200);
        let script = Arc::new(Mutex::new(Script {
            state,
            in_flight: 0,
            paused: false,
        }));
        let (conn, s, wid) = (self.clone(), Arc::clone(&script), id.to_owned());
        let task = tokio::spawn(async move {
            loop {
                let (state, in_flight, paused) = {
                    let s = s.lock().expect("script");
                    (s.state, s.in_flight, s.paused)
                };
                if !paused {
                    let r = conn.report_all(&wid, state, in_flight).await;
                    if r.status == StatusCode::NOT_FOUND {
                        conn.register_worker(&wid).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        });
        ScriptedWorker {
            id: id.to_owned(),
            script,
            task,
        }
    }
}

/// The lines of an open feed.
#[derive(Debug)]
pub(crate) struct FeedReader {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl FeedReader {
    /// The next line, as JSON (within the guard).
    pub(crate) async fn next(&mut self) -> Value {
        self.try_next(GUARD).await.expect("a feed line in time")
    }

    /// The next line, or `None` when the stream ended or `wait` passed.
    pub(crate) async fn try_next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("feed line is JSON"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.body.frame()).await.ok()??;
            if let Ok(data) = frame.ok()?.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// Reads lines until one is not a heartbeat.
    pub(crate) async fn next_change(&mut self) -> Value {
        loop {
            let line = self.next().await;
            if line["type"] != "heartbeat" {
                return line;
            }
        }
    }
}

/// A credential: id and secret.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub(crate) id: String,
    pub(crate) value: String,
}

/// What a scripted worker says of its instances.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Script {
    pub(crate) state: InstanceState,
    pub(crate) in_flight: u32,
    pub(crate) paused: bool,
}

/// A worker heartbeating in the background.
#[derive(Debug)]
pub(crate) struct ScriptedWorker {
    pub(crate) id: String,
    script: Arc<Mutex<Script>>,
    task: JoinHandle<()>,
}

impl ScriptedWorker {
    /// Changes the script.
    pub(crate) fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().expect("script"));
    }
}

impl Drop for ScriptedWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One instance report.
pub(crate) fn report(id: Uuid, state: InstanceState, in_flight: u32) -> InstanceReport {
    InstanceReport {
        instance_id: id,
        state,
        in_flight,
        error: (state == InstanceState::Failed).then(|| "image pull failed".to_owned()),
    }
}

/// The registration of a scripted worker.
pub(crate) fn registration(id: &str) -> WorkerRegistration {
    WorkerRegistration {
        worker_id: id.into(),
        address: "http://127.0.0.1:9".into(),
        cluster_group: GROUP.into(),
        cluster: "local".into(),
        gpus: vec![GpuOffer {
            name: GPU.into(),
            memory_bytes: 24 << 30,
            count: 1,
        }],
        instance_types: vec![InstanceTypeOffer {
            name: INSTANCE_TYPE.into(),
            gpu: GPU.into(),
            gpu_count: 1,
            description: "One A10G".into(),
        }],
        capacity: 4,
    }
}

/// A request being built.
#[derive(Debug)]
pub(crate) struct Call {
    conn: Conn,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
}

impl Call {
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// The key service's caller headers as the CLI sends them.
    pub(crate) fn key_headers(self) -> Self {
        self.header("key-issuer-service", "nvcf-api")
            .header("key-issuer-id", NVCF)
            .header("key-owner-id", OWNER)
    }

    /// Makes the call look forwarded by the gateway for an off-box client (10.0.0.5).
    pub(crate) fn remote(self) -> Self {
        self.header("x-nvcf-gateway-auth", TOKEN)
            .header("x-nvcf-client-addr", "10.0.0.5")
    }

    pub(crate) fn json(self, v: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(v).expect("json"))
    }

    pub(crate) fn body(mut self, b: impl Into<Bytes>) -> Self {
        self.body = Some(b.into());
        self
    }

    pub(crate) async fn send(self) -> Resp {
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(format!("http://{}{}", self.conn.addr, self.path));
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(self.body.unwrap_or_default()))
            .expect("request");
        let what = format!("{} {}", self.method, self.path);
        let resp = tokio::time::timeout(GUARD, self.conn.client.request(req))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer in time"))
            .unwrap_or_else(|e| panic!("{what}: request failed: {e:?}"));
        let (parts, body) = resp.into_parts();
        let raw = tokio::time::timeout(GUARD, body.collect())
            .await
            .unwrap_or_else(|_| panic!("{what}: body not in time"))
            .unwrap_or_else(|e| panic!("{what}: body failed: {e:?}"))
            .to_bytes();
        let json = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        let path = self.path.split('?').next().unwrap_or_default().to_owned();
        Resp {
            what,
            path,
            status: parts.status,
            headers: parts.headers,
            raw,
            json,
        }
    }
}

/// An answer.
#[derive(Debug)]
pub(crate) struct Resp {
    what: String,
    path: String,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) raw: Bytes,
    pub(crate) json: Value,
}

impl Resp {
    /// Asserts the status; returns the JSON body.
    #[track_caller]
    pub(crate) fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}: expected {status}, got {} {}",
            self.what,
            self.status,
            String::from_utf8_lossy(&self.raw)
        );
        &self.json
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a problem document: status, content type, type URN, title, `instance` = request
    /// path, and a detail containing `detail`.
    #[track_caller]
    pub(crate) fn problem(&self, status: u16, detail: &str) -> &Value {
        let body = self.expect(status);
        assert_eq!(
            self.header("content-type"),
            "application/problem+json",
            "{}: {body}",
            self.what
        );
        let code = StatusCode::from_u16(status).expect("status");
        let urn = model::problem::type_urn(code);
        assert_eq!(body["type"], urn.as_str(), "{}: {body}", self.what);
        assert_eq!(
            body["title"],
            code.canonical_reason().unwrap_or_default(),
            "{}: {body}",
            self.what
        );
        assert_eq!(body["status"], status, "{}: {body}", self.what);
        assert_eq!(
            body["instance"],
            self.path.as_str(),
            "{}: {body}",
            self.what
        );
        let d = body["detail"].as_str().unwrap_or_default();
        assert!(
            d.contains(detail),
            "{}: detail {d:?} lacks {detail:?}",
            self.what
        );
        body
    }

    /// Asserts that the call was refused for credentials or scope only: not 401/403.
    #[track_caller]
    pub(crate) fn authorized(&self) {
        assert!(
            self.status != StatusCode::UNAUTHORIZED && self.status != StatusCode::FORBIDDEN,
            "{}: refused {} {}",
            self.what,
            self.status,
            String::from_utf8_lossy(&self.raw)
        );
        assert!(
            !self.status.is_server_error(),
            "{}: {} {}",
            self.what,
            self.status,
            String::from_utf8_lossy(&self.raw)
        );
    }
}

// ------------------------------------------------------------------------------ control plane

/// A running control plane.
#[derive(Debug)]
pub(crate) struct Cp {
    pub(crate) conn: Conn,
    pub(crate) dir: TempDir,
    pub(crate) file: ControlplaneFile,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), RunError>>,
}

impl std::ops::Deref for Cp {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl Cp {
    /// A control plane with the test configuration.
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A control plane with the test configuration changed by `f`.
    pub(crate) async fn start_with(f: impl FnOnce(&mut ControlplaneFile)) -> Self {
        let mut file = test_file();
        f(&mut file);
        let dir = tempfile::tempdir().expect("temp dir");
        Self::launch(dir, file).await
    }

    /// Starts a control plane on `dir`.
    pub(crate) async fn launch(dir: TempDir, file: ControlplaneFile) -> Self {
        Self::launch_on(dir, file, "127.0.0.1:0", None).await
    }

    /// Starts a control plane on `dir`, listening on `bind`; clients connect to `connect_ip` (the
    /// listener's address when `None`).
    pub(crate) async fn launch_on(
        dir: TempDir,
        mut file: ControlplaneFile,
        bind: &str,
        connect_ip: Option<std::net::IpAddr>,
    ) -> Self {
        file.data_dir = dir.path().to_owned();
        let cfg = file.validate(TOKEN).expect("valid config");
        let listener = TcpListener::bind(bind).await.expect("bind");
        let mut addr = listener.local_addr().expect("addr");
        if let Some(ip) = connect_ip {
            addr.set_ip(ip);
        }
        let (shutdown, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(controlplane_stub::run(cfg, listener, async move {
            let _ = rx.await;
        }));
        let conn = Conn::new(addr);
        let deadline = Instant::now() + GUARD;
        loop {
            let req = Request::builder()
                .uri(format!("http://{addr}/health"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(1), conn.client.request(req)).await
                && r.status() == StatusCode::OK
            {
                let body = r.into_body().collect().await.expect("body").to_bytes();
                let v: Value = serde_json::from_slice(&body).expect("health json");
                assert_eq!(v, json!({"status": "OK"}));
                break;
            }
            assert!(!task.is_finished(), "control plane stopped while starting");
            assert!(
                Instant::now() < deadline,
                "control plane never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            conn,
            dir,
            file,
            shutdown,
            task,
        }
    }

    /// Stops the control plane (it must stop cleanly, within the guard); returns its data
    /// directory and configuration.
    pub(crate) async fn stop(self) -> (TempDir, ControlplaneFile) {
        let Self {
            conn,
            dir,
            file,
            shutdown,
            task,
        } = self;
        drop(conn);
        let _ = shutdown.send(());
        tokio::time::timeout(GUARD, task)
            .await
            .expect("control plane stops in time")
            .expect("control plane task")
            .expect("control plane ran cleanly");
        (dir, file)
    }

    /// Stops it and starts a new one on the same data directory and configuration.
    pub(crate) async fn restart(self) -> Self {
        let (dir, file) = self.stop().await;
        Self::launch(dir, file).await
    }
}

// ------------------------------------------------------------------------------------ bodies

/// A timestamp `d` from now (negative: in the past), as the key service takes it.
pub(crate) fn at(offset_secs: i64) -> String {
    Timestamp::from_unix_millis(Timestamp::now().unix_millis() + offset_secs * 1000).to_string()
}

/// nvcf-api.md §7.3's key body with the given scopes and resources.
pub(crate) fn key_body(scopes: &[&str], resources: Value) -> Value {
    json!({
        "description": "invoke key",
        "expires_at": at(30 * 86_400),
        "audience_service_ids": [NVCF],
        "authorizations": {"policies": [{
            "aud": NVCF,
            "auds": [NVCF],
            "product": "nv-cloud-functions",
            "resources": resources,
            "scopes": scopes,
        }]},
    })
}

/// A minimal container function.
pub(crate) fn fn_body(name: &str) -> Value {
    json!({
        "name": name,
        "inferenceUrl": "/echo",
        "inferencePort": 8000,
        "containerImage": "registry.example.com/team/echo:1.0.0",
    })
}

/// One specification on the scripted workers' GPU.
pub(crate) fn dep_body(min: u32, max: u32) -> Value {
    json!({"deploymentSpecifications": [{
        "gpu": GPU, "instanceType": INSTANCE_TYPE, "backend": GROUP,
        "minInstances": min, "maxInstances": max, "maxRequestConcurrency": 4,
    }]})
}

pub(crate) fn fn_path(fid: Uuid, vid: Uuid) -> String {
    format!("/v2/nvcf/functions/{fid}/versions/{vid}")
}

pub(crate) fn dep_path(fid: Uuid, vid: Uuid) -> String {
    format!("/v2/nvcf/deployments/functions/{fid}/versions/{vid}")
}

/// (id, versionId) of a FunctionDto.
#[track_caller]
pub(crate) fn ids(f: &Value) -> (Uuid, Uuid) {
    let id = f["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("function id is a UUID");
    let vid = f["versionId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("versionId is a UUID");
    (id, vid)
}

/// Polls `f` until it yields a value.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + GUARD;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
