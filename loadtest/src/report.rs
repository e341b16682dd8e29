//! The result of a run: [`Report`] serializes to the `--json` document (field names are stable and
//! documented in `loadtest/README.md`) and renders the human table.

use crate::scheduler::RunPlan;
use crate::stats::{ErrorCounts, Percentiles, Stats};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

/// Report format version; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub schema: u32,
    pub url: String,
    pub proto: &'static str,
    /// `closed` or `open`.
    pub mode: &'static str,
    pub connections: usize,
    pub streams: usize,
    /// Open loop: the target rate (req/s); `null` in closed loop.
    pub target_rate: Option<f64>,
    pub warmup_s: f64,
    /// Measured wall time: from the end of the warm-up to the last answer.
    pub duration_s: f64,
    /// Measured requests that got an answer (any status).
    pub requests: u64,
    /// Of those, answers with a 2xx status.
    pub ok: u64,
    /// Measured requests that failed without an answer.
    pub errors: u64,
    pub throughput: Throughput,
    /// Latency of answered requests, in microseconds.
    pub latency_us: Percentiles,
    /// Answers by status code (keys are the codes as strings).
    pub status: BTreeMap<String, u64>,
    pub errors_by_kind: ErrorCounts,
    pub bytes: Bytes,
    /// Open loop only (`null` in closed loop).
    pub open_loop: Option<OpenLoopStats>,
    /// Status polls sent after 202 answers (NVCF mode).
    pub polls: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Throughput {
    /// Answered requests per second.
    pub req_per_s: f64,
    /// Response body megabytes (10^6 bytes) per second.
    pub resp_mb_per_s: f64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Bytes {
    /// Request body bytes sent.
    pub sent: u64,
    /// Response body bytes received.
    pub received: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct OpenLoopStats {
    /// Sends that left later than `lag_threshold_us` after their intended time.
    pub late_sends: u64,
    /// Of those, sends from an idle slot: the client itself could not keep up.
    pub client_late_sends: u64,
    pub max_lag_us: u64,
    pub lag_threshold_us: u64,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Report {
    pub fn new(plan: &RunPlan, s: &Stats, elapsed: Duration) -> Self {
        let dur = secs(elapsed);
        let per_s = |n: f64| if dur > 0.0 { n / dur } else { 0.0 };
        let requests = s.answered();
        Self {
            schema: SCHEMA_VERSION,
            url: plan.url.clone(),
            proto: plan.target.proto.as_str(),
            mode: if plan.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            connections: plan.connections,
            streams: plan.streams,
            target_rate: plan.rate,
            warmup_s: secs(plan.warmup),
            duration_s: dur,
            requests,
            ok: s.ok(),
            errors: s.errors.total(),
            throughput: Throughput {
                req_per_s: per_s(requests as f64),
                resp_mb_per_s: per_s(s.bytes_received as f64 / 1e6),
            },
            latency_us: Percentiles::of(&s.latency),
            status: s.status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            errors_by_kind: s.errors,
            bytes: Bytes {
                sent: s.bytes_sent,
                received: s.bytes_received,
            },
            open_loop: plan.rate.map(|_| OpenLoopStats {
                late_sends: s.late_sends,
                client_late_sends: s.client_late_sends,
                max_lag_us: s.max_lag_us,
                lag_threshold_us: u64::try_from(plan.lag_threshold.as_micros()).unwrap_or(u64::MAX),
            }),
            polls: s.polls,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Microseconds as `850µs`, `1.25ms` or `2.50s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "target      {} ({}, {} loop)",
            self.url, self.proto, self.mode
        );
        let _ = write!(
            o,
            "load        {} connections × {} streams",
            self.connections, self.streams
        );
        if let Some(r) = self.target_rate {
            let _ = write!(o, ", {r} req/s intended");
        }
        let _ = writeln!(
            o,
            "; warm-up {:.1}s, measured {:.2}s",
            self.warmup_s, self.duration_s
        );
        let _ = writeln!(
            o,
            "requests    {} answered ({} 2xx), {} failed",
            self.requests, self.ok, self.errors
        );
        let _ = writeln!(
            o,
            "throughput  {:.1} req/s, {:.2} MB/s of response bodies",
            self.throughput.req_per_s, self.throughput.resp_mb_per_s
        );
        let l = &self.latency_us;
        let _ = writeln!(
            o,
            "latency     min      p50      p90      p99      p99.9    max      mean"
        );
        let _ = writeln!(
            o,
            "            {:<8} {:<8} {:<8} {:<8} {:<8} {:<8} {}",
            fmt_us(l.min),
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p99_9),
            fmt_us(l.max),
            fmt_us(l.mean.round() as u64)
        );
        let codes: Vec<String> = self
            .status
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            o,
            "status      {}",
            if codes.is_empty() {
                "-".into()
            } else {
                codes.join(", ")
            }
        );
        let e = &self.errors_by_kind;
        let _ = writeln!(
            o,
            "errors      connect {}, timeout {}, reset {}, protocol {}",
            e.connect, e.timeout, e.reset, e.protocol
        );
        let _ = writeln!(
            o,
            "bytes       sent {}, received {}",
            self.bytes.sent, self.bytes.received
        );
        if self.polls > 0 {
            let _ = writeln!(o, "polls       {} status polls after 202", self.polls);
        }
        if let Some(ol) = &self.open_loop {
            let _ = writeln!(
                o,
                "open loop   {} sends later than {} (max lag {}); latency counts from the intended send time",
                ol.late_sends,
                fmt_us(ol.lag_threshold_us),
                fmt_us(ol.max_lag_us)
            );
            if ol.client_late_sends * 100 > self.requests + self.errors {
                let _ = writeln!(
                    o,
                    "WARNING     the client itself fell behind on {} sends (over 1%): it cannot sustain \
                     this rate; the latencies include its own delay",
                    ol.client_late_sends
                );
            } else if ol.client_late_sends > 0 {
                let _ = writeln!(
                    o,
                    "note        {} sends left late from an idle slot (client scheduling hiccups)",
                    ol.client_late_sends
                );
            }
        }
        f.write_str(&o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Proto;
    use crate::client::{RequestTemplate, Target, TlsOptions};
    use std::sync::Arc;

    fn plan(rate: Option<f64>) -> RunPlan {
        let target = Target::new(
            "http://127.0.0.1:1/x",
            Proto::H2c,
            None,
            &TlsOptions::default(),
            Duration::from_secs(1),
        )
        .expect("target");
        let (tpl, _) = RequestTemplate::new(None, &[], bytes::Bytes::new(), None).expect("tpl");
        RunPlan {
            target: Arc::new(target),
            template: Arc::new(tpl),
            connections: 2,
            streams: 4,
            rate,
            duration: Duration::from_secs(2),
            requests: None,
            warmup: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            lag_threshold: Duration::from_millis(1),
            progress: false,
            url: "http://127.0.0.1:1/x".into(),
        }
    }

    #[test]
    fn json_shape_is_stable() {
        let mut s = Stats::new();
        for _ in 0..10 {
            s.record(Duration::from_millis(2), 200);
        }
        s.record(Duration::from_millis(3), 404);
        s.record_error(crate::ErrorKind::Connect);
        s.bytes_received = 2_000_000;
        s.bytes_sent = 100;
        let r = Report::new(&plan(Some(50.0)), &s, Duration::from_secs(2));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).expect("json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = [
            "schema",
            "url",
            "proto",
            "mode",
            "connections",
            "streams",
            "target_rate",
            "warmup_s",
            "duration_s",
            "requests",
            "ok",
            "errors",
            "throughput",
            "latency_us",
            "status",
            "errors_by_kind",
            "bytes",
            "open_loop",
            "polls",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["proto"], "h2c");
        assert_eq!(v["mode"], "open");
        assert_eq!(v["requests"], 11);
        assert_eq!(v["ok"], 10);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["status"]["200"], 10);
        assert_eq!(v["status"]["404"], 1);
        assert_eq!(
            v["errors_by_kind"],
            serde_json::json!({"connect":1,"timeout":0,"reset":0,"protocol":0})
        );
        assert_eq!(v["throughput"]["req_per_s"], 5.5);
        assert_eq!(v["throughput"]["resp_mb_per_s"], 1.0);
        assert_eq!(
            v["bytes"],
            serde_json::json!({"sent":100,"received":2000000})
        );
        for k in ["min", "mean", "stdev", "p50", "p90", "p99", "p99_9", "max"] {
            assert!(v["latency_us"][k].is_number(), "{k}");
        }
        assert!(v["latency_us"]["p50"].as_u64().expect("p50").abs_diff(2000) <= 2);
        for k in [
            "late_sends",
            "client_late_sends",
            "max_lag_us",
            "lag_threshold_us",
        ] {
            assert!(v["open_loop"][k].is_u64(), "{k}");
        }
        let closed = Report::new(&plan(None), &s, Duration::from_secs(2));
        let v: serde_json::Value = serde_json::from_str(&closed.to_json()).expect("json");
        assert_eq!(v["mode"], "closed");
        assert!(v["open_loop"].is_null() && v["target_rate"].is_null());
        let table = closed.to_string();
        assert!(
            table.contains("p99.9") && table.contains("200: 10"),
            "{table}"
        );
    }

    #[test]
    fn formats_units() {
        assert_eq!(fmt_us(850), "850µs");
        assert_eq!(fmt_us(1250), "1.25ms");
        assert_eq!(fmt_us(2_500_000), "2.50s");
    }
}
