//! The serving side through real sockets: HTTP/2 prior knowledge (and HTTP/1.1) clients against a
//! worker server on `127.0.0.1:0` running the CPU backend, for every runtime and error case,
//! concurrency limits, cancellation, passthrough and dynamic batching.

mod support;

#[path = "serve/mlp.rs"]
mod mlp;
#[path = "serve/passthrough.rs"]
mod passthrough;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::time::{Duration, Instant};
use support::*;
use uuid::Uuid;
use worker::config::ServeConfig;
use worker::kernels::cpu::CpuBackend;
use worker::kernels::{Backend, KernelError};

#[tokio::test]
async fn echo_streams_bodies_back_byte_for_byte() {
    let f = function("builtin/echo:1.0");
    let w = start(&[(&f, 4)], ServeConfig::default()).await;
    let vid = Some(f.version_id);
    let r = call(
        w.addr,
        post(
            w.addr,
            vid,
            "/infer",
            Some("application/x-thing"),
            full("héllo"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/x-thing");
    assert_eq!(r.headers["content-length"], "6");
    assert_eq!(&r.body[..], "héllo".as_bytes());

    // 20 MiB, streamed in and out without a Content-Length; larger than max-body-bytes would allow
    // a buffering runtime here.
    let cfg = ServeConfig {
        max_body_bytes: 1 << 20,
        ..ServeConfig::default()
    };
    let w = start(&[(&f, 4)], cfg).await;
    let (body, sent) = chunked(320, 64 << 10);
    let r = call(w.addr, post(w.addr, vid, "/infer", None, body)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), sent.len());
    assert!(r.body[..] == sent[..], "echoed bytes differ");
    assert!(!r.headers.contains_key("content-type"));
    assert!(
        !r.headers.contains_key("content-length"),
        "streamed in, streamed out"
    );
}

#[tokio::test]
async fn http1_clients_are_served_too() {
    let echo = function("builtin/echo");
    let saxpy = function("builtin/saxpy");
    let w = start(&[(&echo, 4), (&saxpy, 4)], ServeConfig::default()).await;
    let mut s = h1(w.addr).await;
    let (body, sent) = chunked(16, 4096);
    let mut req = post(
        w.addr,
        Some(echo.version_id),
        "/x",
        Some("text/plain"),
        body,
    );
    *req.uri_mut() = "/x".parse().expect("uri");
    req.headers_mut()
        .insert("host", w.addr.to_string().parse().expect("host"));
    let r = collect(s.send_request(req).await.expect("echo")).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &sent[..]));
    assert_eq!(r.headers["content-type"], "text/plain");
    let body = serde_json::to_vec(&serde_json::json!({"a": 2, "x": [1, 2], "y": [10, 20]}));
    let mut req = post(
        w.addr,
        Some(saxpy.version_id),
        "/x",
        None,
        full(body.expect("json")),
    );
    *req.uri_mut() = "/x".parse().expect("uri");
    req.headers_mut()
        .insert("host", w.addr.to_string().parse().expect("host"));
    let r = collect(s.send_request(req).await.expect("saxpy")).await;
    assert_eq!(r.json(), serde_json::json!({"y": [12.0, 24.0]}));
}

#[tokio::test]
async fn load_tester_plain_and_random_text() {
    let f = function("builtin/load-tester");
    let w = start(&[(&f, 4)], ServeConfig::default()).await;
    let started = Instant::now();
    let r = call_json(
        w.addr,
        f.version_id,
        serde_json::json!({"message": "ab", "repeats": 3, "delay": 0.05}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(&r.body[..], b"ababab");

    let r = call_json(
        w.addr,
        f.version_id,
        serde_json::json!({"size": 100, "repeats": 2}),
    )
    .await;
    assert_eq!(r.body.len(), 200);
    assert!(r.body.iter().all(u8::is_ascii_alphanumeric));
    assert_eq!(r.body[..100], r.body[100..]);

    let r = call_json(
        w.addr,
        f.version_id,
        serde_json::json!({"message": "x", "repeats": 0}),
    )
    .await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    // `stream: true` without `Accept: text/event-stream` is the plain answer.
    let r = call_json(
        w.addr,
        f.version_id,
        serde_json::json!({"message": "x", "repeats": 2, "stream": true}),
    )
    .await;
    assert_eq!(&r.body[..], b"xx");
}

#[tokio::test]
async fn load_tester_streams_one_event_per_repeat_delay_apart() {
    let f = function("builtin/load-tester");
    let w = start(&[(&f, 4)], ServeConfig::default()).await;
    let body = serde_json::json!({"message": "tick", "repeats": 4, "delay": 0.05, "stream": true});
    let mut req = post(
        w.addr,
        Some(f.version_id),
        "/",
        Some("application/json"),
        full(body.to_string()),
    );
    req.headers_mut()
        .insert("accept", "text/event-stream".parse().expect("accept"));
    let mut s = h2(w.addr).await;
    let sent = Instant::now();
    let resp = s.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let (mut text, mut arrivals) = (String::new(), Vec::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            let chunk = String::from_utf8(data.to_vec()).expect("utf-8");
            for _ in 0..chunk.matches("\n\n").count() {
                arrivals.push(sent.elapsed());
            }
            text.push_str(&chunk);
        }
    }
    assert_eq!(text, "data: tick\n\n".repeat(4));
    assert_eq!(arrivals.len(), 4);
    // Event i leaves the worker no earlier than i × delay after the request.
    for (i, at) in arrivals.iter().enumerate() {
        assert!(
            *at >= Duration::from_millis(50) * i as u32,
            "event {i} at {at:?}"
        );
    }
}

#[tokio::test]
async fn saxpy_json_binary_and_shape_errors() {
    let f = function("builtin/saxpy");
    let w = start(&[(&f, 4)], ServeConfig::default()).await;
    let vid = f.version_id;
    let r = call_json(
        w.addr,
        vid,
        serde_json::json!({"a": 2.0, "x": [1, 2, 3], "y": [0.5, 0, -1]}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, serde_json::json!({"y": [2.5, 4.0, 5.0]}))
    );

    let x: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
    let y: Vec<f32> = (0..1000).map(|i| 1.0 - i as f32).collect();
    let mut body = le(&[3.0]);
    body.extend(le(&x));
    body.extend(le(&y));
    let r = call(
        w.addr,
        post(
            w.addr,
            Some(vid),
            "/",
            Some("application/octet-stream"),
            full(body),
        ),
    )
    .await;
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    let want = CpuBackend.saxpy(3.0, &x, &y).expect("cpu").0;
    assert_eq!(from_le(&r.body), want);

    let r = call_json(
        w.addr,
        vid,
        serde_json::json!({"a": 1, "x": [1, 2], "y": [1]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.detail().contains("same length (x has 2, y has 1)"),
        "{r:?}"
    );
    let r = call(
        w.addr,
        post(
            w.addr,
            Some(vid),
            "/",
            Some("application/octet-stream"),
            full(vec![0u8; 10]),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.detail().contains("got 10 bytes"), "{r:?}");
}

#[tokio::test]
async fn malformed_json_and_wrong_types_are_400() {
    let saxpy = function("builtin/saxpy");
    let lt = function("builtin/load-tester");
    let w = start(&[(&saxpy, 4), (&lt, 4)], ServeConfig::default()).await;
    let r = call(
        w.addr,
        post(
            w.addr,
            Some(saxpy.version_id),
            "/",
            None,
            full("{\"a\": 1,"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.detail().contains("malformed JSON"), "{r:?}");
    assert_eq!(
        r.problem().type_.as_deref(),
        Some("urn:nv-boot:problem-details:bad-request")
    );
    let r = call_json(
        w.addr,
        saxpy.version_id,
        serde_json::json!({"a": "two", "x": [], "y": []}),
    )
    .await;
    assert!(r.detail().contains("`a` must be a number"), "{r:?}");
    let r = call_json(
        w.addr,
        lt.version_id,
        serde_json::json!({"message": "m", "repeats": -2}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.detail()
            .contains("`repeats` must be a non-negative integer"),
        "{r:?}"
    );
    let r = call_json(
        w.addr,
        lt.version_id,
        serde_json::json!({"message": "m", "delay": 3600}),
    )
    .await;
    assert!(r.detail().contains("exceeds this worker's limit"), "{r:?}");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let f = function("builtin/saxpy");
    let cfg = ServeConfig {
        max_body_bytes: 1024,
        ..ServeConfig::default()
    };
    let w = start(&[(&f, 4)], cfg).await;
    let r = call(
        w.addr,
        post(
            w.addr,
            Some(f.version_id),
            "/",
            None,
            full(vec![b' '; 2048]),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.detail().contains("1024 bytes"), "{r:?}");
    let (body, _) = chunked(4, 512);
    let r = call(
        w.addr,
        post(
            w.addr,
            Some(f.version_id),
            "/",
            Some("application/octet-stream"),
            body,
        ),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "streamed without a length"
    );
}

#[tokio::test]
async fn version_header_and_assignment_are_checked() {
    let mine = function("builtin/echo");
    let elsewhere = function("builtin/echo");
    let other = support::instance(&elsewhere, "another-worker", 4);
    let extra = vec![
        model::feed::Entity::Function(elsewhere.clone()),
        model::feed::Entity::Instance(other),
    ];
    let w = start_with(
        &[(&mine, 4)],
        extra,
        ServeConfig::default(),
        Counting::default(),
    )
    .await;
    let r = call(w.addr, post(w.addr, None, "/", None, full("x"))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.detail()
            .contains("NVCF-FUNCTION-VERSION-ID header is required"),
        "{r:?}"
    );
    let mut req = post(w.addr, None, "/", None, full("x"));
    req.headers_mut().insert(
        "nvcf-function-version-id",
        "not-a-uuid".parse().expect("hv"),
    );
    let r = call(w.addr, req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.detail().contains("must be a UUID, got 'not-a-uuid'"),
        "{r:?}"
    );
    for vid in [Uuid::new_v4(), elsewhere.version_id] {
        let r = call(w.addr, post(w.addr, Some(vid), "/p", None, full("x"))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(
            r.detail(),
            format!("function version {vid} is not deployed on this worker")
        );
        assert_eq!(r.problem().instance.as_deref(), Some("/p"));
    }
    let mut req = post(w.addr, Some(mine.version_id), "/", None, full("x"));
    req.headers_mut().insert(
        "nvcf-function-id",
        Uuid::new_v4().to_string().parse().expect("hv"),
    );
    assert_eq!(call(w.addr, req).await.status, StatusCode::BAD_REQUEST);
    // /health without a version header is the worker's own.
    let req = Request::get(format!("http://{}/health", w.addr))
        .body(full(""))
        .expect("req");
    let r = call(w.addr, req).await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, serde_json::json!({"status": "OK"}))
    );
}

#[tokio::test]
async fn concurrency_limit_429_and_cancellation_releases_the_slot() {
    let f = function("builtin/load-tester");
    let w = start(&[(&f, 1)], ServeConfig::default()).await;
    let vid = f.version_id;
    let slow = serde_json::json!({"message": "slow", "delay": 30}).to_string();
    let mut s = h2(w.addr).await;
    let pending = s.send_request(post(w.addr, Some(vid), "/", None, full(slow)));
    let task = tokio::spawn(pending);
    eventually("the slow request to be admitted", || {
        w.shared.in_flight.get(&vid) == 1
    })
    .await;

    let r = call_json(w.addr, vid, serde_json::json!({"message": "m"})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["retry-after"], "1");
    assert!(r.detail().contains("maxRequestConcurrency of 1"), "{r:?}");

    // Dropping the response future resets the stream; the worker drops the work and its slot.
    task.abort();
    eventually("in_flight back to 0", || w.shared.in_flight.get(&vid) == 0).await;
    let r = call_json(w.addr, vid, serde_json::json!({"message": "m"})).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"m"[..]));
    assert_eq!(w.shared.in_flight.get(&vid), 0);
}

#[tokio::test]
async fn a_lost_device_is_500_and_marks_the_worker_unhealthy() {
    let f = function("builtin/saxpy");
    let backend = Counting {
        saxpy_fails: Some(KernelError::Device {
            message: "the GPU fell off the bus".into(),
            lost: true,
        }),
        ..Counting::default()
    };
    let w = start_with(&[(&f, 4)], vec![], ServeConfig::default(), backend).await;
    assert!(w.shared.healthy.load(std::sync::atomic::Ordering::SeqCst));
    let r = call_json(
        w.addr,
        f.version_id,
        serde_json::json!({"a": 1, "x": [1], "y": [1]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.detail().contains("the GPU fell off the bus"), "{r:?}");
    assert!(!w.shared.healthy.load(std::sync::atomic::Ordering::SeqCst));
}
