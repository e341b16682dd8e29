//! `/metrics` through the whole stack with the real Prometheus recorder (one per process, hence
//! its own test binary): invocations are counted by function, credential checks by result, the
//! worker pool reuses its connection, and every gateway metric of the table is exposed.

mod support;

use http::{Method, StatusCode};
use nvcf_gateway::admin;
use nvcf_gateway::launcher::{self, Role};
use serde_json::json;

use support::*;

/// The value of the first sample line `name{labels…} value` whose name and labels start with
/// `prefix`.
/// The values of the samples whose line starts with `prefix`, in order.
fn samples<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(move |l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    samples(text, prefix).next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_through_the_stack() {
    let handle = admin::install_recorder().expect("recorder");
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = test_config(dir.path());
    cfg.admin.listen = "127.0.0.1:0".into();
    let stack = launcher::start(&cfg, Role::Up, Some(handle))
        .await
        .expect("start");
    let gw = Gw::new(stack.gateway.expect("gateway"));
    let admin_listener = Gw::new(stack.admin.expect("admin listener"));
    let admin = admin_token(&gw).await;
    wait_for_worker(&gw, &admin).await;
    let all = json!([{"id": "*", "type": "account-functions"}]);
    let (key, _) = api_key(&gw, &["invoke_function"], all).await;
    let (fid, _) = deploy(&gw, &admin, "echo", "builtin/echo", 64).await;
    wait_invocable(&gw, &key, &fid, "{}").await;

    let path = format!("/v2/nvcf/pexec/functions/{fid}");
    let auth = format!("Bearer {key}");
    for h2 in [false, true] {
        for _ in 0..100 {
            let req = gw.request(
                Method::POST,
                "invocation.",
                &path,
                &[("authorization", auth.as_str())],
                bytes::Bytes::from_static(b"{}"),
            );
            assert_eq!(gw.send(h2, req).await.status, StatusCode::OK);
        }
    }
    let unknown = gw
        .call(
            Method::POST,
            "invocation.",
            &path,
            &[("authorization", "Bearer nvapi-not-a-key-at-all")],
            "{}",
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);

    let text = {
        let a = admin_listener
            .call(Method::GET, "", "/metrics", &[], "")
            .await;
        assert_eq!(a.status, StatusCode::OK);
        String::from_utf8(a.body.to_vec()).expect("utf-8")
    };
    let invoked = sample(&text, &format!("function_request{{function_id=\"{fid}\""))
        .expect("function_request");
    assert!(invoked >= 200.0, "{invoked}");
    let hits = sample(&text, "gateway_key_lookups_total{result=\"hit\"}").expect("hits");
    assert!(hits >= 200.0, "{hits}");
    assert!(
        sample(&text, "gateway_key_lookups_total{result=\"unknown\"}").is_some_and(|n| n >= 1.0)
    );
    // Over both protocols the calls used.
    let answered: f64 = samples(
        &text,
        "gateway_requests_total{route=\"invocation\",status_class=\"2xx\",",
    )
    .sum();
    assert!(answered >= 200.0, "{answered}");
    // One pooled keep-alive connection carries every (sequential) call to the worker.
    let opened = sample(&text, "gateway_worker_connections_opened_total").expect("opened");
    assert!(
        (1.0..=2.0).contains(&opened),
        "{opened} connections for {invoked} calls"
    );
    assert_eq!(sample(&text, "gateway_worker_connections "), Some(opened));
    // The per-call histograms (the gateway's own, appended to the exporter's text): every routed
    // call is timed, and the buckets are cumulative up to `+Inf`, which equals the count.
    let latency = format!("function_request_latency_count{{function_id=\"{fid}\"");
    let timed = sample(&text, &latency).expect("function_request_latency");
    assert!(
        (200.0..=invoked).contains(&timed),
        "{timed} for {invoked} calls"
    );
    let buckets: Vec<f64> = samples(
        &text,
        &format!("function_request_latency_bucket{{function_id=\"{fid}\""),
    )
    .collect();
    assert_eq!(buckets.len(), 20, "{text}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&timed));
    let durations: f64 = samples(
        &text,
        "gateway_request_duration_seconds_count{route=\"invocation\"}",
    )
    .sum();
    assert!(durations >= answered, "{durations} for {answered}");
    for name in [
        "gateway_requests_total",
        "gateway_request_duration_seconds",
        "function_request_latency",
        "gateway_invocations_in_flight",
        "gateway_feed_revision",
        "gateway_feed_lag_seconds",
        "worker_requests_total",
        "worker_kernel_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing from /metrics"
        );
    }
    stack.shutdown().await.expect("shutdown");
}
