//! The state feed's wire format and the client-side state it builds.
//!
//! `GET /internal/v1/feed?since=<rev>` answers newline-delimited JSON: a [`FeedMessage::Snapshot`]
//! when `since` is 0 or older than the retained log, then every change after it in revision order,
//! then live changes and periodic heartbeats. A client that reconnects passes its last revision.

use crate::deployment::Deployment;
use crate::function::FunctionVersion;
use crate::keys::KeyRecord;
use crate::worker::{InstanceRecord, WorkerRecord};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

/// The kinds of entity the feed carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Function,
    Deployment,
    Key,
    Worker,
    Instance,
}

impl EntityKind {
    /// Stable name (also the SQLite `kind` column).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Function => "function",
            Self::Deployment => "deployment",
            Self::Key => "key",
            Self::Worker => "worker",
            Self::Instance => "instance",
        }
    }

    /// Inverse of [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Function,
            Self::Deployment,
            Self::Key,
            Self::Worker,
            Self::Instance,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One entity of the replicated state.
// Entities are built once per change and moved, never stored in bulk as enums: boxing would only
// add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Entity {
    /// A function version (keyed by version id).
    Function(FunctionVersion),
    Deployment(Deployment),
    Key(KeyRecord),
    Worker(WorkerRecord),
    Instance(InstanceRecord),
}

impl Entity {
    /// The entity's kind.
    pub fn kind(&self) -> EntityKind {
        match self {
            Self::Function(_) => EntityKind::Function,
            Self::Deployment(_) => EntityKind::Deployment,
            Self::Key(_) => EntityKind::Key,
            Self::Worker(_) => EntityKind::Worker,
            Self::Instance(_) => EntityKind::Instance,
        }
    }

    /// The entity's id within its kind.
    pub fn id(&self) -> String {
        match self {
            Self::Function(f) => f.version_id.to_string(),
            Self::Deployment(d) => d.deployment_id.to_string(),
            Self::Key(k) => k.id.to_string(),
            Self::Worker(w) => w.id().to_owned(),
            Self::Instance(i) => i.instance_id.to_string(),
        }
    }
}

/// One line of the feed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedMessage {
    /// The whole state at `revision`. Replaces whatever the client held.
    Snapshot {
        revision: u64,
        /// Hex secret for the keyed hash of credentials, so the gateway can check keys locally.
        key_hash_secret: String,
        entities: Vec<Entity>,
    },
    /// An entity was created or changed.
    Upsert { revision: u64, entity: Entity },
    /// An entity was removed.
    Delete {
        revision: u64,
        kind: EntityKind,
        id: String,
    },
    /// Sent when idle so that both ends notice a dead connection.
    Heartbeat { revision: u64 },
}

impl FeedMessage {
    /// The revision this message brings the client to.
    pub fn revision(&self) -> u64 {
        match self {
            Self::Snapshot { revision, .. }
            | Self::Upsert { revision, .. }
            | Self::Delete { revision, .. }
            | Self::Heartbeat { revision } => *revision,
        }
    }
}

/// Why a feed message could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("change at revision {got} does not follow revision {have}")]
    OutOfOrder { have: u64, got: u64 },
    #[error("change received before any snapshot")]
    NoSnapshot,
}

/// The replicated state a feed client holds.
#[derive(Debug, Clone, Default)]
pub struct FeedState {
    pub revision: u64,
    pub has_snapshot: bool,
    pub key_hash_secret: String,
    pub functions: HashMap<Uuid, FunctionVersion>,
    pub deployments: HashMap<Uuid, Deployment>,
    pub keys: HashMap<Uuid, KeyRecord>,
    pub workers: HashMap<String, WorkerRecord>,
    pub instances: HashMap<Uuid, InstanceRecord>,
}

impl FeedState {
    /// Applies one message. Changes at or below the current revision are ignored (a replay after a
    /// reconnect); a gap is an error and the client should reconnect from [`Self::revision`].
    pub fn apply(&mut self, msg: FeedMessage) -> Result<(), FeedError> {
        match msg {
            FeedMessage::Snapshot {
                revision,
                key_hash_secret,
                entities,
            } => {
                *self = Self {
                    revision,
                    has_snapshot: true,
                    key_hash_secret,
                    ..Self::default()
                };
                for e in entities {
                    self.put(e);
                }
                Ok(())
            }
            FeedMessage::Heartbeat { .. } => Ok(()),
            FeedMessage::Upsert { revision, .. } | FeedMessage::Delete { revision, .. }
                if revision <= self.revision =>
            {
                Ok(())
            }
            msg => {
                if !self.has_snapshot {
                    return Err(FeedError::NoSnapshot);
                }
                let revision = msg.revision();
                if revision != self.revision + 1 {
                    return Err(FeedError::OutOfOrder {
                        have: self.revision,
                        got: revision,
                    });
                }
                match msg {
                    FeedMessage::Upsert { entity, .. } => self.put(entity),
                    FeedMessage::Delete { kind, id, .. } => self.remove(kind, &id),
                    _ => {}
                }
                self.revision = revision;
                Ok(())
            }
        }
    }

    fn put(&mut self, e: Entity) {
        match e {
            Entity::Function(f) => {
                self.functions.insert(f.version_id, f);
            }
            Entity::Deployment(d) => {
                self.deployments.insert(d.deployment_id, d);
            }
            Entity::Key(k) => {
                self.keys.insert(k.id, k);
            }
            Entity::Worker(w) => {
                self.workers.insert(w.id().to_owned(), w);
            }
            Entity::Instance(i) => {
                self.instances.insert(i.instance_id, i);
            }
        }
    }

    fn remove(&mut self, kind: EntityKind, id: &str) {
        if kind == EntityKind::Worker {
            self.workers.remove(id);
            return;
        }
        let Ok(id) = id.parse::<Uuid>() else { return };
        match kind {
            EntityKind::Function => {
                self.functions.remove(&id);
            }
            EntityKind::Deployment => {
                self.deployments.remove(&id);
            }
            EntityKind::Key => {
                self.keys.remove(&id);
            }
            EntityKind::Instance => {
                self.instances.remove(&id);
            }
            EntityKind::Worker => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;
    use crate::worker::{WorkerRegistration, WorkerStatus};

    fn worker(id: &str) -> Entity {
        Entity::Worker(WorkerRecord {
            registration: WorkerRegistration {
                worker_id: id.into(),
                address: "http://127.0.0.1:1".into(),
                cluster_group: "g".into(),
                cluster: "c".into(),
                gpus: vec![],
                instance_types: vec![],
                capacity: 1,
            },
            status: WorkerStatus::Ready,
            registered_at: Timestamp::now(),
        })
    }

    #[test]
    fn applies_in_order_ignores_replays_and_rejects_gaps() {
        let mut s = FeedState::default();
        let up = |r, id: &str| FeedMessage::Upsert {
            revision: r,
            entity: worker(id),
        };
        assert_eq!(s.apply(up(1, "a")), Err(FeedError::NoSnapshot));
        s.apply(FeedMessage::Snapshot {
            revision: 3,
            key_hash_secret: "k".into(),
            entities: vec![worker("a")],
        })
        .expect("snapshot");
        s.apply(up(2, "old")).expect("replay ignored");
        assert!(!s.workers.contains_key("old"));
        s.apply(up(4, "b")).expect("next");
        assert_eq!(
            s.apply(up(6, "c")),
            Err(FeedError::OutOfOrder { have: 4, got: 6 })
        );
        s.apply(FeedMessage::Delete {
            revision: 5,
            kind: EntityKind::Worker,
            id: "a".into(),
        })
        .expect("delete");
        assert_eq!(s.revision, 5);
        assert_eq!(s.workers.keys().collect::<Vec<_>>(), vec!["b"]);
    }

    #[test]
    fn wire_format_is_tagged_json() {
        let m = FeedMessage::Delete {
            revision: 9,
            kind: EntityKind::Key,
            id: "x".into(),
        };
        let s = serde_json::to_string(&m).expect("ser");
        assert_eq!(s, r#"{"type":"delete","revision":9,"kind":"key","id":"x"}"#);
        let m = FeedMessage::Upsert {
            revision: 1,
            entity: worker("w"),
        };
        let s = serde_json::to_string(&m).expect("ser");
        assert!(
            s.starts_with(r#"{"type":"upsert","revision":1,"entity":{"kind":"worker","value":{"#),
            "{s}"
        );
        assert_eq!(serde_json::from_str::<FeedMessage>(&s).expect("de"), m);
    }
}
