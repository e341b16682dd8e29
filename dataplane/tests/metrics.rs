//! The gateway's metrics, observed through a recording `metrics` recorder installed for this test
//! binary only (its own process, so the global recorder sees only this file's requests).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dataplane::DataplaneFile;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const GUARD: Duration = Duration::from_secs(20);

/// Counter totals, histogram sample counts and gauge values, by `name{k=v,...}` (labels sorted).
#[derive(Debug, Default)]
struct Store {
    values: Mutex<BTreeMap<String, f64>>,
    described: Mutex<BTreeSet<String>>,
}

#[derive(Debug)]
struct Cell {
    key: String,
    store: Arc<Store>,
}

impl Cell {
    fn add(&self, v: f64) {
        *self
            .store
            .values
            .lock()
            .expect("lock")
            .entry(self.key.clone())
            .or_default() += v;
    }
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.add(value as f64);
    }
    fn absolute(&self, _value: u64) {}
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        self.add(value);
    }
    fn decrement(&self, value: f64) {
        self.add(-value);
    }
    fn set(&self, value: f64) {
        self.store
            .values
            .lock()
            .expect("lock")
            .insert(self.key.clone(), value);
    }
}

impl HistogramFn for Cell {
    fn record(&self, _value: f64) {
        self.add(1.0);
    }
}

#[derive(Debug)]
struct TestRecorder(Arc<Store>);

impl TestRecorder {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        Arc::new(Cell {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            store: Arc::clone(&self.0),
        })
    }
    fn describe(&self, key: KeyName) {
        self.0
            .described
            .lock()
            .expect("lock")
            .insert(key.as_str().to_owned());
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.describe(key);
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.describe(key);
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.describe(key);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

async fn get(addr: SocketAddr, host: &str, target: &str) -> StatusCode {
    let fut = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::get(target)
            .header("host", host)
            .body(Full::<Bytes>::default());
        let resp = sender
            .send_request(req.expect("req"))
            .await
            .expect("response");
        let status = resp.status();
        resp.into_body().collect().await.expect("body");
        status
    };
    tokio::time::timeout(GUARD, fut)
        .await
        .expect("answer in time")
}

#[tokio::test]
async fn requests_and_errors_are_counted_with_bounded_labels() {
    let store = Arc::new(Store::default());
    metrics::set_global_recorder(TestRecorder(Arc::clone(&store))).expect("first recorder");
    dataplane::describe_metrics();

    // A control plane that refuses connections.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let file = DataplaneFile {
        listen: "127.0.0.1:0".into(),
        controlplane_url: format!("http://{dead}"),
        ..DataplaneFile::default()
    };
    let config = file.validate("token").expect("valid");
    let listener = TcpListener::bind(config.listen)
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(dataplane::run(config, listener, async move {
        let _ = rx.await;
    }));

    assert_eq!(get(addr, "127.0.0.1", "/health").await, StatusCode::OK);
    assert_eq!(get(addr, "api.x", "/health").await, StatusCode::OK);
    assert_eq!(get(addr, "foo.example", "/x").await, StatusCode::NOT_FOUND);
    assert_eq!(
        get(addr, "api.x", "/v2/nvcf/functions").await,
        StatusCode::BAD_GATEWAY
    );
    // No credential: the invocation path's 401 (the feed never arrived, so no key is known).
    assert_eq!(
        get(addr, "invocation.x", "/v2/nvcf/pexec/x").await,
        StatusCode::UNAUTHORIZED
    );

    // The control plane was never reachable: the feed lag counts from the follower's start and
    // keeps growing (refreshed every second) while it stays away.
    let lag = || {
        store
            .values
            .lock()
            .expect("lock")
            .get("gateway_feed_lag_seconds{}")
            .copied()
    };
    let deadline = std::time::Instant::now() + GUARD;
    while lag().is_none_or(|l| l < 1.5) {
        assert!(
            std::time::Instant::now() < deadline,
            "lag stuck at {:?}",
            lag()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = lag().expect("lag");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = lag().expect("lag");
    assert!(second > first, "lag did not grow: {first} then {second}");
    let behind = store
        .values
        .lock()
        .expect("lock")
        .get("gateway_feed_revisions_behind{}")
        .copied();
    assert_eq!(
        behind,
        Some(0.0),
        "nothing heard, nothing known to be behind"
    );

    let _ = tx.send(());
    tokio::time::timeout(GUARD, task)
        .await
        .expect("stops")
        .expect("task")
        .expect("ok");

    let values = store.values.lock().expect("lock").clone();
    let expected = [
        (
            "gateway_requests_total{protocol=http1,route=health,status_class=2xx}",
            2.0,
        ),
        (
            "gateway_requests_total{protocol=http1,route=not_found,status_class=4xx}",
            1.0,
        ),
        (
            "gateway_requests_total{protocol=http1,route=management,status_class=5xx}",
            1.0,
        ),
        (
            "gateway_requests_total{protocol=http1,route=invocation,status_class=4xx}",
            1.0,
        ),
        ("gateway_errors_total{cause=client,status=404}", 1.0),
        ("gateway_errors_total{cause=control_plane,status=502}", 1.0),
        ("gateway_errors_total{cause=client,status=401}", 1.0),
        (
            "app_invocation_error{function_id=unknown,http_status_code=401}",
            1.0,
        ),
        ("gateway_key_lookups_total{result=missing}", 1.0),
        // The follower keeps trying the dead control plane and counts it.
    ];
    for (key, value) in expected {
        assert_eq!(values.get(key), Some(&value), "{key} in {values:#?}");
    }
    assert!(
        values
            .get("gateway_feed_reconnects_total{}")
            .is_some_and(|n| *n >= 1.0),
        "{values:#?}"
    );
    // The per-call durations are the gateway's own histograms, outside the recorder: they are
    // checked in the text that `/metrics` appends.
    let mut histograms = String::new();
    dataplane::latency::render(&mut histograms);
    for line in [
        "# TYPE gateway_request_duration_seconds histogram\n",
        "gateway_request_duration_seconds_count{route=\"health\"} 2\n",
        "gateway_request_duration_seconds_bucket{route=\"health\",le=\"+Inf\"} 2\n",
        "gateway_request_duration_seconds_count{route=\"management\"} 1\n",
        "gateway_request_duration_seconds_count{route=\"not_found\"} 1\n",
        "gateway_request_duration_seconds_count{route=\"invocation\"} 1\n",
    ] {
        assert!(histograms.contains(line), "{line} in {histograms}");
    }
    assert!(
        !histograms.contains("function_request_latency"),
        "no version was routed: {histograms}"
    );
    let described = store.described.lock().expect("lock").clone();
    for name in [
        dataplane::metrics::REQUESTS_TOTAL,
        dataplane::metrics::ERRORS_TOTAL,
        dataplane::metrics::FEED_REVISION,
        dataplane::metrics::FEED_LAG_SECONDS,
        dataplane::metrics::FEED_REVISIONS_BEHIND,
        dataplane::metrics::FUNCTION_REQUEST,
        dataplane::metrics::APP_INVOCATION_ERROR,
        dataplane::metrics::INVOCATIONS_IN_FLIGHT,
        dataplane::metrics::INVOCATIONS_QUEUED,
        dataplane::metrics::QUEUE_WAIT_SECONDS,
        dataplane::metrics::KEY_LOOKUPS_TOTAL,
        dataplane::metrics::WORKER_CONNECTIONS,
        dataplane::metrics::WORKER_CONNECTIONS_OPENED_TOTAL,
        dataplane::metrics::WORKER_CONNECT_FAILURES_TOTAL,
        dataplane::metrics::WORKER_STREAMS_RESET_TOTAL,
    ] {
        assert!(
            described.contains(name),
            "{name} not described: {described:?}"
        );
    }
}
