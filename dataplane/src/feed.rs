//! The gateway's feed follower: follows `GET /internal/v1/feed` on the control plane, keeps the
//! replicated [`FeedState`], and after every change publishes a new immutable [`Snapshot`] (routing
//! table + key index) through an [`ArcSwap`]. Requests load the snapshot once and never lock.
//!
//! While the control plane is away the last snapshot keeps serving; the follower reconnects from its
//! revision with exponential backoff (so it receives only the changes it missed, or a fresh snapshot
//! when the control plane no longer retains them).
//!
//! A [`FeedClock`] remembers when the follower last heard from the control plane (any line,
//! heartbeats included) and the control plane's latest revision; a ticker publishes
//! `gateway_feed_lag_seconds` and `gateway_feed_revisions_behind` from it every second, so the
//! lag keeps growing while the control plane is unreachable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use cp_client::{ClientError, CpClient};
use model::feed::{FeedMessage, FeedState};
use tokio::sync::watch;

use crate::keys::KeyIndex;
use crate::routing::RoutingSnapshot;

/// First pause after a failed or ended feed session.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between reconnects: short enough that a restarted control plane is picked up
/// within seconds, long enough not to hammer one that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the lag gauges are refreshed: the lag is read in seconds, and a tick costs two
/// atomic loads.
const LAG_TICK: Duration = Duration::from_secs(1);

/// When the follower last heard from the control plane, and the revisions it knows of: what the
/// lag gauges are computed from. Lock-free, shared by the follower and its lag ticker.
#[derive(Debug)]
pub(crate) struct FeedClock {
    base: Instant,
    /// Nanoseconds after `base` when the last line arrived (0: none yet, the follower's start).
    heard: AtomicU64,
    /// The control plane's latest revision as its lines said.
    cp_revision: AtomicU64,
    /// The revision of the applied (published) state.
    applied: AtomicU64,
}

impl FeedClock {
    /// A clock for a follower that starts at `now`: the lag counts from there until a first line.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            base: now,
            heard: AtomicU64::new(0),
            cp_revision: AtomicU64::new(0),
            applied: AtomicU64::new(0),
        }
    }

    /// A line arrived at `now`. A snapshot or heartbeat states the control plane's revision as it
    /// is (it may even have gone down, after a restore); a change can only raise it.
    pub(crate) fn heard(&self, now: Instant, msg: &FeedMessage) {
        let nanos =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        self.heard.fetch_max(nanos, Ordering::AcqRel);
        match msg {
            FeedMessage::Snapshot { revision, .. } | FeedMessage::Heartbeat { revision } => {
                self.cp_revision.store(*revision, Ordering::Release);
            }
            FeedMessage::Upsert { revision, .. } | FeedMessage::Delete { revision, .. } => {
                self.cp_revision.fetch_max(*revision, Ordering::AcqRel);
            }
        }
    }

    /// The applied state is at `revision`.
    pub(crate) fn applied(&self, revision: u64) {
        self.applied.store(revision, Ordering::Release);
    }

    /// Time from the last line (or the start) to `now`.
    pub(crate) fn lag(&self, now: Instant) -> Duration {
        let heard = self.base + Duration::from_nanos(self.heard.load(Ordering::Acquire));
        now.saturating_duration_since(heard)
    }

    /// The control plane's latest known revision minus the applied one (0 when ahead).
    pub(crate) fn revisions_behind(&self) -> u64 {
        self.cp_revision
            .load(Ordering::Acquire)
            .saturating_sub(self.applied.load(Ordering::Acquire))
    }

    fn publish(&self, now: Instant) {
        crate::metrics::set_feed_lag(self.lag(now), self.revisions_behind());
    }
}

/// Publishes the lag gauges every [`LAG_TICK`] until `stop` changes.
async fn refresh_lag(clock: Arc<FeedClock>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LAG_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => clock.publish(Instant::now()),
            _ = stop.changed() => return,
        }
    }
}

/// What one request reads: the routing table and the key index of one feed revision.
#[derive(Debug)]
pub struct Snapshot {
    pub routing: RoutingSnapshot,
    pub keys: KeyIndex,
    /// The feed revision both were built from (0 before the first snapshot arrived).
    pub revision: u64,
}

impl Snapshot {
    /// Builds the snapshot of `state`.
    pub fn build(state: &FeedState, key_prefix: &str) -> Self {
        Self {
            routing: RoutingSnapshot::build(state),
            keys: KeyIndex::build(state, key_prefix),
            revision: state.revision,
        }
    }
}

/// The published snapshot, shared by the follower (writer) and every request (readers).
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// An empty snapshot (no functions, no keys): every invocation is 401 until the feed arrives.
pub fn empty(key_prefix: &str) -> SharedSnapshot {
    Arc::new(ArcSwap::from_pointee(Snapshot::build(
        &FeedState::default(),
        key_prefix,
    )))
}

/// Follows the feed until `stop` flips, publishing into `published`.
pub async fn follow(
    client: CpClient,
    published: SharedSnapshot,
    key_prefix: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut state = FeedState::default();
    let mut wait = INITIAL_BACKOFF;
    let clock = Arc::new(FeedClock::new(Instant::now()));
    let ticker = tokio::spawn(refresh_lag(Arc::clone(&clock), stop.clone()));
    loop {
        let session = session(&client, &mut state, &published, &key_prefix, &clock);
        let result = tokio::select! {
            r = session => r,
            _ = stop.changed() => break,
        };
        crate::metrics::set_feed_connected(false);
        match result {
            // A stream the control plane ended cleanly (e.g. it is shutting down, or cut off a slow
            // subscriber): reconnect soon.
            Ok(()) => wait = INITIAL_BACKOFF,
            Err(e) => {
                tracing::warn!(error = %e, revision = state.revision, "feed interrupted; reconnecting")
            }
        }
        crate::metrics::record_feed_reconnect();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
    ticker.abort();
    crate::metrics::set_feed_connected(false);
}

/// One connection: opens the feed from the current revision and applies messages until it ends.
async fn session(
    client: &CpClient,
    state: &mut FeedState,
    published: &SharedSnapshot,
    key_prefix: &str,
    clock: &FeedClock,
) -> Result<(), ClientError> {
    let mut stream = client.feed(state.revision).await?;
    crate::metrics::set_feed_connected(true);
    tracing::info!(since = state.revision, "following the control plane's feed");
    while let Some(msg) = stream.next().await? {
        clock.heard(Instant::now(), &msg);
        let changed = !matches!(msg, FeedMessage::Heartbeat { .. });
        let before = state.revision;
        // A gap (or a change before any snapshot) means this stream cannot be trusted: reconnect
        // from the revision we hold, keeping the last good snapshot published meanwhile.
        state
            .apply(msg)
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        // Replays at or below our revision change nothing; skip the rebuild.
        if changed && (state.revision != before || before == 0) {
            published.store(Arc::new(Snapshot::build(state, key_prefix)));
            crate::metrics::set_feed_revision(state.revision);
        }
        clock.applied(state.revision);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_last_line_and_grows_without_one() {
        let start = Instant::now();
        let clock = FeedClock::new(start);
        // Nothing heard yet: the lag counts from the follower's start.
        assert_eq!(clock.lag(start), Duration::ZERO);
        assert_eq!(
            clock.lag(start + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        let t1 = start + Duration::from_secs(10);
        clock.heard(t1, &FeedMessage::Heartbeat { revision: 7 });
        assert_eq!(clock.lag(t1), Duration::ZERO);
        // The control plane goes quiet (or away): the lag grows with `now`.
        assert_eq!(
            clock.lag(t1 + Duration::from_millis(2500)),
            Duration::from_millis(2500)
        );
        // A clock read from before the last line never goes negative.
        assert_eq!(clock.lag(start), Duration::ZERO);
    }

    #[test]
    fn revisions_behind_follow_the_control_planes_revision() {
        let t = Instant::now();
        let clock = FeedClock::new(t);
        assert_eq!(clock.revisions_behind(), 0);
        clock.heard(t, &FeedMessage::Heartbeat { revision: 12 });
        clock.applied(9);
        assert_eq!(clock.revisions_behind(), 3);
        clock.heard(
            t,
            &FeedMessage::Delete {
                revision: 10,
                kind: model::feed::EntityKind::Key,
                id: "k".into(),
            },
        );
        clock.applied(10);
        assert_eq!(clock.revisions_behind(), 2, "a change never lowers it");
        clock.applied(12);
        assert_eq!(clock.revisions_behind(), 0);
        // A snapshot states the revision as it is, even a lower one (a restored control plane).
        clock.heard(
            t,
            &FeedMessage::Snapshot {
                revision: 5,
                key_hash_secret: String::new(),
                entities: Vec::new(),
            },
        );
        clock.applied(5);
        assert_eq!(clock.revisions_behind(), 0);
    }

    #[test]
    fn empty_snapshot_has_nothing() {
        let s = empty("nvapi-");
        let snap = s.load();
        assert_eq!(snap.revision, 0);
        assert!(snap.routing.lookup(uuid::Uuid::nil(), None, 0).is_err());
        assert!(
            snap.keys
                .authenticate(Some(b"Bearer nvcf-admin-x"), model::time::Timestamp::now())
                .is_err()
        );
    }
}
