//! SQLite persistence: the current entities, the ordered change log the feed replays, and a few
//! settings (the key-hash secret). One file in WAL mode; every acknowledged change is committed
//! with `synchronous = FULL` before the caller hears about it.

use model::feed::{Entity, EntityKind, FeedMessage};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// One change to commit.
#[allow(clippy::large_enum_variant)] // built and consumed one at a time
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(Entity),
    Delete(EntityKind, String),
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

/// The database handle.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entities (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS feed (
    rev  INTEGER PRIMARY KEY,
    msg  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

impl Store {
    /// Opens (creating if needed) `controlplane.db` under `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let conn = Connection::open(dir.join("controlplane.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    /// Every stored entity.
    pub fn load_entities(&self) -> Result<Vec<Entity>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT kind, id, body FROM entities ORDER BY kind, id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, id, body) = row?;
            let entity: Entity = serde_json::from_str(&body)
                .map_err(|e| StoreError::Corrupt(format!("{kind}/{id}: {e}")))?;
            out.push(entity);
        }
        Ok(out)
    }

    /// The last committed revision (0 for a new database).
    pub fn revision(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta("revision")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// The oldest revision still in the change log, if any.
    pub fn oldest_retained(&self) -> Result<Option<u64>, StoreError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT MIN(rev) FROM feed", [], |r| r.get(0))?;
        Ok(v.map(|v| v as u64))
    }

    /// Feed messages with revision greater than `since`, in order.
    pub fn changes_since(&self, since: u64) -> Result<Vec<FeedMessage>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT rev, msg FROM feed WHERE rev > ?1 ORDER BY rev")?;
        let rows = stmt.query_map(params![since as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (rev, msg) = row?;
            out.push(
                serde_json::from_str(&msg)
                    .map_err(|e| StoreError::Corrupt(format!("feed {rev}: {e}")))?,
            );
        }
        Ok(out)
    }

    /// A setting.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets a setting (committed at once).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Commits `changes` as revisions `first_rev..`, in one transaction, and trims the log to
    /// `retention` entries. Returns the feed messages written.
    pub fn commit(
        &mut self,
        first_rev: u64,
        changes: &[Change],
        retention: u64,
    ) -> Result<Vec<FeedMessage>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut messages = Vec::with_capacity(changes.len());
        let mut rev = first_rev;
        for change in changes {
            let msg = match change {
                Change::Upsert(entity) => {
                    let body = serde_json::to_string(entity)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    tx.execute(
                        "INSERT INTO entities (kind, id, body) VALUES (?1, ?2, ?3)
                         ON CONFLICT(kind, id) DO UPDATE SET body = excluded.body",
                        params![entity.kind().as_str(), entity.id(), body],
                    )?;
                    FeedMessage::Upsert {
                        revision: rev,
                        entity: entity.clone(),
                    }
                }
                Change::Delete(kind, id) => {
                    tx.execute(
                        "DELETE FROM entities WHERE kind = ?1 AND id = ?2",
                        params![kind.as_str(), id],
                    )?;
                    FeedMessage::Delete {
                        revision: rev,
                        kind: *kind,
                        id: id.clone(),
                    }
                }
            };
            let text =
                serde_json::to_string(&msg).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.execute(
                "INSERT INTO feed (rev, msg) VALUES (?1, ?2)",
                params![rev as i64, text],
            )?;
            messages.push(msg);
            rev += 1;
        }
        let last = rev - 1;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('revision', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![last.to_string()],
        )?;
        if last > retention {
            tx.execute(
                "DELETE FROM feed WHERE rev <= ?1",
                params![(last - retention) as i64],
            )?;
        }
        tx.commit()?;
        Ok(messages)
    }
}
