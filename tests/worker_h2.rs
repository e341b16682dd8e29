//! `dataplane.worker-protocol = "h2"`: the gateway reaches workers over one multiplexed h2c
//! connection instead of pooled HTTP/1.1 keep-alive connections (the default, which every other
//! suite exercises). The invocation path behaves the same: pexec and
//! host-routed calls answer with their NVCF headers, a large body streams through, connections are
//! reused, and a client that goes away frees the worker (its stream is reset).

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use nvcf_gateway::launcher::{self, Role};
use serde_json::json;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_over_h2c_to_the_worker() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = test_config(dir.path());
    cfg.dataplane.worker_protocol = dataplane::config::WorkerProtocol::H2;
    let stack = launcher::start(&cfg, Role::Up, None).await.expect("start");
    let gw = Gw::new(stack.gateway.expect("gateway"));
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

    // pexec and host-routed, over HTTP/1.1 and h2c from the client.
    for h2 in [false, true] {
        let req = gw.request(
            Method::POST,
            "invocation.",
            &format!("/v2/nvcf/pexec/functions/{echo}"),
            &[("authorization", auth), json_ct],
            Bytes::from_static(br#"{"over":"h2c"}"#),
        );
        let a = gw.send(h2, req).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        assert_eq!(&a.body[..], br#"{"over":"h2c"}"#);
        assert_eq!(a.header("nvcf-status"), "fulfilled");
        assert_eq!(a.header("nvcf-reqid").len(), 36);
        let req = gw.request(
            Method::PUT,
            &format!("{echo}.invocation."),
            "/any/path?x=1",
            &[("authorization", auth), ("content-type", "text/plain")],
            Bytes::from_static(b"routed"),
        );
        let a = gw.send(h2, req).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        assert_eq!(&a.body[..], b"routed");
    }

    // 8 MiB through echo and back.
    let big: Bytes = (0..8 * 1024 * 1024)
        .map(|i: usize| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let req = gw.request(
        Method::POST,
        "invocation.",
        &format!("/v2/nvcf/pexec/functions/{echo}"),
        &[
            ("authorization", auth),
            ("content-type", "application/octet-stream"),
        ],
        big.clone(),
    );
    let a = gw.send(false, req).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body == big, "body changed on the way");

    // A client that goes away mid-call frees the worker's only place long before the 2 s delay
    // (over h2c the gateway resets the worker stream).
    abandoned_call_frees_the_place(&gw, auth, &format!("/v2/nvcf/pexec/functions/{lt}")).await;
    stack.shutdown().await.expect("shutdown");
}
