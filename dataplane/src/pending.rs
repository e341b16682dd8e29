//! The pending-request table: pexec/exec calls answered `202` whose worker request keeps running
//! in the background, and their results until a status poll takes them (nvcf-api.md §2.4, the
//! "deliberate difference": the dataplane holds the worker stream and keeps the result itself).
//!
//! [`Table`] is plain data without I/O or clocks: every call that depends on time takes `now`. It
//! owns the memory accounting of buffered results and makes the spill decision
//! ([`Table::try_reserve`]); the async wrapper with waiting, spill files and sweeping is
//! [`store::PendingStore`].

pub(crate) mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use uuid::Uuid;

use crate::error::GatewayError;

/// The bounds of the table (config `pending-ttl`, `pending-memory-bytes`,
/// `pending-max-result-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// How long a finished result is kept when nobody fetches it.
    pub(crate) ttl: Duration,
    /// Memory for buffered results, all together.
    pub(crate) memory_bytes: u64,
    /// Largest result buffered in memory; larger ones are spilled to a file.
    pub(crate) max_result_bytes: u64,
}

/// Who may poll an entry, and how its answers are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) function_id: Uuid,
    pub(crate) version_id: Uuid,
    /// The call was `exec`: a 202 carries the JSON wrapper rather than an empty body.
    pub(crate) exec: bool,
}

/// The response head of a finished request (`NVCF-*` headers already set).
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
}

/// A finished request's outcome as kept for its poller.
#[derive(Debug)]
pub(crate) enum Stored {
    /// Buffered whole in memory.
    Memory { head: Head, body: Bytes },
    /// The body lies in a spill file of `len` bytes.
    Spilled { head: Head, path: PathBuf, len: u64 },
    /// The error the client would have got (worker failure, or a result that could not be kept).
    Failed(GatewayError),
}

impl Stored {
    /// The spill file to delete when the entry goes without being fetched.
    pub(crate) fn spill_path(&self) -> Option<&PathBuf> {
        match self {
            Self::Spilled { path, .. } => Some(path),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum State {
    Running,
    Done {
        at: Instant,
        stored: Stored,
        /// Memory accounted for `stored` (its buffered body).
        bytes: u64,
    },
}

#[derive(Debug)]
struct Entry {
    owner: Owner,
    created: Instant,
    state: State,
}

/// What a poll finds.
#[derive(Debug)]
pub(crate) enum Taken {
    /// The result, handed out once; the entry is gone.
    Ready(Stored),
    /// Still running.
    Running,
    /// No such entry (never parked, already fetched, or expired).
    Missing,
}

/// The table itself.
#[derive(Debug)]
pub(crate) struct Table {
    limits: Limits,
    entries: HashMap<Uuid, Entry>,
    /// Memory reserved for buffered results (finished ones and those being read).
    memory: u64,
}

impl Table {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            memory: 0,
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// Entries held (running and finished).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Memory reserved for buffered results.
    pub(crate) fn memory(&self) -> u64 {
        self.memory
    }

    /// Parks request `id` as running.
    pub(crate) fn insert(&mut self, id: Uuid, owner: Owner, now: Instant) {
        self.entries.insert(
            id,
            Entry {
                owner,
                created: now,
                state: State::Running,
            },
        );
    }

    /// Who owns `id`, if it is held.
    pub(crate) fn owner(&self, id: Uuid) -> Option<Owner> {
        self.entries.get(&id).map(|e| e.owner)
    }

    /// The spill decision for a result being read: `true` when `n` more bytes may be buffered in
    /// memory for a result that holds `held` already (and they are now reserved); `false` when the
    /// result must go to a spill file — it would pass `max-result-bytes`, or the table's memory is
    /// spoken for.
    pub(crate) fn try_reserve(&mut self, held: u64, n: u64) -> bool {
        let fits_result = held.saturating_add(n) <= self.limits.max_result_bytes;
        let fits_memory = self.memory.saturating_add(n) <= self.limits.memory_bytes;
        if fits_result && fits_memory {
            self.memory += n;
            true
        } else {
            false
        }
    }

    /// Gives back `n` reserved bytes (a result moved to a spill file, or dropped).
    pub(crate) fn release(&mut self, n: u64) {
        self.memory = self.memory.saturating_sub(n);
    }

    /// Records the outcome of `id`, whose buffered body holds `bytes` reserved bytes. Without a
    /// running entry (it was expired meanwhile) the bytes are released and the outcome comes back
    /// for the caller to discard (its spill file deleted).
    pub(crate) fn complete(
        &mut self,
        id: Uuid,
        stored: Stored,
        bytes: u64,
        now: Instant,
    ) -> Option<Stored> {
        match self.entries.get_mut(&id) {
            Some(e) if matches!(e.state, State::Running) => {
                e.state = State::Done {
                    at: now,
                    stored,
                    bytes,
                };
                None
            }
            _ => {
                self.release(bytes);
                Some(stored)
            }
        }
    }

    /// Takes the result of `id` once it is done (the entry goes with it); an expired result is
    /// treated as missing (and removed; its outcome is the second value, for clean-up).
    pub(crate) fn take(&mut self, id: Uuid, now: Instant) -> (Taken, Option<Stored>) {
        let Some(entry) = self.entries.get(&id) else {
            return (Taken::Missing, None);
        };
        match &entry.state {
            State::Running => (Taken::Running, None),
            State::Done { at, .. } => {
                let expired = now.saturating_duration_since(*at) >= self.limits.ttl;
                let Some(Entry {
                    state: State::Done { stored, bytes, .. },
                    ..
                }) = self.entries.remove(&id)
                else {
                    return (Taken::Missing, None);
                };
                self.release(bytes);
                if expired {
                    (Taken::Missing, Some(stored))
                } else {
                    (Taken::Ready(stored), None)
                }
            }
        }
    }

    /// Removes finished results older than the TTL, and running entries older than twice the TTL
    /// (their task is bounded by the TTL, so such an entry lost its task). Returns the finished
    /// outcomes removed, for clean-up and counting.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Stored> {
        let ttl = self.limits.ttl;
        let stale: Vec<Uuid> = self
            .entries
            .iter()
            .filter(|(_, e)| match &e.state {
                State::Running => now.saturating_duration_since(e.created) >= ttl * 2,
                State::Done { at, .. } => now.saturating_duration_since(*at) >= ttl,
            })
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in stale {
            if let Some(Entry {
                state: State::Done { stored, bytes, .. },
                ..
            }) = self.entries.remove(&id)
            {
                self.release(bytes);
                out.push(stored);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        ttl: Duration::from_secs(3600),
        memory_bytes: 100,
        max_result_bytes: 40,
    };

    fn owner() -> Owner {
        Owner {
            function_id: Uuid::nil(),
            version_id: Uuid::nil(),
            exec: false,
        }
    }

    fn memory(body: &'static [u8]) -> Stored {
        Stored::Memory {
            head: Head {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
            },
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn a_result_is_taken_once() {
        let mut t = Table::new(LIMITS);
        let now = Instant::now();
        let id = Uuid::new_v4();
        assert!(matches!(t.take(id, now).0, Taken::Missing));
        t.insert(id, owner(), now);
        assert_eq!(t.owner(id), Some(owner()));
        assert!(matches!(t.take(id, now).0, Taken::Running));
        assert!(t.try_reserve(0, 4));
        assert!(t.complete(id, memory(b"done"), 4, now).is_none());
        assert_eq!(t.memory(), 4);
        match t.take(id, now + Duration::from_secs(1)).0 {
            Taken::Ready(Stored::Memory { body, .. }) => assert_eq!(&body[..], b"done"),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.memory(), 0);
        assert_eq!(t.len(), 0);
        assert!(matches!(t.take(id, now).0, Taken::Missing));
        assert!(t.owner(id).is_none());
    }

    #[test]
    fn results_expire_after_the_ttl() {
        let mut t = Table::new(LIMITS);
        let now = Instant::now();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for id in [a, b, c] {
            t.insert(id, owner(), now);
        }
        assert!(t.try_reserve(0, 10));
        t.complete(a, memory(b"0123456789"), 10, now);
        let later = now + Duration::from_secs(1800);
        t.complete(b, memory(b""), 0, later);
        // An hour after a finished: a is swept, b (finished later) and c (running) stay.
        let swept = t.expire(now + LIMITS.ttl);
        assert_eq!(swept.len(), 1);
        assert_eq!(t.memory(), 0);
        assert!(t.owner(a).is_none());
        assert!(t.owner(b).is_some() && t.owner(c).is_some());
        // Past its TTL but not yet swept, a result is not handed out.
        let (taken, gone) = t.take(b, later + LIMITS.ttl);
        assert!(matches!(taken, Taken::Missing));
        assert!(gone.is_some());
        // A running entry whose task was lost goes after twice the TTL.
        assert!(t.expire(now + LIMITS.ttl * 2).is_empty());
        assert_eq!(t.len(), 0);
        // Its late outcome comes back for clean-up.
        assert!(t.complete(c, memory(b""), 0, now).is_some());
    }

    #[test]
    fn memory_bound_decides_spill() {
        let mut t = Table::new(LIMITS);
        // Within one result's bound, chunk by chunk.
        assert!(t.try_reserve(0, 30));
        assert!(t.try_reserve(30, 10));
        // The 41st byte of one result passes max-result-bytes: spill.
        assert!(!t.try_reserve(40, 1));
        assert_eq!(t.memory(), 40);
        // Other results fill the rest of the memory bound, then even small ones spill.
        assert!(t.try_reserve(0, 40));
        assert!(t.try_reserve(0, 20));
        assert!(!t.try_reserve(0, 1));
        // Releasing (a result spilled or fetched) makes room again.
        t.release(40);
        assert!(t.try_reserve(0, 1));
        assert_eq!(t.memory(), 61);
    }
}
