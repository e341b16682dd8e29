//! End to end over HTTP/3: the whole stack from a config (QUIC on UDP port 0, the generated
//! certificate), an h3 client (h3 + h3-quinn + quinn) trusting it, and the invocation forms —
//! pexec echo, host-routed passthrough, SSE streamed event by event, a 20 MiB body both ways, a
//! client that resets its stream mid-way (which frees the admission slot at once), the exec
//! wrapper, 202 + status polling, and a management call.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode};
use nvcf_gateway::launcher::{self, Role};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;

use support::*;

type H3Send = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// An h3 connection to `addr` trusting the PEM certificate `cert`.
async fn connect(addr: SocketAddr, cert: &Path) -> (quinn::Endpoint, H3Send) {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).expect("cert file") {
        roots.add(c.expect("cert")).expect("root");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = endpoint
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("quic handshake");
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .expect("h3");
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    (endpoint, send)
}

fn request(method: Method, authority: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("https://{authority}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(()).expect("request")
}

/// One exchange; the body is sent in 64 KiB pieces while the answer is read, so large bodies
/// stream both ways at once. Returns status, headers, body and the arrival time of each piece.
async fn exchange(
    send: &mut H3Send,
    req: Request<()>,
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes, Vec<Instant>) {
    let stream = send.send_request(req).await.expect("send request");
    let (mut tx, mut rx) = stream.split();
    let sender = tokio::spawn(async move {
        let mut body = body;
        while !body.is_empty() {
            let piece = body.split_to(body.len().min(64 * 1024));
            tx.send_data(piece).await?;
        }
        tx.finish().await
    });
    let resp = rx.recv_response().await.expect("response");
    let mut out = BytesMut::new();
    let mut arrivals = Vec::new();
    while let Some(mut chunk) = rx.recv_data().await.expect("data") {
        out.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        arrivals.push(Instant::now());
    }
    let sent = sender.await.expect("sender");
    // An answer given before the body was read (a 429, say) stops the upload: that is fine.
    if resp.status() == StatusCode::OK {
        sent.expect("request body sent");
    }
    (
        resp.status(),
        resp.headers().clone(),
        out.freeze(),
        arrivals,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_over_http3() {
    let dir = tempfile::tempdir().expect("tmp");
    let stack = launcher::start(&test_config(dir.path()), Role::Up, None)
        .await
        .expect("start");
    let gw = Gw::new(stack.gateway.expect("gateway"));
    let quic = stack.gateway_quic.expect("quic listener");
    let admin = admin_token(&gw).await;
    wait_for_worker(&gw, &admin).await;
    let all = json!([{"id": "*", "type": "account-functions"}]);
    let (key, _) = api_key(&gw, &["invoke_function"], all).await;
    let (echo, _) = deploy(&gw, &admin, "echo", "builtin/echo", 8).await;
    let (lt, _) = deploy(&gw, &admin, "lt", "builtin/load-tester", 1).await;
    wait_invocable(&gw, &key, &echo, "{}").await;
    wait_invocable(&gw, &key, &lt, r#"{"message":"x"}"#).await;
    let auth = format!("Bearer {key}");
    let auth = auth.as_str();
    let json_ct = ("content-type", "application/json");
    let host = format!("invocation.127.0.0.1:{}", quic.port());
    let cert = dir.path().join("dp/tls/cert.pem");
    let (endpoint, mut h3) = connect(quic, &cert).await;

    // Cleartext HTTP/1.1 answers do not advertise the QUIC port: an http origin cannot use an h3
    // alternative (answers over TLS do; dataplane/tests/h3.rs).
    let a = gw
        .call(Method::GET, "api.", "/health", &[], Bytes::new())
        .await;
    assert!(a.headers.get("alt-svc").is_none());

    // pexec: body echoed with its Content-Type and NVCF's headers.
    let pexec = format!("/v2/nvcf/pexec/functions/{echo}");
    let req = request(
        Method::POST,
        &host,
        &pexec,
        &[("authorization", auth), json_ct],
    );
    let (status, headers, body, _) =
        exchange(&mut h3, req, Bytes::from_static(br#"{"hello":"h3"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(&body[..], br#"{"hello":"h3"}"#);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["nvcf-status"], "fulfilled");
    assert_eq!(headers["nvcf-reqid"].len(), 36);
    assert!(headers.get("alt-svc").is_none());

    // Host-routed passthrough: path and query go to the worker as they are.
    let routed = format!("{echo}.{host}");
    let req = request(
        Method::PUT,
        &routed,
        "/any/path?q=1",
        &[("authorization", auth)],
    );
    let (status, headers, body, _) = exchange(&mut h3, req, Bytes::from_static(b"routed")).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(&body[..], b"routed");
    assert_eq!(headers["nvcf-status"], "fulfilled");

    // SSE: three events, each arriving as the worker produces it (200 ms apart).
    let lt_path = format!("/v2/nvcf/pexec/functions/{lt}");
    let sse_headers = [
        ("authorization", auth),
        ("accept", "text/event-stream"),
        json_ct,
    ];
    let req = request(Method::POST, &host, &lt_path, &sse_headers);
    let sse = br#"{"message":"tick","repeats":3,"delay":0.2,"stream":true}"#;
    let (status, headers, body, arrivals) = exchange(&mut h3, req, Bytes::from_static(sse)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(text.matches("data: tick").count(), 3, "{text}");
    assert!(arrivals.len() >= 2, "events arrived in one frame: {text}");
    let spread = arrivals[arrivals.len() - 1] - arrivals[0];
    assert!(
        spread >= Duration::from_millis(250),
        "events were buffered: {spread:?}"
    );

    // A 20 MiB body streams through echo and back.
    let big: Bytes = (0..20 * 1024 * 1024)
        .map(|i: usize| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let req = request(
        Method::POST,
        &host,
        &pexec,
        &[
            ("authorization", auth),
            ("content-type", "application/octet-stream"),
        ],
    );
    let (status, _, body, _) = exchange(&mut h3, req, big.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), big.len());
    assert!(body == big, "body changed on the way");

    // Resets free the only slot of load-tester at once: one mid request body, one mid response.
    wait_invocable(&gw, &key, &lt, r#"{"message":"x"}"#).await;
    let started = Instant::now();
    let req = request(
        Method::POST,
        &host,
        &lt_path,
        &[("authorization", auth), json_ct],
    );
    let mut stream = h3.send_request(req).await.expect("send");
    stream
        .send_data(Bytes::from_static(br#"{"message":"slow","#))
        .await
        .expect("part");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
    stream.stop_sending(h3::error::Code::H3_REQUEST_CANCELLED);
    drop(stream);
    let after_reset = next_call_status(&mut h3, &host, &lt_path, auth).await;
    assert_eq!(
        after_reset,
        StatusCode::OK,
        "slot not freed by a reset mid-body"
    );

    let req = request(Method::POST, &host, &lt_path, &sse_headers);
    let mut stream = h3.send_request(req).await.expect("send");
    stream
        .send_data(Bytes::from_static(
            br#"{"message":"tick","repeats":20,"delay":0.2,"stream":true}"#,
        ))
        .await
        .expect("body");
    stream.finish().await.expect("finish");
    let resp = stream.recv_response().await.expect("head");
    assert_eq!(resp.status(), StatusCode::OK);
    let first = stream.recv_data().await.expect("data");
    assert!(first.is_some(), "first event");
    // Dropping the stream sends STOP_SENDING (h3-quinn's own stop_sending panics after a read).
    drop(stream);
    let after_reset = next_call_status(&mut h3, &host, &lt_path, auth).await;
    assert_eq!(
        after_reset,
        StatusCode::OK,
        "slot not freed by a reset mid-response"
    );
    // Far below the 4 s the abandoned stream would have run.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // exec wrapper.
    let exec = format!("/v2/nvcf/exec/functions/{echo}");
    let req = request(
        Method::POST,
        &host,
        &exec,
        &[("authorization", auth), json_ct],
    );
    let wrapped = br#"{"requestHeader":{"pollDurationSeconds":10},"requestBody":{"a":[1,2]}}"#;
    let (status, headers, body, _) = exchange(&mut h3, req, Bytes::from_static(wrapped)).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["status"], "fulfilled");
    assert_eq!(v["response"], json!({"a": [1, 2]}));
    assert_eq!(
        v["reqId"].as_str(),
        headers["nvcf-reqid"].to_str().ok(),
        "{v}"
    );

    // 202 when the window ends first, then the result from a status poll.
    let poll1 = ("nvcf-poll-seconds", "1");
    let req = request(
        Method::POST,
        &host,
        &lt_path,
        &[("authorization", auth), json_ct, poll1],
    );
    let slow = br#"{"message":"parked","delay":2}"#;
    let (status, headers, body, _) = exchange(&mut h3, req, Bytes::from_static(slow)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body:?}");
    assert!(body.is_empty());
    assert_eq!(headers["nvcf-status"], "in-progress");
    let id = headers["nvcf-reqid"].to_str().expect("id").to_owned();
    let status_path = format!("/v2/nvcf/pexec/status/{id}");
    let req = request(
        Method::GET,
        &host,
        &status_path,
        &[("authorization", auth), ("nvcf-poll-seconds", "10")],
    );
    let (status, headers, body, _) = exchange(&mut h3, req, Bytes::new()).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(headers["nvcf-status"], "fulfilled");
    assert!(
        String::from_utf8_lossy(&body).contains("parked"),
        "{body:?}"
    );

    // A management call through the gateway to the control plane.
    let admin_auth = format!("Bearer {admin}");
    let api = format!("api.127.0.0.1:{}", quic.port());
    let req = request(
        Method::GET,
        &api,
        "/v2/nvcf/functions",
        &[("authorization", &admin_auth)],
    );
    let (status, _, body, _) = exchange(&mut h3, req, Bytes::new()).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["functions"].as_array().map(Vec::len), Some(2), "{v}");

    drop(h3);
    endpoint.close(0u32.into(), b"done");
    stack.shutdown().await.expect("shutdown");
}

/// A fast load-tester call after a reset: retried briefly while the reset travels (a 429 that
/// persists means the slot leaked).
async fn next_call_status(h3: &mut H3Send, host: &str, path: &str, auth: &str) -> StatusCode {
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let req = request(
            Method::POST,
            host,
            path,
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
        );
        let (status, _, _, _) =
            exchange(h3, req, Bytes::from_static(br#"{"message":"fast"}"#)).await;
        if status != StatusCode::TOO_MANY_REQUESTS || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
