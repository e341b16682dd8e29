//! The gateway's metric table (names, units, descriptions) and the helpers that record them. The
//! binary installs the recorder; without one these calls are no-ops.

use std::time::Duration;

use http::StatusCode;
use metrics::Unit;

/// Every request the gateway answered, by route, status class and protocol.
pub const REQUESTS_TOTAL: &str = "gateway_requests_total";
/// Time from request head to response head, by route.
pub const REQUEST_DURATION_SECONDS: &str = "gateway_request_duration_seconds";
/// Error responses the gateway produced itself, by cause and status.
pub const ERRORS_TOTAL: &str = "gateway_errors_total";

/// TLS handshakes that failed or timed out.
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "gateway_tls_handshake_failures_total";

/// One row of the table: name, kind, unit, description.
struct MetricDef {
    name: &'static str,
    kind: Kind,
    unit: Unit,
    help: &'static str,
}

enum Kind {
    Counter,
    Histogram,
}

const TABLE: &[MetricDef] = &[
    MetricDef {
        name: REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Requests answered by the gateway. Labels: route (key_service|management|invocation|health|not_found), status_class (1xx..5xx), protocol (http1|h2).",
    },
    MetricDef {
        name: REQUEST_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help: "Time from receiving a request head to sending the response head (bodies stream afterwards). Label: route.",
    },
    MetricDef {
        name: ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Error responses produced by the gateway itself (not passed through from upstream). Labels: cause (client|control_plane|internal), status.",
    },
    MetricDef {
        name: TLS_HANDSHAKE_FAILURES_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "TLS handshakes on the TLS listener that failed (bad client hello, no common protocol or ALPN) or timed out.",
    },
];

/// Registers the description and unit of every gateway metric with the installed recorder.
pub fn describe_metrics() {
    for m in TABLE {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

/// Counts one answered request and records its latency.
pub(crate) fn record_request(
    route: &'static str,
    status: StatusCode,
    protocol: &'static str,
    elapsed: Duration,
) {
    metrics::counter!(
        REQUESTS_TOTAL,
        "route" => route,
        "status_class" => status_class(status),
        "protocol" => protocol
    )
    .increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, "route" => route).record(elapsed.as_secs_f64());
}

/// Counts one failed TLS handshake.
pub(crate) fn record_tls_handshake_failure() {
    metrics::counter!(TLS_HANDSHAKE_FAILURES_TOTAL).increment(1);
}

/// Counts one error response.
pub(crate) fn record_error(cause: &'static str, status: StatusCode) {
    metrics::counter!(ERRORS_TOTAL, "cause" => cause, "status" => status_label(status))
        .increment(1);
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The status as a static label (bounded: only the statuses the gateway produces get their own).
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "400",
        404 => "404",
        413 => "413",
        431 => "431",
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => status_class(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_labels() {
        assert_eq!(status_class(StatusCode::OK), "2xx");
        assert_eq!(status_class(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_class(StatusCode::BAD_GATEWAY), "5xx");
        assert_eq!(status_label(StatusCode::PAYLOAD_TOO_LARGE), "413");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "4xx");
    }

    #[test]
    fn describe_without_recorder_is_a_no_op() {
        describe_metrics();
        record_request("health", StatusCode::OK, "http1", Duration::from_millis(1));
        record_error("client", StatusCode::NOT_FOUND);
    }
}
