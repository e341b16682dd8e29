//! The worker's metric table (names, units, descriptions) and the helpers that record them. The
//! binary installs the recorder and calls [`describe_metrics`]; without a recorder every call here
//! is a no-op.
//!
//! Labels are bounded: `function_version_id` takes one value per version assigned to this worker
//! (at most `capacity` at a time), `kernel` one per built-in kernel, `status` one per HTTP status
//! the worker answers, `cause` one per [`crate::runtime::RuntimeError`] class.

use http::StatusCode;
use metrics::Unit;
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

/// Records one kernel call: its time and the bytes it moved.
pub(crate) fn record_kernel(vid: &str, kernel: &'static str, t: &crate::kernels::KernelTiming) {
    metrics::histogram!(KERNEL_SECONDS, "function_version_id" => vid.to_owned(), "kernel" => kernel)
        .record(t.kernel.as_secs_f64());
    if t.h2d_bytes > 0 {
        metrics::counter!(H2D_BYTES_TOTAL).increment(t.h2d_bytes);
    }
    if t.d2h_bytes > 0 {
        metrics::counter!(D2H_BYTES_TOTAL).increment(t.d2h_bytes);
    }
}

/// Records the backend's device memory in use.
pub(crate) fn record_device_memory(bytes: u64) {
    metrics::gauge!(DEVICE_MEMORY_BYTES).set(bytes as f64);
}

/// Records how long a request waited for its kernel.
pub(crate) fn record_queue_wait(vid: &str, wait: Duration) {
    metrics::histogram!(QUEUE_WAIT_SECONDS, "function_version_id" => vid.to_owned())
        .record(wait.as_secs_f64());
}

/// Records the rows of one batched launch.
pub(crate) fn record_batch(vid: &str, rows: usize) {
    metrics::histogram!(BATCH_SIZE, "function_version_id" => vid.to_owned()).record(rows as f64);
}

/// Moves the in-flight gauge of a version by `delta` (+1 on admission, −1 on release).
pub(crate) fn record_in_flight(vid: &str, delta: f64) {
    let g = metrics::gauge!(IN_FLIGHT, "function_version_id" => vid.to_owned());
    if delta >= 0.0 {
        g.increment(delta);
    } else {
        g.decrement(-delta);
    }
}

/// Counts one answered invocation.
pub(crate) fn record_request(vid: &str, status: StatusCode) {
    metrics::counter!(
        REQUESTS_TOTAL,
        "function_version_id" => vid.to_owned(),
        "status" => status_label(status)
    )
    .increment(1);
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
    match status.as_u16() {
        200 => "200",
        400 => "400",
        404 => "404",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        100..=199 => "1xx",
        201..=299 => "2xx",
        300..=399 => "3xx",
        401..=499 => "4xx",
        _ => "5xx",
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
    }

    #[test]
    fn recording_without_recorder_is_a_no_op() {
        describe_metrics();
        record_request("v", StatusCode::OK);
        record_error("device", StatusCode::INTERNAL_SERVER_ERROR);
        record_in_flight("v", 1.0);
        record_in_flight("v", -1.0);
        record_batch("v", 8);
        record_queue_wait("v", Duration::from_millis(1));
        record_device_memory(0);
        record_device_error();
        record_kernel("v", "echo", &crate::kernels::KernelTiming::default());
    }
}
