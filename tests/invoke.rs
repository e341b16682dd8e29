//! End to end through the invocation path: the whole stack started from a config (port 0
//! everywhere, SQLite in a temp dir, the CPU worker), functions deployed through the gateway, and
//! invocations over HTTP/1.1 and h2c — pexec, exec, host-routed forms, SSE, large bodies, every
//! gateway-made status, 202 + status polling (spilled results included), key revocation, and a
//! control plane that goes away.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use nvcf_gateway::launcher::{self, Role};
use serde_json::json;
use std::time::{Duration, Instant};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_path_end_to_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let stack = launcher::start(&test_config(dir.path()), Role::Up, None)
        .await
        .expect("start");
    let gw = Gw::new(stack.gateway.expect("gateway"));
    let admin = admin_token(&gw).await;
    wait_for_worker(&gw, &admin).await;
    let all = json!([{"id": "*", "type": "account-functions"}]);
    let (key, _) = api_key(&gw, &["invoke_function"], all.clone()).await;
    let (echo, echo_vid) = deploy(&gw, &admin, "echo", "builtin/echo", 8).await;
    let (lt, _) = deploy(&gw, &admin, "lt", "builtin/load-tester", 1).await;
    wait_invocable(&gw, &key, &echo, "{}").await;
    wait_invocable(&gw, &key, &lt, r#"{"message":"x"}"#).await;
    let auth = format!("Bearer {key}");
    let auth = auth.as_str();
    let json_ct = ("content-type", "application/json");

    // pexec over HTTP/1.1 and h2c: body echoed with its Content-Type, NVCF headers added.
    let pexec = format!("/v2/nvcf/pexec/functions/{echo}");
    for h2 in [false, true] {
        let req = gw.request(
            Method::POST,
            "invocation.",
            &pexec,
            &[("authorization", auth), json_ct],
            Bytes::from_static(br#"{"hello":"world"}"#),
        );
        let a = gw.send(h2, req).await;
        assert_eq!(a.status, StatusCode::OK, "h2={h2} {:?}", a.body);
        assert_eq!(&a.body[..], br#"{"hello":"world"}"#);
        assert_eq!(a.header("content-type"), "application/json");
        assert_eq!(a.header("nvcf-status"), "fulfilled");
        assert_eq!(a.header("nvcf-reqid").len(), 36);
        assert!(
            a.header("access-control-expose-headers")
                .contains("nvcf-reqid")
        );
    }
    // CORS on the path router: the gateway answers preflights itself (no credential), and actual
    // answers, errors included, mirror the origin. Host-routed OPTIONS goes to auth like any call.
    let origin = ("origin", "https://app.example");
    let pre = gw
        .call(
            Method::OPTIONS,
            "invocation.",
            &pexec,
            &[
                origin,
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "authorization"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(pre.status, StatusCode::OK);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        "https://app.example"
    );
    assert_eq!(pre.header("access-control-allow-headers"), "authorization");
    assert_eq!(pre.header("access-control-max-age"), "86400");
    let denied = gw
        .call(Method::POST, "invocation.", &pexec, &[origin], "{}")
        .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        denied.header("access-control-allow-origin"),
        "https://app.example"
    );
    let host_routed = gw
        .call(
            Method::OPTIONS,
            &format!("{echo}.invocation."),
            "/x",
            &[origin, ("access-control-request-method", "POST")],
            Bytes::new(),
        )
        .await;
    assert_eq!(host_routed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(host_routed.header("access-control-allow-origin"), "");

    // Pinned version, and a path without Host routing (bare address).
    let a = gw
        .call(
            Method::POST,
            "",
            &format!("/v2/nvcf/pexec/functions/{echo}/versions/{echo_vid}"),
            &[("authorization", auth), ("content-type", "text/plain")],
            "pinned",
        )
        .await;
    assert_eq!((a.status, &a.body[..]), (StatusCode::OK, &b"pinned"[..]));
    assert_eq!(a.header("content-type"), "text/plain");

    // Host-routed: both Host shapes, and the function-id headers on a bare host.
    for (prefix, headers) in [
        (format!("{echo}.invocation."), vec![]),
        (format!("{echo_vid}.{echo}.invocation."), vec![]),
        (
            String::new(),
            vec![
                ("function-id", echo.as_str()),
                ("function-version-id", echo_vid.as_str()),
            ],
        ),
    ] {
        let mut h = vec![("authorization", auth)];
        h.extend(headers);
        let a = gw
            .call(Method::PUT, &prefix, "/any/path?q=1", &h, "routed")
            .await;
        assert_eq!(a.status, StatusCode::OK, "{prefix}: {:?}", a.body);
        assert_eq!(&a.body[..], b"routed");
        assert_eq!(a.header("nvcf-status"), "fulfilled");
    }

    // 401 without a credential and with garbage.
    let a = gw
        .call(Method::POST, "invocation.", &pexec, &[], "{}")
        .await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "authorization");
    assert!(a.headers.get("nvcf-reqid").is_none());
    let a = gw
        .call(
            Method::POST,
            "invocation.",
            &pexec,
            &[("authorization", "Bearer garbage")],
            "{}",
        )
        .await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "");
    // 403: no invoke_function; a resource entry for another function.
    let (weak, _) = api_key(&gw, &["list_functions"], all.clone()).await;
    let a = until_known(&gw, &pexec, &weak).await;
    assert_problem(&a, StatusCode::FORBIDDEN, "invoke_function");
    let (other, _) = api_key(
        &gw,
        &["invoke_function"],
        json!([{"id": lt.as_str(), "type": "function"}]),
    )
    .await;
    let a = until_known(&gw, &pexec, &other).await;
    assert_problem(&a, StatusCode::FORBIDDEN, "Missing resource entry");
    // 404 unknown function, 404 status poll, 400 bad poll header and bad id.
    let unknown = uuid_like();
    let a = gw
        .call(
            Method::POST,
            "invocation.",
            &format!("/v2/nvcf/pexec/functions/{unknown}"),
            &[("authorization", auth)],
            "{}",
        )
        .await;
    assert_problem(&a, StatusCode::NOT_FOUND, "is not found");
    let a = gw
        .call(
            Method::GET,
            "invocation.",
            &format!("/v2/nvcf/pexec/status/{unknown}"),
            &[("authorization", auth)],
            "",
        )
        .await;
    assert_problem(&a, StatusCode::NOT_FOUND, "not pending");
    for bad in ["abc", "3601"] {
        let a = gw
            .call(
                Method::POST,
                "invocation.",
                &pexec,
                &[("authorization", auth), ("nvcf-poll-seconds", bad)],
                "{}",
            )
            .await;
        assert_problem(&a, StatusCode::BAD_REQUEST, "failed to parse poll duration");
    }
    let a = gw
        .call(
            Method::POST,
            "invocation.",
            "/v2/nvcf/pexec/functions/not-a-uuid",
            &[("authorization", auth)],
            "{}",
        )
        .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "must be a UUID");

    // exec wrapper.
    let a = gw
        .call(
            Method::POST,
            "invocation.",
            &format!("/v2/nvcf/exec/functions/{echo}"),
            &[("authorization", auth), json_ct],
            r#"{"requestHeader":{"pollDurationSeconds":10},"requestBody":{"a":[1,2]}}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let v = a.json();
    assert_eq!(v["status"], "fulfilled");
    assert_eq!(v["percentComplete"], 100);
    assert_eq!(v["response"], json!({"a": [1, 2]}));
    assert_eq!(v["reqId"].as_str(), Some(a.header("nvcf-reqid")));
    let a = gw
        .call(
            Method::POST,
            "invocation.",
            &format!("/v2/nvcf/exec/functions/{echo}"),
            &[("authorization", auth), json_ct],
            "{not json",
        )
        .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "");

    // SSE: three events, each flushed as the worker produces it (200 ms apart).
    let lt_path = format!("/v2/nvcf/pexec/functions/{lt}");
    let req = gw.request(
        Method::POST,
        "invocation.",
        &lt_path,
        &[
            ("authorization", auth),
            ("accept", "text/event-stream"),
            json_ct,
        ],
        Bytes::from_static(br#"{"message":"tick","repeats":3,"delay":0.2,"stream":true}"#),
    );
    let resp = gw.h1.request(req).await.expect("sse");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
            arrivals.push(Instant::now());
        }
    }
    assert_eq!(text.matches("data: tick").count(), 3, "{text}");
    assert!(arrivals.len() >= 2, "events arrived in one frame: {text}");
    let spread = arrivals[arrivals.len() - 1] - arrivals[0];
    assert!(
        spread >= Duration::from_millis(250),
        "events were buffered: {spread:?}"
    );

    // 429: load-tester takes one request at a time; a slow one is in flight. The worker may still
    // be winding down the stream above (its backstop answers 429 too), so start from a free slot.
    wait_invocable(&gw, &key, &lt, r#"{"message":"x"}"#).await;
    // The slow request retries until it holds the only slot (a 429 means the previous request's
    // slot, here or on the worker, was not given back yet).
    let slow = {
        let reqs: Vec<_> = (0..20)
            .map(|_| {
                gw.request(
                    Method::POST,
                    "invocation.",
                    &lt_path,
                    &[("authorization", auth), json_ct],
                    Bytes::from_static(br#"{"message":"slow","delay":2}"#),
                )
            })
            .collect();
        let client = gw.h1.clone();
        tokio::spawn(async move {
            for req in reqs {
                let status = client.request(req).await.map(|r| r.status())?;
                if status != StatusCode::TOO_MANY_REQUESTS {
                    return Ok(status);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, hyper_util::client::legacy::Error>(StatusCode::TOO_MANY_REQUESTS)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Once the slow request holds the only slot, a fast one is refused. Until it does, a fast one
    // may still get through (and finish at once), so ask until the refusal comes.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let refused = loop {
        let r = gw
            .call(
                Method::POST,
                "invocation.",
                &lt_path,
                &[("authorization", auth), json_ct],
                r#"{"message":"fast"}"#,
            )
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS || Instant::now() > deadline {
            break r;
        }
    };
    assert_problem(&refused, StatusCode::TOO_MANY_REQUESTS, "concurrency limit");
    assert_eq!(refused.header("retry-after"), "1");
    assert_eq!(
        slow.await.expect("task").expect("slow answer"),
        StatusCode::OK
    );

    // A client that goes away cancels its invocation: the gateway's slot and the worker's stream
    // (hence its concurrency permit) are released long before the 2 s delay would have ended.
    abandoned_call_frees_the_place(&gw, auth, &lt_path).await;

    // 504: host-routed, a 1 s window and a 5 s delay.
    let started = Instant::now();
    let a = gw
        .call(
            Method::POST,
            &format!("{lt}.invocation."),
            "/slow",
            &[("authorization", auth), ("nvcf-poll-seconds", "1"), json_ct],
            r#"{"message":"late","delay":5}"#,
        )
        .await;
    assert_problem(&a, StatusCode::GATEWAY_TIMEOUT, "no response");
    assert_eq!(a.header("nvcf-status"), "errored");
    assert_eq!(a.header("nvcf-reqid").len(), 36);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // A 20 MiB body streams through echo and back.
    let big: Bytes = (0..20 * 1024 * 1024)
        .map(|i: usize| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    for h2 in [false, true] {
        let req = gw.request(
            Method::POST,
            "invocation.",
            &pexec,
            &[
                ("authorization", auth),
                ("content-type", "application/octet-stream"),
            ],
            big.clone(),
        );
        let a = gw.send(h2, req).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body.len(), big.len());
        assert!(a.body == big, "h2={h2}: body changed on the way");
    }

    // Immediate revocation: delete the key, and it stops working within 2 s.
    let (doomed, doomed_id) = api_key(&gw, &["invoke_function"], all).await;
    let doomed_auth = format!("Bearer {doomed}");
    let invoke_with = |auth: String| {
        let gw = &gw;
        let pexec = &pexec;
        async move {
            gw.call(
                Method::POST,
                "invocation.",
                pexec,
                &[("authorization", &auth)],
                "{}",
            )
            .await
            .status
        }
    };
    eventually("the new key to work", Duration::from_secs(2), || {
        let a = doomed_auth.clone();
        async move { invoke_with(a).await == StatusCode::OK }
    })
    .await;
    let a = gw
        .call(
            Method::DELETE,
            "api-keys.",
            &format!("/v1/keys/{doomed_id}"),
            &KEY_HEADERS,
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
    eventually(
        "the deleted key to stop working",
        Duration::from_secs(2),
        || {
            let a = doomed_auth.clone();
            async move { invoke_with(a).await == StatusCode::UNAUTHORIZED }
        },
    )
    .await;

    stack.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_continue_while_the_control_plane_is_down() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = test_config(dir.path());
    cfg.internal_token = TOKEN.to_owned();
    let cp = launcher::start(&cfg, Role::Controlplane, None)
        .await
        .expect("control plane");
    let cp_url = format!("http://{}", cp.controlplane.expect("cp addr"));
    cfg.worker.controlplane_url.clone_from(&cp_url);
    cfg.dataplane.controlplane_url.clone_from(&cp_url);
    let worker = launcher::start(&cfg, Role::Worker, None)
        .await
        .expect("worker");
    let dp = launcher::start(&cfg, Role::Dataplane, None)
        .await
        .expect("dataplane");
    let gw = Gw::new(dp.gateway.expect("gateway"));
    let admin = admin_token(&gw).await;
    wait_for_worker(&gw, &admin).await;
    let (key, _) = api_key(
        &gw,
        &["invoke_function"],
        json!([{"id": "*", "type": "account-functions"}]),
    )
    .await;
    let (echo, _) = deploy(&gw, &admin, "echo", "builtin/echo", 4).await;
    wait_invocable(&gw, &key, &echo, "{}").await;

    cp.shutdown().await.expect("stop the control plane");
    let auth = format!("Bearer {key}");
    for i in 0..5 {
        let a = gw
            .call(
                Method::POST,
                "invocation.",
                &format!("/v2/nvcf/pexec/functions/{echo}"),
                &[("authorization", &auth)],
                format!("still {i}"),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        assert_eq!(a.body, format!("still {i}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Management calls, which need the control plane, fail meanwhile.
    let a = gw
        .call(
            Method::GET,
            "api.",
            "/v2/nvcf/functions",
            &[("authorization", &format!("Bearer {admin}"))],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    dp.shutdown().await.expect("dataplane");
    worker.shutdown().await.expect("worker");
}

/// A TLS client trusting only the gateway's generated certificate, offering `alpn`.
fn tls_connector(cert_pem: &std::path::Path, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_pem).expect("cert file") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// One pexec over the TLS listener with `alpn` (`h2` or `http/1.1`); the certificate is checked
/// against the name `localhost` it was generated for.
async fn pexec_over_tls(
    addr: std::net::SocketAddr,
    cert: &std::path::Path,
    alpn: &[u8],
    path: &str,
    auth: &str,
    body: &'static str,
) -> http::Response<Bytes> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let tls = tls_connector(cert, alpn)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let io = TokioIo::new(tls);
        let resp = if alpn == b"h2" {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .expect("h2 handshake");
            tokio::spawn(conn);
            let req = http::Request::post(format!(
                "https://invocation.localhost:{}{path}",
                addr.port()
            ))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from_static(
                body.as_bytes(),
            )))
            .expect("request");
            sender.send_request(req).await.expect("h2 response")
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            let req = http::Request::post(path)
                .header("host", format!("invocation.localhost:{}", addr.port()))
                .header("authorization", auth)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(Bytes::from_static(
                    body.as_bytes(),
                )))
                .expect("request");
            sender.send_request(req).await.expect("h1 response")
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        http::Response::from_parts(parts, body)
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("answer in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pexec_over_tls_with_h2_and_http1_by_alpn() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = test_config(dir.path());
    cfg.dataplane.tls_listen = "127.0.0.1:0".to_owned();
    let stack = launcher::start(&cfg, Role::Up, None).await.expect("start");
    let tls = stack.gateway_tls.expect("TLS listener");
    let gw = Gw::new(stack.gateway.expect("gateway"));
    let admin = admin_token(&gw).await;
    wait_for_worker(&gw, &admin).await;
    let (key, _) = api_key(
        &gw,
        &["invoke_function"],
        json!([{"id": "*", "type": "account-functions"}]),
    )
    .await;
    let (echo, _) = deploy(&gw, &admin, "echo", "builtin/echo", 4).await;
    wait_invocable(&gw, &key, &echo, "{}").await;
    // Generated by the gateway on its first start (before it serves anything).
    let cert = dir.path().join("dp").join("tls").join("cert.pem");
    assert!(cert.exists(), "{}", cert.display());

    let auth = format!("Bearer {key}");
    let path = format!("/v2/nvcf/pexec/functions/{echo}");
    for (alpn, version) in [
        (&b"h2"[..], http::Version::HTTP_2),
        (&b"http/1.1"[..], http::Version::HTTP_11),
    ] {
        let body = r#"{"over":"tls"}"#;
        let r = pexec_over_tls(tls, &cert, alpn, &path, &auth, body).await;
        let what = String::from_utf8_lossy(alpn);
        assert_eq!(r.status(), StatusCode::OK, "{what}: {:?}", r.body());
        assert_eq!(r.version(), version, "{what}");
        assert_eq!(&r.body()[..], body.as_bytes(), "{what}");
        assert_eq!(r.headers()["content-type"], "application/json", "{what}");
        assert_eq!(r.headers()["nvcf-status"], "fulfilled", "{what}");
        let reqid = r.headers()["nvcf-reqid"].to_str().expect("reqid");
        assert_eq!(reqid.len(), 36, "{what}: {reqid}");
        assert!(uuid_parses(reqid), "{what}: {reqid}");
    }
    stack.shutdown().await.expect("shutdown");
}

/// True for a hyphenated 8-4-4-4-12 hex id.
/// Sends `request` as bytes on a new connection and reads the answer until the gateway closes it:
/// its head as text, and its body (de-chunked when chunked).
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let mut rest = &answer[end + 4..];
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (head, rest.to_vec());
    }
    let mut body = Vec::new();
    loop {
        let line = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("size line");
        let size = std::str::from_utf8(&rest[..line]).expect("hex");
        let size = usize::from_str_radix(size.trim(), 16).expect("size");
        if size == 0 {
            return (head, body);
        }
        body.extend_from_slice(&rest[line + 2..line + 2 + size]);
        rest = &rest[line + 4 + size..];
    }
}

fn uuid_parses(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_sees_what_nvcf_would_send() {
    let container = start_container().await;
    let dir = tempfile::tempdir().expect("tmp");
    let stack = launcher::start(&test_config(dir.path()), Role::Up, None)
        .await
        .expect("start");
    let gw = Gw::new(stack.gateway.expect("gateway"));
    let admin = admin_token(&gw).await;
    wait_for_worker(&gw, &admin).await;
    let (key, _) = api_key(
        &gw,
        &["invoke_function"],
        json!([{"id": "*", "type": "account-functions"}]),
    )
    .await;
    let port = container.port();
    let body = json!({"name": "recorder", "inferenceUrl": "/infer", "inferencePort": port,
        "containerImage": "example/recorder:1",
        "health": {"protocol": "HTTP", "uri": "/health", "port": port, "timeout": "PT5S", "expectedStatusCode": 200}});
    let admin_auth = format!("Bearer {admin}");
    let a = gw
        .call(
            Method::POST,
            "api.",
            "/v2/nvcf/functions",
            &[
                ("authorization", &admin_auth),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let fid = a.json()["function"]["id"].as_str().expect("id").to_owned();
    let vid = a.json()["function"]["versionId"]
        .as_str()
        .expect("vid")
        .to_owned();
    let dep = json!({"deploymentSpecifications": [{"gpu": "CPU", "instanceType": "NCP.CPU_1x",
        "minInstances": 1, "maxInstances": 1}]});
    let a = gw
        .call(
            Method::POST,
            "api.",
            &format!("/v2/nvcf/deployments/functions/{fid}/versions/{vid}"),
            &[
                ("authorization", &admin_auth),
                ("content-type", "application/json"),
            ],
            dep.to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    wait_invocable(&gw, &key, &fid, "{}").await;
    let auth = format!("Bearer {key}");

    // pexec: inferenceUrl without the client's query; NVCF headers set by the gateway (request
    // id, region, poll budget, version) and by the worker from its feed (function id, NCA id,
    // function name); the caller's credential and forged worker-owned headers gone; JSON content
    // type added.
    let a = gw
        .call(
            Method::POST,
            "invocation.",
            &format!("/v2/nvcf/pexec/functions/{fid}?dropped=1"),
            &[
                ("authorization", &auth),
                ("nvcf-sub", "forged"),
                ("nvcf-invocation-region", "mars"),
                ("x-custom", "kept"),
                ("nvcf-feature-disable-worker-compatibility", "true"),
            ],
            "{}",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let seen = a.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["target"], "/infer");
    let h = &seen["headers"];
    // Only the TLB (host-routed / function-id) path disables worker compatibility (nvcf-api.md
    // §2.5); a client's copy never reaches a pexec container.
    assert!(
        h.get("nvcf-feature-disable-worker-compatibility").is_none(),
        "{h}"
    );
    assert!(h.get("authorization").is_none(), "{h}");
    assert!(h.get("nvcf-sub").is_none(), "{h}");
    assert_eq!(h["nvcf-invocation-region"], "local");
    assert_eq!(h["nvcf-reqid"].as_str(), Some(a.header("nvcf-reqid")));
    assert_eq!(h["nvcf-function-id"], fid.as_str());
    assert_eq!(h["nvcf-function-version-id"], vid.as_str());
    assert_eq!(h["nvcf-ncaid"], "nvcf-default");
    assert_eq!(h["nvcf-function-name"], "recorder");
    assert_eq!(h["nvcf-poll-seconds"], "60");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(a.header("access-control-expose-headers"), "x-a, nvcf-reqid");

    // The same rules for an HTTP/1.1 client's fields in any case (the gateway forwards them
    // unparsed): what the container must not see is left out, the rest arrives as sent.
    let raw = format!(
        "POST /v2/nvcf/pexec/functions/{fid} HTTP/1.1\r\nHost: invocation.{addr}\r\n\
         AUTHORIZATION: {auth}\r\nNVCF-Sub: forged\r\nX-Custom: Kept As Sent\r\n\
         Connection: close, X-Hop\r\nX-Hop: 1\r\nFunction-ID: {fid}\r\nExpect: 100-continue\r\n\
         Cookie: a=1\r\nContent-Length: 2\r\n\r\n{{}}",
        addr = gw.addr
    );
    let (head, body) = raw_exchange(gw.addr, raw.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let h = &seen["headers"];
    for gone in [
        "authorization",
        "nvcf-sub",
        "x-hop",
        "function-id",
        "expect",
        "connection",
    ] {
        assert!(h.get(gone).is_none(), "{gone}: {h}");
    }
    assert_eq!(h["x-custom"], "Kept As Sent");
    assert_eq!(h["cookie"], "a=1");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["content-length"], "2");
    assert_eq!(h["nvcf-function-id"], fid.as_str());
    assert!(uuid_parses(h["nvcf-reqid"].as_str().expect("reqid")), "{h}");

    // Host-routed and function-id forms: method, path and query unchanged, over h1 and h2c.
    for (h2, prefix, extra) in [
        (false, format!("{fid}.invocation."), None),
        (true, format!("{vid}.{fid}.invocation."), None),
        (false, String::new(), Some(("function-id", fid.as_str()))),
    ] {
        let mut headers = vec![
            ("authorization", auth.as_str()),
            // A client's copy is overwritten.
            ("nvcf-feature-disable-worker-compatibility", "false"),
        ];
        headers.extend(extra);
        let req = gw.request(
            Method::GET,
            &prefix,
            "/a/b?x=1&y=two",
            &headers,
            Bytes::new(),
        );
        let a = gw.send(h2, req).await;
        assert_eq!(a.status, StatusCode::OK, "{prefix}: {:?}", a.body);
        // The container's headers as it sent them (a repeated one in order), one date.
        let multi: Vec<_> = a.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["1", "2"], "{prefix}");
        assert_eq!(a.headers.get_all("date").iter().count(), 1, "{prefix}");
        assert_eq!(a.header("content-type"), "application/json");
        let seen = a.json();
        assert_eq!(seen["method"], "GET");
        assert_eq!(seen["target"], "/a/b?x=1&y=two");
        assert!(seen["headers"].get("function-id").is_none());
        assert_eq!(
            seen["headers"]["nvcf-feature-disable-worker-compatibility"], "true",
            "{prefix}: {}",
            seen["headers"]
        );
    }

    // A container error passes through with NVCF-STATUS: errored.
    let a = gw
        .call(
            Method::GET,
            &format!("{fid}.invocation."),
            "/teapot",
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(a.header("nvcf-status"), "errored");
    assert_eq!(a.header("nvcf-reqid").len(), 36);

    // NVCF's headers from the container are replaced by the gateway's, over HTTP/1.1 and h2c.
    for h2 in [false, true] {
        let req = gw.request(
            Method::GET,
            &format!("{fid}.invocation."),
            "/forge",
            &[("authorization", &auth)],
            Bytes::new(),
        );
        let a = gw.send(h2, req).await;
        assert_eq!(a.status, StatusCode::OK, "h2={h2}");
        let ids: Vec<_> = a.headers.get_all("nvcf-reqid").iter().collect();
        assert_eq!(ids.len(), 1, "h2={h2}: {ids:?}");
        assert_eq!(ids[0].len(), 36, "h2={h2}: {ids:?}");
        let statuses: Vec<_> = a.headers.get_all("nvcf-status").iter().collect();
        assert_eq!(statuses, ["fulfilled"], "h2={h2}");
        assert_eq!(
            a.header("access-control-expose-headers"),
            "x-a, nvcf-reqid",
            "h2={h2}"
        );
    }
    stack.shutdown().await.expect("shutdown");
}

/// Polls `path` with `key` until the gateway knows the key (see [`until_known`]).
async fn poll_known(gw: &Gw, path: &str, key: &str) -> Answer {
    let auth = format!("Bearer {key}");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let a = gw
            .call(
                Method::GET,
                "invocation.",
                path,
                &[("authorization", &auth), ("nvcf-poll-seconds", "1")],
                "",
            )
            .await;
        if a.status != StatusCode::UNAUTHORIZED || Instant::now() > deadline {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `path` (window 1 s) until the answer is not a 202; at most `tries` times.
async fn poll_until_done(gw: &Gw, path: &str, auth: &str, tries: usize) -> Answer {
    for _ in 0..tries {
        let a = gw
            .call(
                Method::GET,
                "invocation.",
                path,
                &[("authorization", auth), ("nvcf-poll-seconds", "1")],
                "",
            )
            .await;
        if a.status != StatusCode::ACCEPTED {
            return a;
        }
        assert_eq!(a.header("nvcf-status"), "in-progress");
    }
    panic!("{path} still in progress after {tries} polls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_requests_answer_status_polls() {
    let dir = tempfile::tempdir().expect("tmp");
    let stack = launcher::start(&test_config(dir.path()), Role::Up, None)
        .await
        .expect("start");
    let gw = Gw::new(stack.gateway.expect("gateway"));
    let admin = admin_token(&gw).await;
    wait_for_worker(&gw, &admin).await;
    let all = json!([{"id": "*", "type": "account-functions"}]);
    let (key, _) = api_key(&gw, &["invoke_function"], all.clone()).await;
    let (lt, _) = deploy(&gw, &admin, "lt", "builtin/load-tester", 1).await;
    wait_invocable(&gw, &key, &lt, r#"{"message":"x"}"#).await;
    let auth = format!("Bearer {key}");
    let auth = auth.as_str();
    let json_ct = ("content-type", "application/json");
    let poll1 = ("nvcf-poll-seconds", "1");
    let pexec = format!("/v2/nvcf/pexec/functions/{lt}");

    // The window (1 s) ends before the worker answers (2 s): 202, empty, in progress.
    let started = Instant::now();
    let a = gw
        .call(
            Method::POST,
            "invocation.",
            &pexec,
            &[("authorization", auth), json_ct, poll1],
            r#"{"message":"done","delay":2}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(1900),
        "{waited:?}"
    );
    assert!(a.body.is_empty());
    assert_eq!(a.header("content-length"), "0");
    assert_eq!(a.header("nvcf-status"), "in-progress");
    assert!(
        a.header("access-control-expose-headers")
            .contains("nvcf-reqid")
    );
    let id = a.header("nvcf-reqid").to_owned();
    assert_eq!(id.len(), 36);
    let status = format!("/v2/nvcf/pexec/status/{id}");
    // The parked request keeps its admission slot (load-tester takes one at a time).
    let a = gw
        .call(
            Method::POST,
            "invocation.",
            &pexec,
            &[("authorization", auth), json_ct],
            r#"{"message":"fast"}"#,
        )
        .await;
    assert_problem(&a, StatusCode::TOO_MANY_REQUESTS, "concurrency limit");

    // Polls must be authorized for the same function: no invoke_function, or another function.
    let (weak, _) = api_key(&gw, &["list_functions"], all.clone()).await;
    assert_problem(
        &poll_known(&gw, &status, &weak).await,
        StatusCode::FORBIDDEN,
        "invoke_function",
    );
    let other_fn = uuid_like();
    let (other, _) = api_key(
        &gw,
        &["invoke_function"],
        json!([{"id": other_fn, "type": "function"}]),
    )
    .await;
    assert_problem(
        &poll_known(&gw, &status, &other).await,
        StatusCode::FORBIDDEN,
        "Missing resource entry",
    );

    // Right away: 202 again (or the result), then the result once, then 404.
    let a = gw
        .call(
            Method::GET,
            "invocation.",
            &status,
            &[("authorization", auth), poll1],
            "",
        )
        .await;
    assert!(
        a.status == StatusCode::ACCEPTED || a.status == StatusCode::OK,
        "{:?}",
        a.status
    );
    let a = if a.status == StatusCode::OK {
        a
    } else {
        assert_eq!(a.header("nvcf-status"), "in-progress");
        assert_eq!(a.header("nvcf-reqid"), id);
        poll_until_done(&gw, &status, auth, 10).await
    };
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(&a.body[..], b"done");
    assert_eq!(a.header("nvcf-status"), "fulfilled");
    assert_eq!(a.header("nvcf-reqid"), id);
    assert!(a.header("content-type").starts_with("text/plain"));
    assert!(
        a.header("access-control-expose-headers")
            .contains("nvcf-reqid")
    );
    let a = gw
        .call(
            Method::GET,
            "invocation.",
            &status,
            &[("authorization", auth), poll1],
            "",
        )
        .await;
    assert_problem(&a, StatusCode::NOT_FOUND, "not pending");
    for unknown in [uuid_like(), "not-a-uuid".to_owned()] {
        let a = gw
            .call(
                Method::GET,
                "invocation.",
                &format!("/v2/nvcf/pexec/status/{unknown}"),
                &[("authorization", auth)],
                "",
            )
            .await;
        assert_problem(&a, StatusCode::NOT_FOUND, "not pending");
    }

    // exec: the in-progress wrapper, then the wrapped result. (The worker may still be winding
    // down the last stream, so start from a free slot.)
    wait_invocable(&gw, &key, &lt, r#"{"message":"x"}"#).await;
    let a = gw
        .call(
            Method::POST,
            "invocation.",
            &format!("/v2/nvcf/exec/functions/{lt}"),
            &[("authorization", auth), json_ct],
            r#"{"requestHeader":{"pollDurationSeconds":1},"requestBody":{"message":"{\"m\":1}","delay":2}}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    let v = a.json();
    assert_eq!(v["status"], "in-progress");
    let id = a.header("nvcf-reqid").to_owned();
    assert_eq!(v["reqId"], id.as_str());
    let exec_status = format!("/v2/nvcf/exec/status/{id}");
    let a = gw
        .call(
            Method::GET,
            "invocation.",
            &exec_status,
            &[("authorization", auth), ("nvcf-poll-seconds", "0")],
            "",
        )
        .await;
    if a.status == StatusCode::ACCEPTED {
        assert_eq!(a.json()["status"], "in-progress");
    }
    let a = if a.status == StatusCode::ACCEPTED {
        poll_until_done(&gw, &exec_status, auth, 10).await
    } else {
        a
    };
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let v = a.json();
    assert_eq!(v["status"], "fulfilled");
    assert_eq!(v["reqId"], id.as_str());
    assert_eq!(v["response"], json!({"m": 1}));

    // A result over pending-max-result-bytes (8 MiB) is spilled to a file and comes back whole.
    wait_invocable(&gw, &key, &lt, r#"{"message":"x"}"#).await;
    let a = gw
        .call(
            Method::POST,
            "invocation.",
            &pexec,
            &[("authorization", auth), json_ct, poll1],
            r#"{"size":12000000,"delay":2}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    let id = a.header("nvcf-reqid").to_owned();
    let spill = dir.path().join("dp").join("pending").join(&id);
    eventually("the result to be spilled", Duration::from_secs(15), || {
        let spill = spill.clone();
        async move { std::fs::metadata(&spill).is_ok_and(|m| m.len() == 12_000_000) }
    })
    .await;
    let kept = std::fs::read(&spill).expect("spill file");
    let a = poll_until_done(&gw, &format!("/v2/nvcf/pexec/status/{id}"), auth, 10).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-length"), "12000000");
    assert_eq!(a.body.len(), 12_000_000);
    assert!(a.body == kept, "the spilled result changed on the way");
    assert!(!spill.exists(), "the spill file is deleted once fetched");

    stack.shutdown().await.expect("shutdown");
}
