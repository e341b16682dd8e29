//! The `admit` step: per-version in-flight counters bounded by the version's capacity
//! (`maxRequestConcurrency` × ready workers) and one global in-flight cap (`max-in-flight`).
//! Admission hands out a [`Slot`] that gives its places back when dropped; the response body
//! carries it, so a streamed response holds its place until it ends or the client goes away.
//!
//! There is no wait queue in this increment: beyond the bound the answer is 429 at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use uuid::Uuid;

use crate::error::GatewayError;

/// Admission counters for the whole gateway.
#[derive(Debug)]
pub(crate) struct Admission {
    global: Arc<AtomicU64>,
    max_global: u64,
    /// One counter per version ever invoked; bounded by the number of versions, and tiny.
    per_version: Mutex<HashMap<Uuid, Arc<AtomicU64>>>,
}

/// One admitted invocation's places; dropping it releases them.
#[derive(Debug)]
pub(crate) struct Slot {
    global: Arc<AtomicU64>,
    version: Arc<AtomicU64>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.version.fetch_sub(1, Ordering::AcqRel);
        self.global.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::add_invocations_in_flight(-1.0);
    }
}

/// Takes one place in `counter` if it holds fewer than `limit`.
fn take(counter: &AtomicU64, limit: u64) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

impl Admission {
    pub(crate) fn new(max_global: u64) -> Self {
        Self {
            global: Arc::new(AtomicU64::new(0)),
            max_global,
            per_version: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one invocation of `version` whose ready workers take `capacity` at once: 503 when
    /// no worker is ready, 429 when the version or the gateway is full.
    pub(crate) fn admit(&self, version: Uuid, capacity: u64) -> Result<Slot, GatewayError> {
        if capacity == 0 {
            return Err(GatewayError::NoHealthyWorker(version));
        }
        let counter = {
            let mut map = self
                .per_version
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(version).or_default())
        };
        if !take(&counter, capacity) {
            return Err(GatewayError::VersionFull(version));
        }
        if !take(&self.global, self.max_global) {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Err(GatewayError::GatewayFull(self.max_global));
        }
        crate::metrics::add_invocations_in_flight(1.0);
        Ok(Slot {
            global: Arc::clone(&self.global),
            version: counter,
        })
    }

    /// Invocations of `version` in flight now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self, version: Uuid) -> u64 {
        self.per_version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&version)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_version_bound_and_release() {
        let a = Admission::new(100);
        let v = Uuid::new_v4();
        let s1 = a.admit(v, 2).expect("1");
        let _s2 = a.admit(v, 2).expect("2");
        let e = a.admit(v, 2).expect_err("full");
        assert_eq!(e.status().as_u16(), 429);
        assert_eq!(a.in_flight(v), 2);
        drop(s1);
        assert_eq!(a.in_flight(v), 1);
        a.admit(v, 2).expect("room again");
    }

    #[test]
    fn no_ready_worker_is_503() {
        let a = Admission::new(100);
        let e = a.admit(Uuid::nil(), 0).expect_err("none");
        assert_eq!(e.status().as_u16(), 503);
        assert_eq!(
            e.to_string(),
            "no healthy worker for function version 00000000-0000-0000-0000-000000000000"
        );
    }

    #[test]
    fn global_cap_sheds_and_gives_the_version_place_back() {
        let a = Admission::new(1);
        let (v, w) = (Uuid::new_v4(), Uuid::new_v4());
        let _s = a.admit(v, 10).expect("first");
        let e = a.admit(w, 10).expect_err("global");
        assert!(matches!(e, GatewayError::GatewayFull(1)));
        assert_eq!(a.in_flight(w), 0);
    }
}
