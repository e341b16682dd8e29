//! The gateway's feed follower: follows `GET /internal/v1/feed` on the control plane, keeps the
//! replicated [`FeedState`], and after every change publishes a new immutable [`Snapshot`] (routing
//! table + key index) through an [`ArcSwap`]. Requests load the snapshot once and never lock.
//!
//! While the control plane is away the last snapshot keeps serving; the follower reconnects from its
//! revision with exponential backoff (so it receives only the changes it missed, or a fresh snapshot
//! when the control plane no longer retains them).

use std::sync::Arc;
use std::time::Duration;

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
    loop {
        let session = session(&client, &mut state, &published, &key_prefix);
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
    crate::metrics::set_feed_connected(false);
}

/// One connection: opens the feed from the current revision and applies messages until it ends.
async fn session(
    client: &CpClient,
    state: &mut FeedState,
    published: &SharedSnapshot,
    key_prefix: &str,
) -> Result<(), ClientError> {
    let mut stream = client.feed(state.revision).await?;
    crate::metrics::set_feed_connected(true);
    tracing::info!(since = state.revision, "following the control plane's feed");
    while let Some(msg) = stream.next().await? {
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
