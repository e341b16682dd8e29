//! The admin listener: Prometheus `/metrics`, `/healthz` (the process is up) and `/readyz` (every
//! component has started), on its own address so scrapes never compete with client traffic.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Latency buckets shared by every histogram, the gateway's own per-call ones included:
/// sub-millisecond at the bottom (the gateway adds tens of microseconds), up to a minute at the
/// top (long invocations and polls).
pub const BUCKETS: &[f64] = &dataplane::latency::LATENCY_BUCKETS_SECONDS;

/// How often histogram samples are folded into their buckets (between scrapes).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Buckets of the batch-size histogram.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Installs the process-wide Prometheus recorder and describes every metric. Call once.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .map_err(|e| e.to_string())?
        // Batch sizes are counts, not seconds: powers of two up to the largest sensible batch.
        .set_buckets_for_metric(Matcher::Full("worker_batch_size".into()), BATCH_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    controlplane_stub::describe_metrics();
    dataplane::describe_metrics();
    worker::metrics::describe_metrics();
    // Upkeep folds every histogram sample taken since the last one into its buckets: in a
    // worker, several per call (queue wait, batch size, kernel time; the gateway's two per-call
    // histograms are its own, `dataplane::latency`). On a plain thread, like the log's flush, so
    // that this burst never holds up a runtime thread and the calls queued on it.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| format!("starting the metrics upkeep thread: {e}"))?;
    Ok(handle)
}

fn text(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r
}

/// Serves the admin endpoints until `stop` flips.
pub async fn serve(
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    ready: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let metrics = Arc::new(metrics);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let metrics = Arc::clone(&metrics);
        let ready = Arc::clone(&ready);
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let metrics = Arc::clone(&metrics);
                let ready = Arc::clone(&ready);
                async move {
                    let resp = match req.uri().path() {
                        "/metrics" => match metrics.as_ref() {
                            Some(h) => {
                                // The exporter's metrics, then the gateway's own per-call
                                // histograms (kept per thread, summed here).
                                let mut body = h.render();
                                dataplane::latency::render(&mut body);
                                text(StatusCode::OK, "text/plain; version=0.0.4", body)
                            }
                            None => text(
                                StatusCode::NOT_FOUND,
                                "text/plain",
                                "metrics recorder not installed\n",
                            ),
                        },
                        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
                        "/readyz" if ready.load(Ordering::Acquire) => {
                            text(StatusCode::OK, "text/plain", "ready\n")
                        }
                        "/readyz" => {
                            text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n")
                        }
                        _ => text(
                            StatusCode::NOT_FOUND,
                            "text/plain",
                            "not found: try /metrics, /healthz or /readyz\n",
                        ),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
