//! Per-task counters and the latency histogram; tasks keep their own [`Stats`] and the run merges
//! them at the end, so the hot path takes no lock.

use crate::client::ErrorKind;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::Duration;

/// Highest latency the histogram tracks, in microseconds (1 hour); larger values are clamped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Counts by error kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErrorCounts {
    pub connect: u64,
    pub timeout: u64,
    pub reset: u64,
    pub protocol: u64,
}

impl ErrorCounts {
    pub fn add(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Connect => self.connect += 1,
            ErrorKind::Timeout => self.timeout += 1,
            ErrorKind::Reset => self.reset += 1,
            ErrorKind::Protocol => self.protocol += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.reset + self.protocol
    }

    fn merge(&mut self, o: &Self) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.reset += o.reset;
        self.protocol += o.protocol;
    }
}

/// What one task (or the whole run, after [`Stats::merge`]) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of answered requests (any status), in microseconds.
    pub latency: Histogram<u64>,
    /// Answers by status code.
    pub status: BTreeMap<u16, u64>,
    pub errors: ErrorCounts,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Status polls sent after `202` answers (NVCF mode).
    pub polls: u64,
    /// Open loop: requests sent later than their intended time by more than the lag threshold.
    pub late_sends: u64,
    /// Open loop: late sends from a slot that was idle: the client itself fell behind.
    pub client_late_sends: u64,
    /// Open loop: the largest send lag seen, in microseconds.
    pub max_lag_us: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        Self {
            #[allow(clippy::unwrap_used)] // constant, valid bounds
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap(),
            status: BTreeMap::new(),
            errors: ErrorCounts::default(),
            bytes_sent: 0,
            bytes_received: 0,
            polls: 0,
            late_sends: 0,
            client_late_sends: 0,
            max_lag_us: 0,
        }
    }

    /// Records one answered request.
    pub fn record(&mut self, latency: Duration, status: u16) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_US);
        self.latency.saturating_record(us);
        *self.status.entry(status).or_insert(0) += 1;
    }

    /// Records one failed request.
    pub fn record_error(&mut self, kind: ErrorKind) {
        self.errors.add(kind);
    }

    /// Records how late an open-loop request left.
    pub fn record_lag(&mut self, lag: Duration, threshold: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.max_lag_us = self.max_lag_us.max(us);
        if lag > threshold {
            self.late_sends += 1;
        }
    }

    /// Answered requests (any status).
    pub fn answered(&self) -> u64 {
        self.status.values().sum()
    }

    /// Answered with a 2xx status.
    pub fn ok(&self) -> u64 {
        self.status
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn merge(&mut self, o: &Self) {
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.latency.add(&o.latency);
        for (s, n) in &o.status {
            *self.status.entry(*s).or_insert(0) += n;
        }
        self.errors.merge(&o.errors);
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.polls += o.polls;
        self.late_sends += o.late_sends;
        self.client_late_sends += o.client_late_sends;
        self.max_lag_us = self.max_lag_us.max(o.max_lag_us);
    }
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            min: h.min(),
            mean: h.mean(),
            stdev: h.stdev(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_uniform_1_to_1000_ms() {
        let mut s = Stats::new();
        for ms in 1..=1000u64 {
            s.record(Duration::from_millis(ms), 200);
        }
        let p = Percentiles::of(&s.latency);
        // 3 significant digits: values within 0.1%.
        let near = |v: u64, want: u64| v.abs_diff(want) * 1000 <= want;
        assert!(near(p.p50, 500_000), "{p:?}");
        assert!(near(p.p90, 900_000), "{p:?}");
        assert!(near(p.p99, 990_000), "{p:?}");
        assert!(near(p.p99_9, 999_000), "{p:?}");
        assert!(near(p.max, 1_000_000), "{p:?}");
        assert!(near(p.min, 1_000), "{p:?}");
        assert!((p.mean - 500_500.0).abs() < 1000.0, "{p:?}");
    }

    #[test]
    fn empty_histogram_gives_zeros() {
        assert_eq!(
            Percentiles::of(&Stats::new().latency),
            Percentiles::default()
        );
    }

    #[test]
    fn merge_adds_counts_and_keeps_max_lag() {
        let mut a = Stats::new();
        a.record(Duration::from_micros(100), 200);
        a.record(Duration::from_micros(0), 503); // clamped to 1 µs
        a.record_error(ErrorKind::Timeout);
        a.record_lag(Duration::from_millis(5), Duration::from_millis(1));
        a.bytes_received = 10;
        let mut b = Stats::new();
        b.record(Duration::from_secs(7200), 200); // clamped to the top
        b.record_error(ErrorKind::Reset);
        b.record_lag(Duration::from_micros(10), Duration::from_millis(1));
        b.bytes_received = 5;
        b.polls = 3;
        a.merge(&b);
        assert_eq!(a.answered(), 3);
        assert_eq!(a.ok(), 2);
        assert_eq!(a.status.get(&200), Some(&2));
        assert_eq!(a.status.get(&503), Some(&1));
        assert_eq!(a.errors.total(), 2);
        assert_eq!(a.errors.timeout, 1);
        assert_eq!(a.errors.reset, 1);
        assert_eq!(a.bytes_received, 15);
        assert_eq!(a.polls, 3);
        assert_eq!(a.late_sends, 1);
        assert_eq!(a.max_lag_us, 5000);
        assert_eq!(a.latency.min(), 1);
        assert!(a.latency.max() >= MAX_LATENCY_US);
    }
}
