//! Per-version admission and in-flight accounting.
//!
//! Each function version has a counter of invocations in progress. Admission is a counting
//! semaphore whose size is the instance's `maxRequestConcurrency`, read from the feed at each
//! admission, so a feed change resizes it at once (lowering it below the current count lets those
//! requests finish and turns new ones away until the count is under the new size). The gateway's
//! own admission keeps within the limit; this is the backstop, and it answers 429 at once rather
//! than queueing.
//!
//! A [`Permit`] is a drop guard: it travels with the response body and is released when the
//! response finishes or when hyper drops the request (stream reset, client gone), so the count the
//! heartbeat reports (`in_flight`) always returns to 0.
//!
//! Each version's entry also holds its metric handles ([`VersionMetrics`]), made at its first
//! admission, which the invocation records through.

use super::RuntimeError;
use crate::metrics::VersionMetrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use uuid::Uuid;

/// One version's count of invocations in progress, and its metric handles.
#[derive(Debug)]
struct Slot {
    count: AtomicU32,
    metrics: Arc<VersionMetrics>,
}

/// In-flight invocations per function version.
#[derive(Debug, Default)]
pub struct InFlight {
    counts: Mutex<HashMap<Uuid, Arc<Slot>>>,
}

impl InFlight {
    fn counts(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<Slot>>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot of `version` if fewer than `limit` (at least 1) are taken.
    pub fn try_admit(&self, version: Uuid, limit: u32) -> Result<Permit, RuntimeError> {
        let limit = limit.max(1);
        let slot = Arc::clone(self.counts().entry(version).or_insert_with(|| {
            Arc::new(Slot {
                count: AtomicU32::new(0),
                metrics: Arc::new(VersionMetrics::new(version.to_string())),
            })
        }));
        slot.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| RuntimeError::Overloaded { version, limit })?;
        slot.metrics.in_flight(1.0);
        Ok(Permit { slot })
    }

    /// Invocations of `version` in progress.
    pub fn get(&self, version: &Uuid) -> u32 {
        self.counts()
            .get(version)
            .map_or(0, |s| s.count.load(Ordering::Acquire))
    }

    /// Forgets idle counters of versions `keep` rejects (no longer assigned here).
    pub fn retain(&self, keep: impl Fn(&Uuid) -> bool) {
        self.counts().retain(|v, s| {
            keep(v) || Arc::strong_count(s) > 1 || s.count.load(Ordering::Acquire) > 0
        });
    }
}

/// One admitted invocation; releases its slot when dropped.
#[derive(Debug)]
pub struct Permit {
    slot: Arc<Slot>,
}

impl Permit {
    /// The version's metric handles.
    pub fn metrics(&self) -> &Arc<VersionMetrics> {
        &self.slot.metrics
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.slot.count.fetch_sub(1, Ordering::AcqRel);
        self.slot.metrics.in_flight(-1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_releases_on_drop() {
        let f = InFlight::default();
        let v = Uuid::new_v4();
        let a = f.try_admit(v, 2).expect("1");
        let b = f.try_admit(v, 2).expect("2");
        assert_eq!(f.get(&v), 2);
        let e = f.try_admit(v, 2).expect_err("full");
        assert_eq!(
            e,
            RuntimeError::Overloaded {
                version: v,
                limit: 2
            }
        );
        drop(a);
        assert_eq!(f.get(&v), 1);
        let _c = f.try_admit(v, 2).expect("slot freed");
        // A smaller limit turns new requests away until the count is under it.
        assert!(f.try_admit(v, 1).is_err());
        drop(b);
        assert_eq!(f.get(&v), 1);
        assert_eq!(f.get(&Uuid::nil()), 0);
    }

    #[test]
    fn zero_limit_still_admits_one() {
        let f = InFlight::default();
        let v = Uuid::new_v4();
        let _a = f.try_admit(v, 0).expect("one");
        assert!(f.try_admit(v, 0).is_err());
    }

    #[test]
    fn retain_keeps_busy_counters() {
        let f = InFlight::default();
        let (busy, idle) = (Uuid::new_v4(), Uuid::new_v4());
        let p = f.try_admit(busy, 1).expect("busy");
        drop(f.try_admit(idle, 1).expect("idle"));
        f.retain(|_| false);
        assert_eq!(f.counts().len(), 1);
        assert_eq!(f.get(&busy), 1);
        drop(p);
        assert_eq!(f.get(&busy), 0);
        f.retain(|_| false);
        assert!(f.counts().is_empty());
    }
}
