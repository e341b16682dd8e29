//! The worker's metric table (names, units, descriptions) and the helpers that record them. The
//! binary installs the recorder and calls [`describe_metrics`]; without a recorder every call here
//! is a no-op.
//!
//! Labels are bounded: `function_version_id` takes one value per version assigned to this worker
//! (at most `capacity` at a time), `kernel` one per built-in kernel, `status` one per HTTP status
//! the worker answers, `cause` one per [`crate::runtime::RuntimeError`] class.

use http::StatusCode;
use metrics::{Counter, Gauge, Histogram, Unit};
use std::sync::OnceLock;
use std::time::Duration;

/// Time inside one kernel call (CUDA events on a device, wall time on the CPU), by function version
/// and kernel.
pub const KERNEL_SECONDS: &str = "worker_kernel_seconds";
/// Time from a request's input being complete to the start of the kernel that serves it (batching
/// wait and blocking-pool scheduling included), by function version.
pub const QUEUE_WAIT_SECONDS: &str = "worker_queue_wait_seconds";
/// Rows per `mlp` launch, by function version.
pub const BATCH_SIZE: &str = "worker_batch_size";
/// Invocations in progress, by function version.
pub const IN_FLIGHT: &str = "worker_in_flight";
/// Device memory the backend holds (pools and weights); 0 on the CPU.
pub const DEVICE_MEMORY_BYTES: &str = "worker_device_memory_bytes";
/// Bytes copied host → device.
pub const H2D_BYTES_TOTAL: &str = "worker_h2d_bytes_total";
/// Bytes copied device → host.
pub const D2H_BYTES_TOTAL: &str = "worker_d2h_bytes_total";
/// Invocations answered, by function version and status.
pub const REQUESTS_TOTAL: &str = "worker_requests_total";
/// Error responses the worker produced itself, by cause and status.
pub const ERRORS_TOTAL: &str = "worker_errors_total";
/// Kernel calls that failed on the device.
pub const DEVICE_ERRORS_TOTAL: &str = "worker_device_errors_total";

enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One row of the table: name, kind, unit, description.
struct MetricDef {
    name: &'static str,
    kind: Kind,
    unit: Unit,
    help: &'static str,
}

const TABLE: &[MetricDef] = &[
    MetricDef {
        name: KERNEL_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help: "Time inside one kernel call (CUDA events on a device, wall time on the CPU). Labels: function_version_id, kernel (echo|repeat|saxpy|mlp_forward|mlp_load).",
    },
    MetricDef {
        name: QUEUE_WAIT_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help: "Time from a request's input being complete to the start of its kernel, batching wait included. Label: function_version_id.",
    },
    MetricDef {
        name: BATCH_SIZE,
        kind: Kind::Histogram,
        unit: Unit::Count,
        help: "Rows per mlp launch (dynamic batching). Label: function_version_id.",
    },
    MetricDef {
        name: IN_FLIGHT,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Invocations in progress (admitted, response not finished). Label: function_version_id.",
    },
    MetricDef {
        name: DEVICE_MEMORY_BYTES,
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        help: "Device memory held by the backend (pooled buffers and weights); 0 on the CPU backend.",
    },
    MetricDef {
        name: H2D_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Bytes,
        help: "Bytes copied host to device by kernel calls.",
    },
    MetricDef {
        name: D2H_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Bytes,
        help: "Bytes copied device to host by kernel calls.",
    },
    MetricDef {
        name: REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Invocations answered (response head sent). Labels: function_version_id (empty when the request named none), status.",
    },
    MetricDef {
        name: ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Error responses produced by the worker itself. Labels: cause (bad_request|not_deployed|overloaded|too_large|weights|device|inference_connection|internal), status.",
    },
    MetricDef {
        name: DEVICE_ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Kernel calls that failed on the device (each one answered 500; a lost device also marks the worker unhealthy).",
    },
];

/// Registers the description and unit of every worker metric with the installed recorder.
pub fn describe_metrics() {
    for m in TABLE {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

/// The kernels' `kernel` labels, in the order of [`VersionMetrics`]'s kernel handles.
const KERNELS: [&str; 5] = ["echo", "repeat", "saxpy", "mlp_forward", "mlp_load"];

/// The labels [`status_label`] gives, in the order of [`VersionMetrics`]'s request counters.
const STATUS_LABELS: [&str; 14] = [
    "200", "400", "404", "413", "422", "429", "500", "502", "503", "1xx", "2xx", "3xx", "4xx",
    "5xx",
];

/// One function version's metric handles, made when the version is first admitted here and kept
/// with its in-flight count ([`crate::runtime::admission`]), so that an invocation records without
/// building, hashing and looking up its labels in the recorder's registry: about 7,500 of the
/// 36,700 instructions of an echo call went there. Handles of a status or kernel are made at
/// their first use, so that `/metrics` lists only series that happened.
pub struct VersionMetrics {
    /// The version id, the `function_version_id` label.
    label: String,
    in_flight: Gauge,
    queue_wait: OnceLock<Histogram>,
    batch: OnceLock<Histogram>,
    kernels: [OnceLock<Histogram>; KERNELS.len()],
    requests: [OnceLock<Counter>; STATUS_LABELS.len()],
}

impl VersionMetrics {
    /// The handles of the version labelled `label` (its id).
    pub fn new(label: String) -> Self {
        Self {
            in_flight: metrics::gauge!(IN_FLIGHT, "function_version_id" => label.clone()),
            label,
            queue_wait: OnceLock::new(),
            batch: OnceLock::new(),
            kernels: Default::default(),
            requests: Default::default(),
        }
    }

    /// Moves the in-flight gauge by `delta` (+1 on admission, −1 on release).
    pub(crate) fn in_flight(&self, delta: f64) {
        if delta >= 0.0 {
            self.in_flight.increment(delta);
        } else {
            self.in_flight.decrement(-delta);
        }
    }

    /// Counts one answered invocation.
    pub(crate) fn request(&self, status: StatusCode) {
        let i = status_index(status);
        self.requests[i]
            .get_or_init(|| request_counter(&self.label, STATUS_LABELS[i]))
            .increment(1);
    }

    /// Records how long a request waited for its kernel.
    pub(crate) fn queue_wait(&self, wait: Duration) {
        self.queue_wait
            .get_or_init(|| {
                metrics::histogram!(QUEUE_WAIT_SECONDS, "function_version_id" => self.label.clone())
            })
            .record(wait.as_secs_f64());
    }

    /// Records the rows of one batched launch.
    pub(crate) fn batch(&self, rows: usize) {
        self.batch
            .get_or_init(
                || metrics::histogram!(BATCH_SIZE, "function_version_id" => self.label.clone()),
            )
            .record(rows as f64);
    }

    /// Records one kernel call's time (its bytes go to the executor's [`DeviceMetrics`]).
    pub(crate) fn kernel(&self, kernel: &'static str, t: &crate::kernels::KernelTiming) {
        let secs = t.kernel.as_secs_f64();
        match KERNELS.iter().position(|k| *k == kernel) {
            Some(i) => self.kernels[i]
                .get_or_init(|| kernel_histogram(&self.label, KERNELS[i]))
                .record(secs),
            None => kernel_histogram(&self.label, kernel).record(secs),
        }
    }
}

impl std::fmt::Debug for VersionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionMetrics")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

fn kernel_histogram(vid: &str, kernel: &'static str) -> Histogram {
    metrics::histogram!(KERNEL_SECONDS, "function_version_id" => vid.to_owned(), "kernel" => kernel)
}

fn request_counter(vid: &str, status: &'static str) -> Counter {
    metrics::counter!(REQUESTS_TOTAL, "function_version_id" => vid.to_owned(), "status" => status)
}

/// The executor's unlabelled handles: device memory and the bytes kernel calls moved (made at
/// their first use, so that a backend that copies nothing lists no byte counters).
pub(crate) struct DeviceMetrics {
    memory: Gauge,
    h2d: OnceLock<Counter>,
    d2h: OnceLock<Counter>,
}

impl DeviceMetrics {
    pub(crate) fn new() -> Self {
        Self {
            memory: metrics::gauge!(DEVICE_MEMORY_BYTES),
            h2d: OnceLock::new(),
            d2h: OnceLock::new(),
        }
    }

    /// Records the backend's device memory in use.
    pub(crate) fn memory(&self, bytes: u64) {
        // Bytes to f64: exact below 2^53.
        #[allow(clippy::cast_precision_loss)]
        self.memory.set(bytes as f64);
    }

    /// Adds the bytes one kernel call moved.
    pub(crate) fn moved(&self, t: &crate::kernels::KernelTiming) {
        if t.h2d_bytes > 0 {
            self.h2d
                .get_or_init(|| metrics::counter!(H2D_BYTES_TOTAL))
                .increment(t.h2d_bytes);
        }
        if t.d2h_bytes > 0 {
            self.d2h
                .get_or_init(|| metrics::counter!(D2H_BYTES_TOTAL))
                .increment(t.d2h_bytes);
        }
    }
}

impl std::fmt::Debug for DeviceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceMetrics")
    }
}

/// Counts one answered invocation that was never admitted (no [`VersionMetrics`] yet: a bad or
/// unknown version, or one over its limit); `vid` is empty when the request named none.
pub(crate) fn record_request(vid: &str, status: StatusCode) {
    request_counter(vid, status_label(status)).increment(1);
}

/// Counts one error response the worker produced.
pub(crate) fn record_error(cause: &'static str, status: StatusCode) {
    metrics::counter!(ERRORS_TOTAL, "cause" => cause, "status" => status_label(status))
        .increment(1);
}

/// Counts one device error.
pub(crate) fn record_device_error() {
    metrics::counter!(DEVICE_ERRORS_TOTAL).increment(1);
}

/// The status as a static label: the statuses the worker produces get their own, anything a
/// passthrough container answers is folded into its class.
fn status_label(status: StatusCode) -> &'static str {
    STATUS_LABELS[status_index(status)]
}

/// The position of `status`'s label in [`STATUS_LABELS`].
fn status_index(status: StatusCode) -> usize {
    match status.as_u16() {
        200 => 0,
        400 => 1,
        404 => 2,
        413 => 3,
        422 => 4,
        429 => 5,
        500 => 6,
        502 => 7,
        503 => 8,
        100..=199 => 9,
        201..=299 => 10,
        300..=399 => 11,
        401..=499 => 12,
        _ => 13,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(status_label(StatusCode::OK), "200");
        assert_eq!(status_label(StatusCode::TOO_MANY_REQUESTS), "429");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "4xx");
        assert_eq!(status_label(StatusCode::CREATED), "2xx");
        assert_eq!(status_label(StatusCode::GATEWAY_TIMEOUT), "5xx");
        for (code, label) in [
            (200, "200"),
            (404, "404"),
            (503, "503"),
            (204, "2xx"),
            (599, "5xx"),
        ] {
            let status = StatusCode::from_u16(code).expect("status");
            assert_eq!(STATUS_LABELS[status_index(status)], label);
        }
    }

    #[test]
    fn recording_without_recorder_is_a_no_op() {
        describe_metrics();
        record_request("v", StatusCode::OK);
        record_error("device", StatusCode::INTERNAL_SERVER_ERROR);
        let v = VersionMetrics::new("v".into());
        v.in_flight(1.0);
        v.in_flight(-1.0);
        v.request(StatusCode::OK);
        v.batch(8);
        v.queue_wait(Duration::from_millis(1));
        v.kernel("echo", &crate::kernels::KernelTiming::default());
        v.kernel("unlisted", &crate::kernels::KernelTiming::default());
        let d = DeviceMetrics::new();
        d.memory(0);
        d.moved(&crate::kernels::KernelTiming::default());
        record_device_error();
    }

    /// The handles record under the same series the label-built calls did.
    #[test]
    fn version_handles_record_under_their_labels() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let v = VersionMetrics::new("vid".into());
            v.in_flight(1.0);
            v.in_flight(1.0);
            v.in_flight(-1.0);
            v.request(StatusCode::OK);
            v.request(StatusCode::OK);
            v.request(StatusCode::IM_A_TEAPOT);
            v.kernel("echo", &crate::kernels::KernelTiming::default());
            v.queue_wait(Duration::from_millis(2));
            record_request("", StatusCode::BAD_REQUEST);
        });
        let text = handle.render();
        for line in [
            r#"worker_in_flight{function_version_id="vid"} 1"#,
            r#"worker_requests_total{function_version_id="vid",status="200"} 2"#,
            r#"worker_requests_total{function_version_id="vid",status="4xx"} 1"#,
            r#"worker_requests_total{function_version_id="",status="400"} 1"#,
            r#"worker_kernel_seconds_count{function_version_id="vid",kernel="echo"} 1"#,
            r#"worker_queue_wait_seconds_count{function_version_id="vid"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        // Series that never happened are not listed.
        assert!(!text.contains("worker_batch_size"), "{text}");
        assert!(!text.contains(r#"kernel="saxpy""#), "{text}");
    }
}
