//! The `admit` step: per-version in-flight counters bounded by the version's capacity
//! (`maxRequestConcurrency` × ready workers), a bounded FIFO wait queue per version in front of
//! that bound, and one global in-flight cap (`max-in-flight`).
//!
//! Admission hands out a [`Slot`] that gives its places back when dropped; the response body
//! carries it, so a streamed response holds its place until it ends or the client goes away. A
//! released version place goes straight to the oldest waiter (no thundering herd, no overtaking).
//! A request that finds the queue full, or waits longer than its bound, gets 429; the global cap
//! sheds at once, without queueing, because it protects the gateway itself.

use std::collections::VecDeque;

// foldhash, not SipHash: looked up on every call, keyed by control-plane ids (seeded per process).
use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use uuid::Uuid;

use crate::error::GatewayError;

/// How long and how many requests may wait for a version's place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueuePolicy {
    /// Requests that may wait per version; 0 answers 429 as soon as the version is full.
    pub(crate) max_waiting: usize,
    /// Longest wait for a place (further bounded by the request's own poll window).
    pub(crate) timeout: Duration,
}

/// Admission counters for the whole gateway.
#[derive(Debug)]
pub(crate) struct Admission {
    global: Arc<InFlight>,
    max_global: u64,
    queue: QueuePolicy,
    /// One gate per version ever invoked; bounded by the number of versions, and tiny.
    per_version: Mutex<HashMap<Uuid, Arc<Gate>>>,
}

/// Invocations in flight in the whole gateway, and the gauge that shows them (a handle kept,
/// not looked up twice per call).
struct InFlight {
    count: AtomicU64,
    gauge: metrics::Gauge,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// One version's places and waiters.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    in_flight: u64,
    /// The capacity the last admission saw (ready workers change with the routing snapshot).
    capacity: u64,
    waiters: VecDeque<Arc<Waiter>>,
}

/// One queued request. `granted` is only written under the gate's lock.
#[derive(Debug, Default)]
struct Waiter {
    granted: AtomicBool,
    wake: Notify,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        // Every critical section leaves the state consistent before anything can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl GateState {
    /// Hands free places to the oldest waiters.
    fn grant(&mut self) {
        while self.in_flight < self.capacity {
            let Some(waiter) = self.waiters.pop_front() else {
                return;
            };
            self.in_flight += 1;
            waiter.granted.store(true, Ordering::Relaxed);
            // `notify_one` keeps a permit when the waiter is not polling yet: no lost wake-up.
            waiter.wake.notify_one();
            crate::metrics::add_invocations_queued(-1.0);
        }
    }

    /// Gives one place back and passes it on.
    fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.grant();
    }
}

/// One admitted invocation's places; dropping it releases them.
#[derive(Debug)]
pub(crate) struct Slot {
    global: Arc<InFlight>,
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.lock().release();
        self.global.count.fetch_sub(1, Ordering::AcqRel);
        self.global.gauge.decrement(1.0);
    }
}

/// A queued request's claim. Dropped before it is granted (timeout, or the client went away),
/// it leaves the queue; dropped after a grant nobody took, it gives the place back.
struct Queued<'a> {
    gate: &'a Gate,
    waiter: Arc<Waiter>,
    taken: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut state = self.gate.lock();
        if self.waiter.granted.load(Ordering::Relaxed) {
            state.release();
        } else if let Some(i) = state
            .waiters
            .iter()
            .position(|w| Arc::ptr_eq(w, &self.waiter))
        {
            state.waiters.remove(i);
            crate::metrics::add_invocations_queued(-1.0);
        }
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

/// What the gate said to a new request.
enum Entry {
    Admitted,
    Queued(Arc<Waiter>),
}

impl Admission {
    pub(crate) fn new(max_global: u64, queue: QueuePolicy) -> Self {
        Self {
            global: Arc::new(InFlight {
                count: AtomicU64::new(0),
                gauge: crate::metrics::invocations_in_flight(),
            }),
            max_global,
            queue,
            per_version: Mutex::new(HashMap::default()),
        }
    }

    fn gate(&self, version: Uuid) -> Arc<Gate> {
        let mut map = self
            .per_version
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(version).or_default())
    }

    /// Admits one invocation of `version` whose ready workers take `capacity` at once, waiting
    /// in the version's queue (at most the policy's timeout, and never past `deadline`) while it
    /// is full: 503 when no worker is ready, 429 when the queue is full, the wait runs out, or
    /// the gateway is full. Dropping the future (the client went away) leaves the queue.
    pub(crate) async fn admit(
        &self,
        version: Uuid,
        capacity: u64,
        deadline: Instant,
    ) -> Result<Slot, GatewayError> {
        if capacity == 0 {
            return Err(GatewayError::NoHealthyWorker(version));
        }
        let gate = self.gate(version);
        let entry = {
            let mut state = gate.lock();
            state.capacity = capacity;
            // Capacity may have grown since the last release: serve the queue first.
            state.grant();
            if state.in_flight < capacity && state.waiters.is_empty() {
                state.in_flight += 1;
                Entry::Admitted
            } else if state.waiters.len() < self.queue.max_waiting {
                let waiter = Arc::new(Waiter::default());
                state.waiters.push_back(Arc::clone(&waiter));
                crate::metrics::add_invocations_queued(1.0);
                Entry::Queued(waiter)
            } else {
                return Err(GatewayError::VersionFull(version));
            }
        };
        if let Entry::Queued(waiter) = entry {
            let mut queued = Queued {
                gate: &gate,
                waiter,
                taken: false,
            };
            let start = Instant::now();
            let wait = self
                .queue
                .timeout
                .min(deadline.saturating_duration_since(start));
            let woken = tokio::time::timeout(wait, queued.waiter.wake.notified()).await;
            crate::metrics::record_queue_wait(start.elapsed());
            // A grant can race the timeout: the flag, read under the lock, decides.
            let granted = {
                let _state = gate.lock();
                queued.waiter.granted.load(Ordering::Relaxed)
            };
            if woken.is_err() && !granted {
                // `queued` drops here and leaves the queue.
                return Err(GatewayError::QueueTimeout {
                    version,
                    waited: wait,
                });
            }
            queued.taken = true;
        }
        if !take(&self.global.count, self.max_global) {
            gate.lock().release();
            return Err(GatewayError::GatewayFull(self.max_global));
        }
        self.global.gauge.increment(1.0);
        Ok(Slot {
            global: Arc::clone(&self.global),
            gate,
        })
    }

    /// Requests waiting for a place, per version (only versions with a queue).
    pub(crate) fn queue_depths(&self) -> Vec<(Uuid, u64)> {
        let gates: Vec<(Uuid, Arc<Gate>)> = self
            .per_version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(v, g)| (*v, Arc::clone(g)))
            .collect();
        gates
            .into_iter()
            .filter_map(|(v, g)| {
                let depth = g.lock().waiters.len() as u64;
                (depth > 0).then_some((v, depth))
            })
            .collect()
    }

    /// Invocations of `version` in flight now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self, version: Uuid) -> u64 {
        self.gate(version).lock().in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_waiting: usize, timeout_ms: u64) -> QueuePolicy {
        QueuePolicy {
            max_waiting,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn per_version_bound_and_release() {
        let a = Admission::new(100, policy(0, 0));
        let v = Uuid::new_v4();
        let s1 = a.admit(v, 2, far()).await.expect("1");
        let _s2 = a.admit(v, 2, far()).await.expect("2");
        let e = a.admit(v, 2, far()).await.expect_err("full");
        assert_eq!(e.status().as_u16(), 429);
        assert_eq!(a.in_flight(v), 2);
        drop(s1);
        assert_eq!(a.in_flight(v), 1);
        a.admit(v, 2, far()).await.expect("room again");
    }

    #[tokio::test]
    async fn no_ready_worker_is_503() {
        let a = Admission::new(100, policy(8, 1000));
        let e = a.admit(Uuid::nil(), 0, far()).await.expect_err("none");
        assert_eq!(e.status().as_u16(), 503);
        assert_eq!(
            e.to_string(),
            "no healthy worker for function version 00000000-0000-0000-0000-000000000000"
        );
    }

    #[tokio::test]
    async fn global_cap_sheds_and_gives_the_version_place_back() {
        let a = Admission::new(1, policy(8, 1000));
        let (v, w) = (Uuid::new_v4(), Uuid::new_v4());
        let _s = a.admit(v, 10, far()).await.expect("first");
        let e = a.admit(w, 10, far()).await.expect_err("global");
        assert!(matches!(e, GatewayError::GatewayFull(1)));
        assert_eq!(a.in_flight(w), 0);
    }

    #[tokio::test]
    async fn a_waiter_gets_the_released_place_in_order() {
        let a = Arc::new(Admission::new(100, policy(8, 10_000)));
        let v = Uuid::new_v4();
        let held = a.admit(v, 1, far()).await.expect("first");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..3 {
            let (a2, tx) = (Arc::clone(&a), tx.clone());
            tokio::spawn(async move {
                let slot = a2.admit(v, 1, far()).await.expect("queued then admitted");
                tx.send(n).expect("send");
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            });
            // Queue them in a known order.
            while a.queue_depths().first().map_or(0, |d| d.1) < n + 1 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(a.queue_depths(), vec![(v, 3)]);
        drop(held);
        let order: Vec<u64> = [rx.recv().await, rx.recv().await, rx.recv().await]
            .into_iter()
            .map(|n| n.expect("admitted"))
            .collect();
        assert_eq!(order, vec![0, 1, 2], "FIFO");
        assert!(a.queue_depths().is_empty());
    }

    #[tokio::test]
    async fn a_full_queue_and_a_timed_out_wait_are_429() {
        let a = Admission::new(100, policy(1, 20));
        let v = Uuid::new_v4();
        let _held = a.admit(v, 1, far()).await.expect("first");
        let waiting = a.admit(v, 1, far());
        tokio::pin!(waiting);
        // Poll once so it takes the only queue place.
        assert!(futures_poll_once(waiting.as_mut()).await.is_none());
        let e = a.admit(v, 1, far()).await.expect_err("queue full");
        assert!(matches!(e, GatewayError::VersionFull(_)), "{e}");
        let e = waiting.await.expect_err("timed out");
        assert!(matches!(e, GatewayError::QueueTimeout { .. }), "{e}");
        assert_eq!(e.status().as_u16(), 429);
        assert!(a.queue_depths().is_empty(), "the timed-out waiter left");
        assert_eq!(a.in_flight(v), 1);
    }

    #[tokio::test]
    async fn the_deadline_bounds_the_wait() {
        let a = Admission::new(100, policy(8, 60_000));
        let v = Uuid::new_v4();
        let _held = a.admit(v, 1, far()).await.expect("first");
        let start = Instant::now();
        let e = a
            .admit(v, 1, Instant::now() + Duration::from_millis(20))
            .await
            .expect_err("deadline");
        assert!(matches!(e, GatewayError::QueueTimeout { .. }));
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue_and_loses_no_place() {
        let a = Admission::new(100, policy(8, 60_000));
        let v = Uuid::new_v4();
        let held = a.admit(v, 1, far()).await.expect("first");
        {
            let waiting = a.admit(v, 1, far());
            tokio::pin!(waiting);
            assert!(futures_poll_once(waiting.as_mut()).await.is_none());
            assert_eq!(a.queue_depths(), vec![(v, 1)]);
        } // the client went away
        assert!(a.queue_depths().is_empty());
        drop(held);
        assert_eq!(a.in_flight(v), 0);
        // A grant that nobody collects is given back too.
        let held = a.admit(v, 1, far()).await.expect("again");
        {
            let waiting = a.admit(v, 1, far());
            tokio::pin!(waiting);
            assert!(futures_poll_once(waiting.as_mut()).await.is_none());
            drop(held); // grants the waiter, which is then dropped unpolled
        }
        assert_eq!(a.in_flight(v), 0, "the uncollected grant was released");
        a.admit(v, 1, far()).await.expect("the place is free");
    }

    #[tokio::test]
    async fn grown_capacity_serves_the_queue_first() {
        let a = Arc::new(Admission::new(100, policy(8, 10_000)));
        let v = Uuid::new_v4();
        let _held = a.admit(v, 1, far()).await.expect("first");
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.admit(v, 1, far()).await.map(|_| ()) })
        };
        while a.queue_depths().is_empty() {
            tokio::task::yield_now().await;
        }
        // A second worker became ready: the newcomer is admitted, and so is the waiter.
        let _newcomer = a.admit(v, 3, far()).await.expect("room");
        waiter.await.expect("join").expect("waiter admitted");
    }

    /// Polls a future once: `Some` with its output if it finished.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
