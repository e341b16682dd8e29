//! The control plane's state: the replicated entities in memory, backed by the SQLite store, with
//! every commit broadcast to feed subscribers. All mutation goes through [`Core::commit`], under the
//! one lock, so the feed's order is the commit order.

use crate::config::ControlplaneConfig;
use crate::error::ApiError;
use crate::keyhash::KeyHasher;
use crate::registry::{self, Liveness};
use crate::store::{Change, Store, StoreError};
use model::feed::{Entity, FeedMessage, FeedState};
use model::keys::KeyRecord;
use model::time::Timestamp;
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::broadcast;
use uuid::Uuid;

/// How many feed messages a slow subscriber may fall behind before it is cut off (it then
/// reconnects and resumes from its revision).
const FEED_BUFFER: usize = 4096;

/// State plus storage.
#[derive(Debug)]
pub struct Core {
    pub state: FeedState,
    store: Store,
    feed_tx: broadcast::Sender<FeedMessage>,
    /// Keyed hash of a credential → its id.
    by_hash: HashMap<String, Uuid>,
    pub liveness: Liveness,
    retention: u64,
}

impl Core {
    /// Opens the store under the configured data directory and loads everything.
    pub fn open(
        config: &ControlplaneConfig,
        now: Instant,
    ) -> Result<(Self, KeyHasher), StoreError> {
        let store = Store::open(&config.data_dir)?;
        let secret = match store.meta("key_hash_secret")? {
            Some(s) => s,
            None => {
                let s = crate::keyhash::generate_secret();
                store.set_meta("key_hash_secret", &s)?;
                s
            }
        };
        let revision = store.revision()?;
        let entities = store.load_entities()?;
        let mut state = FeedState::default();
        state
            .apply(FeedMessage::Snapshot {
                revision,
                key_hash_secret: secret.clone(),
                entities,
            })
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let by_hash = state
            .keys
            .values()
            .map(|k| (k.hash.clone(), k.id))
            .collect();
        let mut liveness = Liveness::default();
        liveness.adopt(&state, now);
        let (feed_tx, _) = broadcast::channel(FEED_BUFFER);
        let core = Self {
            state,
            store,
            feed_tx,
            by_hash,
            liveness,
            retention: config.feed_retention,
        };
        Ok((core, KeyHasher::new(&secret)))
    }

    /// Persists `changes` as the next revisions, applies them and tells subscribers. Nothing is
    /// applied when the write fails.
    pub fn commit(&mut self, changes: Vec<Change>) -> Result<u64, ApiError> {
        if changes.is_empty() {
            return Ok(self.state.revision);
        }
        let messages = self
            .store
            .commit(self.state.revision + 1, &changes, self.retention)
            .map_err(ApiError::internal)?;
        for msg in messages {
            match &msg {
                model::feed::FeedMessage::Upsert {
                    entity: Entity::Key(k),
                    ..
                } => {
                    self.by_hash.insert(k.hash.clone(), k.id);
                }
                model::feed::FeedMessage::Delete {
                    kind: model::feed::EntityKind::Key,
                    id,
                    ..
                } => {
                    if let Some(k) = id
                        .parse()
                        .ok()
                        .and_then(|id: Uuid| self.state.keys.get(&id))
                    {
                        self.by_hash.remove(&k.hash);
                    }
                }
                _ => {}
            }
            self.state.apply(msg.clone()).map_err(ApiError::internal)?;
            // No subscribers is fine.
            let _ = self.feed_tx.send(msg);
        }
        Ok(self.state.revision)
    }

    /// Runs the registry and status engine to a fixed point and commits what they decide.
    pub fn reconcile(&mut self, now: Instant, cfg: &ControlplaneConfig) -> Result<(), ApiError> {
        let changes = registry::liveness_changes(
            &self.state,
            &mut self.liveness,
            now,
            cfg.heartbeat_timeout,
            cfg.worker_forget_after,
        );
        self.commit(changes)?;
        let changes = registry::assignment_changes(&self.state, &self.liveness, Timestamp::now());
        self.commit(changes)?;
        let changes = registry::status_changes(&self.state);
        self.commit(changes)?;
        Ok(())
    }

    /// The credential with this keyed hash.
    pub fn key_by_hash(&self, hash: &str) -> Option<&KeyRecord> {
        self.by_hash
            .get(hash)
            .and_then(|id| self.state.keys.get(id))
    }

    /// A new feed subscription plus what the subscriber needs first: a snapshot, or the changes
    /// after `since` when the log still holds them. Taken under the lock, so nothing falls between.
    pub fn subscribe(
        &self,
        since: u64,
    ) -> Result<(Vec<FeedMessage>, broadcast::Receiver<FeedMessage>), ApiError> {
        let rx = self.feed_tx.subscribe();
        let current = self.state.revision;
        let resumable = since > 0
            && since <= current
            && (since == current
                || self
                    .store
                    .oldest_retained()
                    .map_err(ApiError::internal)?
                    .is_some_and(|oldest| oldest <= since + 1));
        let first = if resumable {
            self.store
                .changes_since(since)
                .map_err(ApiError::internal)?
        } else {
            vec![self.snapshot()]
        };
        Ok((first, rx))
    }

    /// The whole state as one message.
    pub fn snapshot(&self) -> FeedMessage {
        let s = &self.state;
        let mut entities: Vec<Entity> = Vec::new();
        entities.extend(s.functions.values().cloned().map(Entity::Function));
        entities.extend(s.deployments.values().cloned().map(Entity::Deployment));
        entities.extend(s.keys.values().cloned().map(Entity::Key));
        entities.extend(s.workers.values().cloned().map(Entity::Worker));
        entities.extend(s.instances.values().cloned().map(Entity::Instance));
        FeedMessage::Snapshot {
            revision: s.revision,
            key_hash_secret: s.key_hash_secret.clone(),
            entities,
        }
    }
}
