//! Reports this gateway's wait-queue depths to the control plane, which sums the reports of all
//! gateways for `/v2/nvcf/queues/...`. A report replaces the previous one and stands for a few
//! intervals, so a gateway that dies stops counting on its own.

use std::time::{Duration, Instant};

use cp_client::CpClient;
use model::queues::{QueueDepth, QueueReport};
use tokio::sync::watch;
use uuid::Uuid;

/// A report stands for this many intervals: one lost report does not zero a real queue.
const VALID_INTERVALS: u32 = 5;

/// What to send at `now`, given the current depths and the last report sent: a changed picture
/// at once, a non-empty unchanged one again before the last expires, nothing otherwise (an empty
/// picture, once sent, needs no repeating).
fn due(
    depths: &[(Uuid, u64)],
    last: Option<&(Vec<(Uuid, u64)>, Instant)>,
    now: Instant,
    interval: Duration,
) -> bool {
    match last {
        None => !depths.is_empty(),
        Some((sent, at)) => {
            sent.as_slice() != depths
                || (!depths.is_empty()
                    && now.saturating_duration_since(*at) >= interval * (VALID_INTERVALS / 2))
        }
    }
}

fn report(depths: &[(Uuid, u64)], interval: Duration) -> QueueReport {
    QueueReport {
        queues: depths
            .iter()
            .map(|(v, d)| QueueDepth {
                function_version_id: *v,
                queue_depth: *d,
            })
            .collect(),
        valid_for_ms: u64::try_from((interval * VALID_INTERVALS).as_millis()).unwrap_or(u64::MAX),
    }
}

/// Sends the depths `depths()` returns every `interval` when [`due`], until `stop` turns true.
/// Failures are logged at debug and retried at the next tick: depth is advisory.
pub(crate) async fn run(
    client: CpClient,
    depths: impl Fn() -> Vec<(Uuid, u64)>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let path = format!("/internal/v1/gateways/{}/queues", Uuid::new_v4());
    let mut last: Option<(Vec<(Uuid, u64)>, Instant)> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let mut now_depths = depths();
        now_depths.sort_unstable();
        let now = Instant::now();
        if !due(&now_depths, last.as_ref(), now, interval) {
            continue;
        }
        let body = report(&now_depths, interval);
        match client.post_json::<_, serde_json::Value>(&path, &body).await {
            Ok(_) => last = Some((now_depths, now)),
            Err(e) => tracing::debug!(error = %e, "queue report to the control plane failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_changes_refreshes_queues_and_stays_quiet_when_idle() {
        let i = Duration::from_secs(1);
        let t0 = Instant::now();
        let v = Uuid::new_v4();
        assert!(!due(&[], None, t0, i), "nothing to say yet");
        assert!(due(&[(v, 2)], None, t0, i));
        let sent = (vec![(v, 2)], t0);
        assert!(
            !due(&[(v, 2)], Some(&sent), t0 + i, i),
            "unchanged, still valid"
        );
        assert!(
            due(&[(v, 2)], Some(&sent), t0 + 2 * i, i),
            "refresh before expiry"
        );
        assert!(due(&[(v, 3)], Some(&sent), t0 + i, i), "changed");
        assert!(
            due(&[], Some(&sent), t0 + i, i),
            "the queue drained: clear it"
        );
        let cleared = (vec![], t0);
        assert!(
            !due(&[], Some(&cleared), t0 + 10 * i, i),
            "empty needs no repeat"
        );
        assert_eq!(report(&[(v, 2)], i).valid_for_ms, 5000);
    }
}
