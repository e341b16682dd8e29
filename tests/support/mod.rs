//! Shared harness of the invocation tests: the stack's config, HTTP/1.1 and h2c clients, minting
//! keys, deploying functions, waiting for them, and a recording stand-in for a container.

// One copy per test binary that includes it; not every binary uses every helper.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nvcf_gateway::config::{self, FileConfig};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

pub const ISSUER: &str = "nvidia-cloud-functions-ncp-service-id-aketm";
pub const TOKEN: &str = "invoke-test-internal-token";

pub fn test_config(dir: &Path) -> FileConfig {
    let text = format!(
        r#"
internal-token = "{TOKEN}"
[admin]
listen = ""
[controlplane]
listen = "127.0.0.1:0"
data-dir = "{cp}"
heartbeat-interval = "100ms"
heartbeat-timeout = "2s"
[dataplane]
listen = "127.0.0.1:0"
tls-listen = ""
quic-listen = "127.0.0.1:0"
data-dir = "{dp}"
# Refuse at once when a version is full (tests/queue.rs covers the wait queue).
max-queued-per-version = 0
# Two whatever the machine's cores: the serving threads are exercised, and the worker
# connections the tests count (one pool per thread) do not depend on the machine.
serving-threads = 2
[worker]
listen = "127.0.0.1:0"
data-dir = "{w}"
device = "cpu"
"#,
        cp = dir.join("cp").display(),
        dp = dir.join("dp").display(),
        w = dir.join("w").display()
    );
    config::parse("test", &text, &BTreeMap::new()).expect("test config")
}

/// One answer, body read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

pub struct Gw {
    pub h1: Client<HttpConnector, Full<Bytes>>,
    pub addr: SocketAddr,
}

impl Gw {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            h1: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            addr,
        }
    }

    pub fn request(
        &self,
        method: Method,
        host_prefix: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("host", format!("{host_prefix}{}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Full::new(body)).expect("request")
    }

    /// Sends over HTTP/1.1 (pooled) or h2c with prior knowledge. For h2 the `Host` header becomes
    /// the `:authority`, as curl does, on a connection to the gateway's address.
    pub async fn send(&self, h2: bool, req: Request<Full<Bytes>>) -> Answer {
        let fut = async {
            if !h2 {
                return self.h1.request(req).await.expect("send");
            }
            let (mut parts, body) = req.into_parts();
            let host = parts
                .headers
                .remove("host")
                .and_then(|h| h.to_str().ok().map(str::to_owned))
                .unwrap_or_else(|| self.addr.to_string());
            let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            parts.uri = format!("http://{host}{pq}").parse().expect("h2 uri");
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .expect("connect");
            let (mut sender, conn) = hyper::client::conn::http2::handshake(
                TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .expect("h2 handshake");
            tokio::spawn(conn);
            sender
                .send_request(Request::from_parts(parts, body))
                .await
                .expect("send h2")
        };
        let resp = tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .expect("answer in time");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        host_prefix: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        self.send(
            false,
            self.request(method, host_prefix, path, headers, body.into()),
        )
        .await
    }
}

pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub const KEY_HEADERS: [(&str, &str); 3] = [
    ("key-issuer-service", "nvcf-api"),
    ("key-issuer-id", ISSUER),
    ("key-owner-id", "svc@nvcf-api.local"),
];

/// Mints an API key with `scopes` over `resources`; returns (value, id).
pub async fn api_key(gw: &Gw, scopes: &[&str], resources: Value) -> (String, String) {
    let expires = model::time::Timestamp::now()
        .plus(Duration::from_secs(86_400))
        .to_string();
    let body = json!({
        "description": "test key", "expires_at": expires,
        "authorizations": {"policies": [{"aud": ISSUER, "auds": [ISSUER], "product": "nv-cloud-functions",
            "resources": resources, "scopes": scopes}]}
    });
    let a = gw
        .call(
            Method::POST,
            "api-keys.",
            "/v1/keys",
            &KEY_HEADERS,
            body.to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let v = a.json();
    (
        v["value"].as_str().expect("value").to_owned(),
        v["id"].as_str().expect("id").to_owned(),
    )
}

/// Creates and deploys a function from `image` (minInstances 1); returns (fid, vid).
pub async fn deploy(
    gw: &Gw,
    admin: &str,
    name: &str,
    image: &str,
    concurrency: u32,
) -> (String, String) {
    let auth = format!("Bearer {admin}");
    let body = json!({"name": name, "inferenceUrl": "/infer", "containerImage": image});
    let a = gw
        .call(
            Method::POST,
            "api.",
            "/v2/nvcf/functions",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let v = a.json();
    let fid = v["function"]["id"].as_str().expect("id").to_owned();
    let vid = v["function"]["versionId"].as_str().expect("vid").to_owned();
    let dep = json!({"deploymentSpecifications": [{"gpu": "CPU", "instanceType": "NCP.CPU_1x",
        "minInstances": 1, "maxInstances": 1, "maxRequestConcurrency": concurrency}]});
    let a = gw
        .call(
            Method::POST,
            "api.",
            &format!("/v2/nvcf/deployments/functions/{fid}/versions/{vid}"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            dep.to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    (fid, vid)
}

pub async fn admin_token(gw: &Gw) -> String {
    let a = gw
        .call(Method::POST, "api-keys.", "/v1/admin/keys", &[], "")
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    a.json()["value"].as_str().expect("value").to_owned()
}

pub async fn wait_for_worker(gw: &Gw, admin: &str) {
    let auth = format!("Bearer {admin}");
    eventually(
        "the worker to register",
        Duration::from_secs(15),
        || async {
            let a = gw
                .call(
                    Method::GET,
                    "api.",
                    "/v2/nvcf/clusterGroups",
                    &[("authorization", &auth)],
                    "",
                )
                .await;
            a.status == StatusCode::OK && a.json()["clusterGroups"][0]["gpus"][0]["name"] == "CPU"
        },
    )
    .await;
}

/// Waits until a pexec of `fid` answers 200.
pub async fn wait_invocable(gw: &Gw, key: &str, fid: &str, body: &'static str) {
    let auth = format!("Bearer {key}");
    let path = format!("/v2/nvcf/pexec/functions/{fid}");
    eventually(
        "the function to answer",
        Duration::from_secs(20),
        || async {
            gw.call(
                Method::POST,
                "invocation.",
                &path,
                &[("authorization", &auth)],
                body,
            )
            .await
            .status
                == StatusCode::OK
        },
    )
    .await;
}

/// Invokes `path` with `key` until the gateway knows the key (a new key reaches it through the
/// feed, a few milliseconds after it was minted), and returns that answer.
pub async fn until_known(gw: &Gw, path: &str, key: &str) -> Answer {
    let auth = format!("Bearer {key}");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let a = gw
            .call(
                Method::POST,
                "invocation.",
                path,
                &[("authorization", &auth)],
                "{}",
            )
            .await;
        if a.status != StatusCode::UNAUTHORIZED || Instant::now() > deadline {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn assert_problem(a: &Answer, status: StatusCode, detail_has: &str) {
    assert_eq!(a.status, status, "{:?}", a.body);
    assert_eq!(a.header("content-type"), "application/problem+json");
    let v = a.json();
    assert_eq!(v["status"], status.as_u16());
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(detail_has),
        "{v} lacks {detail_has}"
    );
}

/// A random version-4 UUID in text form.
pub fn uuid_like() -> String {
    let n: u128 = rand_u128();
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..]
    )
}

pub fn rand_u128() -> u128 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(1);
    t.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
}

/// A stand-in for a function's container: answers `/health`, `/teapot` with 418, and anything
/// else with what it received (method, target, headers) as JSON.
pub async fn start_container() -> SocketAddr {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind container");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                let target = req
                    .uri()
                    .path_and_query()
                    .map_or("/", |pq| pq.as_str())
                    .to_owned();
                let headers: serde_json::Map<String, Value> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            json!(String::from_utf8_lossy(v.as_bytes())),
                        )
                    })
                    .collect();
                let status = if target == "/teapot" { 418 } else { 200 };
                let body =
                    json!({"method": req.method().as_str(), "target": target, "headers": headers});
                let mut response = http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .header("access-control-expose-headers", "x-a")
                    .header("x-multi", "1")
                    .header("x-multi", "2");
                // A container that sends NVCF's own headers: the gateway's replace them.
                if target == "/forge" {
                    response = response
                        .header("nvcf-reqid", "forged")
                        .header("nvcf-status", "forged");
                }
                Ok::<_, std::convert::Infallible>(
                    response
                        .body(Full::new(Bytes::from(body.to_string())))
                        .expect("response"),
                )
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Sends a 2 s load-tester call to `path` on its own connection, drops that connection after
/// 300 ms, and asserts that the function's only place (maxRequestConcurrency 1) is free again
/// well before the 2 s are up: the gateway released its slot and the worker cancelled the work.
pub async fn abandoned_call_frees_the_place(gw: &Gw, auth: &str, path: &str) {
    let json_ct = ("content-type", "application/json");
    let started = Instant::now();
    let gone = {
        let req = gw.request(
            Method::POST,
            "invocation.",
            path,
            &[("authorization", auth), json_ct],
            Bytes::from_static(br#"{"message":"abandoned","delay":2}"#),
        );
        let addr = gw.addr;
        tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(conn);
            sender.send_request(req).await.map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    gone.abort();
    let _ = gone.await;
    eventually(
        "the abandoned slot to be free",
        Duration::from_secs(1),
        || async {
            gw.call(
                Method::POST,
                "invocation.",
                path,
                &[("authorization", auth), json_ct],
                r#"{"message":"next"}"#,
            )
            .await
            .status
                == StatusCode::OK
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
}
