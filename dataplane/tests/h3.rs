//! The HTTP/3 listener over real sockets: an h3 client (h3 + h3-quinn + quinn, trusting the
//! generated certificate) against `serve_all` on port 0 — `/health`, a proxied management call, an
//! upstream body that breaks off (the client's stream is reset), a wrong-ALPN handshake that fails
//! and is counted, request metrics labelled `h3`, `Alt-Svc` on HTTP/1.1 and HTTP/2 answers over
//! TLS (not on cleartext ones), and a shutdown that closes idle HTTP/3 connections without waiting
//! out the grace. Its own test binary, so the recording `metrics` recorder sees only this file.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use dataplane::{DataplaneFile, Listeners};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder};
use metrics::{SharedString, Unit};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const TOKEN: &str = "internal-test-token";
const GUARD: Duration = Duration::from_secs(20);

/// Counter totals by `name{k=v,...}` (labels sorted).
#[derive(Debug, Default)]
struct Store(Mutex<BTreeMap<String, u64>>);

#[derive(Debug)]
struct Cell {
    key: String,
    store: Arc<Store>,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self
            .store
            .0
            .lock()
            .expect("lock")
            .entry(self.key.clone())
            .or_default() += value;
    }
    fn absolute(&self, _value: u64) {}
}

#[derive(Debug)]
struct CountingRecorder(Arc<Store>);

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        Counter::from_arc(Arc::new(Cell {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            store: Arc::clone(&self.0),
        }))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

impl Store {
    fn get(&self, key: &str) -> u64 {
        self.0
            .lock()
            .expect("lock")
            .get(key)
            .copied()
            .unwrap_or_default()
    }
}

/// A control plane that answers every call with `backend <method> <path>` plus the body.
async fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|req: Request<Incoming>| async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                if parts.uri.path().ends_with("/broken") {
                    // A head and part of the body, then the upstream breaks off.
                    let frames = futures_util::stream::unfold(0u8, |step| async move {
                        match step {
                            0 => Some((Ok(Frame::data(Bytes::from_static(b"partial"))), 1)),
                            1 => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                Some((Err(std::io::Error::other("upstream broke off")), 2))
                            }
                            _ => None,
                        }
                    });
                    let body = StreamBody::new(frames).boxed_unsync();
                    return Ok::<_, Infallible>(Response::new(body));
                }
                let mut reply = BytesMut::from(
                    format!("backend {} {} ", parts.method, parts.uri.path()).as_bytes(),
                );
                reply.extend_from_slice(&body);
                let body = Full::new(reply.freeze())
                    .map_err(|never| match never {})
                    .boxed_unsync();
                Ok(Response::new(body))
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

type H3Send = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// The headers of `GET /health` over TLS to `addr`, trusting `cert`, with HTTP/1.1 or HTTP/2 as
/// `alpn` picks.
async fn tls_health(addr: SocketAddr, cert: &Path, alpn: &[u8]) -> http::HeaderMap {
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let io = support::tls_client(cert, alpn)
        .connect(name, tcp)
        .await
        .expect("handshake");
    let io = TokioIo::new(io);
    let req = Request::get("https://api.localhost/health")
        .header("host", "api.localhost")
        .body(Full::<Bytes>::default())
        .expect("req");
    let resp = if alpn == b"h2" {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("h2 response")
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("h1 response")
    };
    assert_eq!(resp.status(), StatusCode::OK);
    resp.headers().clone()
}

/// An h3 connection trusting `cert` and offering `alpn`.
async fn connect(
    addr: SocketAddr,
    cert: &Path,
    alpn: &[u8],
) -> Result<(quinn::Endpoint, H3Send), String> {
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_root_certificates(support::roots(cert))
    .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = endpoint
        .connect(addr, "localhost")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    Ok((endpoint, send))
}

/// One h3 exchange; returns the status, headers and whole body.
async fn exchange(
    send: &mut H3Send,
    req: Request<()>,
    body: Bytes,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut stream = send.send_request(req).await.expect("send request");
    if !body.is_empty() {
        stream.send_data(body).await.expect("send body");
    }
    stream.finish().await.expect("finish");
    let resp = stream.recv_response().await.expect("response");
    let mut out = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await.expect("data") {
        out.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    (resp.status(), resp.headers().clone(), out.freeze())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_listener_serves_the_same_pipeline() {
    let store = Arc::new(Store::default());
    metrics::set_global_recorder(CountingRecorder(Arc::clone(&store))).expect("recorder");
    let backend = start_backend().await;
    let dir = std::env::temp_dir().join(format!("dataplane-h3-{}", uuid::Uuid::new_v4()));
    let file = DataplaneFile {
        listen: "127.0.0.1:0".to_owned(),
        tls_listen: "127.0.0.1:0".to_owned(),
        quic_listen: "127.0.0.1:0".to_owned(),
        data_dir: dir.clone(),
        controlplane_url: format!("http://{backend}"),
        ..DataplaneFile::default()
    };
    let config = file.validate(TOKEN).expect("valid config");
    let quic_cfg = config.quic.clone().expect("quic configured");
    let plain = TcpListener::bind(config.listen).await.expect("bind");
    let plain_addr = plain.local_addr().expect("addr");
    let udp = std::net::UdpSocket::bind(quic_cfg.tls.listen).expect("bind udp");
    let quic_addr = udp.local_addr().expect("udp addr");
    let tls = TcpListener::bind(config.tls.as_ref().expect("tls").listen)
        .await
        .expect("bind tls");
    let tls_addr = tls.local_addr().expect("tls addr");
    let (tx, rx) = oneshot::channel::<()>();
    let listeners = Listeners {
        plain,
        tls: Some(tls),
        quic: Some(udp),
    };
    let task = tokio::spawn(dataplane::serve_all(config, listeners, async move {
        let _ = rx.await;
    }));
    let deadline = tokio::time::Instant::now() + GUARD;
    while !quic_cfg.tls.key_file.exists() {
        assert!(tokio::time::Instant::now() < deadline, "no certificate");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cert = quic_cfg.tls.cert_file.clone();

    // /health over h3, answered by the gateway itself; no Alt-Svc on h3 answers.
    let (endpoint, mut send) = tokio::time::timeout(GUARD, connect(quic_addr, &cert, b"h3"))
        .await
        .expect("in time")
        .expect("h3 connect");
    let req = Request::get("https://api.localhost/health")
        .body(())
        .expect("req");
    let (status, headers, body) = exchange(&mut send, req, Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], br#"{"status":"OK"}"#);
    assert!(headers.get("alt-svc").is_none());

    // A management call is proxied to the control plane, body streamed up and back.
    let req = Request::post("https://api.localhost/v2/nvcf/functions")
        .header("content-type", "application/json")
        .body(())
        .expect("req");
    let (status, _, body) = exchange(&mut send, req, Bytes::from_static(b"{\"x\":1}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"backend POST /v2/nvcf/functions {\"x\":1}");
    // Several streams on one connection at once.
    let calls = (0..8).map(|i| {
        let mut send = send.clone();
        async move {
            let req = Request::get(format!("https://api.localhost/v2/nvcf/functions/{i}"))
                .body(())
                .expect("req");
            exchange(&mut send, req, Bytes::new()).await.0
        }
    });
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK);
    }
    // An upstream that breaks off mid-body resets the client's stream instead of ending it cleanly.
    let req = Request::get("https://api.localhost/v2/nvcf/broken")
        .body(())
        .expect("req");
    let mut stream = send.send_request(req).await.expect("send request");
    stream.finish().await.expect("finish");
    let resp = stream.recv_response().await.expect("response head");
    assert_eq!(resp.status(), StatusCode::OK);
    let outcome = loop {
        match stream.recv_data().await {
            Ok(Some(_)) => {}
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let err = outcome.expect_err("the broken body must reset the stream");
    assert!(err.to_string().contains("H3_INTERNAL_ERROR"), "{err}");
    assert!(
        store.get("gateway_requests_total{protocol=h3,route=health,status_class=2xx}") >= 1,
        "{store:?}"
    );
    assert!(
        store.get("gateway_requests_total{protocol=h3,route=management,status_class=2xx}") >= 9
    );
    drop(send);
    endpoint.close(0u32.into(), b"done");

    // A client offering another ALPN fails the handshake, and it is counted.
    let wrong = tokio::time::timeout(GUARD, connect(quic_addr, &cert, b"h2"))
        .await
        .expect("in time");
    assert!(wrong.is_err(), "h2 ALPN must not be accepted on QUIC");
    let deadline = tokio::time::Instant::now() + GUARD;
    while store.get("gateway_quic_handshake_failures_total{}") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "failure not counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // HTTP/1.1 and HTTP/2 answers over TLS advertise the QUIC port; cleartext ones do not (an
    // http origin cannot use an h3 alternative).
    let advertised = format!("h3=\":{}\"", quic_addr.port());
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let headers = tls_health(tls_addr, &cert, alpn).await;
        assert_eq!(
            headers.get("alt-svc").and_then(|v| v.to_str().ok()),
            Some(advertised.as_str()),
            "{}",
            String::from_utf8_lossy(alpn)
        );
    }
    let stream = TcpStream::connect(plain_addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get("/health")
        .header("host", "api.localhost")
        .body(Full::<Bytes>::default())
        .expect("req");
    let resp = sender.send_request(req).await.expect("h1 response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("alt-svc").is_none());
    drop(sender);

    // Shutdown with an idle HTTP/3 connection open: GOAWAY ends it without waiting out the grace.
    let (_idle_endpoint, idle) = connect(quic_addr, &cert, b"h3").await.expect("h3 connect");
    let stopping = std::time::Instant::now();
    let _ = tx.send(());
    tokio::time::timeout(GUARD, task)
        .await
        .expect("stops")
        .expect("task")
        .expect("serve ok");
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "waited {:?}",
        stopping.elapsed()
    );
    drop(idle);
    let _ = std::fs::remove_dir_all(dir);
}
