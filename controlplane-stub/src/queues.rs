//! The gateways' latest queue-depth reports, summed per function version for
//! `/v2/nvcf/queues/...`. Live state, not persisted: after a restart the gateways report again
//! within their report interval, and a gateway that stops reporting stops counting once its last
//! report expires.

use model::queues::QueueReport;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Longest validity a report may claim (a gateway cannot pin a depth for long).
const MAX_VALIDITY: Duration = Duration::from_secs(60);
/// Most gateways tracked; beyond it the stalest report is dropped (bounds memory if ids churn).
const MAX_GATEWAYS: usize = 4096;

/// One gateway's report and when it stops counting.
#[derive(Debug)]
struct Report {
    expires: Instant,
    depths: HashMap<Uuid, u64>,
}

/// The reports of all gateways.
#[derive(Debug, Default)]
pub struct QueueReports {
    by_gateway: HashMap<String, Report>,
}

impl QueueReports {
    /// Replaces `gateway`'s report as of `now`.
    pub fn record(&mut self, gateway: &str, report: &QueueReport, now: Instant) {
        self.by_gateway.retain(|_, r| r.expires > now);
        if !self.by_gateway.contains_key(gateway)
            && self.by_gateway.len() >= MAX_GATEWAYS
            && let Some(stalest) = self
                .by_gateway
                .iter()
                .min_by_key(|(_, r)| r.expires)
                .map(|(id, _)| id.clone())
        {
            self.by_gateway.remove(&stalest);
        }
        let validity = Duration::from_millis(report.valid_for_ms).min(MAX_VALIDITY);
        let mut depths = HashMap::with_capacity(report.queues.len());
        for q in &report.queues {
            *depths.entry(q.function_version_id).or_insert(0) += q.queue_depth;
        }
        self.by_gateway.insert(
            gateway.to_owned(),
            Report {
                expires: now + validity,
                depths,
            },
        );
    }

    /// Invocations of `version` waiting on all gateways whose report still stands at `now`.
    pub fn depth(&self, version: Uuid, now: Instant) -> u64 {
        self.by_gateway
            .values()
            .filter(|r| r.expires > now)
            .filter_map(|r| r.depths.get(&version))
            .fold(0u64, |sum, d| sum.saturating_add(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::queues::QueueDepth;

    fn report(version: Uuid, depth: u64, valid_ms: u64) -> QueueReport {
        QueueReport {
            queues: vec![QueueDepth {
                function_version_id: version,
                queue_depth: depth,
            }],
            valid_for_ms: valid_ms,
        }
    }

    #[test]
    fn sums_gateways_replaces_reports_and_expires_them() {
        let mut q = QueueReports::default();
        let (v, w) = (Uuid::new_v4(), Uuid::new_v4());
        let t0 = Instant::now();
        q.record("gw-a", &report(v, 3, 5000), t0);
        q.record("gw-b", &report(v, 4, 1000), t0);
        assert_eq!(q.depth(v, t0), 7);
        assert_eq!(q.depth(w, t0), 0);
        // A newer report replaces the old one, it does not add to it.
        q.record("gw-a", &report(v, 1, 5000), t0);
        assert_eq!(q.depth(v, t0), 5);
        // gw-b's report runs out.
        assert_eq!(q.depth(v, t0 + Duration::from_millis(1500)), 1);
        // An empty report clears the gateway's queues.
        q.record(
            "gw-a",
            &QueueReport {
                queues: vec![],
                valid_for_ms: 5000,
            },
            t0,
        );
        assert_eq!(q.depth(v, t0), 4);
    }

    #[test]
    fn validity_is_capped() {
        let mut q = QueueReports::default();
        let v = Uuid::new_v4();
        let t0 = Instant::now();
        q.record("gw", &report(v, 2, u64::MAX), t0);
        assert_eq!(q.depth(v, t0 + MAX_VALIDITY + Duration::from_secs(1)), 0);
    }
}
