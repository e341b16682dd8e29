//! The gateway's metric table (names, units, descriptions) and the helpers that record them. The
//! binary installs the recorder; without one these calls are no-ops. The two per-call histograms
//! are the gateway's own ([`crate::latency`]) and record with or without a recorder.

use std::sync::OnceLock;
use std::time::Duration;

use http::StatusCode;
use metrics::{Counter, Unit};

use crate::classify::Route;
use crate::latency::{FUNCTION_LATENCY, Histogram, REQUEST_DURATION};

/// Every request the gateway answered, by route, status class and protocol.
pub const REQUESTS_TOTAL: &str = "gateway_requests_total";
/// Time from request head to response head, by route.
pub const REQUEST_DURATION_SECONDS: &str = "gateway_request_duration_seconds";
/// Error responses the gateway produced itself, by cause and status.
pub const ERRORS_TOTAL: &str = "gateway_errors_total";

/// TLS handshakes that failed or timed out.
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "gateway_tls_handshake_failures_total";

/// QUIC connections open on the HTTP/3 listener.
pub const QUIC_CONNECTIONS: &str = "gateway_quic_connections";
/// QUIC handshakes that failed (TLS, ALPN or timeout).
pub const QUIC_HANDSHAKE_FAILURES_TOTAL: &str = "gateway_quic_handshake_failures_total";
/// Packets quinn declared lost, summed over ended QUIC connections.
pub const QUIC_LOST_PACKETS_TOTAL: &str = "gateway_quic_lost_packets_total";

/// The feed revision of the published snapshot.
pub const FEED_REVISION: &str = "gateway_feed_revision";
/// 1 while the feed stream to the control plane is open.
pub const FEED_CONNECTED: &str = "gateway_feed_connected";
/// Feed sessions that ended (error or close) and were reopened.
pub const FEED_RECONNECTS_TOTAL: &str = "gateway_feed_reconnects_total";
/// Seconds since the feed follower last heard from the control plane (any line, heartbeats too).
pub const FEED_LAG_SECONDS: &str = "gateway_feed_lag_seconds";
/// The control plane's latest revision (from its last line) minus the applied revision.
pub const FEED_REVISIONS_BEHIND: &str = "gateway_feed_revisions_behind";

/// Invocations routed to a function version (NVIDIA's `function.request`).
pub const FUNCTION_REQUEST: &str = "function_request";
/// Time from request head to the worker's response head (NVIDIA's `function.request.latency`).
pub const FUNCTION_REQUEST_LATENCY: &str = "function_request_latency";
/// Invocation errors produced on the gateway side, and 499 for clients that went away (NVIDIA's
/// `app.invocation.error`).
pub const APP_INVOCATION_ERROR: &str = "app_invocation_error";
/// Invocations admitted and not yet finished (response body still streaming counts).
pub const INVOCATIONS_IN_FLIGHT: &str = "gateway_invocations_in_flight";
/// Invocations waiting in a version's queue for a place (all versions together).
pub const INVOCATIONS_QUEUED: &str = "gateway_invocations_queued";
/// Time an invocation waited in its version's queue (only those that had to wait).
pub const QUEUE_WAIT_SECONDS: &str = "gateway_queue_wait_seconds";

/// Credential checks on invocation routes, by result (`hit`: a known, valid key).
pub const KEY_LOOKUPS_TOTAL: &str = "gateway_key_lookups_total";
/// Connections the worker client opened (with the invocation count: upstream connection reuse).
pub const WORKER_CONNECTIONS_OPENED_TOTAL: &str = "gateway_worker_connections_opened_total";
/// Worker connections open now (pooled h2c connections, each multiplexing many invocations).
pub const WORKER_CONNECTIONS: &str = "gateway_worker_connections";
/// Connects to a worker that failed (refused, timed out).
pub const WORKER_CONNECT_FAILURES_TOTAL: &str = "gateway_worker_connect_failures_total";
/// Worker streams the gateway reset because the client went away before the response ended.
pub const WORKER_STREAMS_RESET_TOTAL: &str = "gateway_worker_streams_reset_total";

/// Parked pexec/exec requests held (running, or finished and waiting for a status poll).
pub const PENDING_REQUESTS: &str = "gateway_pending_requests";
/// Memory held by buffered parked results.
pub const PENDING_BYTES: &str = "gateway_pending_bytes";
/// Parked results written to a spill file.
pub const PENDING_SPILLED_TOTAL: &str = "gateway_pending_spilled_total";
/// Parked results removed unfetched after the TTL.
pub const PENDING_EXPIRED_TOTAL: &str = "gateway_pending_expired_total";
/// Parked results that could be kept neither in memory nor on disk (their poller gets a 500).
pub const PENDING_LOST_TOTAL: &str = "gateway_pending_lost_total";
/// Status polls, by outcome.
pub const STATUS_POLLS_TOTAL: &str = "gateway_status_polls_total";
/// `202 Accepted` answers (pexec/exec windows that ended, and polls still in progress).
pub const ACCEPTED_TOTAL: &str = "gateway_accepted_total";

/// One row of the table: name, kind, unit, description.
struct MetricDef {
    name: &'static str,
    kind: Kind,
    unit: Unit,
    help: &'static str,
}

enum Kind {
    Counter,
    Gauge,
    Histogram,
}

const TABLE: &[MetricDef] = &[
    MetricDef {
        name: REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Requests answered by the gateway. Labels: route (key_service|management|invocation|health|not_found), status_class (1xx..5xx), protocol (http1|h2|h3).",
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
    MetricDef {
        name: QUIC_CONNECTIONS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "QUIC connections open on the HTTP/3 listener (after a successful handshake).",
    },
    MetricDef {
        name: QUIC_HANDSHAKE_FAILURES_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "QUIC handshakes on the HTTP/3 listener that failed (TLS error, no common ALPN, or timed out).",
    },
    MetricDef {
        name: QUIC_LOST_PACKETS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Packets quinn declared lost on HTTP/3 connections, added from each connection's statistics when it ends.",
    },
    MetricDef {
        name: FEED_REVISION,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Revision of the control-plane state feed that the published routing and key snapshot reflects.",
    },
    MetricDef {
        name: FEED_CONNECTED,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "1 while the feed stream to the control plane is open, 0 while reconnecting (the last snapshot keeps serving).",
    },
    MetricDef {
        name: FEED_RECONNECTS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Feed sessions that ended (error, gap or close) and were reopened from the held revision.",
    },
    MetricDef {
        name: FEED_LAG_SECONDS,
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        help: "Seconds since the feed follower last received a line from the control plane (snapshot, change or heartbeat; since the follower started before the first one). Updated every second, so it keeps growing while the control plane is unreachable; with a healthy control plane it stays below feed-heartbeat + 1 s.",
    },
    MetricDef {
        name: FEED_REVISIONS_BEHIND,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "The control plane's latest revision, as its last feed line (heartbeats carry it) said, minus the revision of the published snapshot. Non-zero while a backlog is being applied; it cannot see changes made while the control plane is unreachable (watch gateway_feed_lag_seconds for that).",
    },
    MetricDef {
        name: FUNCTION_REQUEST,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Invocations routed to a function version (NVIDIA's function.request). Labels: function_id, function_version_id, nca_id.",
    },
    MetricDef {
        name: APP_INVOCATION_ERROR,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Invocation errors answered by the gateway, and 499 for clients that went away before the response finished (NVIDIA's app.invocation.error). Labels: http_status_code, function_id.",
    },
    MetricDef {
        name: INVOCATIONS_IN_FLIGHT,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Invocations admitted and not finished; a streamed response counts until its body ends or the client goes away.",
    },
    MetricDef {
        name: KEY_LOOKUPS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Credential checks on invocation routes against the key index from the feed, by result: hit (known and valid), missing, malformed, unknown, expired, suspended.",
    },
    MetricDef {
        name: WORKER_CONNECTIONS_OPENED_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Connections the worker client opened; 1 - this / function_request is the upstream connection reuse.",
    },
    MetricDef {
        name: WORKER_CONNECTIONS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Pooled h2c connections to workers open now, each multiplexing many invocations.",
    },
    MetricDef {
        name: WORKER_CONNECT_FAILURES_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Connects to a worker that failed (refused or timed out); the invocation answers 502.",
    },
    MetricDef {
        name: WORKER_STREAMS_RESET_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Worker requests the gateway cancelled because the client went away before the response ended: the h2 stream reset, or the HTTP/1.1 connection closed.",
    },
    MetricDef {
        name: INVOCATIONS_QUEUED,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Invocations waiting in a function version's queue because its workers are at maxRequestConcurrency (bounded by max-queued-per-version).",
    },
    MetricDef {
        name: QUEUE_WAIT_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help: "Time an invocation waited in its version's queue before it was admitted or refused (429).",
    },
    MetricDef {
        name: PENDING_REQUESTS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Parked pexec/exec requests held: running after their 202, or finished and waiting for a status poll (kept for pending-ttl).",
    },
    MetricDef {
        name: PENDING_BYTES,
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        help: "Memory held by buffered parked results (bounded by pending-memory-bytes; beyond it results spill to disk).",
    },
    MetricDef {
        name: PENDING_SPILLED_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Parked results written to a spill file under <data-dir>/pending (larger than pending-max-result-bytes, or memory bound reached).",
    },
    MetricDef {
        name: PENDING_EXPIRED_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Parked results removed unfetched after pending-ttl.",
    },
    MetricDef {
        name: PENDING_LOST_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Parked results that could be kept neither in memory nor on disk; their poller gets a 500 problem saying so.",
    },
    MetricDef {
        name: STATUS_POLLS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "GET /v2/nvcf/{pexec,exec}/status/{id} polls. Label: outcome (result|in_progress|not_found).",
    },
    MetricDef {
        name: ACCEPTED_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "202 Accepted answers: pexec/exec calls whose poll window ended before the worker answered, and status polls still in progress.",
    },
];

/// Registers the description and unit of every gateway metric with the installed recorder, except
/// the two per-call histograms, which the gateway keeps itself ([`crate::latency`]) and `/metrics`
/// appends with [`crate::latency::render`].
pub fn describe_metrics() {
    for m in TABLE {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

/// Handles of the per-request series, each made on its first use so that recording skips
/// building a labelled key and looking it up on every request: `gateway_requests_total` from the
/// recorder (built when the server starts, after the recorder is installed, so no handle is the
/// no-op one of a process without a recorder), `gateway_request_duration_seconds` from the
/// gateway's own histograms ([`crate::latency`]).
pub(crate) struct RequestMetrics {
    requests: [OnceLock<Counter>; ROUTES * CLASSES * PROTOCOLS],
    durations: [OnceLock<&'static Histogram>; ROUTES],
}

const ROUTES: usize = Route::COUNT;
const CLASSES: usize = 5;
const PROTOCOLS: usize = 3;
const CLASS_LABELS: [&str; CLASSES] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const PROTOCOL_LABELS: [&str; PROTOCOLS] = ["http1", "h2", "h3"];

impl RequestMetrics {
    pub(crate) fn new() -> Self {
        Self {
            requests: std::array::from_fn(|_| OnceLock::new()),
            durations: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts one answered request of `route` over `protocol` (`http1`, `h2` or `h3`) and its
    /// duration to the response head.
    pub(crate) fn record(
        &self,
        route: Route,
        status: StatusCode,
        protocol: &'static str,
        elapsed: Duration,
    ) {
        let r = route.index();
        let c = class_index(status);
        let p = PROTOCOL_LABELS
            .iter()
            .position(|l| *l == protocol)
            .unwrap_or(0);
        if let Some(counter) = self.requests.get((r * CLASSES + c) * PROTOCOLS + p) {
            counter
                .get_or_init(|| {
                    metrics::counter!(
                        REQUESTS_TOTAL,
                        "route" => route.label(),
                        "status_class" => CLASS_LABELS[c],
                        "protocol" => PROTOCOL_LABELS[p]
                    )
                })
                .increment(1);
        }
        if let Some(histogram) = self.durations.get(r) {
            histogram
                .get_or_init(|| REQUEST_DURATION.series(&[("route", route.label())]))
                .record(elapsed);
        }
    }
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestMetrics")
    }
}

/// Counts one failed TLS handshake.
pub(crate) fn record_tls_handshake_failure() {
    metrics::counter!(TLS_HANDSHAKE_FAILURES_TOTAL).increment(1);
}

/// Moves the open QUIC connection gauge.
pub(crate) fn add_quic_connections(delta: f64) {
    metrics::gauge!(QUIC_CONNECTIONS).increment(delta);
}

/// Counts one failed QUIC handshake.
pub(crate) fn record_quic_handshake_failure() {
    metrics::counter!(QUIC_HANDSHAKE_FAILURES_TOTAL).increment(1);
}

/// Adds an ended connection's lost packets.
pub(crate) fn record_quic_lost_packets(lost: u64) {
    metrics::counter!(QUIC_LOST_PACKETS_TOTAL).increment(lost);
}

/// Publishes the feed revision.
pub(crate) fn set_feed_revision(revision: u64) {
    // Revisions stay far below 2^53, where f64 is exact.
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(FEED_REVISION).set(revision as f64);
}

/// Publishes whether the feed stream is open.
pub(crate) fn set_feed_connected(connected: bool) {
    metrics::gauge!(FEED_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}

/// Counts one feed reconnect.
pub(crate) fn record_feed_reconnect() {
    metrics::counter!(FEED_RECONNECTS_TOTAL).increment(1);
}

/// Publishes the feed's lag and how many revisions the applied state is behind.
pub(crate) fn set_feed_lag(lag: Duration, revisions_behind: u64) {
    metrics::gauge!(FEED_LAG_SECONDS).set(lag.as_secs_f64());
    // Far below 2^53, where f64 is exact.
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(FEED_REVISIONS_BEHIND).set(revisions_behind as f64);
}

/// One version's `function_request` handle (the recorder's) and `function_request_latency` series
/// (the gateway's own, [`crate::latency`]), made once per routing snapshot so that an invocation
/// records without building and hashing its labels.
#[derive(Clone)]
pub struct VersionMetrics {
    request: metrics::Counter,
    latency: &'static Histogram,
}

impl VersionMetrics {
    pub(crate) fn new(function_id: uuid::Uuid, version_id: uuid::Uuid) -> Self {
        let (fid, vid) = (function_id.to_string(), version_id.to_string());
        Self {
            request: metrics::counter!(
                FUNCTION_REQUEST,
                "function_id" => fid.clone(),
                "function_version_id" => vid.clone(),
                "nca_id" => model::NCA_ID
            ),
            latency: FUNCTION_LATENCY
                .series(&[("function_id", &fid), ("function_version_id", &vid)]),
        }
    }

    /// Counts one invocation routed to the version.
    pub(crate) fn record_request(&self) {
        self.request.increment(1);
    }

    /// Records the time to the worker's response head.
    pub(crate) fn record_latency(&self, elapsed: Duration) {
        self.latency.record(elapsed);
    }
}

impl std::fmt::Debug for VersionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VersionMetrics")
    }
}

/// Handles carry no state of the route: two routes are equal whatever their handles.
impl PartialEq for VersionMetrics {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for VersionMetrics {}

/// Counts one invocation error (`499` for a client that went away).
pub(crate) fn record_invocation_error(status: &'static str, function_id: String) {
    metrics::counter!(
        APP_INVOCATION_ERROR,
        "http_status_code" => status,
        "function_id" => function_id
    )
    .increment(1);
}

/// The in-flight invocation gauge's handle.
pub(crate) fn invocations_in_flight() -> metrics::Gauge {
    metrics::gauge!(INVOCATIONS_IN_FLIGHT)
}

/// Counts one credential check by its result.
pub(crate) fn record_key_lookup(result: &'static str) {
    key_lookup_counter(result).increment(1);
}

/// The handle of one credential check result's counter.
pub(crate) fn key_lookup_counter(result: &'static str) -> Counter {
    metrics::counter!(KEY_LOOKUPS_TOTAL, "result" => result)
}

/// Counts a new worker connection.
pub(crate) fn record_worker_connection_opened() {
    metrics::counter!(WORKER_CONNECTIONS_OPENED_TOTAL).increment(1);
    metrics::gauge!(WORKER_CONNECTIONS).increment(1.0);
}

/// Counts a worker connection that closed.
pub(crate) fn record_worker_connection_closed() {
    metrics::gauge!(WORKER_CONNECTIONS).decrement(1.0);
}

/// Counts a failed connect to a worker.
pub(crate) fn record_worker_connect_failure() {
    metrics::counter!(WORKER_CONNECT_FAILURES_TOTAL).increment(1);
}

/// Counts a worker stream reset because its client went away.
pub(crate) fn record_worker_stream_reset() {
    metrics::counter!(WORKER_STREAMS_RESET_TOTAL).increment(1);
}

/// Moves the queued-invocations gauge.
pub(crate) fn add_invocations_queued(delta: f64) {
    metrics::gauge!(INVOCATIONS_QUEUED).increment(delta);
}

/// Records one queue wait.
pub(crate) fn record_queue_wait(waited: Duration) {
    metrics::histogram!(QUEUE_WAIT_SECONDS).record(waited.as_secs_f64());
}

/// Publishes the pending table's size and buffered bytes.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn set_pending(entries: usize, bytes: u64) {
    metrics::gauge!(PENDING_REQUESTS).set(entries as f64);
    metrics::gauge!(PENDING_BYTES).set(bytes as f64);
}

/// Counts one spilled result.
pub(crate) fn record_pending_spilled() {
    metrics::counter!(PENDING_SPILLED_TOTAL).increment(1);
}

/// Counts `n` expired results.
pub(crate) fn record_pending_expired(n: u64) {
    metrics::counter!(PENDING_EXPIRED_TOTAL).increment(n);
}

/// Counts one lost result.
pub(crate) fn record_pending_lost() {
    metrics::counter!(PENDING_LOST_TOTAL).increment(1);
}

/// Counts one status poll (`result`, `in_progress` or `not_found`).
pub(crate) fn record_status_poll(outcome: &'static str) {
    metrics::counter!(STATUS_POLLS_TOTAL, "outcome" => outcome).increment(1);
}

/// Counts one 202.
pub(crate) fn record_accepted() {
    metrics::counter!(ACCEPTED_TOTAL).increment(1);
}

/// Counts one error response.
pub(crate) fn record_error(cause: &'static str, status: StatusCode) {
    metrics::counter!(ERRORS_TOTAL, "cause" => cause, "status" => status_label(status))
        .increment(1);
}

fn status_class(status: StatusCode) -> &'static str {
    CLASS_LABELS[class_index(status)]
}

/// The position of `status`'s class in [`CLASS_LABELS`].
fn class_index(status: StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The status as a static label (bounded: only the statuses the gateway produces get their own).
pub(crate) fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        429 => "429",
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
        let requests = RequestMetrics::new();
        requests.record(
            Route::Health,
            StatusCode::OK,
            "http1",
            Duration::from_millis(1),
        );
        requests.record(Route::NotFound, StatusCode::NOT_FOUND, "h3", Duration::ZERO);
        record_error("client", StatusCode::NOT_FOUND);
    }
}
