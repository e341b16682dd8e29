//! End-to-end tests of the gateway over real sockets: a recording hyper backend stands in for the
//! control plane, `dataplane::run` serves on a port-0 listener, and clients speak HTTP/1.1, h2c and
//! raw bytes to it.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dataplane::{DataplaneError, DataplaneFile};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

const TOKEN: &str = "internal-test-token";
const FID: &str = "0f6d3c8e-9a3b-4c1e-8d2f-1a2b3c4d5e6f";
/// Guards every wait on the gateway so a bug fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- backend (fake control plane)

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    target: String,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

struct Backend {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Recorded>>>,
    /// One message per request to `/v2/nvcf/slow` once it has arrived.
    slow_arrived: mpsc::UnboundedReceiver<()>,
    /// `/v2/nvcf/slow` answers once it gets a permit from here.
    slow_release: Arc<Semaphore>,
}

impl Backend {
    /// What the proxy forwarded (the gateway's own feed follower also calls this fake control
    /// plane on `/internal/v1/feed`; those calls are not proxied traffic and are left out).
    fn records(&self) -> Vec<Recorded> {
        self.records
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| !r.target.starts_with("/internal/v1/feed"))
            .cloned()
            .collect()
    }

    fn only_record(&self) -> Recorded {
        let records = self.records();
        assert_eq!(records.len(), 1, "backend saw {records:?}");
        records.into_iter().next().expect("one record")
    }
}

async fn start_backend() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    let records = Arc::new(Mutex::new(Vec::new()));
    let (arrived_tx, slow_arrived) = mpsc::unbounded_channel();
    let slow_release = Arc::new(Semaphore::new(0));
    let (recs, release) = (Arc::clone(&records), Arc::clone(&slow_release));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (recs, release, arrived_tx) = (recs.clone(), release.clone(), arrived_tx.clone());
            let service = service_fn(move |req: Request<Incoming>| {
                let (recs, release, arrived_tx) =
                    (recs.clone(), release.clone(), arrived_tx.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"broken body")));
                        *r.status_mut() = StatusCode::BAD_REQUEST;
                        return Ok::<_, Infallible>(r);
                    };
                    let target = parts
                        .uri
                        .path_and_query()
                        .map_or("/", |pq| pq.as_str())
                        .to_owned();
                    recs.lock().expect("lock").push(Recorded {
                        method: parts.method.clone(),
                        target: target.clone(),
                        version: parts.version,
                        headers: parts.headers.clone(),
                        body: body.clone(),
                    });
                    if target.starts_with("/v2/nvcf/slow") {
                        let _ = arrived_tx.send(());
                        release.acquire().await.expect("semaphore").forget();
                    }
                    let reply = if target.starts_with("/v2/nvcf/echo") {
                        body
                    } else {
                        Bytes::from_static(b"backend ok")
                    };
                    let resp = Response::builder()
                        .status(StatusCode::OK)
                        .header("x-backend", "yes")
                        .header("connection", "x-hop")
                        .header("x-hop", "1")
                        .header("keep-alive", "timeout=5")
                        .header("proxy-authenticate", "Basic")
                        .body(Full::new(reply))
                        .expect("response");
                    Ok(resp)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Backend {
        addr,
        records,
        slow_arrived,
        slow_release,
    }
}

// ---------------------------------------------------------------- gateway under test

struct Gateway {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), DataplaneError>>,
}

impl Gateway {
    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = tokio::time::timeout(GUARD, &mut self.task)
            .await
            .expect("run returns");
        result.expect("run task").expect("run ok");
    }
}

async fn start_gateway(upstream: SocketAddr, tweak: impl FnOnce(&mut DataplaneFile)) -> Gateway {
    let mut file = DataplaneFile {
        listen: "127.0.0.1:0".to_owned(),
        controlplane_url: format!("http://{upstream}"),
        // Whatever the machine's cores (the default is one per core).
        serving_threads: 2,
        ..DataplaneFile::default()
    };
    tweak(&mut file);
    let config = file.validate(TOKEN).expect("valid config");
    let listener = TcpListener::bind(config.listen)
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("gateway addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(dataplane::run(config, listener, async move {
        let _ = rx.await;
    }));
    Gateway {
        addr,
        shutdown: Some(tx),
        task,
    }
}

async fn setup() -> (Backend, Gateway) {
    let backend = start_backend().await;
    let gateway = start_gateway(backend.addr, |_| {}).await;
    (backend, gateway)
}

// ---------------------------------------------------------------- clients

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn problem(&self) -> serde_json::Value {
        assert_eq!(self.headers["content-type"], "application/problem+json");
        serde_json::from_slice(&self.body).expect("problem json")
    }
}

async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    let fut = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(GUARD, fut)
        .await
        .expect("answer in time")
}

async fn get(addr: SocketAddr, host: &str, target: &str) -> Answer {
    let req = Request::builder()
        .method(Method::GET)
        .uri(target)
        .header("host", host)
        .body(Full::default())
        .expect("req");
    send(addr, req).await
}

async fn post(addr: SocketAddr, host: &str, target: &str, body: impl Into<Bytes>) -> Answer {
    let req = Request::builder()
        .method(Method::POST)
        .uri(target)
        .header("host", host)
        .body(Full::new(body.into()))
        .expect("req");
    send(addr, req).await
}

async fn send_h2(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    let fut = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.expect("h2 response");
        assert_eq!(resp.version(), Version::HTTP_2);
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(GUARD, fut)
        .await
        .expect("answer in time")
}

/// Writes `bytes` (from another task, so a server that answers early cannot block us) and reads
/// everything the server sends until it closes.
async fn raw(addr: SocketAddr, bytes: Vec<u8>) -> String {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    // The write half is returned (and kept open) so the client does not half-close early.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&bytes).await;
        write
    });
    let mut out = Vec::new();
    let read_all = tokio::time::timeout(GUARD, read.read_to_end(&mut out)).await;
    assert!(read_all.is_ok(), "server did not close the connection");
    writer.abort();
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------- routing

#[tokio::test]
async fn host_routing_to_key_service_and_management() {
    let (backend, gw) = setup().await;

    let a = post(gw.addr, "api-keys.127.0.0.1:8080", "/v1/admin/keys", "{}").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, "backend ok");
    let a = get(gw.addr, "api.x", "/v2/nvcf/functions").await;
    assert_eq!(a.status, StatusCode::OK);

    let recs = backend.records();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].method, Method::POST);
    assert_eq!(recs[0].target, "/v1/admin/keys");
    assert_eq!(
        recs[0].headers["host"], "api-keys.127.0.0.1:8080",
        "client Host kept"
    );
    assert_eq!(recs[0].body, "{}");
    assert_eq!(recs[1].method, Method::GET);
    assert_eq!(recs[1].target, "/v2/nvcf/functions");
    assert_eq!(recs[1].headers["host"], "api.x");
    gw.stop().await;
}

#[tokio::test]
async fn path_fallback_with_plain_host_preserves_query() {
    let (backend, gw) = setup().await;
    let host = gw.addr.to_string();

    let a = get(gw.addr, &host, "/v2/nvcf/functions?limit=5&x=%20y").await;
    assert_eq!(a.status, StatusCode::OK);
    let a = post(gw.addr, "localhost", "/v1/keys", "k").await;
    assert_eq!(a.status, StatusCode::OK);

    let recs = backend.records();
    assert_eq!(recs[0].target, "/v2/nvcf/functions?limit=5&x=%20y");
    assert_eq!(recs[1].target, "/v1/keys");
    gw.stop().await;
}

#[tokio::test]
async fn unknown_host_and_path_is_a_404_problem() {
    let (backend, gw) = setup().await;
    let a = get(gw.addr, "foo.example", "/x").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let p = a.problem();
    assert_eq!(p["status"], 404);
    assert_eq!(p["type"], "urn:nv-boot:problem-details:not-found");
    assert_eq!(p["detail"], "No route for host 'foo.example' and path '/x'");
    assert_eq!(p["instance"], "/x");
    assert!(backend.records().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn internal_paths_are_never_proxied() {
    let (backend, gw) = setup().await;
    for (host, target) in [
        ("api.x", "/internal/v1/feed"),
        ("api-keys.x", "/internal/v1/feed?since=0"),
        ("127.0.0.1", "/internal/v1/feed"),
        ("api.x", "/v2/nvcf/../../internal/v1/feed"),
        ("api.x", "/%69nternal/v1/feed"),
    ] {
        let a = get(gw.addr, host, target).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{host} {target}");
        assert_eq!(a.problem()["status"], 404);
    }
    assert!(backend.records().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn health_is_answered_by_the_gateway() {
    let (backend, gw) = setup().await;
    for host in ["127.0.0.1", "api.x", "api-keys.x", "invocation.x"] {
        let a = get(gw.addr, host, "/health").await;
        assert_eq!(a.status, StatusCode::OK, "{host}");
        assert_eq!(a.headers["content-type"], "application/json");
        assert_eq!(a.body, r#"{"status":"OK"}"#);
    }
    assert!(backend.records().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn invocation_routes_need_a_credential_and_a_known_function() {
    // The fake control plane has no feed, so the gateway holds an empty snapshot: no key is known.
    let (backend, gw) = setup().await;
    let path = format!("/v2/nvcf/pexec/functions/{FID}");
    for (host, target) in [
        ("127.0.0.1", path.as_str()),
        ("invocation.x", path.as_str()),
        (
            &format!("{FID}.invocation.x") as &str,
            "/v1/chat/completions",
        ),
    ] {
        let a = post(gw.addr, host, target, "{}").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{host} {target}");
        let p = a.problem();
        assert_eq!(p["detail"], "Header of type `authorization` was missing");
        assert_eq!(p["instance"], target);
        assert!(
            a.headers.get("nvcf-reqid").is_none(),
            "early errors carry no request id"
        );
    }
    let req = Request::builder()
        .method(Method::POST)
        .uri("/anything")
        .header("host", "127.0.0.1")
        .header("function-id", FID)
        .header("authorization", "Bearer nvapi-garbage")
        .body(Full::default())
        .expect("req");
    let a = send(gw.addr, req).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.problem()["detail"], "Invalid or unknown credential");
    // Invocation traffic never reaches the control plane.
    assert!(backend.records().is_empty(), "{:?}", backend.records());
    gw.stop().await;
}

// ---------------------------------------------------------------- header handling

#[tokio::test]
async fn trusted_headers_are_replaced_and_client_address_set() {
    let (backend, gw) = setup().await;
    let req = Request::builder()
        .method(Method::GET)
        .uri("/v2/nvcf/functions")
        .header("host", "api.x")
        .header("x-nvcf-gateway-auth", "forged")
        .header("x-nvcf-client-addr", "203.0.113.9")
        .header("x-forwarded-for", "198.51.100.1")
        .header("authorization", "Bearer client-key")
        .body(Full::default())
        .expect("req");
    assert_eq!(send(gw.addr, req).await.status, StatusCode::OK);
    let rec = backend.only_record();
    let all = |n: &str| {
        rec.headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("x-nvcf-gateway-auth"), [TOKEN]);
    assert_eq!(all("x-nvcf-client-addr"), ["127.0.0.1"]);
    assert_eq!(all("x-forwarded-for"), ["198.51.100.1, 127.0.0.1"]);
    assert_eq!(all("x-forwarded-proto"), ["http"]);
    assert_eq!(all("authorization"), ["Bearer client-key"]);
    assert_eq!(rec.version, Version::HTTP_11);
    gw.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let (backend, gw) = setup().await;
    let req = Request::builder()
        .method(Method::GET)
        .uri("/v2/nvcf/functions")
        .header("host", "api.x")
        .header("connection", "x-custom, keep-alive")
        .header("x-custom", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic Zm9v")
        .header("te", "trailers")
        .header("trailer", "x-t")
        .header("x-end-to-end", "kept")
        .body(Full::default())
        .expect("req");
    let a = send(gw.addr, req).await;
    assert_eq!(a.status, StatusCode::OK);
    for gone in ["x-hop", "keep-alive", "proxy-authenticate"] {
        assert!(
            !a.headers.contains_key(gone),
            "response kept {gone}: {:?}",
            a.headers
        );
    }
    assert!(a.headers.get("connection").is_none_or(|v| v != "x-hop"));
    assert_eq!(a.headers["x-backend"], "yes");

    let rec = backend.only_record();
    for gone in [
        "x-custom",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
    ] {
        assert!(
            !rec.headers.contains_key(gone),
            "request kept {gone}: {:?}",
            rec.headers
        );
    }
    assert!(
        rec.headers
            .get("connection")
            .is_none_or(|v| !v.as_bytes().starts_with(b"x-custom"))
    );
    assert_eq!(rec.headers["x-end-to-end"], "kept");
    gw.stop().await;
}

// ---------------------------------------------------------------- bodies

#[tokio::test]
async fn five_mib_body_streams_through_both_ways() {
    let backend = start_backend().await;
    let gw = start_gateway(backend.addr, |f| f.max_management_body_bytes = 16 << 20).await;
    let body: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let a = post(gw.addr, "api.x", "/v2/nvcf/echo", body.clone()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body.len(), body.len());
    assert!(a.body == body, "echoed body differs");
    assert_eq!(backend.only_record().body.len(), body.len());
    gw.stop().await;
}

#[tokio::test]
async fn oversized_body_with_content_length_is_413_up_front() {
    let (backend, gw) = setup().await;
    let head = "POST /v2/nvcf/functions HTTP/1.1\r\nhost: api.x\r\ncontent-length: 2097152\r\nconnection: close\r\n\r\n";
    let mut bytes = head.as_bytes().to_vec();
    bytes.extend_from_slice(&[b'a'; 4096]);
    let out = raw(gw.addr, bytes).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("application/problem+json"), "{out}");
    assert!(out.contains("exceeds the limit of 1048576 bytes"), "{out}");
    assert!(backend.records().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn oversized_chunked_body_is_413_mid_stream() {
    let backend = start_backend().await;
    let gw = start_gateway(backend.addr, |f| f.max_management_body_bytes = 64 * 1024).await;
    let mut bytes = b"POST /v1/keys HTTP/1.1\r\nhost: api-keys.x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    let chunk = [b'z'; 8192];
    for _ in 0..32 {
        bytes.extend_from_slice(b"2000\r\n");
        bytes.extend_from_slice(&chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    let out = raw(gw.addr, bytes).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("exceeds the limit of 65536 bytes"), "{out}");
    assert!(
        backend.records().is_empty(),
        "backend must not see a complete request"
    );
    gw.stop().await;
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let (_backend, gw) = setup().await;
    let big = "a".repeat(20 * 1024);
    let req = format!("GET /v2/nvcf/functions HTTP/1.1\r\nhost: api.x\r\nx-big: {big}\r\n\r\n");
    let out = raw(gw.addr, req.into_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    gw.stop().await;
}

#[tokio::test]
async fn oversized_h2_header_list_is_431() {
    let (backend, gw) = setup().await;
    let req = Request::builder()
        .uri("http://api.x/v2/nvcf/functions")
        .header("x-big", "a".repeat(20 * 1024))
        .body(Full::default())
        .expect("req");
    let a = send_h2(gw.addr, req).await;
    assert_eq!(a.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(backend.records().is_empty());
    gw.stop().await;
}

// ---------------------------------------------------------------- protocols and failures

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied_as_http1() {
    let (backend, gw) = setup().await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("http://api.x/v2/nvcf/functions?page=2")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::from_static(b"{\"h2\":true}")))
        .expect("req");
    let a = send_h2(gw.addr, req).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, "backend ok");
    let rec = backend.only_record();
    assert_eq!(rec.version, Version::HTTP_11);
    assert_eq!(rec.target, "/v2/nvcf/functions?page=2");
    assert_eq!(rec.headers["host"], "api.x", "Host from :authority");
    assert_eq!(rec.headers["cookie"], "a=1; b=2");
    assert_eq!(rec.headers["x-nvcf-client-addr"], "127.0.0.1");
    assert_eq!(rec.body, "{\"h2\":true}");

    let health = Request::get("http://127.0.0.1/health")
        .body(Full::default())
        .expect("req");
    assert_eq!(send_h2(gw.addr, health).await.body, r#"{"status":"OK"}"#);
    gw.stop().await;
}

#[tokio::test]
async fn control_plane_down_is_a_502_problem() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let gw = start_gateway(dead, |_| {}).await;
    let a = get(gw.addr, "api.x", "/v2/nvcf/functions").await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    let p = a.problem();
    assert_eq!(p["status"], 502);
    let detail = p["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("control plane unreachable: "),
        "{detail}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn slow_control_plane_is_a_504_problem() {
    let backend = start_backend().await;
    let gw = start_gateway(backend.addr, |f| {
        f.upstream_timeout = Duration::from_millis(200)
    })
    .await;
    let a = get(gw.addr, "api.x", "/v2/nvcf/slow").await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(a.problem()["status"], 504);
    backend.slow_release.add_permits(1);
    gw.stop().await;
}

#[tokio::test]
async fn malformed_request_line_gets_400_and_server_keeps_serving() {
    let (_backend, gw) = setup().await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /\x01\x02 HTTP/1.1\r\nhost: x\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
        b"GET / HTTP/1.1\r\ncontent-length: nope\r\n\r\n",
    ] {
        let out = raw(gw.addr, garbage.to_vec()).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{garbage:?} -> {out}");
    }
    assert_eq!(
        get(gw.addr, "127.0.0.1", "/health").await.status,
        StatusCode::OK
    );
    gw.stop().await;
}

#[tokio::test]
async fn silent_connection_is_closed_after_header_read_timeout() {
    let backend = start_backend().await;
    let gw = start_gateway(backend.addr, |f| {
        f.header_read_timeout = Duration::from_millis(200)
    })
    .await;
    // Nothing at all, and a partial h2 preface: both are closed without an answer.
    for bytes in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let out = raw(gw.addr, bytes.to_vec()).await;
        assert!(out.is_empty(), "{out}");
    }
    // A partial HTTP/1 head is answered 408.
    let out = raw(gw.addr, b"GET /health HTTP/1.1\r\n".to_vec()).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    gw.stop().await;
}

#[tokio::test]
async fn slow_pexec_head_is_closed_within_the_header_read_timeout() {
    let backend = start_backend().await;
    let gw = start_gateway(backend.addr, |f| {
        f.header_read_timeout = Duration::from_millis(300)
    })
    .await;
    // The request line and part of the headers of a pexec call, then nothing: the connection is
    // answered 408 and closed once the header read timeout passes, long before the guard.
    let partial = format!(
        "POST /v2/nvcf/pexec/functions/{FID} HTTP/1.1\r\nhost: invocation.x\r\nauthorization: Bearer nvapi-"
    );
    let started = std::time::Instant::now();
    let out = raw(gw.addr, partial.into_bytes()).await;
    let took = started.elapsed();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    // The gateway keeps serving.
    assert_eq!(
        get(gw.addr, "127.0.0.1", "/health").await.status,
        StatusCode::OK
    );
    assert!(backend.records().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn oversized_header_on_pexec_is_431_and_the_gateway_keeps_serving() {
    let (backend, gw) = setup().await;
    let big = "a".repeat(100 * 1024);
    let path = format!("/v2/nvcf/pexec/functions/{FID}");
    // HTTP/1.1: the head is refused once it outgrows max-header-bytes.
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: invocation.x\r\nauthorization: Bearer nvapi-x\r\nx-big: {big}\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    let out = raw(gw.addr, req.into_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    // HTTP/2: the header list is refused on its stream.
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://invocation.x{path}"))
        .header("authorization", "Bearer nvapi-x")
        .header("x-big", "a".repeat(20 * 1024))
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("req");
    let a = send_h2(gw.addr, req).await;
    assert_eq!(a.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // The next requests, invocation included, are served as usual (no credential known: 401).
    assert_eq!(
        get(gw.addr, "127.0.0.1", "/health").await.status,
        StatusCode::OK
    );
    let a = post(gw.addr, "invocation.x", &path, "{}").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.problem()["status"], 401);
    assert!(backend.records().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut backend = start_backend().await;
    let mut gw = start_gateway(backend.addr, |_| {}).await;
    let addr = gw.addr;
    let in_flight = tokio::spawn(async move { get(addr, "api.x", "/v2/nvcf/slow").await });
    tokio::time::timeout(GUARD, backend.slow_arrived.recv())
        .await
        .expect("arrived")
        .expect("open");

    // Stop accepting while the request is still at the backend.
    let _ = gw.shutdown.take().expect("sender").send(());
    backend.slow_release.add_permits(1);
    let a = tokio::time::timeout(GUARD, in_flight)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, "backend ok");
    tokio::time::timeout(GUARD, &mut gw.task)
        .await
        .expect("run returns")
        .expect("task")
        .expect("ok");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

// ---------------------------------------------------------------- the HTTP/1.1 front

/// Reads from `stream` until `buf` holds `needle` (or the guard expires).
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &str) {
    let fut = async {
        while !String::from_utf8_lossy(buf).contains(needle) {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "closed before {needle:?}: {}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(GUARD, fut).await.expect("in time");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (backend, gw) = setup().await;
    let requests = "GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n\
        POST /v2/nvcf/echo HTTP/1.1\r\nhost: api.x\r\ncontent-length: 5\r\n\r\nhello\
        GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n";
    let out = raw(gw.addr, requests.as_bytes().to_vec()).await;
    let answers: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{out}");
    assert!(answers.iter().all(|a| a.starts_with("200 OK\r\n")), "{out}");
    assert!(answers.iter().all(|a| a.contains("\r\ndate: ")), "{out}");
    assert!(answers[0].ends_with(r#"{"status":"OK"}"#), "{out}");
    assert!(answers[1].ends_with("\r\n\r\nhello"), "{out}");
    assert!(answers[2].contains("connection: close\r\n"), "{out}");
    assert_eq!(backend.only_record().body, "hello");
    gw.stop().await;
}

#[tokio::test]
async fn chunked_request_bodies_stream_through_in_pieces() {
    let (backend, gw) = setup().await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"POST /v2/nvcf/echo HTTP/1.1\r\nhost: api.x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream
        .write_all(b"6\r\n world\r\n0\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    read_until(&mut stream, &mut out, "hello world").await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert_eq!(backend.only_record().body, "hello world");
    // The connection carries the next request.
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    read_until(&mut stream, &mut out, r#"{"status":"OK"}"#).await;
    gw.stop().await;
}

#[tokio::test]
async fn expect_continue_is_answered_when_the_body_is_wanted() {
    let (backend, gw) = setup().await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"POST /v2/nvcf/echo HTTP/1.1\r\nhost: api.x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    read_until(&mut stream, &mut out, "\r\n\r\n").await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 100 Continue\r\n\r\n"
    );
    stream.write_all(b"hello").await.expect("write");
    read_until(&mut stream, &mut out, "\r\n\r\nhello").await;
    assert!(String::from_utf8_lossy(&out).contains("HTTP/1.1 200 OK\r\n"));
    assert_eq!(backend.only_record().body, "hello");

    // Refused before the body is wanted: no 100, the final answer, and the connection closes
    // (the body it announced was never read).
    let out = raw(
        gw.addr,
        format!(
            "POST /v2/nvcf/pexec/functions/{FID} HTTP/1.1\r\nhost: invocation.x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n"
        )
        .into_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(!out.contains("100 Continue"), "{out}");
    gw.stop().await;
}

#[tokio::test]
async fn http10_clients_get_the_connection_handling_they_ask_for() {
    let (_backend, gw) = setup().await;
    let out = raw(gw.addr, b"GET /health HTTP/1.0\r\n\r\n".to_vec()).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.contains("content-length: 15\r\nconnection: close\r\n"),
        "{out}"
    );

    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    for _ in 0..2 {
        stream
            .write_all(b"GET /health HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
            .await
            .expect("write");
        let mut out = Vec::new();
        read_until(&mut stream, &mut out, r#"{"status":"OK"}"#).await;
        assert!(
            String::from_utf8_lossy(&out).contains("connection: keep-alive\r\n"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let backend = start_backend().await;
    let gw = start_gateway(backend.addr, |f| {
        f.idle_timeout = Duration::from_millis(300)
    })
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    read_until(&mut stream, &mut out, r#"{"status":"OK"}"#).await;
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    gw.stop().await;
}

/// The connection's timer is re-armed lazily (moved earlier, never later): a wait that starts
/// after an earlier one still gets the whole idle timeout, and a head that starts arriving on a
/// kept-alive connection still gets only the header read timeout.
#[tokio::test]
async fn each_wait_on_a_kept_alive_connection_gets_its_own_limit() {
    let backend = start_backend().await;
    let gw = start_gateway(backend.addr, |f| {
        f.idle_timeout = Duration::from_millis(1000);
        f.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let health = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
    let mut out = Vec::new();
    for _ in 0..3 {
        // Each request 500 ms after the last: past the first wait's limit (1 s) by the third.
        stream.write_all(health).await.expect("write");
        out.clear();
        read_until(&mut stream, &mut out, r#"{"status":"OK"}"#).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A head begun after an idle wait: answered 408 once the header read timeout passes, well
    // before the idle timeout would.
    let started = std::time::Instant::now();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: 1")
        .await
        .expect("write");
    let mut rest = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 408"), "{rest}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(900),
        "{took:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_and_silent_connections_at_once() {
    let (_backend, gw) = setup().await;
    // A keep-alive connection between requests, and one that never said anything.
    let mut idle = TcpStream::connect(gw.addr).await.expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    read_until(&mut idle, &mut out, r#"{"status":"OK"}"#).await;
    let _silent = TcpStream::connect(gw.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    gw.stop().await;
    // Well inside the 5 s grace that connections still busy would get.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(GUARD, idle.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
}

#[tokio::test]
async fn refused_heads_get_a_problem_and_the_connection_closes() {
    let (backend, gw) = setup().await;
    for (head, status, detail) in [
        (
            "POST /v2/nvcf/functions HTTP/1.1\r\nhost: api.x\r\ntransfer-encoding: gzip\r\n\r\n",
            "501",
            "transfer-coding 'gzip' is not supported",
        ),
        (
            "POST /v2/nvcf/functions HTTP/1.1\r\nhost: api.x\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
            "400",
            "both content-length and transfer-encoding",
        ),
        (
            "GET / HTTP/1.1\r\nbad header line\r\n\r\n",
            "400",
            "malformed request head",
        ),
    ] {
        let out = raw(gw.addr, head.as_bytes().to_vec()).await;
        assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{out}");
        assert!(
            out.contains("content-type: application/problem+json\r\n"),
            "{out}"
        );
        assert!(out.contains("connection: close\r\n"), "{out}");
        assert!(out.contains(detail), "{out}");
    }
    assert!(backend.records().is_empty());
    gw.stop().await;
}

// ---------------------------------------------------------------- access log

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

impl LogBuffer {
    fn access_lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("lock"))
            .lines()
            .filter(|l| l.contains(" access: "))
            .map(str::to_owned)
            .collect()
    }
}

/// Lines are written when the response body ends, which the client sees first: wait for `n`.
async fn access_lines(buffer: &LogBuffer, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        let lines = buffer.access_lines();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// A current-thread runtime: the gateway's tasks run on this thread, under the test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn one_access_line_per_request_on_every_route() {
    let buffer = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buffer.clone())
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("access=info"))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // The subscriber is this thread's: the connections are served here, not on serving threads.
    let backend = start_backend().await;
    let gw = start_gateway(backend.addr, |f| f.serving_threads = 0).await;
    assert_eq!(
        get(gw.addr, "127.0.0.1", "/health?token=secret")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        post(gw.addr, "api.x", "/v2/nvcf/functions", "{}")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(gw.addr, "nowhere.example", "/x").await.status,
        StatusCode::NOT_FOUND
    );
    let pexec = format!("/v2/nvcf/pexec/functions/{FID}");
    assert_eq!(
        post(gw.addr, "invocation.x", &pexec, "{}").await.status,
        StatusCode::UNAUTHORIZED
    );
    let lines = access_lines(&buffer, 4).await;
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let expect: [&[&str]; 4] = [
        &["method=GET", "path=/health ", "status=200", "protocol=h1"],
        &[
            "method=POST",
            "path=/v2/nvcf/functions ",
            "status=200",
            "bytes_received=2",
        ],
        &["path=/x ", "status=404"],
        &["status=401", &format!("function_id={FID}")],
    ];
    for (line, fields) in lines.iter().zip(expect) {
        for field in fields
            .iter()
            .chain(&["latency_us=", "client=127.0.0.1:", "outcome=complete"])
        {
            assert!(line.contains(field), "{field} missing from {line}");
        }
    }
    assert!(!lines.iter().any(|l| l.contains("secret")), "{lines:#?}");
    assert_eq!(backend.records().len(), 1);
    gw.stop().await;

    // Switched off in the config: nothing.
    let gw = start_gateway(backend.addr, |f| {
        f.access_log = false;
        f.serving_threads = 0;
    })
    .await;
    assert_eq!(
        get(gw.addr, "127.0.0.1", "/health").await.status,
        StatusCode::OK
    );
    gw.stop().await;
    assert_eq!(buffer.access_lines().len(), 4);
}

// ---------------------------------------------------------------- TLS listener

#[tokio::test]
async fn tls_listener_speaks_h2_and_http1_by_alpn_with_a_generated_certificate() {
    let backend = start_backend().await;
    let dir = std::env::temp_dir().join(format!("dataplane-tls-{}", uuid::Uuid::new_v4()));
    let file = DataplaneFile {
        listen: "127.0.0.1:0".to_owned(),
        tls_listen: "127.0.0.1:0".to_owned(),
        data_dir: dir.clone(),
        controlplane_url: format!("http://{}", backend.addr),
        ..DataplaneFile::default()
    };
    let config = file.validate(TOKEN).expect("valid config");
    let tls_cfg = config.tls.clone().expect("tls configured");
    assert!(tls_cfg.generate);
    let plain = TcpListener::bind(config.listen).await.expect("bind");
    let tls = TcpListener::bind(tls_cfg.listen).await.expect("bind tls");
    let addr = tls.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(dataplane::serve(config, plain, Some(tls), async move {
        let _ = rx.await;
    }));
    // The pair is generated before the first accept; wait for the file.
    let deadline = tokio::time::Instant::now() + GUARD;
    while !tls_cfg.key_file.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "certificate never generated"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");

    // h2 by ALPN: the gateway answers /health itself.
    let stream = TcpStream::connect(addr).await.expect("connect");
    let tls_stream = support::tls_client(&tls_cfg.cert_file, b"h2")
        .connect(name.clone(), stream)
        .await
        .expect("handshake");
    assert_eq!(tls_stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls_stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("https://api.localhost/health")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), Version::HTTP_2);

    // http/1.1 by ALPN: a management call is proxied to the control plane.
    let stream = TcpStream::connect(addr).await.expect("connect");
    let tls_stream = support::tls_client(&tls_cfg.cert_file, b"http/1.1")
        .connect(name, stream)
        .await
        .expect("handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls_stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/v2/nvcf/functions")
        .header("host", "api.localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("h1 response");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"backend ok");

    // Plain bytes on the TLS port are a failed handshake, not a crash.
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(GUARD, raw.read_to_end(&mut buf)).await;

    let _ = tx.send(());
    tokio::time::timeout(GUARD, task)
        .await
        .expect("stops")
        .expect("task")
        .expect("serve ok");
    let _ = std::fs::remove_dir_all(dir);
}
