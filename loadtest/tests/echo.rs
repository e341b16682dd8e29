//! Runs `loadtest` against a tiny hyper echo server (HTTP/1.1 + h2c on one port via hyper-util's
//! auto builder, HTTP/2 over TLS with a self-signed certificate, and HTTP/3 on quinn + h3), all on
//! 127.0.0.1:0.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use loadtest::client::{Follow202, RequestTemplate, Target, TlsOptions};
use loadtest::{Proto, RunPlan};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// Echoes the body; `POST /slow-202` answers 202 + NVCF-REQID, and `GET /status/{id}` answers 202
/// on the first poll of each id and 200 on the second.
async fn handle(
    req: Request<Incoming>,
    polls: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await?.to_bytes();
    if path == "/slow-202" {
        let id = polls.fetch_add(1, Ordering::Relaxed);
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::ACCEPTED;
        r.headers_mut()
            .insert("nvcf-reqid", format!("req-{id}-0").parse().expect("hv"));
        return Ok(r);
    }
    if let Some(id) = path.strip_prefix("/status/") {
        if let Some(base) = id.strip_suffix("-0") {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::ACCEPTED;
            r.headers_mut()
                .insert("nvcf-reqid", format!("{base}-1").parse().expect("hv"));
            return Ok(r);
        }
        return Ok(Response::new(Full::new(Bytes::from_static(b"done"))));
    }
    Ok(Response::new(Full::new(body)))
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let polls = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let polls = Arc::clone(&polls);
            tokio::spawn(async move {
                let svc = service_fn(move |r| handle(r, Arc::clone(&polls)));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

async fn tls_server(dir: &std::path::Path) -> (SocketAddr, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let pem = dir.join("cert.pem");
    std::fs::write(&pem, ck.cert.pem()).expect("write pem");
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).expect("key");
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let polls = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            let polls = Arc::clone(&polls);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(move |r| handle(r, Arc::clone(&polls)));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, pem)
}

/// A quinn + h3 echo server (ALPN h3) with the same self-signed certificate scheme.
async fn h3_server(dir: &std::path::Path) -> (SocketAddr, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let pem = dir.join("h3-cert.pem");
    std::fs::write(&pem, ck.cert.pem()).expect("write pem");
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).expect("key");
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic config");
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(quic)),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .expect("endpoint");
    let addr = endpoint.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok(mut h3c) =
                    h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3c.accept().await {
                    tokio::spawn(async move {
                        use bytes::Buf as _;
                        let Ok((_req, mut stream)) = resolver.resolve_request().await else {
                            return;
                        };
                        let mut body = Vec::new();
                        while let Ok(Some(mut c)) = stream.recv_data().await {
                            let n = c.remaining();
                            body.extend_from_slice(&c.copy_to_bytes(n));
                        }
                        let resp = Response::builder().status(200).body(()).expect("resp");
                        if stream.send_response(resp).await.is_ok() {
                            let _ = stream.send_data(Bytes::from(body)).await;
                            let _ = stream.finish().await;
                        }
                    });
                }
            });
        }
    });
    (addr, pem)
}

fn plan(url: &str, proto: Proto, tls: &TlsOptions<'_>, body: &'static [u8]) -> RunPlan {
    let target = Target::new(url, proto, None, tls, Duration::from_secs(5)).expect("target");
    let (tpl, _) =
        RequestTemplate::new(None, &["x-test: 1".into()], Bytes::from_static(body), None)
            .expect("tpl");
    RunPlan {
        target: Arc::new(target),
        template: Arc::new(tpl),
        connections: 4,
        streams: 8,
        rate: None,
        duration: Duration::from_secs(30),
        requests: Some(300),
        warmup: Duration::ZERO,
        timeout: Duration::from_secs(10),
        lag_threshold: Duration::from_millis(1),
        progress: false,
        url: url.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_h1_and_h2c() {
    let addr = echo_server().await;
    let url = format!("http://{addr}/echo");
    for proto in [Proto::H1, Proto::H2c] {
        let r = loadtest::run(plan(&url, proto, &TlsOptions::default(), b"0123456789"))
            .await
            .expect("run");
        assert_eq!(r.requests, 300, "{proto:?}: {r}");
        assert_eq!(r.ok, 300, "{proto:?}: {r}");
        assert_eq!(r.errors, 0, "{proto:?}: {r}");
        assert_eq!(r.status.get("200"), Some(&300));
        assert_eq!(r.bytes.sent, 3000);
        assert_eq!(r.bytes.received, 3000);
        assert_eq!(r.mode, "closed");
        assert_eq!(r.streams, if proto == Proto::H1 { 1 } else { 8 });
        assert!(r.latency_us.p50 > 0 && r.latency_us.max >= r.latency_us.p99);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_h2_over_tls() {
    let dir = tempfile::tempdir().expect("tmp");
    let (addr, pem) = tls_server(dir.path()).await;
    let url = format!("https://localhost:{}/echo", addr.port());
    let tls = TlsOptions {
        cacert: Some(&pem),
        insecure: false,
    };
    let r = loadtest::run(plan(&url, Proto::H2, &tls, b"abc"))
        .await
        .expect("run");
    assert_eq!((r.requests, r.ok, r.errors), (300, 300, 0), "{r}");
    // --insecure also works; no CA at all is refused up front.
    let r = loadtest::run(plan(
        &url,
        Proto::H1,
        &TlsOptions {
            cacert: None,
            insecure: true,
        },
        b"abc",
    ))
    .await
    .expect("run");
    assert_eq!((r.requests, r.ok), (300, 300), "{r}");
    assert!(
        Target::new(
            &url,
            Proto::H2,
            None,
            &TlsOptions::default(),
            Duration::from_secs(1)
        )
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_and_open_loop_h3() {
    let dir = tempfile::tempdir().expect("tmp");
    let (addr, pem) = h3_server(dir.path()).await;
    let url = format!("https://localhost:{}/echo", addr.port());
    let tls = TlsOptions {
        cacert: Some(&pem),
        insecure: false,
    };
    let r = loadtest::run(plan(&url, Proto::H3, &tls, b"hello"))
        .await
        .expect("run");
    assert_eq!((r.requests, r.ok, r.errors), (300, 300, 0), "{r}");
    assert_eq!(r.proto, "h3");
    assert_eq!((r.bytes.sent, r.bytes.received), (1500, 1500), "{r}");
    let mut p = plan(
        &url,
        Proto::H3,
        &TlsOptions {
            cacert: None,
            insecure: true,
        },
        b"hi",
    );
    p.rate = Some(1000.0);
    p.requests = Some(100);
    p.connections = 1;
    let r = loadtest::run(p).await.expect("run");
    assert_eq!((r.requests, r.ok, r.errors), (100, 100, 0), "{r}");
    assert!(
        Target::new(
            "http://localhost:1/",
            Proto::H3,
            None,
            &tls,
            Duration::from_secs(1)
        )
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_counts_from_the_timetable() {
    let addr = echo_server().await;
    let url = format!("http://{addr}/echo");
    let mut p = plan(&url, Proto::H2c, &TlsOptions::default(), b"hi");
    p.rate = Some(1000.0);
    p.requests = Some(200);
    p.warmup = Duration::from_millis(100);
    p.connections = 2;
    p.streams = 4;
    let r = loadtest::run(p).await.expect("run");
    assert_eq!(r.mode, "open");
    assert_eq!(r.target_rate, Some(1000.0));
    assert_eq!((r.requests, r.ok, r.errors), (200, 200, 0), "{r}");
    let ol = r.open_loop.expect("open loop stats");
    assert!(ol.late_sends <= 200);
    // 200 requests at 1000/s after the warm-up take about 0.2 s.
    assert!(r.duration_s > 0.15 && r.duration_s < 5.0, "{r}");

    // Bounded by time: about rate × duration requests.
    let mut p = plan(&url, Proto::H1, &TlsOptions::default(), b"hi");
    p.rate = Some(500.0);
    p.requests = None;
    p.duration = Duration::from_millis(400);
    let r = loadtest::run(p).await.expect("run");
    assert_eq!(r.requests, 200, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_202_with_status_polls_and_counts_errors() {
    let addr = echo_server().await;
    let url = format!("http://{addr}/slow-202");
    let mut p = plan(&url, Proto::H2c, &TlsOptions::default(), b"x");
    let mut tpl = (*p.template).clone();
    tpl.follow_202 = Some(Follow202 {
        status_prefix: "/status/".into(),
        interval: Duration::ZERO,
    });
    p.template = Arc::new(tpl);
    p.requests = Some(50);
    let r = loadtest::run(p).await.expect("run");
    assert_eq!((r.requests, r.ok), (50, 50), "{r}");
    assert_eq!(r.polls, 100, "{r}");
    assert_eq!(r.bytes.received, 200);

    // Nothing listens: every request is a connect error.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = l.local_addr().expect("addr");
    drop(l);
    let mut p = plan(
        &format!("http://{dead}/"),
        Proto::H1,
        &TlsOptions::default(),
        b"",
    );
    p.requests = Some(20);
    p.connections = 2;
    let r = loadtest::run(p).await.expect("run");
    assert_eq!(r.requests, 0);
    assert_eq!(r.errors_by_kind.connect, 20, "{r}");
}
