//! The wait queue in front of a full function version, end to end: a request beyond the version's
//! capacity waits and is served once a place frees up, the control plane's queue endpoint shows it
//! waiting, a full queue and a wait that runs out both answer 429 with a problem document.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use nvcf_gateway::launcher::{self, Role};
use serde_json::json;
use std::time::{Duration, Instant};

use support::*;

/// The queue depth `/v2/nvcf/queues/functions/{fid}` reports for the function's only version.
async fn queue_depth(gw: &Gw, key: &str, fid: &str) -> u64 {
    let a = gw
        .call(
            Method::GET,
            "api.",
            &format!("/v2/nvcf/queues/functions/{fid}"),
            &[("authorization", &format!("Bearer {key}"))],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    a.json()["queues"][0]["queueDepth"]
        .as_u64()
        .expect("queueDepth")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_version_queues_then_refuses() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = test_config(dir.path());
    cfg.dataplane.max_queued_per_version = 1;
    cfg.dataplane.queue_timeout = Duration::from_millis(700);
    cfg.dataplane.queue_report_interval = Duration::from_millis(50);
    let stack = launcher::start(&cfg, Role::Up, None).await.expect("start");
    let gw = Gw::new(stack.gateway.expect("gateway"));
    let admin = admin_token(&gw).await;
    wait_for_worker(&gw, &admin).await;
    let all = json!([{"id": "*", "type": "account-functions"}]);
    let (key, _) = api_key(&gw, &["invoke_function", "queue_details"], all).await;
    // load-tester with maxRequestConcurrency 1: one request at a time.
    let (lt, _) = deploy(&gw, &admin, "lt", "builtin/load-tester", 1).await;
    wait_invocable(&gw, &key, &lt, r#"{"message":"x"}"#).await;
    assert_eq!(queue_depth(&gw, &key, &lt).await, 0);
    let auth = format!("Bearer {key}");
    let path = format!("/v2/nvcf/pexec/functions/{lt}");
    let call = |body: &'static str| {
        let req = gw.request(
            Method::POST,
            "invocation.",
            &path,
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            Bytes::from_static(body.as_bytes()),
        );
        let client = gw.h1.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let status = client.request(req).await.map(|r| r.status());
            (status, started.elapsed())
        })
    };

    // One slow call holds the only place; the next one waits in the queue and is served after it.
    let slow = call(r#"{"message":"slow","delay":0.5}"#);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let queued = call(r#"{"message":"queued"}"#);
    eventually(
        "the control plane to see one waiting",
        Duration::from_secs(3),
        || async { queue_depth(&gw, &key, &lt).await == 1 },
    )
    .await;
    // The queue holds one: a third call is refused at once.
    let full = gw
        .call(
            Method::POST,
            "invocation.",
            &path,
            &[("authorization", auth.as_str())],
            r#"{"message":"third"}"#,
        )
        .await;
    assert_problem(&full, StatusCode::TOO_MANY_REQUESTS, "queue is full");
    assert_eq!(full.header("retry-after"), "1");

    let (status, _) = slow.await.expect("slow task");
    assert_eq!(status.expect("slow answer"), StatusCode::OK);
    let (status, waited) = queued.await.expect("queued task");
    assert_eq!(status.expect("queued answer"), StatusCode::OK);
    assert!(
        waited >= Duration::from_millis(250),
        "it did wait: {waited:?}"
    );
    eventually("the queue to drain", Duration::from_secs(3), || async {
        queue_depth(&gw, &key, &lt).await == 0
    })
    .await;

    // A wait longer than queue-timeout is refused with 429 and leaves the queue.
    let slow = call(r#"{"message":"slow","delay":1.5}"#);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    let late = gw
        .call(
            Method::POST,
            "invocation.",
            &path,
            &[("authorization", auth.as_str())],
            r#"{"message":"late"}"#,
        )
        .await;
    assert_problem(
        &late,
        StatusCode::TOO_MANY_REQUESTS,
        "stayed at its concurrency limit",
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_millis(1400),
        "{waited:?}"
    );
    let (status, _) = slow.await.expect("slow task");
    assert_eq!(status.expect("slow answer"), StatusCode::OK);
    eventually("the queue to drain", Duration::from_secs(3), || async {
        queue_depth(&gw, &key, &lt).await == 0
    })
    .await;

    stack.shutdown().await.expect("shutdown");
}
